//! The object graph the machine builds: small `Copy` handles into one arena.
//!
//! Containers live in [`Heap`] vectors and values refer to them by index, so a
//! value is 16 bytes, cloning is free, cycles (a list appended to itself) cost
//! nothing and dropping a deeply nested graph never recurses.

use bytes::Bytes;

use super::allow::{self, Kind};

/// One Python value, as a handle into a [`Heap`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An int that fits in 64 bits.
    Int(i64),
    /// A larger int: little-endian two's complement bytes in `Heap::bigints`.
    BigInt(u32),
    /// A float.
    Float(f64),
    /// A `str` (valid UTF-8) in `Heap::strs`.
    Str(u32),
    /// `bytes` in `Heap::bytes`.
    Bytes(u32),
    /// `bytearray` in `Heap::bytes`.
    ByteArray(u32),
    /// A Python 2 `str` (STRING / BINSTRING opcodes): raw bytes in `Heap::bytes`.
    LegacyStr(u32),
    /// A tuple: `Heap::tuples`.
    Tuple(u32),
    /// A list: `Heap::lists`.
    List(u32),
    /// A dict: `Heap::dicts` (pairs in insertion order).
    Dict(u32),
    /// A set: `Heap::sets`.
    Set(u32),
    /// A frozenset: `Heap::sets`.
    FrozenSet(u32),
    /// An allow-listed global: index into [`allow::TABLE`].
    Global(u16),
    /// A recorded construction (REDUCE, NEWOBJ, ...): `Heap::objects`.
    Object(u32),
}

/// How an [`Object`] came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// `callable(*args)` (REDUCE, or INST / OBJ).
    Call,
    /// `cls.__new__(cls, *args, **kwargs)` (NEWOBJ, NEWOBJ_EX, `copyreg.__newobj__`).
    New,
    /// `copyreg._reconstructor(cls, base, state)`.
    Reconstructor,
}

/// A construction that was recorded, never performed.
#[derive(Clone, Debug)]
pub struct Object {
    /// The allow-listed callable or class.
    pub class: u16,
    /// How it was invoked.
    pub how: How,
    /// Positional arguments (a `Tuple`, or `None` when there were none).
    pub args: Value,
    /// Keyword arguments (NEWOBJ_EX), if any.
    pub kwargs: Option<Value>,
    /// State given by BUILD (`__setstate__`), if any.
    pub state: Option<Value>,
    /// Items given by APPEND / APPENDS.
    pub list_items: Vec<Value>,
    /// Items given by SETITEM / SETITEMS.
    pub dict_items: Vec<(Value, Value)>,
    /// Byte offset of the opcode that made it.
    pub offset: u64,
}

impl Object {
    /// What the callable / class stands for.
    pub fn kind(&self) -> Kind {
        allow::entry(self.class).kind
    }

    /// `module.name` of the callable / class.
    pub fn class_name(&self) -> String {
        let e = allow::entry(self.class);
        format!("{}.{}", e.module, e.name)
    }
}

/// Storage for every container and payload the machine made.
#[derive(Default, Debug)]
pub struct Heap {
    /// `str` payloads (validated UTF-8; mostly zero-copy slices of the input).
    pub strs: Vec<Bytes>,
    /// `bytes` / `bytearray` / Python 2 `str` payloads.
    pub bytes: Vec<Bytes>,
    /// Big ints, little-endian two's complement.
    pub bigints: Vec<Bytes>,
    /// Tuples as `(start, len)` into `tuple_items`.
    pub tuples: Vec<(u32, u32)>,
    /// Items of all tuples, back to back.
    pub tuple_items: Vec<Value>,
    /// Lists.
    pub lists: Vec<Vec<Value>>,
    /// Dicts (insertion order, later duplicates override on lookup).
    pub dicts: Vec<Vec<(Value, Value)>>,
    /// Sets and frozensets.
    pub sets: Vec<Vec<Value>>,
    /// Recorded constructions.
    pub objects: Vec<Object>,
}

impl Heap {
    /// The text of a `Str`.
    pub fn str(&self, v: Value) -> Option<&str> {
        match v {
            // SAFETY: every `Str` is validated as UTF-8 when the machine makes it
            // (`Machine::push_str`) and payloads are never mutated afterwards.
            Value::Str(i) => Some(unsafe { std::str::from_utf8_unchecked(&self.strs[i as usize]) }),
            _ => None,
        }
    }

    /// Text of a `Str`, or of a Python 2 `str` that is ASCII/UTF-8.
    pub fn text(&self, v: Value) -> Option<&str> {
        match v {
            Value::Str(_) => self.str(v),
            Value::LegacyStr(i) => std::str::from_utf8(&self.bytes[i as usize]).ok(),
            _ => None,
        }
    }

    /// The payload of `bytes`, `bytearray` or a Python 2 `str`.
    pub fn bytes_of(&self, v: Value) -> Option<&Bytes> {
        match v {
            Value::Bytes(i) | Value::ByteArray(i) | Value::LegacyStr(i) => {
                Some(&self.bytes[i as usize])
            }
            _ => None,
        }
    }

    /// Items of a tuple.
    pub fn tuple(&self, v: Value) -> Option<&[Value]> {
        match v {
            Value::Tuple(i) => {
                let (s, l) = self.tuples[i as usize];
                Some(&self.tuple_items[s as usize..(s + l) as usize])
            }
            _ => None,
        }
    }

    /// Items of a list.
    pub fn list(&self, v: Value) -> Option<&[Value]> {
        match v {
            Value::List(i) => Some(&self.lists[i as usize]),
            _ => None,
        }
    }

    /// Items of a tuple or a list.
    pub fn seq(&self, v: Value) -> Option<&[Value]> {
        self.tuple(v).or_else(|| self.list(v))
    }

    /// Pairs of a dict.
    pub fn dict(&self, v: Value) -> Option<&[(Value, Value)]> {
        match v {
            Value::Dict(i) => Some(&self.dicts[i as usize]),
            _ => None,
        }
    }

    /// `d[key]` for a dict with str keys (the last duplicate wins, as in Python).
    pub fn get(&self, d: Value, key: &str) -> Option<Value> {
        self.dict(d)?
            .iter()
            .rev()
            .find(|(k, _)| self.text(*k) == Some(key))
            .map(|(_, v)| *v)
    }

    /// The recorded construction behind an `Object`.
    pub fn object(&self, v: Value) -> Option<&Object> {
        match v {
            Value::Object(i) => Some(&self.objects[i as usize]),
            _ => None,
        }
    }

    /// The kind of a global, or of the callable behind an object.
    pub fn kind(&self, v: Value) -> Option<Kind> {
        match v {
            Value::Global(g) => Some(allow::entry(g).kind),
            Value::Object(_) => self.object(v).map(Object::kind),
            _ => None,
        }
    }

    /// Python type name of a value, for error messages.
    pub fn type_name(&self, v: Value) -> String {
        match v {
            Value::None => "NoneType".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::ByteArray(_) => "bytearray".into(),
            Value::LegacyStr(_) => "str (Python 2)".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::List(_) => "list".into(),
            Value::Dict(_) => "dict".into(),
            Value::Set(_) => "set".into(),
            Value::FrozenSet(_) => "frozenset".into(),
            Value::Global(g) => {
                let e = allow::entry(g);
                format!("{}.{} (a class or function)", e.module, e.name)
            }
            Value::Object(_) => {
                let o = self.object(v).expect("object handle"); // invariant: matched Value::Object above
                match o.kind() {
                    Kind::NpReconstruct | Kind::NpFromBuffer => "numpy.ndarray".into(),
                    Kind::NpScalar => "numpy scalar".into(),
                    _ => o.class_name(),
                }
            }
        }
    }

    /// The int value of an `Int` or `Bool` (Python bools are ints).
    pub fn int(&self, v: Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(i),
            Value::Bool(b) => Some(b as i64),
            Value::BigInt(i) => {
                bigint_to_i128(&self.bigints[i as usize]).and_then(|x| i64::try_from(x).ok())
            }
            _ => None,
        }
    }

    /// `str(v)` for the scalar kinds a column label can be; `None` when the
    /// value is not one of them. Containers recurse at most `depth` levels.
    pub fn py_str(&self, v: Value, depth: usize) -> Option<String> {
        match v {
            Value::Str(_) | Value::LegacyStr(_) => self.text(v).map(str::to_owned),
            _ => self.py_repr(v, depth),
        }
    }

    /// `repr(v)` for scalars and small containers (used inside tuples).
    pub fn py_repr(&self, v: Value, depth: usize) -> Option<String> {
        Some(match v {
            Value::None => "None".into(),
            Value::Bool(true) => "True".into(),
            Value::Bool(false) => "False".into(),
            Value::Int(i) => i.to_string(),
            Value::BigInt(i) => bigint_to_decimal(&self.bigints[i as usize])?,
            Value::Float(f) => py_float_repr(f),
            Value::Str(_) | Value::LegacyStr(_) => py_str_repr(self.text(v)?),
            Value::Bytes(_) => {
                let b = self.bytes_of(v)?;
                let mut s = String::from("b'");
                for &c in b.iter() {
                    match c {
                        b'\\' => s.push_str("\\\\"),
                        b'\'' => s.push_str("\\'"),
                        b'\n' => s.push_str("\\n"),
                        b'\r' => s.push_str("\\r"),
                        b'\t' => s.push_str("\\t"),
                        0x20..=0x7e => s.push(c as char),
                        _ => s.push_str(&format!("\\x{c:02x}")),
                    }
                }
                s.push('\'');
                s
            }
            Value::Tuple(_) if depth > 0 => {
                let items = self.tuple(v)?;
                let parts: Option<Vec<String>> =
                    items.iter().map(|x| self.py_repr(*x, depth - 1)).collect();
                let parts = parts?;
                if parts.len() == 1 {
                    format!("({},)", parts[0])
                } else {
                    format!("({})", parts.join(", "))
                }
            }
            _ => return None,
        })
    }
}

/// Python's `repr(float)`: shortest round-trip digits, `.0` for integral
/// values, exponent form outside 1e-4 ≤ |x| < 1e16.
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let a = f.abs();
    if (1e-4..1e16).contains(&a) {
        let s = format!("{f}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        // Rust's `{:e}` gives shortest digits as `1.5e20` / `1e-5`.
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').expect("exponent"); // invariant: `{:e}` output always has an `e`
        let exp: i32 = exp.parse().expect("exponent digits"); // invariant: `{:e}` writes the exponent as an integer
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    }
}

/// Python's `repr(str)` (quotes chosen like CPython; printable non-ASCII kept).
pub fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Little-endian two's complement bytes to i128, if they fit.
pub fn bigint_to_i128(b: &[u8]) -> Option<i128> {
    if b.is_empty() {
        return Some(0);
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    // Strip redundant sign-extension bytes.
    let fill = if neg { 0xff } else { 0x00 };
    let mut n = b.len();
    while n > 1 && b[n - 1] == fill && (b[n - 2] & 0x80 != 0) == neg {
        n -= 1;
    }
    if n > 16 {
        return None;
    }
    let mut buf = [fill; 16];
    buf[..n].copy_from_slice(&b[..n]);
    Some(i128::from_le_bytes(buf))
}

/// Decimal text of a little-endian two's complement int (at most 4 KiB of
/// bytes; larger ones are not formatted).
pub fn bigint_to_decimal(b: &[u8]) -> Option<String> {
    if let Some(v) = bigint_to_i128(b) {
        return Some(v.to_string());
    }
    if b.len() > 4096 {
        return None;
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    // Magnitude as little-endian u32 limbs.
    let mut mag: Vec<u8> = b.to_vec();
    if neg {
        // two's complement negate
        let mut carry = 1u16;
        for x in mag.iter_mut() {
            let v = (!*x) as u16 + carry;
            *x = v as u8;
            carry = v >> 8;
        }
    }
    let mut limbs: Vec<u32> = mag
        .chunks(4)
        .map(|c| {
            let mut a = [0u8; 4];
            a[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(a)
        })
        .collect();
    let mut digits = Vec::new();
    while limbs.iter().any(|&l| l != 0) {
        let mut rem = 0u64;
        for l in limbs.iter_mut().rev() {
            let cur = (rem << 32) | *l as u64;
            *l = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        digits.push(rem as u32);
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
    }
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    match digits.pop() {
        None => s.push('0'),
        Some(d) => s.push_str(&d.to_string()),
    }
    for d in digits.iter().rev() {
        s.push_str(&format!("{d:09}"));
    }
    Some(s)
}
