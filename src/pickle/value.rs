//! The object graph the machine builds: small `Copy` handles into one arena.
//!
//! Containers live in [`Heap`] vectors and values refer to them by index, so a
//! value is 16 bytes, cloning is free, cycles (a list appended to itself) cost
//! nothing and dropping a deeply nested graph never recurses.

use bytes::Bytes;

use super::{
    allow::{self, GlobalId, Kind},
    budget::{Budget, Exhausted},
};

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident,)*) => {$(
        $(#[$doc])*
        ///
        /// Only the [`Heap`] that stored the item makes one, so looking it up
        /// in that heap cannot fail. (An id used with another heap is a bug:
        /// it finds another item of the same kind, or panics; never undefined
        /// behaviour.)
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(u32);

        impl $name {
            /// Position in the heap's vector of this kind.
            pub(super) fn index(self) -> usize {
                self.0 as usize
            }
        }
    )*};
}

ids! {
    /// A `str` in a [`Heap`].
    StrId,
    /// A `bytes`, `bytearray` or Python 2 `str` payload in a [`Heap`].
    BytesId,
    /// A big int in a [`Heap`].
    BigIntId,
    /// A tuple in a [`Heap`].
    TupleId,
    /// A list in a [`Heap`].
    ListId,
    /// A dict in a [`Heap`].
    DictId,
    /// A set or frozenset in a [`Heap`].
    SetId,
    /// A recorded construction in a [`Heap`].
    ObjectId,
}

/// One Python value, as a handle into a [`Heap`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An int that fits in 64 bits.
    Int(i64),
    /// A larger int: little-endian two's complement bytes ([`Heap::bigint`]).
    BigInt(BigIntId),
    /// A float.
    Float(f64),
    /// A `str` ([`Heap::string`]).
    Str(StrId),
    /// `bytes` ([`Heap::payload`]).
    Bytes(BytesId),
    /// `bytearray` ([`Heap::payload`]).
    ByteArray(BytesId),
    /// A Python 2 `str` (STRING / BINSTRING opcodes): raw bytes ([`Heap::payload`]).
    LegacyStr(BytesId),
    /// A tuple ([`Heap::tuple_items`]).
    Tuple(TupleId),
    /// A list ([`Heap::list_items`]).
    List(ListId),
    /// A dict, pairs in insertion order ([`Heap::dict_pairs`]).
    Dict(DictId),
    /// A set ([`Heap::set_items`]).
    Set(SetId),
    /// A frozenset ([`Heap::set_items`]).
    FrozenSet(SetId),
    /// An allow-listed global.
    Global(GlobalId),
    /// A recorded construction (REDUCE, NEWOBJ, ...) ([`Heap::obj`]).
    Object(ObjectId),
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
    pub class: GlobalId,
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
        self.class.kind()
    }

    /// `module.name` of the callable / class.
    pub fn class_name(&self) -> String {
        let e = allow::entry(self.class);
        format!("{}.{}", e.module, e.name)
    }
}

/// Bytes that are valid UTF-8: the only way in is [`Utf8Bytes::new`], which
/// checks, and `Bytes` never changes its contents.
#[derive(Clone, Debug)]
pub(super) struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// `b` if it is valid UTF-8.
    pub(super) fn new(b: Bytes) -> Option<Utf8Bytes> {
        std::str::from_utf8(&b).is_ok().then_some(Utf8Bytes(b))
    }

    /// The same bytes, as the raw payload.
    pub(super) fn bytes(&self) -> &Bytes {
        &self.0
    }

    fn as_str(&self) -> &str {
        // SAFETY: `Utf8Bytes::new` is the only constructor and it checks that
        // the bytes are UTF-8; the field is private to this module, and
        // `Bytes` gives no way to change its contents, so they are still the
        // bytes that were checked. (For a memory-mapped input that also needs
        // the file to stay unchanged during the run: the precondition taken
        // on where the map is made, `PickleSource::open`.)
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

/// Storage for every container and payload the machine made. Only the
/// machine adds to it (every addition within its memory [`Budget`]); readers
/// get it from [`super::Loaded`] and look values up by their typed ids.
#[derive(Debug)]
pub struct Heap {
    /// `str` payloads (mostly zero-copy slices of the input).
    strs: Vec<Utf8Bytes>,
    /// `bytes` / `bytearray` / Python 2 `str` payloads.
    bytes: Vec<Bytes>,
    /// Big ints, little-endian two's complement.
    bigints: Vec<Bytes>,
    /// Tuples as `(start, len)` into `tuple_items`.
    tuples: Vec<(u32, u32)>,
    /// Items of all tuples, back to back.
    tuple_items: Vec<Value>,
    /// Lists.
    lists: Vec<Vec<Value>>,
    /// Dicts (insertion order, later duplicates override on lookup).
    dicts: Vec<Vec<(Value, Value)>>,
    /// Sets and frozensets.
    sets: Vec<Vec<Value>>,
    /// Recorded constructions.
    objects: Vec<Object>,
}

/// Append `item` to `v` within `budget`; its position as a 32-bit id.
fn add<T>(v: &mut Vec<T>, item: T, budget: &mut Budget) -> Result<u32, Exhausted> {
    let i = u32::try_from(v.len()).map_err(|_| Exhausted::Count)?;
    budget.reserve(v, 1)?;
    v.push(item);
    Ok(i)
}

impl Heap {
    /// An empty heap (for the machine).
    pub(super) fn new() -> Heap {
        Heap {
            strs: Vec::new(),
            bytes: Vec::new(),
            bigints: Vec::new(),
            tuples: Vec::new(),
            tuple_items: Vec::new(),
            lists: Vec::new(),
            dicts: Vec::new(),
            sets: Vec::new(),
            objects: Vec::new(),
        }
    }

    // ---------- adding (the machine only) ----------

    pub(super) fn add_str(&mut self, s: Utf8Bytes, b: &mut Budget) -> Result<StrId, Exhausted> {
        add(&mut self.strs, s, b).map(StrId)
    }

    pub(super) fn add_bytes(&mut self, p: Bytes, b: &mut Budget) -> Result<BytesId, Exhausted> {
        add(&mut self.bytes, p, b).map(BytesId)
    }

    pub(super) fn add_bigint(&mut self, p: Bytes, b: &mut Budget) -> Result<BigIntId, Exhausted> {
        add(&mut self.bigints, p, b).map(BigIntId)
    }

    /// A tuple of `items` (copied).
    pub(super) fn add_tuple(
        &mut self,
        items: &[Value],
        b: &mut Budget,
    ) -> Result<TupleId, Exhausted> {
        let start = u32::try_from(self.tuple_items.len()).map_err(|_| Exhausted::Count)?;
        let len = u32::try_from(items.len()).map_err(|_| Exhausted::Count)?;
        start.checked_add(len).ok_or(Exhausted::Count)?;
        b.reserve(&mut self.tuple_items, items.len())?;
        let id = add(&mut self.tuples, (start, len), b)?;
        self.tuple_items.extend_from_slice(items);
        Ok(TupleId(id))
    }

    /// A list that takes `items` (their capacity is charged).
    pub(super) fn add_list(
        &mut self,
        items: Vec<Value>,
        b: &mut Budget,
    ) -> Result<ListId, Exhausted> {
        b.charge(std::mem::size_of_val(items.as_slice()) + spare::<Value>(&items))?;
        add(&mut self.lists, items, b).map(ListId)
    }

    /// A dict that takes `pairs` (their capacity is charged).
    pub(super) fn add_dict(
        &mut self,
        pairs: Vec<(Value, Value)>,
        b: &mut Budget,
    ) -> Result<DictId, Exhausted> {
        b.charge(std::mem::size_of_val(pairs.as_slice()) + spare(&pairs))?;
        add(&mut self.dicts, pairs, b).map(DictId)
    }

    /// A set that takes `items` (their capacity is charged).
    pub(super) fn add_set(
        &mut self,
        items: Vec<Value>,
        b: &mut Budget,
    ) -> Result<SetId, Exhausted> {
        b.charge(std::mem::size_of_val(items.as_slice()) + spare(&items))?;
        add(&mut self.sets, items, b).map(SetId)
    }

    pub(super) fn add_object(&mut self, o: Object, b: &mut Budget) -> Result<ObjectId, Exhausted> {
        add(&mut self.objects, o, b).map(ObjectId)
    }

    /// Append to a list within `budget`.
    pub(super) fn extend_list(
        &mut self,
        id: ListId,
        items: &[Value],
        b: &mut Budget,
    ) -> Result<(), Exhausted> {
        b.extend(&mut self.lists[id.index()], items)
    }

    /// Add pairs to a dict within `budget`.
    pub(super) fn extend_dict(
        &mut self,
        id: DictId,
        pairs: &[(Value, Value)],
        b: &mut Budget,
    ) -> Result<(), Exhausted> {
        b.extend(&mut self.dicts[id.index()], pairs)
    }

    /// Add items to a set within `budget`.
    pub(super) fn extend_set(
        &mut self,
        id: SetId,
        items: &[Value],
        b: &mut Budget,
    ) -> Result<(), Exhausted> {
        b.extend(&mut self.sets[id.index()], items)
    }

    /// A recorded construction, to change (BUILD, APPENDS, SETITEMS on an
    /// object). Growing its item vectors goes through the budget.
    pub(super) fn obj_mut(&mut self, id: ObjectId) -> &mut Object {
        &mut self.objects[id.index()]
    }

    // ---------- typed lookups (infallible) ----------

    /// The text of a `str`.
    pub fn string(&self, id: StrId) -> &str {
        self.strs[id.index()].as_str()
    }

    /// The payload of `bytes`, `bytearray` or a Python 2 `str`.
    pub fn payload(&self, id: BytesId) -> &Bytes {
        &self.bytes[id.index()]
    }

    /// A big int's little-endian two's complement bytes.
    pub fn bigint(&self, id: BigIntId) -> &Bytes {
        &self.bigints[id.index()]
    }

    /// Items of a tuple.
    pub fn tuple_items(&self, id: TupleId) -> &[Value] {
        let (s, l) = self.tuples[id.index()];
        // `add_tuple` checked that `s + l` fits and pushed the items first.
        &self.tuple_items[s as usize..s as usize + l as usize]
    }

    /// Items of a list.
    pub fn list_items(&self, id: ListId) -> &[Value] {
        &self.lists[id.index()]
    }

    /// Pairs of a dict.
    pub fn dict_pairs(&self, id: DictId) -> &[(Value, Value)] {
        &self.dicts[id.index()]
    }

    /// Items of a set or frozenset.
    pub fn set_items(&self, id: SetId) -> &[Value] {
        &self.sets[id.index()]
    }

    /// A recorded construction.
    pub fn obj(&self, id: ObjectId) -> &Object {
        &self.objects[id.index()]
    }

    /// The raw bytes of a `str` (what `_codecs.encode(s, 'utf-8')` gives).
    pub(super) fn str_bytes(&self, id: StrId) -> &Bytes {
        self.strs[id.index()].bytes()
    }

    // ---------- lookups by value ----------

    /// The text of a `Str`.
    pub fn str(&self, v: Value) -> Option<&str> {
        match v {
            Value::Str(id) => Some(self.string(id)),
            _ => None,
        }
    }

    /// Text of a `Str`, or of a Python 2 `str` that is ASCII/UTF-8.
    pub fn text(&self, v: Value) -> Option<&str> {
        match v {
            Value::Str(id) => Some(self.string(id)),
            Value::LegacyStr(id) => std::str::from_utf8(self.payload(id)).ok(),
            _ => None,
        }
    }

    /// The payload of `bytes`, `bytearray` or a Python 2 `str`.
    pub fn bytes_of(&self, v: Value) -> Option<&Bytes> {
        match v {
            Value::Bytes(id) | Value::ByteArray(id) | Value::LegacyStr(id) => {
                Some(self.payload(id))
            }
            _ => None,
        }
    }

    /// Items of a tuple.
    pub fn tuple(&self, v: Value) -> Option<&[Value]> {
        match v {
            Value::Tuple(id) => Some(self.tuple_items(id)),
            _ => None,
        }
    }

    /// Items of a list.
    pub fn list(&self, v: Value) -> Option<&[Value]> {
        match v {
            Value::List(id) => Some(self.list_items(id)),
            _ => None,
        }
    }

    /// Items of a tuple or a list.
    pub fn seq(&self, v: Value) -> Option<&[Value]> {
        match v {
            Value::Tuple(id) => Some(self.tuple_items(id)),
            Value::List(id) => Some(self.list_items(id)),
            _ => None,
        }
    }

    /// Pairs of a dict.
    pub fn dict(&self, v: Value) -> Option<&[(Value, Value)]> {
        match v {
            Value::Dict(id) => Some(self.dict_pairs(id)),
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
            Value::Object(id) => Some(self.obj(id)),
            _ => None,
        }
    }

    /// The kind of a global, or of the callable behind an object.
    pub fn kind(&self, v: Value) -> Option<Kind> {
        match v {
            Value::Global(g) => Some(g.kind()),
            Value::Object(id) => Some(self.obj(id).kind()),
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
            Value::Object(id) => {
                let o = self.obj(id);
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
            Value::BigInt(id) => {
                bigint_to_i128(self.bigint(id)).and_then(|x| i64::try_from(x).ok())
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
            Value::BigInt(id) => bigint_to_decimal(self.bigint(id))?,
            Value::Float(f) => py_float_repr(f),
            Value::Str(_) | Value::LegacyStr(_) => py_str_repr(self.text(v)?),
            Value::Bytes(id) => {
                let mut s = String::from("b'");
                for &c in self.payload(id).iter() {
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
            Value::Tuple(id) if depth > 0 => {
                let parts: Option<Vec<String>> = self
                    .tuple_items(id)
                    .iter()
                    .map(|x| self.py_repr(*x, depth - 1))
                    .collect();
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

/// Bytes of `v`'s capacity beyond its length.
fn spare<T>(v: &Vec<T>) -> usize {
    (v.capacity() - v.len()) * std::mem::size_of::<T>()
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
        match s.split_once('e').map(|(m, e)| (m, e.parse::<i32>())) {
            Some((mant, Ok(exp))) => {
                let sign = if exp < 0 { '-' } else { '+' };
                format!("{mant}e{sign}{:02}", exp.abs())
            }
            // `{:e}` always writes `<digits>e<int>`; keep its text otherwise.
            _ => s,
        }
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
