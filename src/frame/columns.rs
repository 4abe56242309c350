//! Turning numpy arrays, Python cells and pandas extension arrays into Arrow.

use std::sync::Arc;

use arrow_array::{
    builder::{BinaryBuilder, StringBuilder},
    types::{Int16Type, Int32Type, Int64Type, Int8Type},
    Array, ArrayRef, BinaryArray, BooleanArray, DictionaryArray, DurationMicrosecondArray,
    DurationMillisecondArray, DurationNanosecondArray, DurationSecondArray, Float32Array,
    Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, PrimitiveArray, StringArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray, UInt16Array, UInt32Array, UInt64Array, UInt8Array,
};
use arrow_array::{GenericStringArray, OffsetSizeTrait};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};

use super::{
    build::{bad, Builder},
    ndarray::{
        decode, element_f64, element_int, half_to_f64, DType, Data, Element, NdArray, NpKind, Unit,
    },
    vectors::{VectorCell, VectorCells},
    ColumnData, FrameError,
};
use crate::pickle::{Kind, Value};

/// What one Python cell of an object column is.
enum Cell<'a> {
    Null,
    Str(std::borrow::Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(&'a [u8]),
    Vector,
}

fn nulls_from(valid: Vec<bool>) -> Option<NullBuffer> {
    if valid.iter().all(|v| *v) {
        None
    } else {
        Some(NullBuffer::new(BooleanBuffer::from(valid)))
    }
}

fn unsupported(name: &str, what: impl std::fmt::Display) -> FrameError {
    FrameError::Unsupported(format!("column '{name}': {what}"))
}

/// Timestamps (or durations) with NaT as null.
fn time_array(values: Vec<i64>, unit: Unit, tz: Option<&str>, duration: bool) -> ArrayRef {
    let valid: Vec<bool> = values.iter().map(|v| *v != i64::MIN).collect();
    let nulls = nulls_from(valid);
    let buf = ScalarBuffer::from(values);
    let tz: Option<Arc<str>> = tz.map(Arc::from);
    if duration {
        return match unit {
            Unit::S => Arc::new(DurationSecondArray::new(buf, nulls)),
            Unit::Ms => Arc::new(DurationMillisecondArray::new(buf, nulls)),
            Unit::Us => Arc::new(DurationMicrosecondArray::new(buf, nulls)),
            Unit::Ns => Arc::new(DurationNanosecondArray::new(buf, nulls)),
        };
    }
    match unit {
        Unit::S => Arc::new(TimestampSecondArray::new(buf, nulls).with_timezone_opt(tz)),
        Unit::Ms => Arc::new(TimestampMillisecondArray::new(buf, nulls).with_timezone_opt(tz)),
        Unit::Us => Arc::new(TimestampMicrosecondArray::new(buf, nulls).with_timezone_opt(tz)),
        Unit::Ns => Arc::new(TimestampNanosecondArray::new(buf, nulls).with_timezone_opt(tz)),
    }
}

/// A fixed-size numeric column from raw bytes, with optional validity.
fn primitive_column(
    name: &str,
    dtype: &DType,
    raw: &[u8],
    nulls: Option<NullBuffer>,
) -> Result<ArrayRef, FrameError> {
    let be = dtype.big_endian;
    Ok(match (dtype.kind, dtype.size) {
        (NpKind::Bool, 1) => {
            let vals: Vec<bool> = raw.iter().map(|b| *b != 0).collect();
            Arc::new(BooleanArray::new(BooleanBuffer::from(vals), nulls))
        }
        (NpKind::Int, 1) => Arc::new(Int8Array::new(decode::<i8>(raw, be)?.into(), nulls)),
        (NpKind::Int, 2) => Arc::new(Int16Array::new(decode::<i16>(raw, be)?.into(), nulls)),
        (NpKind::Int, 4) => Arc::new(Int32Array::new(decode::<i32>(raw, be)?.into(), nulls)),
        (NpKind::Int, 8) => Arc::new(Int64Array::new(decode::<i64>(raw, be)?.into(), nulls)),
        (NpKind::UInt, 1) => Arc::new(UInt8Array::new(decode::<u8>(raw, be)?.into(), nulls)),
        (NpKind::UInt, 2) => Arc::new(UInt16Array::new(decode::<u16>(raw, be)?.into(), nulls)),
        (NpKind::UInt, 4) => Arc::new(UInt32Array::new(decode::<u32>(raw, be)?.into(), nulls)),
        (NpKind::UInt, 8) => Arc::new(UInt64Array::new(decode::<u64>(raw, be)?.into(), nulls)),
        (NpKind::Float, 2) => {
            // float16 is widened to Float32 (exact).
            let bits = decode::<u16>(raw, be)?;
            let vals: Vec<f32> = bits.into_iter().map(|b| half_to_f64(b) as f32).collect();
            Arc::new(Float32Array::new(vals.into(), nulls))
        }
        (NpKind::Float, 4) => Arc::new(Float32Array::new(decode::<f32>(raw, be)?.into(), nulls)),
        (NpKind::Float, 8) => Arc::new(Float64Array::new(decode::<f64>(raw, be)?.into(), nulls)),
        _ => {
            return Err(unsupported(
                name,
                format!("numpy dtype {} is not supported", dtype.name()),
            ))
        }
    })
}

impl<'h> Builder<'h> {
    /// Column j of a fixed-size numpy array.
    pub fn numeric_column(
        &self,
        name: &str,
        arr: &NdArray<'h>,
        j: usize,
        tz: Option<&str>,
    ) -> Result<ArrayRef, FrameError> {
        let dtype = &arr.dtype;
        let raw = arr.column_bytes(j)?;
        match dtype.kind {
            NpKind::Bool | NpKind::Int | NpKind::UInt | NpKind::Float => {
                primitive_column(name, dtype, &raw, None)
            }
            NpKind::Datetime | NpKind::Timedelta => {
                let unit = dtype
                    .unit
                    .ok_or_else(|| bad(format!("{} without its unit", dtype.name())))?;
                let vals = decode::<i64>(&raw, dtype.big_endian)?;
                Ok(time_array(vals, unit, tz, dtype.kind == NpKind::Timedelta))
            }
            NpKind::Unicode => {
                let mut b = StringBuilder::new();
                for item in raw.chunks_exact(dtype.size.max(1)) {
                    let mut s = String::new();
                    for c in item.chunks_exact(4) {
                        let cp = u32::read(c, dtype.big_endian).unwrap_or(0);
                        if cp == 0 {
                            break;
                        }
                        s.push(
                            char::from_u32(cp)
                                .ok_or_else(|| bad("invalid code point in a numpy str array"))?,
                        );
                    }
                    b.append_value(s);
                }
                Ok(Arc::new(b.finish()))
            }
            NpKind::Bytes => {
                let mut b = BinaryBuilder::new();
                for item in raw.chunks_exact(dtype.size.max(1)) {
                    let end = item
                        .iter()
                        .rposition(|x| *x != 0)
                        .map(|p| p + 1)
                        .unwrap_or(0);
                    b.append_value(&item[..end]);
                }
                Ok(Arc::new(b.finish()))
            }
            _ => Err(unsupported(
                name,
                format!("numpy dtype {} is not supported", dtype.name()),
            )),
        }
    }

    /// Classify one Python cell.
    fn cell(&self, v: Value) -> Cell<'h> {
        let heap = self.heap;
        match v {
            Value::None => Cell::Null,
            Value::Bool(b) => Cell::Bool(b),
            Value::Int(i) => Cell::Int(i),
            Value::Float(f) if f.is_nan() => Cell::Null,
            Value::Float(f) => Cell::Float(f),
            Value::Str(id) => Cell::Str(heap.string(id).into()),
            Value::LegacyStr(id) => {
                let b = heap.payload(id);
                match std::str::from_utf8(b) {
                    Ok(s) => Cell::Str(s.into()),
                    Err(_) => Cell::Str(b.iter().map(|c| *c as char).collect::<String>().into()),
                }
            }
            Value::Bytes(id) | Value::ByteArray(id) => Cell::Bytes(heap.payload(id)),
            Value::List(_) | Value::Tuple(_) => Cell::Vector,
            Value::Global(_) if heap.kind(v) == Some(Kind::PandasNA) => Cell::Null,
            Value::Object(_) => match heap.kind(v) {
                Some(Kind::NpReconstruct | Kind::NpFromBuffer) => Cell::Vector,
                Some(Kind::NaT) => Cell::Null,
                Some(Kind::NpScalar) => match self.np_scalar(v) {
                    Some((dtype, b)) => match dtype.kind {
                        NpKind::Float => match element_f64(&dtype, &b) {
                            Some(f) if f.is_nan() => Cell::Null,
                            Some(f) => Cell::Float(f),
                            None => Cell::Vector,
                        },
                        NpKind::Bool => Cell::Bool(b.first().is_some_and(|x| *x != 0)),
                        // A uint64 past i64::MAX becomes a float, as before.
                        NpKind::Int | NpKind::UInt => match element_int(&dtype, &b) {
                            Some(v) => i64::try_from(v).map_or(Cell::Float(v as f64), Cell::Int),
                            None => Cell::Vector,
                        },
                        _ => Cell::Vector,
                    },
                    None => Cell::Vector,
                },
                _ => Cell::Vector,
            },
            _ => Cell::Vector,
        }
    }

    /// Build a column from Python cells (object dtype, plain lists).
    pub fn object_column(&self, name: &str, cells: &[Value]) -> Result<ColumnData, FrameError> {
        let heap = self.heap;
        // A vector column if the first present cell is an array or a list.
        let first = cells
            .iter()
            .position(|c| !matches!(self.cell(*c), Cell::Null));
        if let Some(f) = first {
            if matches!(self.cell(cells[f]), Cell::Vector) {
                return self.vector_column(name, cells, f);
            }
        }
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        enum K {
            Str,
            Bool,
            Int,
            Float,
            Bytes,
        }
        let kind_name = |k: K| match k {
            K::Str => "str",
            K::Bool => "bool",
            K::Int => "int",
            K::Float => "float",
            K::Bytes => "bytes",
        };
        let mut kind: Option<(K, usize)> = None;
        for (row, c) in cells.iter().enumerate() {
            let k = match self.cell(*c) {
                Cell::Null => continue,
                Cell::Str(_) => K::Str,
                Cell::Bool(_) => K::Bool,
                Cell::Int(_) => K::Int,
                Cell::Float(_) => K::Float,
                Cell::Bytes(_) => K::Bytes,
                Cell::Vector => {
                    return Err(unsupported(
                        name,
                        format!(
                            "row {row} holds a {} among {} cells; cells of that type are not supported here",
                            heap.type_name(*c),
                            kind.map(|(k, _)| kind_name(k)).unwrap_or("other")
                        ),
                    ))
                }
            };
            kind = match kind {
                None => Some((k, row)),
                Some((prev, r0)) if prev == k => Some((prev, r0)),
                Some((K::Int, r0)) if k == K::Float => Some((K::Float, r0)),
                Some((K::Float, r0)) if k == K::Int => Some((K::Float, r0)),
                Some((prev, r0)) => {
                    return Err(unsupported(
                        name,
                        format!(
                            "mixes {} cells (row {r0}) and {} cells (row {row})",
                            kind_name(prev),
                            kind_name(k)
                        ),
                    ))
                }
            };
        }
        // Cells of another kind are nulls (None, NaN, NA were checked above).
        let cells = cells.iter().map(|c| self.cell(*c));
        let array: ArrayRef = match kind.map(|k| k.0) {
            None | Some(K::Str) => Arc::new(
                cells
                    .map(|c| if let Cell::Str(s) = c { Some(s) } else { None })
                    .collect::<StringArray>(),
            ),
            Some(K::Bytes) => Arc::new(
                cells
                    .map(|c| {
                        if let Cell::Bytes(b) = c {
                            Some(b)
                        } else {
                            None
                        }
                    })
                    .collect::<BinaryArray>(),
            ),
            Some(K::Bool) => Arc::new(
                cells
                    .map(|c| if let Cell::Bool(b) = c { Some(b) } else { None })
                    .collect::<BooleanArray>(),
            ),
            Some(K::Int) => Arc::new(
                cells
                    .map(|c| if let Cell::Int(i) = c { Some(i) } else { None })
                    .collect::<Int64Array>(),
            ),
            Some(K::Float) => Arc::new(
                cells
                    .map(|c| match c {
                        Cell::Int(i) => Some(i as f64),
                        Cell::Float(f) => Some(f),
                        _ => None,
                    })
                    .collect::<Float64Array>(),
            ),
        };
        Ok(ColumnData::Array(array))
    }

    /// Length of a vector cell (numpy 1-D array or list of numbers).
    fn vector_len(&self, name: &str, row: usize, v: Value) -> Result<usize, FrameError> {
        if let Some(items) = self.heap.seq(v) {
            return Ok(items.len());
        }
        Ok(self.vector_array(name, row, v)?.shape[0])
    }

    /// The numpy array of a vector cell, refused unless it is 1-D.
    fn vector_array(&self, name: &str, row: usize, v: Value) -> Result<NdArray<'h>, FrameError> {
        let arr = self.ndarray(v)?;
        if arr.shape.len() != 1 {
            return Err(unsupported(
                name,
                format!(
                    "row {row} holds an array of shape {:?}; vectors must be 1-D",
                    arr.shape
                ),
            ));
        }
        Ok(arr)
    }

    /// A vector column from array/list cells (None cells become nulls):
    /// every row is checked here, the values are read batch by batch later
    /// (see [`super::vectors`]).
    fn vector_column(
        &self,
        name: &str,
        cells: &[Value],
        first: usize,
    ) -> Result<ColumnData, FrameError> {
        let heap = self.heap;
        let dim = self.vector_len(name, first, cells[first])?;
        cells
            .len()
            .checked_mul(dim)
            .ok_or_else(|| bad("vector column too large"))?;
        let mut dtypes: Vec<DType> = Vec::new();
        let mut out = Vec::new();
        let mut valid: Vec<bool> = Vec::new();
        out.try_reserve_exact(cells.len())
            .and_then(|()| valid.try_reserve_exact(cells.len()))
            .map_err(|_| {
                bad(format!(
                    "column '{name}': cannot allocate {} rows",
                    cells.len()
                ))
            })?;
        for (row, c) in cells.iter().enumerate() {
            match self.cell(*c) {
                Cell::Null => {
                    valid.push(false);
                    out.push(VectorCell::Null);
                    continue;
                }
                Cell::Vector => valid.push(true),
                _ => {
                    return Err(unsupported(
                        name,
                        format!(
                            "row {row} holds a {} among vector cells",
                            heap.type_name(*c)
                        ),
                    ))
                }
            }
            let ragged = |len: usize| FrameError::Ragged {
                column: name.to_string(),
                row,
                len,
                first_row: first,
                dim,
            };
            if let Some(items) = heap.seq(*c) {
                if items.len() != dim {
                    return Err(ragged(items.len()));
                }
                let values = items
                    .iter()
                    .map(|x| match x {
                        Value::Float(f) => Ok(*f),
                        Value::Int(i) => Ok(*i as f64),
                        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
                        other => Err(unsupported(
                            name,
                            format!(
                                "row {row}: vector element of type {} is not a number",
                                heap.type_name(*other)
                            ),
                        )),
                    })
                    .collect::<Result<Box<[f64]>, _>>()?;
                out.push(VectorCell::Values(values));
                continue;
            }
            let arr = self.vector_array(name, row, *c)?;
            if arr.shape[0] != dim {
                return Err(ragged(arr.shape[0]));
            }
            let Data::Raw(raw) = arr.data else {
                return Err(unsupported(
                    name,
                    format!("row {row} holds an object array, not numbers"),
                ));
            };
            if !arr.dtype.is_numeric() {
                return Err(unsupported(
                    name,
                    format!(
                        "row {row} holds a numpy array of dtype {}, not numbers",
                        arr.dtype.name()
                    ),
                ));
            }
            if raw.len() != dim * arr.dtype.size {
                return Err(bad(format!(
                    "column '{name}' row {row}: {} bytes for {dim} items of {}",
                    raw.len(),
                    arr.dtype.name()
                )));
            }
            let index = match dtypes.iter().position(|d| *d == arr.dtype) {
                Some(i) => i,
                None => {
                    dtypes.push(arr.dtype.clone());
                    dtypes.len() - 1
                }
            };
            let index = u8::try_from(index).map_err(|_| {
                unsupported(name, "more than 256 different dtypes among its vectors")
            })?;
            out.push(VectorCell::Raw(raw, index));
        }
        Ok(ColumnData::Vectors(VectorCells {
            cells: out,
            dtypes,
            dim,
            keep_float64: self.opts.keep_float64,
            nulls: nulls_from(valid),
            source: Some(self.src.share()),
        }))
    }

    // ------------------------------------------------------------------
    // pandas extension arrays
    // ------------------------------------------------------------------

    /// The columns held by an extension-array block value (usually one).
    pub fn extension_columns(
        &self,
        v: Value,
        k: usize,
        name_of: &dyn Fn(usize) -> String,
    ) -> Result<Vec<ArrayRef>, FrameError> {
        let heap = self.heap;
        let o = heap.object(v).ok_or_else(|| {
            unsupported(
                &name_of(0),
                format!("values of type {} are not supported", heap.type_name(v)),
            )
        })?;
        match o.kind() {
            Kind::UnpickleNDArrayBacked => {
                // __pyx_unpickle_NDArrayBacked(cls, checksum, state) + BUILD (dtype, ndarray, attrs)
                let args = heap.tuple(o.args).unwrap_or(&[]);
                let cls = args
                    .first()
                    .copied()
                    .ok_or_else(|| bad("NDArrayBacked without a class"))?;
                let state = match args.get(2) {
                    Some(s) if *s != Value::None => Some(*s),
                    _ => o.state,
                };
                let state = state.ok_or_else(|| bad("NDArrayBacked without its state"))?;
                let (dtype, values) = match heap.tuple(state) {
                    Some([dtype, values, ..]) => (*dtype, *values),
                    _ => match (heap.get(state, "_dtype"), heap.get(state, "_ndarray")) {
                        (Some(d), Some(a)) => (d, a),
                        _ => return Err(bad("NDArrayBacked state is not (dtype, ndarray, attrs)")),
                    },
                };
                self.ndarray_backed(heap.kind(cls), cls, dtype, values, k, name_of)
            }
            Kind::Categorical | Kind::DatetimeArray | Kind::TimedeltaArray | Kind::StringArray => {
                // Older pickles: NEWOBJ + BUILD with a __dict__ state.
                let state = o
                    .state
                    .ok_or_else(|| bad(format!("{} without its state", o.class_name())))?;
                let dtype = heap.get(state, "_dtype").unwrap_or(Value::None);
                let values = heap
                    .get(state, "_ndarray")
                    .or_else(|| heap.get(state, "_codes"))
                    .or_else(|| heap.get(state, "_data"))
                    .ok_or_else(|| bad(format!("{} state without its data", o.class_name())))?;
                self.ndarray_backed(
                    Some(o.kind()),
                    Value::Global(o.class),
                    dtype,
                    values,
                    k,
                    name_of,
                )
            }
            Kind::MaskedArray => {
                let state = o
                    .state
                    .ok_or_else(|| bad("masked array without its state"))?;
                let data = heap
                    .get(state, "_data")
                    .ok_or_else(|| bad("masked array without _data"))?;
                let mask = heap
                    .get(state, "_mask")
                    .ok_or_else(|| bad("masked array without _mask"))?;
                let data = self.ndarray(data)?;
                let mask = self.ndarray(mask)?;
                let (kd, n) = data.as_columns()?;
                let (km, nm) = mask.as_columns()?;
                if kd != k || km != k || n != nm || mask.dtype.kind != NpKind::Bool {
                    return Err(bad("masked array data and mask do not match"));
                }
                (0..k)
                    .map(|j| {
                        let m = mask.column_bytes(j)?;
                        let valid: Vec<bool> = m.iter().map(|b| *b == 0).collect();
                        let raw = data.column_bytes(j)?;
                        primitive_column(&name_of(j), &data.dtype, &raw, nulls_from(valid))
                    })
                    .collect()
            }
            Kind::ArrowStringArray => {
                if k != 1 {
                    return Err(bad("Arrow string block with more than one column"));
                }
                let state = o
                    .state
                    .ok_or_else(|| bad("ArrowStringArray without its state"))?;
                let pa = heap
                    .get(state, "_pa_array")
                    .or_else(|| heap.get(state, "_data"))
                    .ok_or_else(|| bad("ArrowStringArray without _pa_array"))?;
                Ok(vec![self.pyarrow_strings(&name_of(0), pa)?])
            }
            _ => Err(unsupported(
                &name_of(0),
                format!("values of type {} are not supported", o.class_name()),
            )),
        }
    }

    fn ndarray_backed(
        &self,
        kind: Option<Kind>,
        cls: Value,
        dtype: Value,
        values: Value,
        k: usize,
        name_of: &dyn Fn(usize) -> String,
    ) -> Result<Vec<ArrayRef>, FrameError> {
        let heap = self.heap;
        match kind {
            Some(Kind::DatetimeArray) | Some(Kind::TimedeltaArray) => {
                let arr = self.ndarray(values)?;
                if !arr.dtype.kind.is_time() {
                    return Err(bad("DatetimeArray over a non-datetime64 array"));
                }
                let tz = self.tz_of(dtype)?;
                let (kk, _) = arr.as_columns()?;
                if kk != k {
                    return Err(bad("datetime block shape does not match its placements"));
                }
                (0..k)
                    .map(|j| self.numeric_column(&name_of(j), &arr, j, tz.as_deref()))
                    .collect()
            }
            Some(Kind::StringArray) => {
                let arr = self.ndarray(values)?;
                let (kk, _) = arr.as_columns()?;
                if kk != k {
                    return Err(bad("string block shape does not match its placements"));
                }
                (0..k)
                    .map(|j| {
                        let cells = arr.column_objects(j)?;
                        self.object_column(&name_of(j), &cells)?.to_array()
                    })
                    .collect()
            }
            Some(Kind::Categorical) => {
                if k != 1 {
                    return Err(bad("categorical block with more than one column"));
                }
                Ok(vec![self.categorical(&name_of(0), dtype, values)?])
            }
            _ => Err(unsupported(
                &name_of(0),
                format!("values of type {} are not supported", heap.type_name(cls)),
            )),
        }
    }

    /// Time zone name of a DatetimeTZDtype (None for numpy datetime64).
    fn tz_of(&self, dtype: Value) -> Result<Option<String>, FrameError> {
        let heap = self.heap;
        let Some(o) = heap.object(dtype) else {
            return Ok(None);
        };
        if o.kind() != Kind::DatetimeTZDtype {
            return Ok(None);
        }
        let state = o
            .state
            .ok_or_else(|| bad("DatetimeTZDtype without its state"))?;
        if let Some(u) = heap.get(state, "unit").and_then(|u| heap.text(u)) {
            let _ = u; // the unit is also on the ndarray's dtype, which is authoritative
        }
        let tz = heap
            .get(state, "tz")
            .ok_or_else(|| bad("DatetimeTZDtype without tz"))?;
        Ok(Some(self.tz_name(tz)?))
    }

    fn tz_name(&self, tz: Value) -> Result<String, FrameError> {
        let heap = self.heap;
        if let Some(s) = heap.text(tz) {
            return Ok(s.to_string());
        }
        let o = heap.object(tz).ok_or_else(|| {
            FrameError::Unsupported(format!("time zone of type {}", heap.type_name(tz)))
        })?;
        let name = o.class_name();
        let args = heap.tuple(o.args).unwrap_or(&[]);
        match name.as_str() {
            "pytz._UTC" => Ok("UTC".into()),
            "pytz._p" | "zoneinfo.ZoneInfo._unpickle" => args
                .first()
                .and_then(|z| heap.text(*z))
                .map(str::to_string)
                .ok_or_else(|| bad("time zone without a name")),
            "datetime.timezone" => {
                let off = args
                    .first()
                    .copied()
                    .ok_or_else(|| bad("timezone without an offset"))?;
                let td = heap
                    .object(off)
                    .and_then(|t| heap.tuple(t.args))
                    .ok_or_else(|| bad("timezone offset is not a timedelta"))?;
                let g = |i: usize| td.get(i).and_then(|x| heap.int(*x)).unwrap_or(0);
                let secs = g(0) * 86_400 + g(1);
                if secs == 0 && g(2) == 0 {
                    return Ok("UTC".into());
                }
                let sign = if secs < 0 { '-' } else { '+' };
                let a = secs.abs();
                Ok(format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60))
            }
            _ => Err(FrameError::Unsupported(format!(
                "time zone {name} is not supported"
            ))),
        }
    }

    fn categorical(&self, name: &str, dtype: Value, codes: Value) -> Result<ArrayRef, FrameError> {
        let heap = self.heap;
        let dt = heap
            .object(dtype)
            .filter(|o| o.kind() == Kind::CategoricalDtype)
            .ok_or_else(|| {
                bad(format!(
                    "column '{name}': categorical without a CategoricalDtype"
                ))
            })?;
        let state = dt
            .state
            .ok_or_else(|| bad("CategoricalDtype without its state"))?;
        let cats = heap
            .get(state, "categories")
            .ok_or_else(|| bad("CategoricalDtype without categories"))?;
        let cat_values = self.index_values(name, cats)?;
        let codes = self.ndarray(codes)?;
        if codes.shape.len() != 1 || codes.dtype.kind != NpKind::Int {
            return Err(bad(format!(
                "column '{name}': categorical codes are not a 1-D int array"
            )));
        }
        let raw = codes.column_bytes(0)?;
        let ncat = cat_values.len() as i64;
        let be = codes.dtype.big_endian;
        macro_rules! dict {
            ($t:ty, $kt:ty) => {{
                let v = decode::<$t>(&raw, be)?;
                let mut valid = Vec::new();
                let mut keys = Vec::new();
                valid
                    .try_reserve_exact(v.len())
                    .and_then(|()| keys.try_reserve_exact(v.len()))
                    .map_err(|_| bad(format!("column '{name}': cannot allocate {} rows", v.len())))?;
                for (row, c) in v.into_iter().enumerate() {
                    let ci = c as i64;
                    if ci < 0 {
                        valid.push(false);
                        keys.push(0 as $t);
                    } else if ci >= ncat {
                        return Err(bad(format!(
                            "column '{name}': row {row} has category code {ci} but there are {ncat} categories"
                        )));
                    } else {
                        valid.push(true);
                        keys.push(c);
                    }
                }
                let keys = PrimitiveArray::<$kt>::new(keys.into(), nulls_from(valid));
                Arc::new(
                    DictionaryArray::<$kt>::try_new(keys, cat_values.clone())
                        .map_err(|e| bad(format!("column '{name}': {e}")))?,
                ) as ArrayRef
            }};
        }
        Ok(match codes.dtype.size {
            1 => dict!(i8, Int8Type),
            2 => dict!(i16, Int16Type),
            4 => dict!(i32, Int32Type),
            8 => dict!(i64, Int64Type),
            _ => return Err(bad("categorical codes of an odd width")),
        })
    }

    /// The values of an Index (categories) as one Arrow array.
    fn index_values(&self, name: &str, idx: Value) -> Result<ArrayRef, FrameError> {
        let heap = self.heap;
        let o = heap
            .object(idx)
            .ok_or_else(|| bad("categories are not an Index"))?;
        let d = match o.kind() {
            Kind::NewIndex => heap.tuple(o.args).and_then(|a| a.get(1).copied()),
            _ => None,
        }
        .ok_or_else(|| bad("categories are not an Index"))?;
        let data = heap
            .get(d, "data")
            .ok_or_else(|| bad("categories Index without data"))?;
        if super::ndarray::is_ndarray(heap, data) {
            let arr = self.ndarray(data)?;
            if arr.shape.len() != 1 {
                return Err(bad("categories are not 1-D"));
            }
            return self.ndarray_column(name, &arr, 0, None)?.to_array();
        }
        let cols = self.extension_columns(data, 1, &|_| name.to_string())?;
        cols.into_iter()
            .next()
            .ok_or_else(|| bad("empty categories"))
    }

    /// A pyarrow string array (`_restore_array` or `chunked_array`) as Utf8.
    fn pyarrow_strings(&self, name: &str, pa: Value) -> Result<ArrayRef, FrameError> {
        let heap = self.heap;
        let o = heap.object(pa).ok_or_else(|| {
            bad(format!(
                "column '{name}': Arrow data is a {}",
                heap.type_name(pa)
            ))
        })?;
        let mut b = StringBuilder::new();
        match o.kind() {
            Kind::PaRestoreArray => self.restore_strings(name, pa, &mut b)?,
            Kind::PaChunkedArray => {
                let chunks = heap
                    .tuple(o.args)
                    .and_then(|a| a.first().copied())
                    .and_then(|c| heap.seq(c))
                    .ok_or_else(|| bad("chunked_array without chunks"))?;
                for c in chunks {
                    self.restore_strings(name, *c, &mut b)?;
                }
            }
            _ => {
                return Err(bad(format!(
                    "column '{name}': Arrow data is a {}",
                    o.class_name()
                )))
            }
        }
        Ok(Arc::new(b.finish()))
    }

    fn restore_strings(
        &self,
        name: &str,
        v: Value,
        b: &mut StringBuilder,
    ) -> Result<(), FrameError> {
        let heap = self.heap;
        let o = heap
            .object(v)
            .filter(|o| o.kind() == Kind::PaRestoreArray)
            .ok_or_else(|| {
                bad(format!(
                    "column '{name}': Arrow chunk is a {}",
                    heap.type_name(v)
                ))
            })?;
        let st = heap
            .tuple(o.args)
            .and_then(|a| a.first().copied())
            .and_then(|s| heap.tuple(s))
            .ok_or_else(|| bad("_restore_array without its state tuple"))?;
        let [ty, length, _null_count, offset, buffers, ..] = st else {
            return Err(bad("_restore_array state is too short"));
        };
        let alias = heap
            .object(*ty)
            .filter(|t| t.kind() == Kind::PaTypeForAlias)
            .and_then(|t| heap.tuple(t.args))
            .and_then(|a| a.first().copied())
            .and_then(|a| heap.text(a))
            .ok_or_else(|| bad("Arrow type is not type_for_alias(...)"))?;
        let wide = match alias {
            "string" | "utf8" | "str" => false,
            "large_string" | "large_utf8" | "large_str" => true,
            other => {
                return Err(unsupported(
                    name,
                    format!("Arrow columns of type {other} are not supported"),
                ))
            }
        };
        let length = heap
            .int(*length)
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| bad("Arrow length"))?;
        let offset = heap
            .int(*offset)
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| bad("Arrow offset"))?;
        let bufs = heap
            .seq(*buffers)
            .ok_or_else(|| bad("Arrow buffers are not a list"))?;
        let buf = |i: usize| -> Result<Option<&bytes::Bytes>, FrameError> {
            match bufs.get(i).copied() {
                None | Some(Value::None) => Ok(None),
                Some(x) => {
                    let ob = heap
                        .object(x)
                        .filter(|p| p.kind() == Kind::PaPyBuffer)
                        .ok_or_else(|| bad("Arrow buffer is not py_buffer(...)"))?;
                    let data = heap
                        .tuple(ob.args)
                        .and_then(|a| a.first().copied())
                        .and_then(|d| heap.bytes_of(d))
                        .ok_or_else(|| bad("py_buffer without bytes"))?;
                    Ok(Some(data))
                }
            }
        };
        let validity = buf(0)?;
        let offsets = buf(1)?.map(|b| &b[..]).unwrap_or(&[]);
        let data = buf(2)?.cloned().unwrap_or_default();
        let end = offset
            .checked_add(length)
            .ok_or_else(|| bad("Arrow length overflows"))?;
        if length == 0 {
            return Ok(());
        }
        let nulls = match validity {
            None => None,
            Some(vb) => {
                // `BooleanBuffer::new` asserts this; checked first so that a
                // short buffer is an error, not a panic.
                if vb.len().saturating_mul(8) < end {
                    return Err(bad(format!(
                        "column '{name}': Arrow validity buffer is too short"
                    )));
                }
                let bits = BooleanBuffer::new(Buffer::from(vb.clone()), offset, length);
                Some(NullBuffer::new(bits))
            }
        };
        // arrow validates the offsets against the data and the text as UTF-8.
        if wide {
            let a = string_array::<i64>(name, offsets, data, offset, length, nulls)?;
            b.extend(a.iter());
        } else {
            let a = string_array::<i32>(name, offsets, data, offset, length, nulls)?;
            b.extend(a.iter());
        }
        Ok(())
    }
}

/// Rows `offset..offset + length` of a pyarrow (large) string array's
/// buffers, validated by arrow: offsets within the data, text UTF-8.
fn string_array<O: OffsetSizeTrait>(
    name: &str,
    offsets: &[u8],
    data: bytes::Bytes,
    offset: usize,
    length: usize,
    nulls: Option<NullBuffer>,
) -> Result<GenericStringArray<O>, FrameError> {
    let w = std::mem::size_of::<O>();
    let span = offset
        .checked_add(length)
        .and_then(|e| e.checked_add(1))
        .and_then(|n| n.checked_mul(w))
        .filter(|n| *n <= offsets.len())
        .ok_or_else(|| {
            bad(format!(
                "column '{name}': Arrow offsets buffer is too short"
            ))
        })?;
    // Copied into an aligned buffer: the pickle's bytes may not be aligned.
    let own = Buffer::from_slice_ref(&offsets[offset * w..span]);
    let scalars = ScalarBuffer::<O>::new(own, 0, length + 1);
    // `OffsetBuffer::new` asserts these (arrow 60 has no fallible
    // constructor); checked first so that bad offsets are an error.
    if scalars[0] < O::usize_as(0) || scalars.windows(2).any(|p| p[0] > p[1]) {
        return Err(bad(format!(
            "column '{name}': Arrow string offsets out of range"
        )));
    }
    GenericStringArray::<O>::try_new(OffsetBuffer::new(scalars), Buffer::from(data), nulls)
        .map_err(|e| bad(format!("column '{name}': Arrow strings: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets32(v: &[i32]) -> Vec<u8> {
        // One leading byte so that the offsets are not 4-byte aligned in it.
        let mut out = vec![0xee];
        out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        out
    }

    fn strings(
        offsets: &[i32],
        data: &[u8],
        offset: usize,
        length: usize,
    ) -> Result<Vec<Option<String>>, String> {
        let raw = offsets32(offsets);
        string_array::<i32>(
            "c",
            &raw[1..],
            bytes::Bytes::copy_from_slice(data),
            offset,
            length,
            None,
        )
        .map(|a| a.iter().map(|s| s.map(str::to_owned)).collect())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn pyarrow_string_buffers_are_validated_by_arrow() {
        let ok = |v: &[&str]| Ok(v.iter().map(|s| Some(s.to_string())).collect());
        assert_eq!(
            strings(&[0, 2, 2, 5], b"abcde", 0, 3),
            ok(&["ab", "", "cde"])
        );
        assert_eq!(strings(&[0, 2, 2, 5], b"abcde", 1, 2), ok(&["", "cde"]));
        let err = |r: Result<Vec<Option<String>>, String>, part: &str| {
            let e = r.unwrap_err();
            assert!(e.contains(part), "{e:?} lacks {part:?}");
        };
        err(
            strings(&[0, 2], b"abcde", 0, 2),
            "offsets buffer is too short",
        );
        err(
            strings(&[0, 2], b"abcde", usize::MAX, 2),
            "offsets buffer is too short",
        );
        err(strings(&[-1, 2], b"abcde", 0, 1), "offsets out of range");
        err(strings(&[0, 3, 2], b"abcde", 0, 2), "offsets out of range");
        err(strings(&[0, 9], b"abcde", 0, 1), "Arrow strings");
        err(strings(&[0, 2], b"\xff\xfe", 0, 1), "Arrow strings");
    }
}
