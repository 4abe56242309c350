//! DataFrame structure: block manager, blocks, placements, indexes, and the
//! plain dict-of-lists / list-of-dicts shapes.

use std::collections::HashMap;

use arrow_array::Array;

use super::{
    ndarray::{element_f64, element_int, parse_ndarray, DTypeCache, Data, NdArray, NpKind},
    ColumnData, Frame, FrameColumn, FrameError, FrameOptions,
};
use crate::pickle::{Heap, How, Kind, Object, PickleSource, Value};

/// How deep label formatting may recurse into tuples.
const LABEL_DEPTH: usize = 8;
/// Most columns a frame may declare (a sanity bound on placements and labels).
const MAX_COLUMNS: usize = 1 << 24;
/// Columns a frame may always declare, whatever its size. Beyond this, no
/// more columns than the pickle has bytes: every column with a row holds at
/// least a byte of it, while a label or a placement made up from a `range`
/// costs nothing in the pickle but memory here.
const MIN_COLUMN_CAP: usize = 1 << 16;

pub(super) fn bad(what: impl Into<String>) -> FrameError {
    FrameError::Malformed(what.into())
}

pub(crate) struct Builder<'h> {
    pub heap: &'h Heap,
    pub src: &'h PickleSource,
    pub opts: &'h FrameOptions,
    pub cache: std::cell::RefCell<DTypeCache>,
}

/// One block of the manager: its values and the column positions they fill.
struct Block {
    values: Value,
    placement: Vec<usize>,
}

impl<'h> Builder<'h> {
    pub fn new(heap: &'h Heap, src: &'h PickleSource, opts: &'h FrameOptions) -> Self {
        Builder {
            heap,
            src,
            opts,
            cache: Default::default(),
        }
    }

    /// Most columns this pickle's frame may declare.
    fn max_columns(&self) -> usize {
        MAX_COLUMNS.min(self.src.bytes().len().max(MIN_COLUMN_CAP))
    }

    pub fn ndarray(&self, v: Value) -> Result<NdArray<'h>, FrameError> {
        parse_ndarray(self.heap, v, &mut self.cache.borrow_mut())
    }

    /// Entry point: whatever the pickle's root is.
    pub fn frame(&self, root: Value) -> Result<Frame, FrameError> {
        let heap = self.heap;
        match root {
            Value::Object(id) => {
                let o = heap.obj(id);
                match o.kind() {
                    Kind::DataFrame => self.dataframe(o),
                    Kind::Series => Err(FrameError::Unsupported(
                        "the pickle holds a pandas Series, not a DataFrame; save it with \
                         series.to_frame().to_pickle(...)"
                            .into(),
                    )),
                    _ => Err(not_a_frame(&heap.type_name(root))),
                }
            }
            Value::Dict(id) => self.dict_of_lists(heap.dict_pairs(id)),
            Value::List(id) => self.list_of_dicts(heap.list_items(id)),
            Value::Tuple(id) => self.list_of_dicts(heap.tuple_items(id)),
            other => Err(not_a_frame(&heap.type_name(other))),
        }
    }

    // ------------------------------------------------------------------
    // pandas DataFrame
    // ------------------------------------------------------------------

    fn dataframe(&self, df: &Object) -> Result<Frame, FrameError> {
        let heap = self.heap;
        let state = df
            .state
            .ok_or_else(|| bad("DataFrame without its state (BUILD)"))?;
        let mgr = heap
            .get(state, "_mgr")
            .or_else(|| heap.get(state, "_data"))
            .ok_or_else(|| bad("DataFrame state has no '_mgr' (block manager)"))?;
        let (blocks, axes) = self.manager(mgr)?;
        let [columns_axis, index_axis] = axes.as_slice() else {
            return Err(bad(format!(
                "block manager has {} axes, expected 2",
                axes.len()
            )));
        };
        let names = self.labels(*columns_axis)?;
        let index_rows = self.index_len(*index_axis)?;
        let ncols = names.len();
        let mut cols: Vec<Option<ColumnData>> = (0..ncols).map(|_| None).collect();
        for block in &blocks {
            for &p in &block.placement {
                if p >= ncols {
                    return Err(bad(format!(
                        "block placement {p} is beyond the {ncols} columns"
                    )));
                }
            }
            let arrays = self.block_columns(block, &names)?;
            for (p, a) in block.placement.iter().zip(arrays) {
                if cols[*p].is_some() {
                    return Err(bad(format!("column {p} is filled by two blocks")));
                }
                cols[*p] = Some(a);
            }
        }
        let mut out = Vec::with_capacity(ncols);
        for (i, (name, a)) in names.into_iter().zip(cols).enumerate() {
            let a = a.ok_or_else(|| bad(format!("column {i} ('{name}') is in no block")))?;
            if a.len() != index_rows {
                return Err(bad(format!(
                    "column '{name}' has {} rows but the index has {index_rows}",
                    a.len()
                )));
            }
            out.push(FrameColumn { name, data: a });
        }
        Ok(Frame {
            columns: out,
            rows: index_rows,
        })
    }

    /// (blocks, axes) of a BlockManager record.
    fn manager(&self, mgr: Value) -> Result<(Vec<Block>, Vec<Value>), FrameError> {
        let heap = self.heap;
        let o = heap
            .object(mgr)
            .ok_or_else(|| bad(format!("DataFrame '_mgr' is a {}", heap.type_name(mgr))))?;
        match o.kind() {
            Kind::BlockManager => {}
            Kind::SingleBlockManager => {
                return Err(FrameError::Unsupported(
                    "the pickle holds a pandas Series (SingleBlockManager), not a DataFrame".into(),
                ))
            }
            _ => return Err(bad(format!("DataFrame '_mgr' is a {}", o.class_name()))),
        }
        // pandas >= 1.x: BlockManager(blocks, axes) via REDUCE.
        if o.how == How::Call {
            if let Some([blocks, axes]) = heap.tuple(o.args) {
                let axes = heap
                    .seq(*axes)
                    .ok_or_else(|| bad("block manager axes are not a list"))?
                    .to_vec();
                let blocks = heap
                    .seq(*blocks)
                    .ok_or_else(|| bad("block manager blocks are not a tuple"))?
                    .iter()
                    .map(|b| self.block(*b))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok((blocks, axes));
            }
        }
        // Older pickles: __setstate__ with (axes, values, items, {"0.14.1": {...}}).
        let state = o
            .state
            .and_then(|s| heap.tuple(s))
            .ok_or_else(|| bad("block manager without (blocks, axes) or a state"))?;
        let extra = state
            .get(3)
            .and_then(|e| heap.get(*e, "0.14.1"))
            .ok_or_else(|| {
                FrameError::Unsupported(
                    "block manager state from a pandas older than 0.14.1".into(),
                )
            })?;
        let axes = heap
            .get(extra, "axes")
            .and_then(|a| heap.seq(a))
            .ok_or_else(|| bad("block manager state without axes"))?
            .to_vec();
        let blocks = heap
            .get(extra, "blocks")
            .and_then(|b| heap.seq(b))
            .ok_or_else(|| bad("block manager state without blocks"))?
            .iter()
            .map(|b| {
                let values = heap
                    .get(*b, "values")
                    .ok_or_else(|| bad("block without values"))?;
                let locs = heap
                    .get(*b, "mgr_locs")
                    .ok_or_else(|| bad("block without mgr_locs"))?;
                Ok(Block {
                    values,
                    placement: self.placement(locs)?,
                })
            })
            .collect::<Result<Vec<_>, FrameError>>()?;
        Ok((blocks, axes))
    }

    fn block(&self, b: Value) -> Result<Block, FrameError> {
        let heap = self.heap;
        let o = heap
            .object(b)
            .filter(|o| o.kind() == Kind::UnpickleBlock)
            .ok_or_else(|| bad(format!("block is a {}", heap.type_name(b))))?;
        let args = heap.tuple(o.args).unwrap_or(&[]);
        let (values, placement) = match args {
            [values, placement, ..] => (*values, *placement),
            _ => return Err(bad("_unpickle_block takes (values, placement, ndim)")),
        };
        Ok(Block {
            values,
            placement: self.placement(placement)?,
        })
    }

    /// Column positions from a slice, an int array, a BlockPlacement or an int.
    fn placement(&self, v: Value) -> Result<Vec<usize>, FrameError> {
        let heap = self.heap;
        if let Some(i) = heap.int(v) {
            return usize::try_from(i)
                .map(|i| vec![i])
                .map_err(|_| bad("negative block placement"));
        }
        if let Some(items) = heap.seq(v) {
            if items.len() > self.max_columns() {
                return Err(bad("block placement is too long"));
            }
            return items
                .iter()
                .map(|x| {
                    heap.int(*x)
                        .and_then(|i| usize::try_from(i).ok())
                        .ok_or_else(|| bad("block placement is not a list of ints"))
                })
                .collect();
        }
        let o = heap
            .object(v)
            .ok_or_else(|| bad(format!("block placement is a {}", heap.type_name(v))))?;
        match o.kind() {
            Kind::Slice => {
                let args = heap.tuple(o.args).unwrap_or(&[]);
                let get = |i: usize| args.get(i).copied().unwrap_or(Value::None);
                let start = match get(0) {
                    Value::None => 0,
                    x => heap
                        .int(x)
                        .ok_or_else(|| bad("slice start is not an int"))?,
                };
                let stop = heap
                    .int(get(1))
                    .ok_or_else(|| bad("block placement slice without a stop"))?;
                let step = match get(2) {
                    Value::None => 1,
                    x => heap.int(x).ok_or_else(|| bad("slice step is not an int"))?,
                };
                if start < 0 || stop < 0 || step <= 0 {
                    return Err(bad(format!(
                        "unsupported block placement slice({start}, {stop}, {step})"
                    )));
                }
                let count = if stop > start {
                    (stop - start + step - 1) / step
                } else {
                    0
                };
                if count as u64 > self.max_columns() as u64 {
                    return Err(bad("block placement slice is too long"));
                }
                Ok((0..count).map(|k| (start + k * step) as usize).collect())
            }
            Kind::BlockPlacement => {
                let arg = heap
                    .tuple(o.args)
                    .and_then(|a| a.first().copied())
                    .ok_or_else(|| bad("BlockPlacement without an argument"))?;
                self.placement(arg)
            }
            Kind::NpReconstruct | Kind::NpFromBuffer => {
                let arr = self.ndarray(v)?;
                if !matches!(arr.dtype.kind, NpKind::Int | NpKind::UInt) || arr.shape.len() != 1 {
                    return Err(bad("block placement array is not a 1-D int array"));
                }
                let raw = arr.column_bytes(0)?;
                let max = self.max_columns() as f64;
                raw.chunks_exact(arr.dtype.size)
                    .map(|c| {
                        let x = super::ndarray::element_f64(&arr.dtype, c).unwrap_or(-1.0);
                        if x < 0.0 || x > max {
                            Err(bad("block placement index out of range"))
                        } else {
                            Ok(x as usize)
                        }
                    })
                    .collect()
            }
            _ => Err(bad(format!("block placement is a {}", o.class_name()))),
        }
    }

    /// The Arrow arrays of one block, one per placement entry.
    fn block_columns(
        &self,
        block: &Block,
        names: &[String],
    ) -> Result<Vec<ColumnData>, FrameError> {
        let heap = self.heap;
        let name_of = |j: usize| -> String {
            block
                .placement
                .get(j)
                .and_then(|p| names.get(*p))
                .cloned()
                .unwrap_or_else(|| format!("#{j}"))
        };
        let k = block.placement.len();
        let v = block.values;
        if super::ndarray::is_ndarray(heap, v) {
            let arr = self.ndarray(v)?;
            let (rows_of_block, _) = arr.as_columns()?;
            if rows_of_block != k {
                return Err(bad(format!(
                    "block of shape {:?} does not match its {k} placements",
                    arr.shape
                )));
            }
            return (0..k)
                .map(|j| self.ndarray_column(&name_of(j), &arr, j, None))
                .collect();
        }
        // Extension arrays: one column each (2-D NDArrayBacked may hold k).
        let arrays = self.extension_columns(v, k, &name_of)?;
        if arrays.len() != k {
            return Err(bad(format!(
                "extension block holds {} columns but has {k} placements",
                arrays.len()
            )));
        }
        Ok(arrays.into_iter().map(ColumnData::Array).collect())
    }

    /// Column j of a numpy array (1-D: the array; 2-D: row j).
    pub fn ndarray_column(
        &self,
        name: &str,
        arr: &NdArray<'h>,
        j: usize,
        tz: Option<&str>,
    ) -> Result<ColumnData, FrameError> {
        match &arr.data {
            Data::Objects(_) => {
                let cells = arr.column_objects(j)?;
                self.object_column(name, &cells)
            }
            Data::Raw(_) => self.numeric_column(name, arr, j, tz).map(ColumnData::Array),
        }
    }

    // ------------------------------------------------------------------
    // Index / labels
    // ------------------------------------------------------------------

    /// Args dict of an `_new_Index(cls, d)` record (and the class kind/name).
    fn index_parts(&self, v: Value) -> Result<(Kind, String, Value), FrameError> {
        let heap = self.heap;
        let o = heap
            .object(v)
            .ok_or_else(|| bad(format!("index is a {}", heap.type_name(v))))?;
        match o.kind() {
            Kind::NewIndex => {
                let args = heap.tuple(o.args).unwrap_or(&[]);
                let [cls, d, ..] = args else {
                    return Err(bad("_new_Index takes (class, dict)"));
                };
                let kind = heap
                    .kind(*cls)
                    .ok_or_else(|| bad("index class is not a class"))?;
                let cname = match cls {
                    Value::Global(g) => {
                        let e = crate::pickle::allow::entry(*g);
                        e.name.to_string()
                    }
                    _ => "Index".into(),
                };
                Ok((kind, cname, *d))
            }
            _ => Err(bad(format!("index is a {}", o.class_name()))),
        }
    }

    /// Number of rows an index describes.
    fn index_len(&self, v: Value) -> Result<usize, FrameError> {
        let heap = self.heap;
        let (kind, cname, d) = self.index_parts(v)?;
        if cname == "RangeIndex" {
            let (start, stop, step) = self.range_parts(d)?;
            return Ok(range_len(start, stop, step));
        }
        if kind == Kind::MultiIndex {
            let codes = heap
                .get(d, "codes")
                .or_else(|| heap.get(d, "labels"))
                .and_then(|c| heap.seq(c))
                .ok_or_else(|| bad("MultiIndex without codes"))?;
            return match codes.first() {
                Some(c) => Ok(self.ndarray(*c)?.len()),
                None => Ok(0),
            };
        }
        let data = heap
            .get(d, "data")
            .ok_or_else(|| bad(format!("{cname} without data")))?;
        self.array_len(data)
    }

    fn range_parts(&self, d: Value) -> Result<(i64, i64, i64), FrameError> {
        let heap = self.heap;
        let get = |k: &str, default: i64| -> Result<i64, FrameError> {
            match heap.get(d, k) {
                None | Some(Value::None) => Ok(default),
                Some(x) => heap
                    .int(x)
                    .ok_or_else(|| bad(format!("RangeIndex {k} is not an int"))),
            }
        };
        let start = get("start", 0)?;
        let stop = get("stop", 0)?;
        let step = get("step", 1)?;
        if step == 0 {
            return Err(bad("RangeIndex with step 0"));
        }
        Ok((start, stop, step))
    }

    /// Length of an array-like value (ndarray, extension array).
    pub fn array_len(&self, v: Value) -> Result<usize, FrameError> {
        let heap = self.heap;
        if super::ndarray::is_ndarray(heap, v) {
            let arr = self.ndarray(v)?;
            return Ok(arr.as_columns()?.1);
        }
        if let Some(items) = heap.seq(v) {
            return Ok(items.len());
        }
        let arrays = self.extension_columns(v, 1, &|_| "index".to_string())?;
        Ok(arrays.first().map(|a| a.len()).unwrap_or(0))
    }

    /// Column labels as Python's `str()` shows them.
    fn labels(&self, v: Value) -> Result<Vec<String>, FrameError> {
        let heap = self.heap;
        let (kind, cname, d) = self.index_parts(v)?;
        if cname == "RangeIndex" {
            let (start, stop, step) = self.range_parts(d)?;
            let n = range_len(start, stop, step);
            if n > self.max_columns() {
                return Err(bad(format!(
                    "RangeIndex of {n} columns in a {}-byte pickle",
                    self.src.bytes().len()
                )));
            }
            return Ok((0..n as i64)
                .map(|k| (start + k * step).to_string())
                .collect());
        }
        if kind == Kind::MultiIndex {
            return self.multi_labels(d);
        }
        let data = heap
            .get(d, "data")
            .ok_or_else(|| bad(format!("{cname} without data")))?;
        self.label_values(data, false)
    }

    /// `str()` (or `repr()` when inside a tuple) of each element of an array.
    fn label_values(&self, data: Value, as_repr: bool) -> Result<Vec<String>, FrameError> {
        let heap = self.heap;
        if super::ndarray::is_ndarray(heap, data) {
            let arr = self.ndarray(data)?;
            if arr.shape.len() != 1 {
                return Err(bad("column index data is not 1-D"));
            }
            return match &arr.data {
                Data::Objects(items) => items
                    .iter()
                    .map(|x| {
                        let s = if as_repr {
                            heap.py_repr(*x, LABEL_DEPTH)
                        } else {
                            heap.py_str(*x, LABEL_DEPTH)
                        };
                        s.or_else(|| self.scalar_label(*x)).ok_or_else(|| {
                            FrameError::Unsupported(format!(
                                "column labels of type {} are not supported",
                                heap.type_name(*x)
                            ))
                        })
                    })
                    .collect(),
                Data::Raw(b) => {
                    let sz = arr.dtype.size;
                    b.chunks_exact(sz)
                        .map(|c| number_label(&arr.dtype, c))
                        .collect()
                }
            };
        }
        // Extension arrays (pandas 3 string columns): format each value.
        let arrays = self.extension_columns(data, 1, &|_| "column index".to_string())?;
        let a = arrays.first().ok_or_else(|| bad("empty column index"))?;
        use arrow_array::cast::AsArray;
        if let Some(s) = a.as_string_opt::<i32>() {
            return Ok((0..s.len())
                .map(|i| {
                    if s.is_null(i) {
                        "nan".to_string()
                    } else if as_repr {
                        crate::pickle::py_str_repr(s.value(i))
                    } else {
                        s.value(i).to_string()
                    }
                })
                .collect());
        }
        Err(FrameError::Unsupported(format!(
            "column labels of Arrow type {} are not supported",
            a.data_type()
        )))
    }

    /// numpy scalar labels (np.int64(3) in an object array).
    fn scalar_label(&self, v: Value) -> Option<String> {
        let (dtype, bytes) = self.np_scalar(v)?;
        number_label(&dtype, &bytes).ok()
    }

    fn multi_labels(&self, d: Value) -> Result<Vec<String>, FrameError> {
        let heap = self.heap;
        let levels = heap
            .get(d, "levels")
            .and_then(|l| heap.seq(l))
            .ok_or_else(|| bad("MultiIndex without levels"))?;
        let codes = heap
            .get(d, "codes")
            .or_else(|| heap.get(d, "labels"))
            .and_then(|c| heap.seq(c))
            .ok_or_else(|| bad("MultiIndex without codes"))?;
        if levels.len() != codes.len() || levels.is_empty() {
            return Err(bad("MultiIndex levels and codes differ in number"));
        }
        let mut level_labels = Vec::new();
        for l in levels {
            let (_, _, ld) = self.index_parts(*l)?;
            let data = heap
                .get(ld, "data")
                .ok_or_else(|| bad("MultiIndex level without data"))?;
            level_labels.push(self.label_values(data, true)?);
        }
        let mut level_codes = Vec::new();
        for c in codes {
            let arr = self.ndarray(*c)?;
            let raw = arr.column_bytes(0)?;
            let v: Vec<i64> = raw
                .chunks_exact(arr.dtype.size)
                .map(|x| super::ndarray::element_f64(&arr.dtype, x).unwrap_or(-1.0) as i64)
                .collect();
            level_codes.push(v);
        }
        let n = level_codes[0].len();
        (0..n)
            .map(|i| {
                let parts: Vec<String> = level_labels
                    .iter()
                    .zip(&level_codes)
                    .map(|(labels, codes)| {
                        let c = codes.get(i).copied().unwrap_or(-1);
                        if c < 0 {
                            "nan".to_string()
                        } else {
                            labels
                                .get(c as usize)
                                .cloned()
                                .unwrap_or_else(|| "?".into())
                        }
                    })
                    .collect();
                Ok(if parts.len() == 1 {
                    format!("({},)", parts[0])
                } else {
                    format!("({})", parts.join(", "))
                })
            })
            .collect()
    }

    /// `numpy.core.multiarray.scalar(dtype, bytes)` → (dtype, bytes).
    pub fn np_scalar(&self, v: Value) -> Option<(super::ndarray::DType, bytes::Bytes)> {
        let heap = self.heap;
        let o = heap.object(v).filter(|o| o.kind() == Kind::NpScalar)?;
        let args = heap.tuple(o.args)?;
        let [dtype, data] = args else { return None };
        let dtype = super::ndarray::parse_dtype(heap, *dtype).ok()?;
        let data = heap.bytes_of(*data)?.clone();
        (data.len() == dtype.size).then_some((dtype, data))
    }

    // ------------------------------------------------------------------
    // Plain Python shapes
    // ------------------------------------------------------------------

    fn dict_of_lists(&self, pairs: &[(Value, Value)]) -> Result<Frame, FrameError> {
        let heap = self.heap;
        let mut columns = Vec::with_capacity(pairs.len());
        let mut rows: Option<(usize, String)> = None;
        for (k, v) in pairs {
            let name = self.plain_label(*k)?;
            let array = if super::ndarray::is_ndarray(heap, *v) {
                let arr = self.ndarray(*v)?;
                if arr.shape.len() != 1 {
                    return Err(FrameError::Unsupported(format!(
                        "column '{name}': a {}-D array is not a column",
                        arr.shape.len()
                    )));
                }
                self.ndarray_column(&name, &arr, 0, None)?
            } else if let Some(cells) = heap.seq(*v) {
                self.object_column(&name, cells)?
            } else {
                return Err(FrameError::Unsupported(format!(
                    "column '{name}': a dict of lists needs list values, found a {}",
                    heap.type_name(*v)
                )));
            };
            match &rows {
                None => rows = Some((array.len(), name.clone())),
                Some((n, first)) if *n != array.len() => {
                    return Err(FrameError::Unsupported(format!(
                        "column '{name}' has {} values but column '{first}' has {n}",
                        array.len()
                    )))
                }
                _ => {}
            }
            columns.push(FrameColumn { name, data: array });
        }
        Ok(Frame {
            rows: rows.map(|r| r.0).unwrap_or(0),
            columns,
        })
    }

    fn list_of_dicts(&self, rows: &[Value]) -> Result<Frame, FrameError> {
        let heap = self.heap;
        // Columns in order of first appearance, found by key through a map
        // (a scan of every column per key would take 10^10 steps for a dict
        // of 100,000 keys).
        let mut names: Vec<String> = Vec::new();
        let mut by_key: HashMap<KeyOf<'_>, usize> = HashMap::new();
        let mut others: Vec<(Value, usize)> = Vec::new();
        let mut pairs_total = 0usize;
        let mut dicts: Vec<&[(Value, Value)]> = Vec::new();
        dicts
            .try_reserve_exact(rows.len())
            .map_err(|_| bad("too many rows to index"))?;
        for (r, row) in rows.iter().enumerate() {
            let pairs = heap.dict(*row).ok_or_else(|| {
                not_a_frame(&format!("list whose row {r} is a {}", heap.type_name(*row)))
            })?;
            dicts.push(pairs);
            pairs_total += pairs.len();
            for (k, _) in pairs {
                if column_of(heap, &by_key, &others, *k).is_some() {
                    continue;
                }
                if names.len() >= 100_000 {
                    return Err(FrameError::Unsupported(
                        "more than 100,000 distinct keys".into(),
                    ));
                }
                match KeyOf::of(heap, *k) {
                    Some(key) => by_key.insert(key, names.len()),
                    None => {
                        others.push((*k, names.len()));
                        None
                    }
                };
                names.push(self.plain_label(*k)?);
            }
        }
        // Every row gets a cell in every column: refuse rows so sparse that
        // the cells would dwarf the pairs the pickle holds.
        let n = rows.len();
        let cells = n.saturating_mul(names.len());
        if cells > pairs_total.saturating_mul(SPARSE_CELLS_PER_PAIR) + (1 << 20) {
            return Err(FrameError::Unsupported(format!(
                "a list of {n} dicts with {} distinct keys would make {cells} cells from only \
                 {pairs_total} key/value pairs; rows this sparse are not supported",
                names.len()
            )));
        }
        let mut matrix: Vec<Value> = Vec::new();
        matrix
            .try_reserve_exact(cells)
            .map_err(|_| bad(format!("cannot allocate {cells} cells")))?;
        matrix.resize(cells, Value::None);
        for (r, pairs) in dicts.iter().enumerate() {
            // In order, so that a later duplicate key wins, as in Python.
            for (k, v) in pairs.iter() {
                if let Some(c) = column_of(heap, &by_key, &others, *k) {
                    matrix[c * n + r] = *v;
                }
            }
        }
        let mut columns = Vec::with_capacity(names.len());
        for (c, name) in names.into_iter().enumerate() {
            let data = self.object_column(&name, &matrix[c * n..(c + 1) * n])?;
            columns.push(FrameColumn { name, data });
        }
        Ok(Frame { rows: n, columns })
    }

    fn plain_label(&self, k: Value) -> Result<String, FrameError> {
        self.heap.py_str(k, LABEL_DEPTH).ok_or_else(|| {
            FrameError::Unsupported(format!(
                "column labels of type {} are not supported",
                self.heap.type_name(k)
            ))
        })
    }
}

/// Cells a list of dicts may have per key/value pair it holds (rows that
/// lack some keys get null cells; beyond this the rows are too sparse).
const SPARSE_CELLS_PER_PAIR: usize = 8;

/// A dict key that can be looked up by hash: text (a `str` or a Python 2
/// `str` that is UTF-8), or an int. Two keys are the same column when they
/// are the same value or have the same text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum KeyOf<'h> {
    Text(&'h str),
    Int(i64),
}

impl<'h> KeyOf<'h> {
    fn of(heap: &'h Heap, v: Value) -> Option<KeyOf<'h>> {
        match (heap.text(v), v) {
            (Some(t), _) => Some(KeyOf::Text(t)),
            (None, Value::Int(i)) => Some(KeyOf::Int(i)),
            _ => None,
        }
    }
}

/// The column of key `k`, if it has one yet.
fn column_of(
    heap: &Heap,
    by_key: &HashMap<KeyOf<'_>, usize>,
    others: &[(Value, usize)],
    k: Value,
) -> Option<usize> {
    match KeyOf::of(heap, k) {
        Some(key) => by_key.get(&key).copied(),
        None => others.iter().find(|(o, _)| *o == k).map(|(_, c)| *c),
    }
}

fn range_len(start: i64, stop: i64, step: i64) -> usize {
    let (start, stop, step) = (start as i128, stop as i128, step as i128);
    let n = if step > 0 {
        if stop > start {
            (stop - start + step - 1) / step
        } else {
            0
        }
    } else if start > stop {
        (start - stop + (-step) - 1) / (-step)
    } else {
        0
    };
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn not_a_frame(what: &str) -> FrameError {
    FrameError::Unsupported(format!(
        "the pickle holds a {what}, not a pandas DataFrame, a dict of lists or a list of dicts"
    ))
}

/// `str()` of one numeric element (column labels of a numeric Index).
fn number_label(dtype: &super::ndarray::DType, b: &[u8]) -> Result<String, FrameError> {
    let text = match dtype.kind {
        NpKind::Int | NpKind::UInt => element_int(dtype, b).map(|v| v.to_string()),
        NpKind::Float if dtype.size != 2 => element_f64(dtype, b).map(crate::pickle::py_float_repr),
        NpKind::Bool => b
            .first()
            .map(|x| if *x != 0 { "True" } else { "False" }.to_string()),
        _ => {
            return Err(FrameError::Unsupported(format!(
                "column labels of dtype {} are not supported",
                dtype.name()
            )))
        }
    };
    text.ok_or_else(|| bad("label size"))
}
