//! numpy arrays and dtypes as recorded by the pickle machine.

use bytes::Bytes;

use crate::pickle::{Heap, Kind, Value};

use super::FrameError;

/// Time unit of datetime64 / timedelta64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Seconds.
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

/// numpy's kind of a dtype (its kind character, parsed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpKind {
    /// `b` (or `?`): bool.
    Bool,
    /// `i`: signed int.
    Int,
    /// `u`: unsigned int.
    UInt,
    /// `f`: float.
    Float,
    /// `c`: complex.
    Complex,
    /// `M`: datetime64.
    Datetime,
    /// `m`: timedelta64.
    Timedelta,
    /// `O`: Python objects.
    Object,
    /// `U`: fixed-width UTF-32 text.
    Unicode,
    /// `S`: fixed-width bytes.
    Bytes,
    /// `V`: raw void.
    Void,
}

impl NpKind {
    /// The kind of a numpy kind character, if numpy has it.
    pub fn parse(c: u8) -> Option<NpKind> {
        Some(match c {
            b'b' | b'?' => NpKind::Bool,
            b'i' => NpKind::Int,
            b'u' => NpKind::UInt,
            b'f' => NpKind::Float,
            b'c' => NpKind::Complex,
            b'M' => NpKind::Datetime,
            b'm' => NpKind::Timedelta,
            b'O' => NpKind::Object,
            b'U' => NpKind::Unicode,
            b'S' => NpKind::Bytes,
            b'V' => NpKind::Void,
            _ => return None,
        })
    }

    /// datetime64 or timedelta64.
    pub fn is_time(self) -> bool {
        matches!(self, NpKind::Datetime | NpKind::Timedelta)
    }
}

/// A numpy dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct DType {
    /// What its items are.
    pub kind: NpKind,
    /// Item size in bytes.
    pub size: usize,
    /// Byte order is big-endian.
    pub big_endian: bool,
    /// Unit of M / m kinds.
    pub unit: Option<Unit>,
}

impl DType {
    /// numpy's name for messages ("float64", "datetime64[ns]", "object"...).
    pub fn name(&self) -> String {
        let bits = self.size * 8;
        match self.kind {
            NpKind::Bool => "bool".into(),
            NpKind::Int => format!("int{bits}"),
            NpKind::UInt => format!("uint{bits}"),
            NpKind::Float => format!("float{bits}"),
            NpKind::Complex => format!("complex{bits}"),
            NpKind::Object => "object".into(),
            NpKind::Unicode => format!("<U{}", self.size / 4),
            NpKind::Bytes => format!("|S{}", self.size),
            NpKind::Void => format!("|V{}", self.size),
            NpKind::Datetime | NpKind::Timedelta => {
                let base = if self.kind == NpKind::Datetime {
                    "datetime64"
                } else {
                    "timedelta64"
                };
                let unit = match self.unit {
                    Some(Unit::S) => "s",
                    Some(Unit::Ms) => "ms",
                    Some(Unit::Us) => "us",
                    Some(Unit::Ns) => "ns",
                    None => "?",
                };
                format!("{base}[{unit}]")
            }
        }
    }

    /// A plain number kind (bool, int, uint, float).
    pub fn is_numeric(&self) -> bool {
        matches!(
            self.kind,
            NpKind::Bool | NpKind::Int | NpKind::UInt | NpKind::Float
        )
    }
}

/// Element storage.
#[derive(Clone, Debug)]
pub enum Data<'h> {
    /// Raw bytes of fixed-size items.
    Raw(Bytes),
    /// Python objects (object dtype).
    Objects(&'h [Value]),
}

/// A numpy array.
#[derive(Clone, Debug)]
pub struct NdArray<'h> {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Data is in Fortran (column-major) order.
    pub fortran: bool,
    /// Elements.
    pub data: Data<'h>,
}

fn bad(what: impl Into<String>) -> FrameError {
    FrameError::Malformed(what.into())
}

/// Parse a `numpy.dtype(...)` record (REDUCE + BUILD state).
pub fn parse_dtype(heap: &Heap, v: Value) -> Result<DType, FrameError> {
    let o = heap
        .object(v)
        .filter(|o| o.kind() == Kind::NpDtype)
        .ok_or_else(|| {
            bad(format!(
                "expected a numpy dtype, found a {}",
                heap.type_name(v)
            ))
        })?;
    let args = heap.tuple(o.args).unwrap_or(&[]);
    let code = args
        .first()
        .and_then(|a| heap.text(*a))
        .ok_or_else(|| bad("numpy dtype without a type code"))?;
    let state = o.state.and_then(|s| heap.tuple(s)).unwrap_or(&[]);
    let endian = state.get(1).and_then(|e| heap.text(*e)).unwrap_or("|");
    if let Some(sub) = state.get(2) {
        if *sub != Value::None {
            return Err(FrameError::Unsupported(format!(
                "numpy sub-array dtype {code:?} is not supported"
            )));
        }
    }
    if let Some(names) = state.get(3) {
        if *names != Value::None {
            return Err(FrameError::Unsupported(
                "numpy structured (record) dtypes are not supported".into(),
            ));
        }
    }
    let elsize = state.get(5).and_then(|e| heap.int(*e));
    let code_b = code.as_bytes();
    let (kind, digits) = match code_b.first() {
        Some(b'<' | b'>' | b'=' | b'|') => (code_b.get(1).copied(), &code[2.min(code.len())..]),
        Some(&k) => (Some(k), &code[1..]),
        None => (None, ""),
    };
    let kind = kind.ok_or_else(|| bad("empty numpy dtype code"))?;
    let unsupported = || FrameError::Unsupported(format!("numpy dtype {code:?} is not supported"));
    let kind = NpKind::parse(kind).ok_or_else(unsupported)?;
    let size: usize = if digits.is_empty() {
        match (kind, elsize) {
            (NpKind::Unicode | NpKind::Bytes | NpKind::Void, Some(e)) if e >= 0 => e as usize,
            (NpKind::Bool, _) => 1,
            _ => return Err(bad(format!("numpy dtype {code:?} without an item size"))),
        }
    } else {
        let n: usize = digits.parse().map_err(|_| unsupported())?;
        match kind {
            // 'U5' counts characters of 4 bytes; the state's elsize has the bytes.
            NpKind::Unicode => elsize
                .filter(|e| *e >= 0)
                .map(|e| e as usize)
                .unwrap_or(n * 4),
            _ => n,
        }
    };
    let big_endian = match endian {
        ">" => true,
        "<" | "|" | "=" => false,
        other => return Err(bad(format!("unknown numpy byte order {other:?}"))),
    };
    let unit = if kind.is_time() {
        Some(datetime_unit(heap, state)?)
    } else {
        None
    };
    let ok = match kind {
        NpKind::Bool => size == 1,
        NpKind::Int | NpKind::UInt => matches!(size, 1 | 2 | 4 | 8),
        NpKind::Float => matches!(size, 2 | 4 | 8),
        NpKind::Complex => matches!(size, 8 | 16),
        NpKind::Datetime | NpKind::Timedelta => size == 8,
        NpKind::Object => size == 8 || size == 4,
        NpKind::Unicode => size.is_multiple_of(4),
        NpKind::Bytes | NpKind::Void => true,
    };
    if !ok {
        return Err(unsupported());
    }
    Ok(DType {
        kind,
        size,
        big_endian,
        unit,
    })
}

fn datetime_unit(heap: &Heap, state: &[Value]) -> Result<Unit, FrameError> {
    // version 4 state: (..., flags, (metadata_dict, (unit, num, den, events)))
    let meta = state.get(8).and_then(|m| heap.tuple(*m));
    let info = meta.and_then(|m| {
        m.iter().filter_map(|x| heap.tuple(*x)).find(|t| {
            t.first()
                .is_some_and(|u| heap.bytes_of(*u).is_some() || heap.text(*u).is_some())
        })
    });
    let Some(info) = info else {
        return Err(bad("datetime64 dtype without its unit"));
    };
    let unit_v = info[0];
    let unit: String = match heap.text(unit_v) {
        Some(t) => t.to_owned(),
        None => String::from_utf8_lossy(heap.bytes_of(unit_v).map(|b| &b[..]).unwrap_or(b""))
            .into_owned(),
    };
    let num = info.get(1).and_then(|n| heap.int(*n)).unwrap_or(1);
    if num != 1 {
        return Err(FrameError::Unsupported(format!(
            "datetime64 with a unit multiple ({num}{unit}) is not supported"
        )));
    }
    Ok(match unit.as_str() {
        "s" => Unit::S,
        "ms" => Unit::Ms,
        "us" => Unit::Us,
        "ns" => Unit::Ns,
        other => {
            return Err(FrameError::Unsupported(format!(
                "datetime64/timedelta64 unit {other:?} is not supported (s, ms, us, ns are)"
            )))
        }
    })
}

fn parse_shape(heap: &Heap, v: Value) -> Result<Vec<usize>, FrameError> {
    let dims: Vec<usize> = match v {
        Value::Int(n) => vec![usize::try_from(n).map_err(|_| bad("negative numpy dimension"))?],
        _ => {
            let items = heap
                .tuple(v)
                .or_else(|| heap.list(v))
                .ok_or_else(|| bad(format!("numpy shape is a {}", heap.type_name(v))))?;
            if items.len() > 32 {
                return Err(bad("numpy array with more than 32 dimensions"));
            }
            items
                .iter()
                .map(|d| {
                    heap.int(*d)
                        .and_then(|d| usize::try_from(d).ok())
                        .ok_or_else(|| bad("numpy dimension is not a non-negative int"))
                })
                .collect::<Result<_, _>>()?
        }
    };
    Ok(dims)
}

/// Number of elements of a shape (checked).
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d))
}

/// Whether `v` is a numpy array record.
pub fn is_ndarray(heap: &Heap, v: Value) -> bool {
    matches!(heap.kind(v), Some(Kind::NpReconstruct | Kind::NpFromBuffer))
        && matches!(v, Value::Object(_))
}

/// A small cache of parsed dtypes, keyed by the dtype record's handle (dtype
/// records are memoised, so thousands of cells share one).
#[derive(Default)]
pub struct DTypeCache {
    last: Option<(Value, DType)>,
}

impl DTypeCache {
    /// Parse (or reuse) the dtype at `v`.
    pub fn get(&mut self, heap: &Heap, v: Value) -> Result<DType, FrameError> {
        if let Some((k, d)) = &self.last {
            if *k == v {
                return Ok(d.clone());
            }
        }
        let d = parse_dtype(heap, v)?;
        self.last = Some((v, d.clone()));
        Ok(d)
    }
}

/// Parse a numpy array record (`_reconstruct` + BUILD, or `_frombuffer`).
pub fn parse_ndarray<'h>(
    heap: &'h Heap,
    v: Value,
    cache: &mut DTypeCache,
) -> Result<NdArray<'h>, FrameError> {
    let o = heap.object(v).ok_or_else(|| {
        bad(format!(
            "expected a numpy array, found a {}",
            heap.type_name(v)
        ))
    })?;
    let arr = match o.kind() {
        Kind::NpFromBuffer => {
            let args = heap.tuple(o.args).unwrap_or(&[]);
            let [buf, dtype, shape, order] = args else {
                return Err(bad("numpy _frombuffer takes (buffer, dtype, shape, order)"));
            };
            let data = heap
                .bytes_of(*buf)
                .ok_or_else(|| {
                    bad(format!(
                        "numpy _frombuffer buffer is a {}",
                        heap.type_name(*buf)
                    ))
                })?
                .clone();
            let dtype = cache.get(heap, *dtype)?;
            let shape = parse_shape(heap, *shape)?;
            let fortran = match heap.text(*order) {
                Some("F") => true,
                Some("C") | Some("A") | Some("K") => false,
                _ => return Err(bad("numpy _frombuffer order is not 'C' or 'F'")),
            };
            if dtype.kind == NpKind::Object {
                return Err(bad("numpy _frombuffer with object dtype"));
            }
            NdArray {
                dtype,
                shape,
                fortran,
                data: Data::Raw(data),
            }
        }
        Kind::NpReconstruct => {
            let args = heap.tuple(o.args).unwrap_or(&[]);
            match args.first().and_then(|c| heap.kind(*c)) {
                Some(Kind::NpNdarray) => {}
                _ => {
                    return Err(bad(
                        "numpy _reconstruct of something other than numpy.ndarray",
                    ))
                }
            }
            let state = o
                .state
                .and_then(|s| heap.tuple(s))
                .ok_or_else(|| bad("numpy array without its state (BUILD)"))?;
            let (shape, dtype, fortran, data) = match state {
                [_ver, shape, dtype, fortran, data] => (shape, dtype, fortran, data),
                [shape, dtype, fortran, data] => (shape, dtype, fortran, data),
                _ => return Err(bad(format!("numpy array state has {} items", state.len()))),
            };
            let dtype = cache.get(heap, *dtype)?;
            let shape = parse_shape(heap, *shape)?;
            let fortran = matches!(fortran, Value::Bool(true) | Value::Int(1));
            let data = if dtype.kind == NpKind::Object {
                Data::Objects(
                    heap.list(*data)
                        .or_else(|| heap.tuple(*data))
                        .ok_or_else(|| bad("object array data is not a list"))?,
                )
            } else {
                Data::Raw(
                    heap.bytes_of(*data)
                        .ok_or_else(|| {
                            bad(format!("numpy array data is a {}", heap.type_name(*data)))
                        })?
                        .clone(),
                )
            };
            NdArray {
                dtype,
                shape,
                fortran,
                data,
            }
        }
        _ => {
            return Err(bad(format!(
                "expected a numpy array, found a {}",
                o.class_name()
            )))
        }
    };
    let n = element_count(&arr.shape).ok_or_else(|| bad("numpy array shape overflows"))?;
    match &arr.data {
        Data::Raw(b) => {
            let want = n
                .checked_mul(arr.dtype.size)
                .ok_or_else(|| bad("numpy array size overflows"))?;
            if b.len() != want {
                return Err(bad(format!(
                    "numpy array of shape {:?} and dtype {} needs {want} bytes but has {}",
                    arr.shape,
                    arr.dtype.name(),
                    b.len()
                )));
            }
        }
        Data::Objects(items) => {
            if items.len() != n {
                return Err(bad(format!(
                    "object array of shape {:?} needs {n} items but has {}",
                    arr.shape,
                    items.len()
                )));
            }
        }
    }
    Ok(arr)
}

impl<'h> NdArray<'h> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        element_count(&self.shape).unwrap_or(0)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (rows-of-block, length) view: a 1-D array is one column of `n`; a 2-D
    /// array of shape (k, n) is k columns of n.
    pub fn as_columns(&self) -> Result<(usize, usize), FrameError> {
        match self.shape.as_slice() {
            [n] => Ok((1, *n)),
            [k, n] => Ok((*k, *n)),
            s => Err(bad(format!(
                "expected a 1-D or 2-D array, found shape {s:?}"
            ))),
        }
    }

    /// Flat element index of (column j, row i) for the `as_columns` view.
    #[inline]
    pub fn flat(&self, j: usize, i: usize) -> usize {
        match self.shape.as_slice() {
            [_] => i,
            [k, n] => {
                if self.fortran {
                    i * k + j
                } else {
                    j * n + i
                }
            }
            _ => i,
        }
    }

    /// Bytes of column `j` (contiguous copy when strided).
    pub fn column_bytes(&self, j: usize) -> Result<std::borrow::Cow<'_, [u8]>, FrameError> {
        let Data::Raw(b) = &self.data else {
            return Err(bad("not a fixed-size array"));
        };
        let (k, n) = self.as_columns()?;
        let sz = self.dtype.size;
        if k == 1 || !self.fortran {
            let s = self.flat(j, 0) * sz;
            Ok(std::borrow::Cow::Borrowed(&b[s..s + n * sz]))
        } else {
            let mut out = Vec::new();
            out.try_reserve_exact(n.saturating_mul(sz))
                .map_err(|_| bad(format!("cannot allocate a column of {n} items")))?;
            for i in 0..n {
                let s = self.flat(j, i) * sz;
                out.extend_from_slice(&b[s..s + sz]);
            }
            Ok(std::borrow::Cow::Owned(out))
        }
    }

    /// Objects of column `j`.
    pub fn column_objects(&self, j: usize) -> Result<Vec<Value>, FrameError> {
        let Data::Objects(items) = &self.data else {
            return Err(bad("not an object array"));
        };
        let (_, n) = self.as_columns()?;
        Ok((0..n).map(|i| items[self.flat(j, i)]).collect())
    }
}

/// A number numpy stores as raw bytes of either byte order: the one way
/// every fixed-size column, label and scalar is decoded.
pub trait Element: Copy {
    /// Width in bytes.
    const SIZE: usize;
    /// The value in `b` (exactly [`Self::SIZE`] bytes), in that byte order.
    fn read(b: &[u8], big_endian: bool) -> Option<Self>;
}

macro_rules! element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn read(b: &[u8], big_endian: bool) -> Option<Self> {
                let a = b.try_into().ok()?;
                Some(if big_endian { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) })
            }
        }
    )*};
}
element!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

/// Every whole element of `raw`, in memory reserved with `try_reserve` (so
/// that an allocation failure is an error, not an abort).
pub fn decode<T: Element>(raw: &[u8], big_endian: bool) -> Result<Vec<T>, FrameError> {
    let n = raw.len() / T::SIZE;
    let mut out = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| bad(format!("cannot allocate {n} items of {} bytes", T::SIZE)))?;
    out.extend(
        raw.chunks_exact(T::SIZE)
            .filter_map(|c| T::read(c, big_endian)),
    );
    Ok(out)
}

/// Decode an int or uint element (any width) exactly.
pub fn element_int(dtype: &DType, b: &[u8]) -> Option<i128> {
    let be = dtype.big_endian;
    Some(match (dtype.kind, dtype.size) {
        (NpKind::Int, 1) => i8::read(b, be)?.into(),
        (NpKind::Int, 2) => i16::read(b, be)?.into(),
        (NpKind::Int, 4) => i32::read(b, be)?.into(),
        (NpKind::Int, 8) => i64::read(b, be)?.into(),
        (NpKind::UInt, 1) => u8::read(b, be)?.into(),
        (NpKind::UInt, 2) => u16::read(b, be)?.into(),
        (NpKind::UInt, 4) => u32::read(b, be)?.into(),
        (NpKind::UInt, 8) => u64::read(b, be)?.into(),
        _ => return None,
    })
}

/// Decode a fixed-size numeric element to f64 (for vector cells and scalars).
#[inline]
pub fn element_f64(dtype: &DType, b: &[u8]) -> Option<f64> {
    let be = dtype.big_endian;
    Some(match (dtype.kind, dtype.size) {
        (NpKind::Float, 8) => f64::read(b, be)?,
        (NpKind::Float, 4) => f32::read(b, be)?.into(),
        (NpKind::Float, 2) => half_to_f64(u16::read(b, be)?),
        (NpKind::Int, 1) => i8::read(b, be)?.into(),
        (NpKind::Int, 2) => i16::read(b, be)?.into(),
        (NpKind::Int, 4) => i32::read(b, be)?.into(),
        (NpKind::Int, 8) => i64::read(b, be)? as f64,
        (NpKind::UInt, 1) => u8::read(b, be)?.into(),
        (NpKind::UInt, 2) => u16::read(b, be)?.into(),
        (NpKind::UInt, 4) => u32::read(b, be)?.into(),
        (NpKind::UInt, 8) => u64::read(b, be)? as f64,
        (NpKind::Bool, 1) => f64::from(u8::from(*b.first()? != 0)),
        _ => return None,
    })
}

/// IEEE half (numpy float16) bits to f64, exactly (arrow's `f16`).
pub fn half_to_f64(bits: u16) -> f64 {
    type F16 = <arrow_array::types::Float16Type as arrow_array::ArrowPrimitiveType>::Native;
    F16::from_bits(bits).to_f64()
}
