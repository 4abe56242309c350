//! The opcode interpreter (protocols 0–5). It only ever builds data: globals
//! are checked against [`super::allow`] and calls are recorded as
//! [`Object`]s, except a handful of pure built-ins (`_codecs.encode`,
//! `bytearray`, `set`, `OrderedDict`...) that it evaluates itself.

use std::collections::HashMap;

use bytes::Bytes;

use super::{
    allow::{self, GlobalId, Kind},
    budget::{Budget, Exhausted},
    error::PickleError,
    value::{
        BytesId, DictId, Heap, How, ListId, Object, ObjectId, SetId, StrId, TupleId, Utf8Bytes,
        Value,
    },
};

/// Default of [`Limits::max_arena_bytes`] per byte of input.
pub const DEFAULT_ARENA_FACTOR: u32 = 12;
/// What [`Limits::max_arena_bytes`] always allows on top of the per-byte
/// part, so that small pickles are never short of room (32 MiB).
pub const ARENA_FLOOR: usize = 32 << 20;

/// Resource limits. The defaults scale with the input size so that memory
/// stays proportional to the file and no declared length is trusted.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most values on the stack at once.
    pub max_stack: usize,
    /// Deepest MARK nesting.
    pub max_mark_depth: usize,
    /// Most memo entries.
    pub max_memo: usize,
    /// Most bytes of memory the machine may reserve for what it builds: every
    /// heap vector and container, the stack, the memo and decoded payloads
    /// (protocol 0 escapes, `_codecs.encode`, `list(x)` copies...). Zero-copy
    /// slices of the input cost only their handles.
    pub max_arena_bytes: usize,
    /// Deepest nesting of containers inside containers.
    pub max_depth: u32,
}

impl Limits {
    /// Limits for an input of `len` bytes, with the default arena budget.
    pub fn for_input(len: usize) -> Limits {
        Limits::with_arena_factor(len, DEFAULT_ARENA_FACTOR)
    }

    /// Limits for an input of `len` bytes whose values may take
    /// `factor` × `len` + [`ARENA_FLOOR`] bytes.
    pub fn with_arena_factor(len: usize, factor: u32) -> Limits {
        Limits {
            max_stack: (1 << 22).max(len / 8),
            max_mark_depth: 4096,
            max_memo: (1 << 22).max(len / 4),
            max_arena_bytes: arena_budget(len, factor),
            max_depth: 1000,
        }
    }
}

/// `factor` × `len` + [`ARENA_FLOOR`], saturating.
pub fn arena_budget(len: usize, factor: u32) -> usize {
    len.saturating_mul(factor as usize)
        .saturating_add(ARENA_FLOOR)
}

/// What a finished run produced.
#[derive(Debug)]
pub struct Loaded {
    /// Every container and payload.
    pub heap: Heap,
    /// The value STOP returned.
    pub root: Value,
    /// Protocol declared by PROTO (0 when absent).
    pub protocol: u8,
    /// Bytes of memory reserved for the values (what the budget counted).
    pub arena_bytes: usize,
}

// Opcodes.
const MARK: u8 = b'(';
const STOP: u8 = b'.';
const POP: u8 = b'0';
const POP_MARK: u8 = b'1';
const DUP: u8 = b'2';
const FLOAT: u8 = b'F';
const INT: u8 = b'I';
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const LONG: u8 = b'L';
const BININT2: u8 = b'M';
const NONE: u8 = b'N';
const PERSID: u8 = b'P';
const BINPERSID: u8 = b'Q';
const REDUCE: u8 = b'R';
const STRING: u8 = b'S';
const BINSTRING: u8 = b'T';
const SHORT_BINSTRING: u8 = b'U';
const UNICODE: u8 = b'V';
const BINUNICODE: u8 = b'X';
const APPEND: u8 = b'a';
const BUILD: u8 = b'b';
const GLOBAL: u8 = b'c';
const DICT: u8 = b'd';
const EMPTY_DICT: u8 = b'}';
const APPENDS: u8 = b'e';
const GET: u8 = b'g';
const BINGET: u8 = b'h';
const INST: u8 = b'i';
const LONG_BINGET: u8 = b'j';
const LIST: u8 = b'l';
const EMPTY_LIST: u8 = b']';
const OBJ: u8 = b'o';
const PUT: u8 = b'p';
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const SETITEM: u8 = b's';
const TUPLE: u8 = b't';
const EMPTY_TUPLE: u8 = b')';
const SETITEMS: u8 = b'u';
const BINFLOAT: u8 = b'G';
const PROTO: u8 = 0x80;
const NEWOBJ: u8 = 0x81;
const EXT1: u8 = 0x82;
const EXT2: u8 = 0x83;
const EXT4: u8 = 0x84;
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;
const TUPLE3: u8 = 0x87;
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const LONG1: u8 = 0x8a;
const LONG4: u8 = 0x8b;
const BINBYTES: u8 = b'B';
const SHORT_BINBYTES: u8 = b'C';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE8: u8 = 0x8d;
const BINBYTES8: u8 = 0x8e;
const EMPTY_SET: u8 = 0x8f;
const ADDITEMS: u8 = 0x90;
const FROZENSET: u8 = 0x91;
const NEWOBJ_EX: u8 = 0x92;
const STACK_GLOBAL: u8 = 0x93;
const MEMOIZE: u8 = 0x94;
const FRAME: u8 = 0x95;
const BYTEARRAY8: u8 = 0x96;
const NEXT_BUFFER: u8 = 0x97;
const READONLY_BUFFER: u8 = 0x98;

/// Name of an opcode byte, for messages.
pub fn opcode_name(op: u8) -> &'static str {
    match op {
        MARK => "MARK",
        STOP => "STOP",
        POP => "POP",
        POP_MARK => "POP_MARK",
        DUP => "DUP",
        FLOAT => "FLOAT",
        INT => "INT",
        BININT => "BININT",
        BININT1 => "BININT1",
        LONG => "LONG",
        BININT2 => "BININT2",
        NONE => "NONE",
        PERSID => "PERSID",
        BINPERSID => "BINPERSID",
        REDUCE => "REDUCE",
        STRING => "STRING",
        BINSTRING => "BINSTRING",
        SHORT_BINSTRING => "SHORT_BINSTRING",
        UNICODE => "UNICODE",
        BINUNICODE => "BINUNICODE",
        APPEND => "APPEND",
        BUILD => "BUILD",
        GLOBAL => "GLOBAL",
        DICT => "DICT",
        EMPTY_DICT => "EMPTY_DICT",
        APPENDS => "APPENDS",
        GET => "GET",
        BINGET => "BINGET",
        INST => "INST",
        LONG_BINGET => "LONG_BINGET",
        LIST => "LIST",
        EMPTY_LIST => "EMPTY_LIST",
        OBJ => "OBJ",
        PUT => "PUT",
        BINPUT => "BINPUT",
        LONG_BINPUT => "LONG_BINPUT",
        SETITEM => "SETITEM",
        TUPLE => "TUPLE",
        EMPTY_TUPLE => "EMPTY_TUPLE",
        SETITEMS => "SETITEMS",
        BINFLOAT => "BINFLOAT",
        PROTO => "PROTO",
        NEWOBJ => "NEWOBJ",
        EXT1 => "EXT1",
        EXT2 => "EXT2",
        EXT4 => "EXT4",
        TUPLE1 => "TUPLE1",
        TUPLE2 => "TUPLE2",
        TUPLE3 => "TUPLE3",
        NEWTRUE => "NEWTRUE",
        NEWFALSE => "NEWFALSE",
        LONG1 => "LONG1",
        LONG4 => "LONG4",
        BINBYTES => "BINBYTES",
        SHORT_BINBYTES => "SHORT_BINBYTES",
        SHORT_BINUNICODE => "SHORT_BINUNICODE",
        BINUNICODE8 => "BINUNICODE8",
        BINBYTES8 => "BINBYTES8",
        EMPTY_SET => "EMPTY_SET",
        ADDITEMS => "ADDITEMS",
        FROZENSET => "FROZENSET",
        NEWOBJ_EX => "NEWOBJ_EX",
        STACK_GLOBAL => "STACK_GLOBAL",
        MEMOIZE => "MEMOIZE",
        FRAME => "FRAME",
        BYTEARRAY8 => "BYTEARRAY8",
        NEXT_BUFFER => "NEXT_BUFFER",
        READONLY_BUFFER => "READONLY_BUFFER",
        _ => "unknown opcode",
    }
}

type Result<T> = std::result::Result<T, PickleError>;

/// The interpreter. Use [`Machine::run`].
pub struct Machine<'a> {
    data: Bytes,
    pos: usize,
    /// Offset and byte of the opcode being executed.
    op_at: usize,
    op: u8,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Vec<Option<Value>>,
    memo_count: usize,
    heap: Heap,
    limits: Limits,
    budget: Budget,
    encode_cache: HashMap<StrId, BytesId>,
    /// The one `()` (see EMPTY_TUPLE).
    empty_tuple: Option<Value>,
    protocol: u8,
    progress: Option<&'a mut dyn FnMut(usize)>,
    next_report: usize,
    /// Nesting depth of each container (parallel to the heap vectors).
    depth: Depths,
}

/// Nesting depth per container, to refuse absurdly deep structures early.
#[derive(Default)]
struct Depths {
    tuples: Vec<u16>,
    lists: Vec<u16>,
    dicts: Vec<u16>,
    sets: Vec<u16>,
    objects: Vec<u16>,
}

/// Input consumed between two progress callbacks.
const REPORT_EVERY: usize = 8 << 20;

impl<'a> Machine<'a> {
    /// A machine over `data` with limits scaled to its size.
    pub fn new(data: Bytes) -> Machine<'a> {
        let limits = Limits::for_input(data.len());
        Machine::with_limits(data, limits)
    }

    /// A machine with explicit limits.
    pub fn with_limits(data: Bytes, limits: Limits) -> Machine<'a> {
        Machine {
            data,
            pos: 0,
            op_at: 0,
            op: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Vec::new(),
            memo_count: 0,
            heap: Heap::new(),
            budget: Budget::new(limits.max_arena_bytes),
            limits,
            encode_cache: HashMap::new(),
            empty_tuple: None,
            protocol: 0,
            progress: None,
            next_report: REPORT_EVERY,
            depth: Depths::default(),
        }
    }

    /// Call `f(bytes_consumed)` every few MiB of input (progress, page release).
    pub fn on_progress(mut self, f: &'a mut dyn FnMut(usize)) -> Self {
        self.progress = Some(f);
        self
    }

    // ---------- errors ----------

    fn malformed(&self, what: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            opcode: opcode_name(self.op),
            offset: self.op_at as u64,
            what: what.into(),
        }
    }

    fn limit(&self, what: impl Into<String>) -> PickleError {
        PickleError::Limit {
            opcode: opcode_name(self.op),
            offset: self.op_at as u64,
            what: what.into(),
        }
    }

    /// The error for a reservation the budget or the allocator refused.
    fn exhausted(&self, e: Exhausted) -> PickleError {
        match e {
            Exhausted::Budget => PickleError::MemoryBudget {
                opcode: opcode_name(self.op),
                offset: self.op_at as u64,
                budget: self.budget.limit() as u64,
                input: self.data.len() as u64,
            },
            Exhausted::Alloc(bytes) => self.limit(format!(
                "cannot allocate {bytes} more bytes for its values (the system refused)"
            )),
            Exhausted::Count => self.limit("more than 4 billion objects of one kind"),
        }
    }

    fn refused(&self, why: impl Into<String>) -> PickleError {
        PickleError::Refused {
            opcode: opcode_name(self.op),
            offset: self.op_at as u64,
            why: why.into(),
        }
    }

    // ---------- input ----------

    #[inline]
    fn need(&self, n: u64, what: &'static str) -> Result<usize> {
        let have = (self.data.len() - self.pos) as u64;
        if n > have {
            return Err(PickleError::Truncated {
                what,
                offset: self.op_at as u64,
                need: n,
                have,
            });
        }
        Ok(n as usize)
    }

    #[inline]
    fn fixed<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        self.need(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.data[self.pos..self.pos + N]);
        self.pos += N;
        Ok(a)
    }

    #[inline]
    fn payload(&mut self, len: u64, what: &'static str) -> Result<Bytes> {
        let n = self.need(len, what)?;
        let b = self.data.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// A newline-terminated argument (without the newline).
    fn line(&mut self, what: &'static str) -> Result<(usize, usize)> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(n) => {
                let start = self.pos;
                self.pos += n + 1;
                Ok((start, start + n))
            }
            None => Err(PickleError::Truncated {
                what,
                offset: self.op_at as u64,
                need: rest.len() as u64 + 1,
                have: rest.len() as u64,
            }),
        }
    }

    fn line_str(&mut self, what: &'static str) -> Result<String> {
        let (s, e) = self.line(what)?;
        match std::str::from_utf8(&self.data[s..e]) {
            Ok(t) => Ok(t.to_owned()),
            Err(_) => Err(self.malformed(format!("{what} is not valid UTF-8"))),
        }
    }

    // ---------- budget ----------

    /// Count `bytes` of decoded data against the budget.
    fn charge(&mut self, bytes: usize) -> Result<()> {
        self.budget.charge(bytes).map_err(|e| self.exhausted(e))
    }

    /// Bytes of memory reserved for values so far.
    pub fn arena_bytes(&self) -> usize {
        self.budget.used()
    }

    // ---------- nesting depth ----------

    fn depth_of(&self, v: Value) -> u32 {
        (match v {
            Value::Tuple(i) => self.depth.tuples[i.index()],
            Value::List(i) => self.depth.lists[i.index()],
            Value::Dict(i) => self.depth.dicts[i.index()],
            Value::Set(i) | Value::FrozenSet(i) => self.depth.sets[i.index()],
            Value::Object(i) => self.depth.objects[i.index()],
            _ => 0,
        }) as u32
    }

    fn check_depth(&self, d: u32) -> Result<u16> {
        if d > self.limits.max_depth {
            return Err(self.limit(format!(
                "containers nested deeper than {} levels",
                self.limits.max_depth
            )));
        }
        Ok(d as u16)
    }

    /// Depth of a new container holding `items`.
    fn depth_over(&self, items: &[Value]) -> Result<u16> {
        let d = items.iter().map(|v| self.depth_of(*v)).max().unwrap_or(0) + 1;
        self.check_depth(d)
    }

    /// `target` now also holds something of depth `inner`.
    fn bump(&mut self, target: Value, inner: u32) -> Result<()> {
        let d = self.check_depth(inner + 1)?;
        let slot = match target {
            Value::Tuple(i) => &mut self.depth.tuples[i.index()],
            Value::List(i) => &mut self.depth.lists[i.index()],
            Value::Dict(i) => &mut self.depth.dicts[i.index()],
            Value::Set(i) | Value::FrozenSet(i) => &mut self.depth.sets[i.index()],
            Value::Object(i) => &mut self.depth.objects[i.index()],
            _ => return Ok(()),
        };
        *slot = (*slot).max(d);
        Ok(())
    }

    // ---------- heap ----------

    /// Record the depth of a new container (parallel to its heap vector).
    fn push_depth(&mut self, which: fn(&mut Depths) -> &mut Vec<u16>, d: u16) -> Result<()> {
        let reserved = self.budget.reserve(which(&mut self.depth), 1);
        reserved.map_err(|e| self.exhausted(e))?;
        which(&mut self.depth).push(d);
        Ok(())
    }

    fn new_str(&mut self, b: Bytes) -> Result<Value> {
        let s = Utf8Bytes::new(b).ok_or_else(|| self.malformed("string is not valid UTF-8"))?;
        let id = self
            .heap
            .add_str(s, &mut self.budget)
            .map_err(|e| self.exhausted(e))?;
        Ok(Value::Str(id))
    }

    fn new_bytes(&mut self, b: Bytes) -> Result<BytesId> {
        self.heap
            .add_bytes(b, &mut self.budget)
            .map_err(|e| self.exhausted(e))
    }

    fn new_tuple(&mut self, items: &[Value]) -> Result<Value> {
        let d = self.depth_over(items)?;
        let id: TupleId = self
            .heap
            .add_tuple(items, &mut self.budget)
            .map_err(|e| self.exhausted(e))?;
        self.push_depth(|d| &mut d.tuples, d)?;
        Ok(Value::Tuple(id))
    }

    /// A tuple of the stack items from `start` up (which are removed).
    fn tuple_from_stack(&mut self, start: usize) -> Result<Value> {
        let d = self.depth_over(&self.stack[start..])?;
        let id = self
            .heap
            .add_tuple(&self.stack[start..], &mut self.budget)
            .map_err(|e| self.exhausted(e))?;
        self.stack.truncate(start);
        self.push_depth(|d| &mut d.tuples, d)?;
        Ok(Value::Tuple(id))
    }

    fn new_list(&mut self, items: Vec<Value>) -> Result<Value> {
        let d = self.depth_over(&items)?;
        let id: ListId = self
            .heap
            .add_list(items, &mut self.budget)
            .map_err(|e| self.exhausted(e))?;
        self.push_depth(|d| &mut d.lists, d)?;
        Ok(Value::List(id))
    }

    fn new_dict(&mut self, items: Vec<(Value, Value)>) -> Result<Value> {
        let d = items
            .iter()
            .map(|(k, v)| self.depth_of(*k).max(self.depth_of(*v)))
            .max()
            .unwrap_or(0);
        let d = self.check_depth(d + 1)?;
        let id: DictId = self
            .heap
            .add_dict(items, &mut self.budget)
            .map_err(|e| self.exhausted(e))?;
        self.push_depth(|d| &mut d.dicts, d)?;
        Ok(Value::Dict(id))
    }

    fn new_set(&mut self, items: Vec<Value>, frozen: bool) -> Result<Value> {
        let d = self.depth_over(&items)?;
        let id: SetId = self
            .heap
            .add_set(items, &mut self.budget)
            .map_err(|e| self.exhausted(e))?;
        self.push_depth(|d| &mut d.sets, d)?;
        Ok(if frozen {
            Value::FrozenSet(id)
        } else {
            Value::Set(id)
        })
    }

    fn new_object(
        &mut self,
        class: GlobalId,
        how: How,
        args: Value,
        kwargs: Option<Value>,
    ) -> Result<Value> {
        let inner = self
            .depth_of(args)
            .max(kwargs.map(|k| self.depth_of(k)).unwrap_or(0));
        let d = self.check_depth(inner + 1)?;
        let object = Object {
            class,
            how,
            args,
            kwargs,
            state: None,
            list_items: Vec::new(),
            dict_items: Vec::new(),
            offset: self.op_at as u64,
        };
        let id: ObjectId = self
            .heap
            .add_object(object, &mut self.budget)
            .map_err(|e| self.exhausted(e))?;
        self.push_depth(|d| &mut d.objects, d)?;
        Ok(Value::Object(id))
    }

    fn new_int_le(&mut self, b: Bytes) -> Result<Value> {
        if let Some(v) = super::value::bigint_to_i128(&b) {
            if let Ok(v) = i64::try_from(v) {
                return Ok(Value::Int(v));
            }
        }
        let id = self
            .heap
            .add_bigint(b, &mut self.budget)
            .map_err(|e| self.exhausted(e))?;
        Ok(Value::BigInt(id))
    }

    // ---------- stack ----------

    #[inline]
    fn push(&mut self, v: Value) -> Result<()> {
        if self.stack.len() >= self.limits.max_stack {
            return Err(self.limit(format!(
                "more than {} values on the stack",
                self.limits.max_stack
            )));
        }
        let reserved = self.budget.reserve(&mut self.stack, 1);
        reserved.map_err(|e| self.exhausted(e))?;
        self.stack.push(v);
        Ok(())
    }

    #[inline]
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    #[inline]
    fn pop(&mut self) -> Result<Value> {
        let v = if self.stack.len() > self.floor() {
            self.stack.pop()
        } else {
            None
        };
        v.ok_or_else(|| self.malformed("stack underflow"))
    }

    #[inline]
    fn top(&self) -> Result<Value> {
        let v = if self.stack.len() > self.floor() {
            self.stack.last().copied()
        } else {
            None
        };
        v.ok_or_else(|| self.malformed("stack underflow (nothing on the stack)"))
    }

    /// Start index of the items above the innermost MARK (which is removed).
    fn pop_mark(&mut self) -> Result<usize> {
        match self.marks.pop() {
            Some(m) => Ok(m),
            None => Err(self.malformed("no MARK on the stack")),
        }
    }

    fn pairs_from(&mut self, start: usize) -> Result<Vec<(Value, Value)>> {
        let n = self.stack.len() - start;
        if !n.is_multiple_of(2) {
            return Err(self.malformed(format!("odd number of items ({n}) for key/value pairs")));
        }
        let mut out = self.try_vec(n / 2)?;
        let mut it = self.stack.drain(start..);
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    // ---------- memo ----------

    fn memo_put(&mut self, index: u64) -> Result<()> {
        let v = self.top()?;
        if index >= self.limits.max_memo as u64 {
            return Err(self.limit(format!(
                "memo index {index} is beyond the limit of {} entries",
                self.limits.max_memo
            )));
        }
        let i = index as usize;
        if i >= self.memo.len() {
            if i > self.memo.len() + 65_536 {
                return Err(self.malformed(format!(
                    "memo index {index} is far beyond the {} entries stored so far",
                    self.memo.len()
                )));
            }
            let extra = i + 1 - self.memo.len();
            let reserved = self.budget.reserve(&mut self.memo, extra);
            reserved.map_err(|e| self.exhausted(e))?;
            self.memo.resize(i + 1, None);
        }
        if self.memo[i].is_none() {
            self.memo_count += 1;
        }
        self.memo[i] = Some(v);
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> Result<()> {
        let v = usize::try_from(index)
            .ok()
            .and_then(|i| self.memo.get(i).copied().flatten());
        match v {
            Some(v) => self.push(v),
            None => Err(self.malformed(format!("memo index {index} was never stored"))),
        }
    }

    // ---------- globals ----------

    /// GLOBAL / INST read their names as text lines: names that are no
    /// Python identifiers mean the input is text, not a pickle.
    fn resolve_line(&self, module: &str, name: &str) -> Result<GlobalId> {
        if !is_dotted_identifier(module) || !is_dotted_identifier(name) {
            return Err(PickleError::NotAPickle {
                why: format!(
                    "{} at byte offset {} names {:?} / {:?}, which are not Python identifiers",
                    opcode_name(self.op),
                    self.op_at,
                    truncate(module),
                    truncate(name)
                ),
            });
        }
        self.resolve(module, name)
    }

    fn resolve(&self, module: &str, name: &str) -> Result<GlobalId> {
        allow::lookup(module, name).ok_or_else(|| PickleError::ForbiddenGlobal {
            global: format!("{module}.{name}"),
            offset: self.op_at as u64,
        })
    }

    fn expect_global(&self, v: Value, role: &str) -> Result<GlobalId> {
        match v {
            Value::Global(g) => Ok(g),
            other => Err(self.refused(format!(
                "{role} is a {}, not an allow-listed class or function",
                self.heap.type_name(other)
            ))),
        }
    }

    // ---------- text arguments (protocol 0) ----------

    fn parse_text_int(&mut self, s: usize, e: usize) -> Result<Value> {
        let text = std::str::from_utf8(&self.data[s..e])
            .map_err(|_| self.malformed("integer text is not ASCII"))?
            .trim();
        let text = text.strip_suffix('L').unwrap_or(text);
        if let Ok(v) = text.parse::<i64>() {
            return Ok(Value::Int(v));
        }
        let (neg, digits) = match text.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(self.malformed(format!("invalid integer literal {:?}", truncate(text))));
        }
        if digits.len() > 4300 {
            return Err(self.limit("integer literal longer than 4300 digits"));
        }
        let le = decimal_to_le(digits, neg);
        self.charge(le.len())?;
        self.new_int_le(Bytes::from(le))
    }

    // ---------- the loop ----------

    /// Run to STOP and return the graph.
    pub fn run(mut self) -> Result<Loaded> {
        match self.data.first() {
            None => return Err(PickleError::Empty),
            Some(&b) if b != PROTO && !b.is_ascii_graphic() => {
                return Err(PickleError::NotAPickle {
                    why: format!(
                        "it starts with byte 0x{b:02x}, which neither opens a protocol 2+ pickle \
                         (0x80) nor is a protocol 0/1 opcode"
                    ),
                })
            }
            _ => {}
        }
        loop {
            if self.pos >= self.next_report {
                self.next_report = self.pos + REPORT_EVERY;
                if let Some(f) = self.progress.as_mut() {
                    f(self.pos);
                }
            }
            self.op_at = self.pos;
            let Some(&op) = self.data.get(self.pos) else {
                self.op = STOP;
                return Err(PickleError::Truncated {
                    what: "next opcode (the pickle has no STOP)",
                    offset: self.pos as u64,
                    need: 1,
                    have: 0,
                });
            };
            self.op = op;
            self.pos += 1;
            match op {
                // ---- framing and protocol ----
                PROTO => {
                    let [p] = self.fixed::<1>("protocol number")?;
                    if p > 5 {
                        return Err(self.refused(format!(
                            "unsupported pickle protocol {p} (0 to 5 are known)"
                        )));
                    }
                    self.protocol = p;
                }
                FRAME => {
                    let n = u64::from_le_bytes(self.fixed::<8>("frame length")?);
                    self.need(n, "frame")?;
                }
                STOP => {
                    let root = self.pop()?;
                    if let Some(f) = self.progress.as_mut() {
                        f(self.pos);
                    }
                    return Ok(Loaded {
                        heap: self.heap,
                        root,
                        protocol: self.protocol,
                        arena_bytes: self.budget.used(),
                    });
                }

                // ---- refused families ----
                PERSID | BINPERSID => {
                    return Err(self.refused(
                        "persistent ids refer to objects outside the pickle and are not supported",
                    ))
                }
                EXT1 | EXT2 | EXT4 => {
                    return Err(self.refused(
                        "extension-registry codes (copyreg.add_extension) are not supported",
                    ))
                }
                NEXT_BUFFER | READONLY_BUFFER => return Err(self.refused(
                    "out-of-band buffers (pickle protocol 5 with a buffer_callback) are not in \
                         the file; re-save the DataFrame without buffer_callback",
                )),

                // ---- stack and marks ----
                MARK => {
                    if self.marks.len() >= self.limits.max_mark_depth {
                        return Err(self.limit(format!(
                            "MARKs nested deeper than {}",
                            self.limits.max_mark_depth
                        )));
                    }
                    self.marks.push(self.stack.len());
                }
                POP => {
                    if self.stack.len() > self.floor() {
                        self.stack.pop();
                    } else {
                        self.pop_mark()?;
                    }
                }
                POP_MARK => {
                    let m = self.pop_mark()?;
                    self.stack.truncate(m);
                }
                DUP => {
                    let v = self.top()?;
                    self.push(v)?;
                }

                // ---- scalars ----
                NONE => self.push(Value::None)?,
                NEWTRUE => self.push(Value::Bool(true))?,
                NEWFALSE => self.push(Value::Bool(false))?,
                BININT => {
                    let v = i32::from_le_bytes(self.fixed::<4>("BININT argument")?);
                    self.push(Value::Int(v as i64))?;
                }
                BININT1 => {
                    let [v] = self.fixed::<1>("BININT1 argument")?;
                    self.push(Value::Int(v as i64))?;
                }
                BININT2 => {
                    let v = u16::from_le_bytes(self.fixed::<2>("BININT2 argument")?);
                    self.push(Value::Int(v as i64))?;
                }
                INT => {
                    let (s, e) = self.line("INT argument")?;
                    let v = match &self.data[s..e] {
                        b"00" => Value::Bool(false),
                        b"01" => Value::Bool(true),
                        _ => self.parse_text_int(s, e)?,
                    };
                    self.push(v)?;
                }
                LONG => {
                    let (s, e) = self.line("LONG argument")?;
                    let v = self.parse_text_int(s, e)?;
                    self.push(v)?;
                }
                LONG1 => {
                    let [n] = self.fixed::<1>("LONG1 length")?;
                    let b = self.payload(n as u64, "LONG1 bytes")?;
                    let v = self.new_int_le(b)?;
                    self.push(v)?;
                }
                LONG4 => {
                    let n = i32::from_le_bytes(self.fixed::<4>("LONG4 length")?);
                    if n < 0 {
                        return Err(self.malformed(format!("negative LONG4 length {n}")));
                    }
                    let b = self.payload(n as u64, "LONG4 bytes")?;
                    let v = self.new_int_le(b)?;
                    self.push(v)?;
                }
                FLOAT => {
                    let (s, e) = self.line("FLOAT argument")?;
                    let v = std::str::from_utf8(&self.data[s..e])
                        .ok()
                        .and_then(|t| t.trim().parse::<f64>().ok())
                        .ok_or_else(|| self.malformed("invalid float literal"))?;
                    self.push(Value::Float(v))?;
                }
                BINFLOAT => {
                    let v = f64::from_be_bytes(self.fixed::<8>("BINFLOAT argument")?);
                    self.push(Value::Float(v))?;
                }

                // ---- strings and bytes ----
                BINUNICODE => {
                    let n = u32::from_le_bytes(self.fixed::<4>("BINUNICODE length")?);
                    let b = self.payload(n as u64, "BINUNICODE text")?;
                    let v = self.new_str(b)?;
                    self.push(v)?;
                }
                SHORT_BINUNICODE => {
                    let [n] = self.fixed::<1>("SHORT_BINUNICODE length")?;
                    let b = self.payload(n as u64, "SHORT_BINUNICODE text")?;
                    let v = self.new_str(b)?;
                    self.push(v)?;
                }
                BINUNICODE8 => {
                    let n = u64::from_le_bytes(self.fixed::<8>("BINUNICODE8 length")?);
                    let b = self.payload(n, "BINUNICODE8 text")?;
                    let v = self.new_str(b)?;
                    self.push(v)?;
                }
                UNICODE => {
                    let (s, e) = self.line("UNICODE argument")?;
                    self.charge(e - s)?;
                    let text = raw_unicode_escape(&self.data[s..e])
                        .ok_or_else(|| self.malformed("invalid raw-unicode-escape text"))?;
                    let v = self.new_str(Bytes::from(text.into_bytes()))?;
                    self.push(v)?;
                }
                BINBYTES => {
                    let n = u32::from_le_bytes(self.fixed::<4>("BINBYTES length")?);
                    let b = self.payload(n as u64, "BINBYTES payload")?;
                    let i = self.new_bytes(b)?;
                    self.push(Value::Bytes(i))?;
                }
                SHORT_BINBYTES => {
                    let [n] = self.fixed::<1>("SHORT_BINBYTES length")?;
                    let b = self.payload(n as u64, "SHORT_BINBYTES payload")?;
                    let i = self.new_bytes(b)?;
                    self.push(Value::Bytes(i))?;
                }
                BINBYTES8 => {
                    let n = u64::from_le_bytes(self.fixed::<8>("BINBYTES8 length")?);
                    let b = self.payload(n, "BINBYTES8 payload")?;
                    let i = self.new_bytes(b)?;
                    self.push(Value::Bytes(i))?;
                }
                BYTEARRAY8 => {
                    let n = u64::from_le_bytes(self.fixed::<8>("BYTEARRAY8 length")?);
                    let b = self.payload(n, "BYTEARRAY8 payload")?;
                    let i = self.new_bytes(b)?;
                    self.push(Value::ByteArray(i))?;
                }
                BINSTRING => {
                    let n = i32::from_le_bytes(self.fixed::<4>("BINSTRING length")?);
                    if n < 0 {
                        return Err(self.malformed(format!("negative BINSTRING length {n}")));
                    }
                    let b = self.payload(n as u64, "BINSTRING payload")?;
                    let i = self.new_bytes(b)?;
                    self.push(Value::LegacyStr(i))?;
                }
                SHORT_BINSTRING => {
                    let [n] = self.fixed::<1>("SHORT_BINSTRING length")?;
                    let b = self.payload(n as u64, "SHORT_BINSTRING payload")?;
                    let i = self.new_bytes(b)?;
                    self.push(Value::LegacyStr(i))?;
                }
                STRING => {
                    let (s, e) = self.line("STRING argument")?;
                    self.charge(e - s)?;
                    let raw = &self.data[s..e];
                    let inner = match raw {
                        [q, inner @ .., q2]
                            if (*q == b'\'' || *q == b'"') && q == q2 && raw.len() >= 2 =>
                        {
                            inner
                        }
                        _ => return Err(self.malformed("STRING argument is not a quoted literal")),
                    };
                    let decoded = escape_decode(inner)
                        .ok_or_else(|| self.malformed("invalid escape in STRING literal"))?;
                    let i = self.new_bytes(Bytes::from(decoded))?;
                    self.push(Value::LegacyStr(i))?;
                }

                // ---- containers ----
                EMPTY_TUPLE => {
                    // `()` is a singleton, as in Python: one for the whole
                    // pickle, however many EMPTY_TUPLEs it has.
                    let v = match self.empty_tuple {
                        Some(v) => v,
                        None => {
                            let v = self.new_tuple(&[])?;
                            self.empty_tuple = Some(v);
                            v
                        }
                    };
                    self.push(v)?;
                }
                TUPLE1 | TUPLE2 | TUPLE3 => {
                    let n = (op - TUPLE1 + 1) as usize;
                    if self.stack.len() < self.floor() + n {
                        return Err(self.malformed("stack underflow"));
                    }
                    let start = self.stack.len() - n;
                    let v = self.tuple_from_stack(start)?;
                    self.push(v)?;
                }
                TUPLE => {
                    let m = self.pop_mark()?;
                    let v = self.tuple_from_stack(m)?;
                    self.push(v)?;
                }
                EMPTY_LIST => {
                    let v = self.new_list(Vec::new())?;
                    self.push(v)?;
                }
                LIST => {
                    let m = self.pop_mark()?;
                    let items = self.take_stack(m)?;
                    let v = self.new_list(items)?;
                    self.push(v)?;
                }
                EMPTY_DICT => {
                    let v = self.new_dict(Vec::new())?;
                    self.push(v)?;
                }
                DICT => {
                    let m = self.pop_mark()?;
                    let pairs = self.pairs_from(m)?;
                    let v = self.new_dict(pairs)?;
                    self.push(v)?;
                }
                EMPTY_SET => {
                    let v = self.new_set(Vec::new(), false)?;
                    self.push(v)?;
                }
                FROZENSET => {
                    let m = self.pop_mark()?;
                    let items = self.take_stack(m)?;
                    let v = self.new_set(items, true)?;
                    self.push(v)?;
                }
                APPEND => {
                    let v = self.pop()?;
                    let target = self.top()?;
                    self.extend_list(target, &[v])?;
                }
                APPENDS => {
                    let m = self.pop_mark()?;
                    if m == 0 || m <= self.floor() {
                        return Err(self.malformed("APPENDS has no list below its MARK"));
                    }
                    let target = self.stack[m - 1];
                    let items = std::mem::take(&mut self.stack);
                    let r = self.extend_list(target, &items[m..]);
                    self.stack = items;
                    self.stack.truncate(m);
                    r?;
                }
                SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?;
                    self.extend_dict(target, &[(k, v)])?;
                }
                SETITEMS => {
                    let m = self.pop_mark()?;
                    if m == 0 || m <= self.floor() {
                        return Err(self.malformed("SETITEMS has no dict below its MARK"));
                    }
                    let target = self.stack[m - 1];
                    let pairs = self.pairs_from(m)?;
                    self.extend_dict(target, &pairs)?;
                }
                ADDITEMS => {
                    let m = self.pop_mark()?;
                    if m == 0 || m <= self.floor() {
                        return Err(self.malformed("ADDITEMS has no set below its MARK"));
                    }
                    match self.stack[m - 1] {
                        Value::Set(i) => {
                            let inner = self.stack[m..]
                                .iter()
                                .map(|v| self.depth_of(*v))
                                .max()
                                .unwrap_or(0);
                            self.bump(Value::Set(i), inner)?;
                            let added = self.heap.extend_set(i, &self.stack[m..], &mut self.budget);
                            added.map_err(|e| self.exhausted(e))?;
                            self.stack.truncate(m);
                        }
                        other => {
                            return Err(self.malformed(format!(
                                "ADDITEMS target is a {}, not a set",
                                self.heap.type_name(other)
                            )))
                        }
                    }
                }

                // ---- memo ----
                MEMOIZE => {
                    let i = self.memo_count as u64;
                    self.memo_put(i)?;
                }
                BINPUT => {
                    let [i] = self.fixed::<1>("BINPUT index")?;
                    self.memo_put(i as u64)?;
                }
                LONG_BINPUT => {
                    let i = u32::from_le_bytes(self.fixed::<4>("LONG_BINPUT index")?);
                    self.memo_put(i as u64)?;
                }
                PUT => {
                    let (s, e) = self.line("PUT index")?;
                    let i = parse_index(&self.data[s..e])
                        .ok_or_else(|| self.malformed("invalid PUT index"))?;
                    self.memo_put(i)?;
                }
                BINGET => {
                    let [i] = self.fixed::<1>("BINGET index")?;
                    self.memo_get(i as u64)?;
                }
                LONG_BINGET => {
                    let i = u32::from_le_bytes(self.fixed::<4>("LONG_BINGET index")?);
                    self.memo_get(i as u64)?;
                }
                GET => {
                    let (s, e) = self.line("GET index")?;
                    let i = parse_index(&self.data[s..e])
                        .ok_or_else(|| self.malformed("invalid GET index"))?;
                    self.memo_get(i)?;
                }

                // ---- globals and construction ----
                GLOBAL => {
                    let module = self.line_str("GLOBAL module")?;
                    let name = self.line_str("GLOBAL name")?;
                    let g = self.resolve_line(&module, &name)?;
                    self.push(Value::Global(g))?;
                }
                STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(m), Some(n)) = (self.heap.str(module), self.heap.str(name)) else {
                        return Err(
                            self.malformed("STACK_GLOBAL needs two str values (module, name)")
                        );
                    };
                    let g = self.resolve(m, n)?;
                    self.push(Value::Global(g))?;
                }
                INST => {
                    let module = self.line_str("INST module")?;
                    let name = self.line_str("INST name")?;
                    let g = self.resolve_line(&module, &name)?;
                    let m = self.pop_mark()?;
                    let args = self.tuple_from_stack(m)?;
                    let v = self.new_object(g, How::Call, args, None)?;
                    self.push(v)?;
                }
                OBJ => {
                    let m = self.pop_mark()?;
                    if self.stack.len() == m {
                        return Err(self.malformed("OBJ without a class"));
                    }
                    let cls = self.stack[m];
                    let g = self.expect_global(cls, "the class given to OBJ")?;
                    let args = self.tuple_from_stack(m + 1)?;
                    self.stack.truncate(m);
                    let v = self.new_object(g, How::Call, args, None)?;
                    self.push(v)?;
                }
                REDUCE => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let g = self.expect_global(callable, "the callable given to REDUCE")?;
                    let v = self.call(g, args)?;
                    self.push(v)?;
                }
                NEWOBJ => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let g = self.expect_global(cls, "the class given to NEWOBJ")?;
                    let v = self.new_instance(g, args, None)?;
                    self.push(v)?;
                }
                NEWOBJ_EX => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let g = self.expect_global(cls, "the class given to NEWOBJ_EX")?;
                    let v = self.new_instance(g, args, Some(kwargs))?;
                    self.push(v)?;
                }
                BUILD => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    match target {
                        Value::Object(i) => {
                            let inner = self.depth_of(state);
                            self.bump(target, inner)?;
                            self.heap.obj_mut(i).state = Some(state);
                        }
                        other => {
                            return Err(self.malformed(format!(
                                "BUILD target is a {}, not a reconstructed object",
                                self.heap.type_name(other)
                            )))
                        }
                    }
                }
                other => {
                    return Err(PickleError::UnknownOpcode {
                        opcode: other,
                        offset: self.op_at as u64,
                    })
                }
            }
        }
    }

    /// The stack items from `start` up, removed, in a vector of their own
    /// (reserved within the budget).
    fn take_stack(&mut self, start: usize) -> Result<Vec<Value>> {
        let mut items = self.try_vec(self.stack.len() - start)?;
        items.extend(self.stack.drain(start..));
        Ok(items)
    }

    /// An empty vector with room for `n` items, or an error if the system
    /// refuses. Not charged here: the heap charges a vector's capacity when
    /// it keeps it, and a vector it does not keep is a transient copy of
    /// items that are already within the budget.
    fn try_vec<T>(&self, n: usize) -> Result<Vec<T>> {
        let mut v = Vec::new();
        v.try_reserve_exact(n).map_err(|_| {
            self.exhausted(Exhausted::Alloc(n.saturating_mul(std::mem::size_of::<T>())))
        })?;
        Ok(v)
    }

    fn extend_list(&mut self, target: Value, items: &[Value]) -> Result<()> {
        let inner = items.iter().map(|v| self.depth_of(*v)).max().unwrap_or(0);
        self.bump(target, inner)?;
        let added = match target {
            Value::List(i) => self.heap.extend_list(i, items, &mut self.budget),
            Value::Object(i) => self
                .budget
                .extend(&mut self.heap.obj_mut(i).list_items, items),
            other => {
                return Err(
                    self.malformed(format!("cannot append to a {}", self.heap.type_name(other)))
                )
            }
        };
        added.map_err(|e| self.exhausted(e))
    }

    fn extend_dict(&mut self, target: Value, pairs: &[(Value, Value)]) -> Result<()> {
        let inner = pairs
            .iter()
            .map(|(k, v)| self.depth_of(*k).max(self.depth_of(*v)))
            .max()
            .unwrap_or(0);
        self.bump(target, inner)?;
        let added = match target {
            Value::Dict(i) => self.heap.extend_dict(i, pairs, &mut self.budget),
            Value::Object(i) => self
                .budget
                .extend(&mut self.heap.obj_mut(i).dict_items, pairs),
            other => {
                return Err(self.malformed(format!(
                    "cannot set items on a {}",
                    self.heap.type_name(other)
                )))
            }
        };
        added.map_err(|e| self.exhausted(e))
    }

    /// Items of a list/tuple/set argument, copied.
    fn copy_seq(&mut self, v: Value) -> Result<Vec<Value>> {
        let items = match v {
            Value::Tuple(i) => self.heap.tuple_items(i),
            Value::List(i) => self.heap.list_items(i),
            Value::Set(i) | Value::FrozenSet(i) => self.heap.set_items(i),
            other => {
                return Err(self.malformed(format!(
                    "expected a list or tuple, found a {}",
                    self.heap.type_name(other)
                )))
            }
        };
        let mut out = self.try_vec(items.len())?;
        out.extend_from_slice(items);
        Ok(out)
    }

    /// `cls.__new__(cls, *args)`.
    fn new_instance(&mut self, g: GlobalId, args: Value, kwargs: Option<Value>) -> Result<Value> {
        let empty = self.heap.tuple(args).map(|a| a.is_empty()).unwrap_or(false);
        match g.kind() {
            Kind::OrderedDict | Kind::Dict if empty => self.new_dict(Vec::new()),
            Kind::List if empty => self.new_list(Vec::new()),
            Kind::Set if empty => self.new_set(Vec::new(), false),
            _ => self.new_object(g, How::New, args, kwargs),
        }
    }

    /// REDUCE: evaluate the pure built-ins, record everything else.
    fn call(&mut self, g: GlobalId, args: Value) -> Result<Value> {
        let kind = g.kind();
        let Some(a) = self.heap.tuple(args) else {
            return Err(self.malformed(format!(
                "REDUCE arguments are a {}, not a tuple",
                self.heap.type_name(args)
            )));
        };
        // Copied so that the heap can grow while the arguments are read (at
        // most a few values: every builtin here takes one to three).
        let a: Vec<Value> = a.to_vec();
        match (kind, a.as_slice()) {
            (Kind::CodecsEncode, [s, enc]) => {
                let (Value::Str(si), Some(enc)) = (*s, self.heap.str(*enc)) else {
                    return Err(self.malformed("_codecs.encode needs (str, encoding)"));
                };
                let enc = enc.to_ascii_lowercase().replace('_', "-");
                if let Some(&bi) = self.encode_cache.get(&si) {
                    return Ok(Value::Bytes(bi));
                }
                let text = self.heap.string(si);
                let out: Bytes = match enc.as_str() {
                    "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1" => {
                        let mut out = self.try_vec(text.len())?;
                        for c in text.chars() {
                            let c = c as u32;
                            if c > 0xff {
                                return Err(self.malformed(format!(
                                    "_codecs.encode: character U+{c:04X} does not fit latin-1"
                                )));
                            }
                            out.push(c as u8);
                        }
                        self.charge(out.len())?;
                        Bytes::from(out)
                    }
                    "utf-8" | "utf8" | "ascii" => self.heap.str_bytes(si).clone(),
                    other => {
                        return Err(self.refused(format!(
                            "_codecs.encode with encoding {other:?} is not supported"
                        )))
                    }
                };
                let bi = self.new_bytes(out)?;
                // The cache holds two ids per entry; count its growth.
                self.charge(16)?;
                self.encode_cache.insert(si, bi);
                Ok(Value::Bytes(bi))
            }
            (Kind::Bytes, []) => Ok(Value::Bytes(self.new_bytes(Bytes::new())?)),
            (Kind::Bytes, [Value::Bytes(b) | Value::ByteArray(b) | Value::LegacyStr(b)]) => {
                let p = self.heap.payload(*b).clone();
                Ok(Value::Bytes(self.new_bytes(p)?))
            }
            (Kind::ByteArray, []) => Ok(Value::ByteArray(self.new_bytes(Bytes::new())?)),
            (Kind::ByteArray, [Value::Bytes(b) | Value::ByteArray(b) | Value::LegacyStr(b)]) => {
                let p = self.heap.payload(*b).clone();
                Ok(Value::ByteArray(self.new_bytes(p)?))
            }
            (Kind::Set | Kind::FrozenSet, []) => self.new_set(Vec::new(), kind == Kind::FrozenSet),
            (Kind::Set | Kind::FrozenSet, [items]) => {
                let items = self.copy_seq(*items)?;
                self.new_set(items, kind == Kind::FrozenSet)
            }
            (Kind::List, []) => self.new_list(Vec::new()),
            (Kind::List, [items]) => {
                let items = self.copy_seq(*items)?;
                self.new_list(items)
            }
            (Kind::Tuple, []) => self.new_tuple(&[]),
            (Kind::Tuple, [items]) => {
                let items = self.copy_seq(*items)?;
                self.new_tuple(&items)
            }
            (Kind::OrderedDict | Kind::Dict, []) => self.new_dict(Vec::new()),
            (Kind::OrderedDict | Kind::Dict, [items]) => {
                let items = self.copy_seq(*items)?;
                let mut pairs = self.try_vec(items.len())?;
                for it in items {
                    match self.heap.seq(it) {
                        Some([k, v]) => pairs.push((*k, *v)),
                        _ => return Err(self.malformed("dict() items must be (key, value) pairs")),
                    }
                }
                self.new_dict(pairs)
            }
            (Kind::CopyregReconstructor, [cls, base, state]) => {
                let cg = self.expect_global(*cls, "the class given to copyreg._reconstructor")?;
                let bg = self.expect_global(*base, "the base given to copyreg._reconstructor")?;
                if bg.kind() != Kind::Object {
                    return Err(self.refused(format!(
                        "copyreg._reconstructor with base {}.{} is not supported (only object)",
                        allow::entry(bg).module,
                        allow::entry(bg).name
                    )));
                }
                match cg.kind() {
                    Kind::OrderedDict | Kind::Dict => self.new_dict(Vec::new()),
                    _ => self.new_object(cg, How::Reconstructor, *state, None),
                }
            }
            (Kind::CopyregReconstructor, _) => {
                Err(self.malformed("copyreg._reconstructor takes (class, base, state)"))
            }
            (Kind::CopyregNewObj, [cls, rest @ ..]) => {
                let cg = self.expect_global(*cls, "the class given to copyreg.__newobj__")?;
                let rest = rest.to_vec();
                let args = self.new_tuple(&rest)?;
                self.new_instance(cg, args, None)
            }
            (Kind::CopyregNewObj, []) => Err(self.malformed("copyreg.__newobj__ without a class")),
            (Kind::GetAttr, [obj, name]) => {
                let is_zoneinfo = matches!(obj, Value::Global(o) if o.kind() == Kind::ZoneInfo);
                if is_zoneinfo && self.heap.str(*name) == Some("_unpickle") {
                    if let Some(g) = allow::lookup("zoneinfo", "ZoneInfo._unpickle") {
                        return Ok(Value::Global(g));
                    }
                }
                let what = self.heap.type_name(*obj);
                let attr = self
                    .heap
                    .py_repr(*name, 0)
                    .unwrap_or_else(|| self.heap.type_name(*name));
                Err(self.refused(format!(
                    "getattr({what}, {attr}) is not allowed: the only getattr a DataFrame pickle \
                     may use is getattr(zoneinfo.ZoneInfo, '_unpickle')"
                )))
            }
            (Kind::GetAttr, _) => {
                Err(self.refused("getattr with other than two arguments is not allowed"))
            }
            _ => self.new_object(g, How::Call, args, None),
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Parse a protocol-0 memo index.
fn parse_index(b: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(b).ok()?.trim();
    s.parse::<u64>().ok()
}

/// Decimal digits to little-endian two's complement bytes.
fn decimal_to_le(digits: &str, neg: bool) -> Vec<u8> {
    // magnitude in u32 limbs
    let mut limbs: Vec<u32> = vec![0];
    for chunk in digits.as_bytes().chunks(9) {
        let mut mul = 1u64;
        let mut add = 0u64;
        for &c in chunk {
            mul *= 10;
            add = add * 10 + (c - b'0') as u64;
        }
        let mut carry = add;
        for l in limbs.iter_mut() {
            let v = *l as u64 * mul + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            limbs.push(carry as u32);
        }
    }
    let mut bytes: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    // room for the sign bit
    bytes.push(0);
    if neg {
        let mut carry = 1u16;
        for x in bytes.iter_mut() {
            let v = (!*x) as u16 + carry;
            *x = v as u8;
            carry = v >> 8;
        }
    }
    bytes
}

/// Python's `codecs.escape_decode` for the inside of a STRING literal.
fn escape_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let &e = s.get(i)?;
        i += 1;
        match e {
            b'\n' => {}
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                for _ in 0..2 {
                    match s.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' => {
                let h = s.get(i..i + 2)?;
                let v = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
                out.push(v);
                i += 2;
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Python's `raw-unicode-escape` decoding (UNICODE opcode).
fn raw_unicode_escape(s: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'\\' && matches!(s.get(i + 1), Some(b'u') | Some(b'U')) {
            // An odd number of backslashes before u/U makes an escape.
            let n = if s[i + 1] == b'u' { 4 } else { 8 };
            let h = s.get(i + 2..i + 2 + n)?;
            let v = u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
            out.push(char::from_u32(v)?);
            i += 2 + n;
        } else {
            out.push(c as char); // latin-1
            i += 1;
        }
    }
    Some(out)
}

/// `a.b.c` where each part is an ASCII Python identifier.
fn is_dotted_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|p| {
            let mut c = p.chars();
            matches!(c.next(), Some(ch) if ch == '_' || ch.is_ascii_alphabetic())
                && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_roundtrip() {
        use crate::pickle::value::bigint_to_decimal;
        for s in [
            "0",
            "1",
            "123456789012345678901234567890",
            "18446744073709551616",
        ] {
            for neg in [false, true] {
                let le = decimal_to_le(s, neg);
                let back = bigint_to_decimal(&le).unwrap();
                let want = if neg && s != "0" {
                    format!("-{s}")
                } else {
                    s.to_string()
                };
                assert_eq!(back, want);
            }
        }
    }
}
