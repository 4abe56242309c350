//! The pickle machine on hand-built opcode streams: every opcode family, every
//! refusal (with its message), hostile and broken input.

use std::path::Path;

use bytes::Bytes;
use embedstream::{
    frame::{read_pickle, read_pickle_bytes, FrameError, FrameOptions},
    pickle::{
        arena_budget, load, opcode_name, Heap, Kind, Limits, Loaded, Machine, PickleError, Value,
        ARENA_FLOOR, DEFAULT_ARENA_FACTOR,
    },
};

// ---------------------------------------------------------------------------
// A tiny assembler
// ---------------------------------------------------------------------------

fn proto(p: u8) -> Vec<u8> {
    vec![0x80, p]
}
fn short_str(s: &str) -> Vec<u8> {
    let mut v = vec![0x8c, s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}
fn global(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}
fn stack_global(module: &str, name: &str) -> Vec<u8> {
    let mut v = short_str(module);
    v.extend(short_str(name));
    v.push(0x93);
    v
}
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}
/// Wrap `body` in PROTO 4 ... STOP.
fn p4(body: &[u8]) -> Vec<u8> {
    cat(&[&proto(4), body, b"."])
}

fn run(data: &[u8]) -> Result<Loaded, PickleError> {
    load(Bytes::copy_from_slice(data))
}

fn ok(data: &[u8]) -> Loaded {
    match run(data) {
        Ok(l) => l,
        Err(e) => panic!("expected success, got: {e}"),
    }
}

fn err(data: &[u8]) -> String {
    match run(data) {
        Ok(l) => panic!("expected an error, got {:?}", l.root),
        Err(e) => e.to_string(),
    }
}

fn frame_err(data: &[u8]) -> String {
    match read_pickle_bytes(Bytes::copy_from_slice(data), &FrameOptions::default()) {
        Ok(f) => panic!("expected an error, got a frame of {} rows", f.rows),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
}

fn text(h: &Heap, v: Value) -> String {
    h.text(v).expect("text").to_string()
}

// ---------------------------------------------------------------------------
// Opcode families
// ---------------------------------------------------------------------------

#[test]
fn scalars() {
    let cases: Vec<(Vec<u8>, Value)> = vec![
        (p4(b"N"), Value::None),
        (p4(&[0x88]), Value::Bool(true)),
        (p4(&[0x89]), Value::Bool(false)),
        (b"I42\n.".to_vec(), Value::Int(42)),
        (b"I-7\n.".to_vec(), Value::Int(-7)),
        (b"I01\n.".to_vec(), Value::Bool(true)),
        (b"I00\n.".to_vec(), Value::Bool(false)),
        (b"L123L\n.".to_vec(), Value::Int(123)),
        (p4(&[b'J', 0xff, 0xff, 0xff, 0xff]), Value::Int(-1)),
        (p4(&[b'K', 200]), Value::Int(200)),
        (p4(&[b'M', 0x34, 0x12]), Value::Int(0x1234)),
        (p4(&[0x8a, 2, 0x00, 0x80]), Value::Int(-32768)),
        (p4(&[0x8a, 0]), Value::Int(0)),
        (p4(&[0x8b, 1, 0, 0, 0, 0x7f]), Value::Int(127)),
        (b"F1.5\n.".to_vec(), Value::Float(1.5)),
        (
            p4(&cat(&[b"G", &2.25f64.to_be_bytes()])),
            Value::Float(2.25),
        ),
    ];
    for (data, want) in cases {
        assert_eq!(ok(&data).root, want, "{data:?}");
    }
    // Big ints keep their bytes and format like Python.
    let l = ok(&p4(&[0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
    assert!(matches!(l.root, Value::BigInt(_)));
    assert_eq!(l.heap.py_str(l.root, 1).unwrap(), "18446744073709551616");
    let l = ok(b"L-123456789012345678901234567890L\n.");
    assert_eq!(
        l.heap.py_str(l.root, 1).unwrap(),
        "-123456789012345678901234567890"
    );
}

#[test]
fn strings_and_bytes() {
    let l = ok(&p4(&short_str("héllo")));
    assert_eq!(text(&l.heap, l.root), "héllo");
    let l = ok(&p4(&cat(&[b"X", &3u32.to_le_bytes(), b"abc"])));
    assert_eq!(text(&l.heap, l.root), "abc");
    let l = ok(&p4(&cat(&[&[0x8d], &2u64.to_le_bytes(), b"xy"])));
    assert_eq!(text(&l.heap, l.root), "xy");
    let l = ok(b"Vcaf\\u00e9 \\U0001f680\n.");
    assert_eq!(text(&l.heap, l.root), "café 🚀");
    let l = ok(b"S'a\\'b\\n\\x41\\101'\n.");
    assert_eq!(l.heap.bytes_of(l.root).unwrap().as_ref(), b"a'b\nAA");
    let l = ok(&cat(&[b"T", &2i32.to_le_bytes(), b"hi."]));
    assert!(matches!(l.root, Value::LegacyStr(_)));
    let l = ok(&cat(&[b"U", &[2], b"hi."]));
    assert_eq!(l.heap.text(l.root), Some("hi"));
    let l = ok(&p4(&cat(&[b"B", &3u32.to_le_bytes(), b"\x00\x01\x02"])));
    assert!(matches!(l.root, Value::Bytes(_)));
    assert_eq!(l.heap.bytes_of(l.root).unwrap().as_ref(), b"\x00\x01\x02");
    let l = ok(&p4(&cat(&[b"C", &[1], b"z"])));
    assert_eq!(l.heap.bytes_of(l.root).unwrap().as_ref(), b"z");
    let l = ok(&p4(&cat(&[&[0x8e], &1u64.to_le_bytes(), b"q"])));
    assert_eq!(l.heap.bytes_of(l.root).unwrap().as_ref(), b"q");
    let l = ok(&cat(&[&proto(5), &[0x96], &2u64.to_le_bytes(), b"ba."]));
    assert!(matches!(l.root, Value::ByteArray(_)));
    // Protocol 2 bytes: _codecs.encode(latin-1 text, 'latin1') is evaluated, not called.
    let l = ok(&cat(&[
        &proto(2),
        &global("_codecs", "encode"),
        b"X\x03\x00\x00\x00\xc3\xbfA",
        b"X\x06\x00\x00\x00latin1",
        &[0x86],
        b"R.",
    ]));
    assert_eq!(l.heap.bytes_of(l.root).unwrap().as_ref(), b"\xffA");
}

#[test]
fn containers() {
    let l = ok(&p4(b")"));
    assert_eq!(l.heap.tuple(l.root).unwrap().len(), 0);
    let l = ok(&p4(&[b'K', 1, b'K', 2, 0x86]));
    assert_eq!(
        l.heap.tuple(l.root).unwrap(),
        &[Value::Int(1), Value::Int(2)]
    );
    let l = ok(&p4(&[b'K', 1, 0x85]));
    assert_eq!(l.heap.tuple(l.root).unwrap().len(), 1);
    let l = ok(&p4(&[b'K', 1, b'K', 2, b'K', 3, 0x87]));
    assert_eq!(l.heap.tuple(l.root).unwrap().len(), 3);
    let l = ok(&p4(b"(K\x01K\x02K\x03K\x04t"));
    assert_eq!(l.heap.tuple(l.root).unwrap().len(), 4);
    let l = ok(&p4(b"]K\x01a(K\x02K\x03e"));
    assert_eq!(
        l.heap.list(l.root).unwrap(),
        &[Value::Int(1), Value::Int(2), Value::Int(3)]
    );
    let l = ok(b"(I1\nI2\nl.");
    assert_eq!(l.heap.list(l.root).unwrap().len(), 2);
    let l = ok(&p4(&cat(&[
        b"}",
        &short_str("a"),
        b"K\x01s(",
        &short_str("b"),
        b"K\x02u",
    ])));
    assert_eq!(l.heap.get(l.root, "a"), Some(Value::Int(1)));
    assert_eq!(l.heap.get(l.root, "b"), Some(Value::Int(2)));
    let l = ok(b"(S'k'\nI5\nd.");
    assert_eq!(l.heap.get(l.root, "k"), Some(Value::Int(5)));
    let l = ok(&p4(&[0x8f, b'(', b'K', 1, b'K', 2, 0x90]));
    assert!(matches!(l.root, Value::Set(_)));
    let l = ok(&p4(&[b'(', b'K', 1, 0x91]));
    assert!(matches!(l.root, Value::FrozenSet(_)));
}

#[test]
fn stack_and_memo() {
    // POP, POP_MARK, DUP
    assert_eq!(ok(&p4(b"K\x01K\x020")).root, Value::Int(1));
    assert_eq!(ok(&p4(b"K\x07(K\x01K\x021")).root, Value::Int(7));
    let l = ok(&p4(&[b'K', 9, b'2', 0x86]));
    assert_eq!(
        l.heap.tuple(l.root).unwrap(),
        &[Value::Int(9), Value::Int(9)]
    );
    // PUT/GET (text), BINPUT/BINGET, LONG_BINPUT/LONG_BINGET, MEMOIZE
    let l = ok(b"I5\np0\n0g0\n.");
    assert_eq!(l.root, Value::Int(5));
    assert_eq!(ok(&p4(b"K\x05q\x000h\x00")).root, Value::Int(5));
    assert_eq!(
        ok(&p4(b"K\x05r\x00\x00\x00\x000j\x00\x00\x00\x00")).root,
        Value::Int(5)
    );
    assert_eq!(ok(&p4(&[b'K', 3, 0x94, b'0', b'h', 0])).root, Value::Int(3));
    // A memoised list is shared, so appends through the memo are seen.
    let l = ok(&p4(&[b']', 0x94, b'h', 0, b'K', 1, b'a', b'0']));
    assert_eq!(l.heap.list(l.root).unwrap(), &[Value::Int(1)]);
    // A list appended to itself (a cycle) is fine: values are handles.
    let l = ok(&p4(&[b']', 0x94, b'h', 0, b'a']));
    assert_eq!(l.heap.list(l.root).unwrap().len(), 1);
}

#[test]
fn framing() {
    let l = ok(&cat(&[&proto(4), &[0x95], &3u64.to_le_bytes(), b"K\x01."]));
    assert_eq!(l.root, Value::Int(1));
    assert_eq!(l.protocol, 4);
}

#[test]
fn globals_and_construction_are_recorded_not_run() {
    // GLOBAL + REDUCE
    let l = ok(&cat(&[
        &proto(2),
        &global("builtins", "slice"),
        b"K\x00K\x03N\x87R.",
    ]));
    let o = l.heap.object(l.root).unwrap();
    assert_eq!(o.kind(), Kind::Slice);
    assert_eq!(o.class_name(), "builtins.slice");
    // STACK_GLOBAL + NEWOBJ + BUILD
    let l = ok(&p4(&cat(&[
        &stack_global("pandas.core.frame", "DataFrame"),
        b")\x81}",
        &short_str("_typ"),
        &short_str("dataframe"),
        b"sb",
    ])));
    let o = l.heap.object(l.root).unwrap();
    assert_eq!(o.kind(), Kind::DataFrame);
    assert_eq!(
        l.heap
            .get(o.state.unwrap(), "_typ")
            .map(|v| text(&l.heap, v)),
        Some("dataframe".into())
    );
    // NEWOBJ_EX
    let l = ok(&p4(&cat(&[&stack_global("pandas", "Index"), b")}\x92"])));
    assert!(l.heap.object(l.root).unwrap().kwargs.is_some());
    // INST and OBJ with an allowed class
    let l = ok(b"(I1\nI5\nI1\nibuiltins\nslice\n.");
    assert_eq!(l.heap.object(l.root).unwrap().kind(), Kind::Slice);
    let l = ok(&cat(&[b"(", &global("builtins", "slice"), b"I1\nI2\nNo."]));
    assert_eq!(l.heap.object(l.root).unwrap().kind(), Kind::Slice);
    // copyreg._reconstructor(cls, object, None) + BUILD
    let l = ok(&cat(&[
        &global("copy_reg", "_reconstructor"),
        b"(",
        &global("pandas.core.frame", "DataFrame"),
        &global("__builtin__", "object"),
        b"NtR(dp1\nb.",
    ]));
    // REDUCE(_reconstructor, (cls, object, None)) then BUILD
    let _ = l;
    // collections.OrderedDict() becomes a dict that SETITEMS fills.
    let l = ok(&p4(&cat(&[
        &stack_global("collections", "OrderedDict"),
        b")R",
        &short_str("k"),
        b"K\x01s",
    ])));
    assert_eq!(l.heap.get(l.root, "k"), Some(Value::Int(1)));
    // getattr(zoneinfo.ZoneInfo, '_unpickle')('Europe/Berlin', 1): the one allowed getattr.
    let l = ok(&p4(&cat(&[
        &stack_global("builtins", "getattr"),
        &stack_global("zoneinfo", "ZoneInfo"),
        &short_str("_unpickle"),
        b"\x86R",
        &short_str("Europe/Berlin"),
        b"K\x01\x86R",
    ])));
    assert_eq!(
        l.heap.object(l.root).unwrap().class_name(),
        "zoneinfo.ZoneInfo._unpickle"
    );
}

// ---------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------

#[test]
fn forbidden_globals_are_refused_with_name_and_offset() {
    let pwned = Path::new("/tmp/embedstream-pwned");
    let cases: &[(&str, &str)] = &[
        ("os", "system"),
        ("posix", "system"),
        ("nt", "system"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "__import__"),
        ("builtins", "open"),
        ("__builtin__", "apply"),
        ("__builtin__", "eval"),
        ("subprocess", "Popen"),
        ("subprocess", "check_output"),
        ("numpy", "load"),
        ("numpy.lib.npyio", "load"),
        ("pickle", "loads"),
        ("pandas.io.pickle", "read_pickle"),
        ("builtins", "getattr.__self__.exec"),
    ];
    for (m, n) in cases {
        // GLOBAL at offset 2 (after PROTO 2)
        let data = cat(&[
            &proto(2),
            &global(m, n),
            b"S'touch /tmp/embedstream-pwned'\n\x85R.",
        ]);
        let msg = err(&data);
        assert_contains(&msg, &[&format!("{m}.{n}"), "byte offset 2", "refused"]);
        // STACK_GLOBAL: the opcode after the two strings
        let sg = stack_global(m, n);
        let data = p4(&cat(&[&sg, b")R"]));
        let msg = err(&data);
        let at = 2 + sg.len() - 1;
        assert_contains(&msg, &[&format!("{m}.{n}"), &format!("byte offset {at}")]);
        // INST
        let data = cat(&[b"(S'x'\ni", m.as_bytes(), b"\n", n.as_bytes(), b"\n."]);
        assert_contains(&err(&data), &[&format!("{m}.{n}")]);
    }
    assert!(!pwned.exists());
}

#[test]
fn getattr_is_refused_except_for_zoneinfo_unpickle() {
    let msg = err(&p4(&cat(&[
        &stack_global("builtins", "getattr"),
        &stack_global("pandas.core.frame", "DataFrame"),
        &short_str("to_pickle"),
        b"\x86R",
    ])));
    assert_contains(
        &msg,
        &["getattr", "pandas.core.frame.DataFrame", "'to_pickle'"],
    );
    let msg = err(&p4(&cat(&[
        &stack_global("builtins", "getattr"),
        &stack_global("zoneinfo", "ZoneInfo"),
        &short_str("from_file"),
        b"\x86R",
    ])));
    assert_contains(&msg, &["getattr", "'from_file'"]);
}

#[test]
fn refused_opcode_families() {
    assert_contains(&err(b"Pabc\n."), &["PERSID", "persistent"]);
    assert_contains(&err(&p4(b"K\x01Q")), &["BINPERSID", "persistent"]);
    assert_contains(&err(&p4(&[0x82, 1])), &["EXT1", "byte offset 2"]);
    assert_contains(&err(&p4(&[0x83, 1, 0])), &["EXT2"]);
    assert_contains(&err(&p4(&[0x84, 1, 0, 0, 0])), &["EXT4"]);
    assert_contains(
        &err(&cat(&[&proto(5), &[0x97]])),
        &["NEXT_BUFFER", "out-of-band"],
    );
    assert_contains(
        &err(&cat(&[&proto(5), &[0x98]])),
        &["READONLY_BUFFER", "out-of-band"],
    );
    assert_contains(&err(&proto(6)), &["protocol 6"]);
    assert_contains(
        &err(&p4(&[0xfe])),
        &["unknown opcode 0xfe", "byte offset 2"],
    );
    // A call of something that is not an allow-listed global.
    assert_contains(&err(&p4(b"K\x01)R")), &["REDUCE", "int"]);
    // copyreg._reconstructor may only rebuild allowed classes.
    let data = cat(&[
        &global("copy_reg", "_reconstructor"),
        b"(",
        &global("subprocess", "Popen"),
    ]);
    assert_contains(&err(&data), &["subprocess.Popen"]);
}

#[test]
fn not_a_pickle() {
    assert_contains(&err(b""), &["empty"]);
    assert_contains(&err(b"\x89PNG\r\n\x1a\n"), &["not a pickle"]);
    assert_contains(
        &err(b"id,Company Name,Exp Years\nabc,Acme,2y\n"),
        &["not a pickle"],
    );
    // A pickle of an int is a valid pickle but no DataFrame.
    assert_contains(&frame_err(&p4(b"K\x2a")), &["DataFrame"]);
}

// ---------------------------------------------------------------------------
// Broken and hostile input
// ---------------------------------------------------------------------------

#[test]
fn absurd_lengths_fail_fast_without_allocating() {
    let cases: Vec<Vec<u8>> = vec![
        p4(&cat(&[b"X", &u32::MAX.to_le_bytes()])),
        p4(&cat(&[&[0x8d], &(u64::MAX / 2).to_le_bytes()])),
        p4(&cat(&[&[0x8e], &u64::MAX.to_le_bytes()])),
        p4(&cat(&[&[0x96], &(1u64 << 62).to_le_bytes()])),
        p4(&cat(&[b"B", &u32::MAX.to_le_bytes()])),
        p4(&cat(&[b"T", &i32::MAX.to_le_bytes()])),
        p4(&cat(&[&[0x8b], &i32::MAX.to_le_bytes()])),
        p4(&cat(&[&[0x95], &(1u64 << 63).to_le_bytes()])),
    ];
    for c in cases {
        let t = std::time::Instant::now();
        assert_contains(&err(&c), &["truncated"]);
        assert!(t.elapsed().as_millis() < 100);
    }
    assert_contains(
        &err(&p4(&cat(&[&[0x8b], &(-5i32).to_le_bytes()]))),
        &["negative"],
    );
    // A large (but present) LONG4 is kept as bytes, not expanded.
    let big = vec![0x11u8; 100_000];
    let l = ok(&p4(&cat(&[
        &[0x8b],
        &(big.len() as i32).to_le_bytes(),
        &big,
    ])));
    assert!(matches!(l.root, Value::BigInt(_)));
}

#[test]
fn deep_nesting_is_refused() {
    // MARK nesting
    let data = p4(&[b'('].repeat(100_000));
    assert_contains(&err(&data), &["nest"]);
    // EMPTY_LIST x N then APPEND x N-1: no marks, but 100,000 levels deep.
    let n = 100_000;
    let mut body = vec![b']'; n];
    body.extend(vec![b'a'; n - 1]);
    assert_contains(&err(&p4(&body)), &["nest"]);
    // Dicts, TUPLE1 chains
    let mut body = vec![b'N'];
    body.extend(vec![0x85; 5000]);
    assert_contains(&err(&p4(&body)), &["nest"]);
}

#[test]
fn memo_abuse() {
    assert_contains(&err(&p4(b"h\x00")), &["memo index 0"]);
    assert_contains(&err(&p4(b"j\xff\xff\xff\xff")), &["memo"]);
    assert_contains(&err(&p4(b"Nr\xff\xff\xff\xff")), &["memo"]);
    assert_contains(&err(b"Np99999999999\n."), &["memo"]);
    assert_contains(&err(b"g12\n."), &["memo index 12"]);
    // PUT with nothing on the stack
    assert_contains(&err(&p4(b"q\x00")), &["underflow"]);
}

#[test]
fn stack_abuse() {
    assert_contains(&err(&p4(b"")), &["underflow"]);
    assert_contains(&err(&p4(b"0")), &["MARK"]);
    assert_contains(&err(&p4(b"K\x01a")), &["underflow"]);
    assert_contains(&err(&p4(b"\x86")), &["underflow"]);
    assert_contains(&err(&p4(b"K\x01K\x01a")), &["append", "int"]);
    assert_contains(&err(&p4(b"t")), &["MARK"]);
    assert_contains(&err(&p4(b"}(K\x01u")), &["odd"]);
    assert_contains(&err(&p4(b"K\x01(K\x02e")), &["append"]);
    assert_contains(&err(&p4(b"K\x01Nb")), &["BUILD"]);
    // Items above a MARK are not reachable by POP-style opcodes below it.
    assert_contains(&err(&p4(b"K\x01(a")), &["underflow"]);
}

#[test]
fn non_utf8_text() {
    assert_contains(
        &err(&p4(&cat(&[b"X", &2u32.to_le_bytes(), b"\xff\xfe"]))),
        &["UTF-8"],
    );
    assert_contains(&err(&cat(&[b"c\xff\n\xfe\n."])), &["UTF-8"]);
    assert_contains(&err(&p4(&cat(&[&[0x8c, 1, 0xc3]]))), &["UTF-8"]);
}

fn small_real_pickle() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pandas/pandas-2.1.4/reference.to_pickle.pkl"),
    )
    .expect("fixture")
}

#[test]
fn truncation_at_every_byte_never_panics() {
    // Every byte of a small real pickle; every 7th of two larger ones.
    for (name, stride) in [
        ("pandas-2.1.4/reference.to_pickle.pkl", 1),
        ("pandas-1.5.3/kitchen_sink.dump-p2.pkl", 7),
        ("pandas-3.1.1-pyarrow/kitchen_sink.to_pickle.pkl", 7),
    ] {
        let data = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/pandas")
                .join(name),
        )
        .unwrap();
        assert!(read_pickle_bytes(Bytes::from(data.clone()), &FrameOptions::default()).is_ok());
        for n in (0..data.len()).step_by(stride) {
            let r = read_pickle_bytes(Bytes::copy_from_slice(&data[..n]), &FrameOptions::default());
            assert!(r.is_err(), "{name} cut at {n} converted");
        }
    }
}

#[test]
fn single_byte_corruptions_never_panic() {
    let data = small_real_pickle();
    let mut converted = 0;
    for pos in (0..data.len()).step_by(3) {
        for v in [0x00u8, 0x7f, 0xff, data[pos] ^ 0x01] {
            let mut d = data.clone();
            d[pos] = v;
            if read_pickle_bytes(Bytes::from(d), &FrameOptions::default()).is_ok() {
                converted += 1;
            }
        }
    }
    assert!(converted > 0);
}

#[test]
fn shape_dtype_and_byte_count_mismatches() {
    // {'v': _frombuffer(bytearray(16), dtype('f8'), (3,), 'C')}: 24 bytes needed.
    let dtype = cat(&[
        &stack_global("numpy", "dtype"),
        &short_str("f8"),
        &[0x89, 0x88, 0x87],
        b"R(K\x03",
        &short_str("<"),
        b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
    ]);
    let arr = |nbytes: u64, shape: &[u8], dt: &[u8]| {
        cat(&[
            &stack_global("numpy.core.numeric", "_frombuffer"),
            b"(",
            &[0x96],
            &nbytes.to_le_bytes(),
            &vec![0u8; nbytes as usize],
            dt,
            shape,
            &short_str("C"),
            b"tR",
        ])
    };
    let frame = |a: Vec<u8>| cat(&[&proto(5), b"}", &short_str("v"), &a, b"s."]);
    let msg = frame_err(&frame(arr(16, b"K\x03\x85", &dtype)));
    assert_contains(&msg, &["needs 24 bytes", "16"]);
    let ok_frame = read_pickle_bytes(
        Bytes::from(frame(arr(24, b"K\x03\x85", &dtype))),
        &FrameOptions::default(),
    )
    .unwrap();
    assert_eq!(ok_frame.rows, 3);
    // Absurd shape: product overflows.
    let msg = frame_err(&frame(arr(
        8,
        b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x0f\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x0f\x86",
        &dtype,
    )));
    assert_contains(&msg, &["overflow"]);
    // Unknown dtype code.
    let bad_dtype = cat(&[
        &stack_global("numpy", "dtype"),
        &short_str("q9"),
        &[0x89, 0x88, 0x87],
        b"R",
    ]);
    assert_contains(
        &frame_err(&frame(arr(8, b"K\x01\x85", &bad_dtype))),
        &["dtype"],
    );
}

#[test]
fn hostile_fixtures_are_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let map = expected.as_object().unwrap();
    assert!(map.len() >= 30);
    let mut failures = Vec::new();
    for (file, want) in map {
        let want = want.as_str().unwrap();
        match read_pickle(&dir.join(file), &FrameOptions::default()) {
            Ok(_) => failures.push(format!("{file}: converted")),
            Err(e) if e.to_string().contains(want) => {}
            Err(e) => failures.push(format!("{file}: {e} (expected {want:?})")),
        }
    }
    assert!(!Path::new("/tmp/embedstream-pwned").exists());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn errors_are_typed() {
    let e = read_pickle_bytes(
        Bytes::from(p4(&global("os", "system"))),
        &FrameOptions::default(),
    )
    .unwrap_err();
    match e {
        FrameError::Pickle(PickleError::ForbiddenGlobal { global, offset }) => {
            assert_eq!(global, "os.system");
            assert_eq!(offset, 2);
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The memory budget of the value arena
// ---------------------------------------------------------------------------

/// `]` then `n` × `unit`, as a protocol 4 pickle: a list of `n` things.
fn list_of(unit: &[u8], n: usize) -> Vec<u8> {
    let mut v = proto(4);
    v.push(b']');
    v.extend(unit.repeat(n));
    v.push(b'.');
    v
}

/// The budget refusal `read_pickle_bytes` must give for `data`, at the
/// offset the error names (which must hold the opcode it names).
fn budget_message(data: &[u8], budget: usize, e: &FrameError) -> String {
    let offset = match e {
        FrameError::Pickle(p @ PickleError::MemoryBudget { .. }) => p.offset().unwrap(),
        other => panic!("expected a memory-budget refusal, got: {other}"),
    };
    format!(
        "pickle exceeds its memory budget at byte offset {offset} ({}): the values it builds \
         would take more than {budget} bytes, the budget for a {}-byte input (a pickle made to \
         exhaust memory, or an unusually dense one)",
        opcode_name(data[offset as usize]),
        data.len()
    )
}

/// 1M empty dicts appended to a list (2 MB of pickle, ~44 MB of values) are
/// refused once they reach a 16 MiB budget, with the budget in the message.
#[test]
fn dict_bomb_is_refused_at_its_memory_budget() {
    let data = list_of(b"}a", 1_000_000);
    let budget = 16 << 20;
    let options = FrameOptions {
        max_arena_bytes: Some(budget),
        ..Default::default()
    };
    let e = read_pickle_bytes(Bytes::from(data.clone()), &options).unwrap_err();
    assert!(e.is_over_memory_budget());
    assert_eq!(e.to_string(), budget_message(&data, budget, &e));
    // Under a budget that fits, the same pickle loads (it is valid), and
    // what it reserved is what was counted.
    let mut limits = Limits::for_input(data.len());
    limits.max_arena_bytes = 64 << 20;
    let l = Machine::with_limits(Bytes::from(data), limits)
        .run()
        .unwrap();
    assert_eq!(l.heap.list(l.root).unwrap().len(), 1_000_000);
    assert!(l.arena_bytes > 16 << 20 && l.arena_bytes <= 64 << 20);
}

/// Through `convert`, at the default factor: a dict bomb large enough to pass
/// `12 × size + 32 MiB` is refused, and the message names the flag.
#[test]
fn convert_refuses_a_dict_bomb_under_the_default_budget_and_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bomb.pkl");
    // 4M empty dicts: 8 MB of pickle, ~176 MB of values at 22 bytes each.
    let data = list_of(b"}a", 4_000_000);
    std::fs::write(&input, &data).unwrap();
    let args = embedstream::convert::ConvertArgs::new(&input, None);
    assert_eq!(args.max_memory_factor, DEFAULT_ARENA_FACTOR);
    let e = embedstream::convert::convert(&args).unwrap_err();
    let budget = arena_budget(data.len(), DEFAULT_ARENA_FACTOR);
    assert_eq!(budget, 12 * data.len() + ARENA_FLOOR);
    // The offset depends on where the budget ran out: read it from the text,
    // then check everything else, and that it holds the opcode named.
    let msg = format!("{e:#}");
    let offset: u64 = msg
        .split("byte offset ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {msg:?}"));
    let expected = format!(
        "{}: cannot convert: pickle exceeds its memory budget at byte offset {offset} ({}): \
         the values it builds would take more than {budget} bytes, the budget for a {}-byte \
         input (a pickle made to exhaust memory, or an unusually dense one); if the file is \
         genuine, allow more with --max-memory-factor (now 12)",
        input.display(),
        opcode_name(data[offset as usize]),
        data.len()
    );
    assert_eq!(msg, expected);
    assert!(!input.with_extension("arrow").exists());
}

/// A genuine DataFrame pickle converts under the default budget, far below it.
#[test]
fn the_sample_converts_under_the_default_budget() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample.pkl");
    let data = std::fs::read(&sample).unwrap();
    let l = load(Bytes::from(data.clone())).unwrap();
    assert!(l.arena_bytes < data.len(), "{} bytes", l.arena_bytes);
    let dir = tempfile::tempdir().unwrap();
    let args =
        embedstream::convert::ConvertArgs::new(&sample, Some(dir.path().join("sample.arrow")));
    let summary = embedstream::convert::convert(&args).unwrap();
    assert!(summary.rows > 0);
}

/// Every cheap way to make many values from few bytes (empty lists, sets,
/// tuples, objects, memo copies, `list(x)` copies, nested BUILD, a list
/// appended to itself) either stays within a 4 MiB budget or is refused at
/// it; none gets past it.
#[test]
fn other_amplifiers_stay_within_the_budget() {
    let budget = 4 << 20;
    let complex = stack_global("builtins", "complex");
    let list = stack_global("builtins", "list");
    let n = 400_000;
    let mut copies = proto(4);
    copies.extend(&list);
    copies.push(0x94); // memo 0: builtins.list
    copies.extend(b"](");
    copies.extend(b"K\x01".repeat(1000));
    copies.extend(b"e\x94"); // memo 1: a list of 1000 ints
    copies.extend(b"0]");
    copies.extend(b"h\x00h\x01\x85Ra".repeat(2000)); // list(memo[1]) × 2000
    copies.push(b'.');
    let mut objects = proto(4);
    objects.extend(&complex);
    objects.extend(b"\x94]");
    objects.extend(b"h\x00)Ra".repeat(n));
    objects.push(b'.');
    let mut builds = proto(4);
    builds.extend(&complex);
    builds.extend(b")R");
    builds.extend(b")b".repeat(n));
    builds.push(b'.');
    let mut memo = proto(4);
    memo.extend(b"K\x07\x94]");
    memo.extend(b"h\x00a".repeat(n));
    memo.push(b'.');
    let mut itself = proto(4);
    itself.extend(b"]\x94");
    itself.extend(b"h\x00a".repeat(n));
    itself.push(b'.');
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty dicts", list_of(b"}a", n)),
        ("empty lists", list_of(b"]a", n)),
        ("empty sets", list_of(&[0x8f, b'a'], n)),
        ("empty tuples", list_of(b")a", n)),
        ("memoized empty lists", list_of(b"]\x94a", n)),
        ("objects", objects),
        ("list() copies", copies),
        ("nested BUILD", builds),
        ("memo copies", memo),
        ("a list appended to itself", itself),
    ];
    let mut refused = 0;
    for (what, data) in cases {
        let mut limits = Limits::for_input(data.len());
        limits.max_arena_bytes = budget;
        match Machine::with_limits(Bytes::from(data), limits).run() {
            Ok(l) => assert!(l.arena_bytes <= budget, "{what}: {} bytes", l.arena_bytes),
            Err(PickleError::MemoryBudget { budget: b, .. }) => {
                assert_eq!(b, budget as u64, "{what}");
                refused += 1;
            }
            Err(PickleError::Limit { what: why, .. }) if why.contains("nested deeper") => {}
            Err(e) => panic!("{what}: {e}"),
        }
    }
    // At 400,000 items each, the bombs (not the memo copies or BUILDs) pass 4 MiB.
    assert!(refused >= 6, "only {refused} refused");
}

/// A DataFrame whose column axis is `RangeIndex(0, n)`: a few hundred bytes
/// of pickle that would make `n` labels.
fn range_columns_frame(n: u32) -> Vec<u8> {
    let new_index = global("pandas.core.indexes.base", "_new_Index");
    let range = global("pandas.core.indexes.range", "RangeIndex");
    let range_index = |stop: u32| {
        cat(&[
            &new_index,
            b"(",
            &range,
            b"}(",
            &short_str("start"),
            b"K\x00",
            &short_str("stop"),
            b"J",
            &stop.to_le_bytes(),
            &short_str("step"),
            b"K\x01",
            b"u", // SETITEMS
            b"tR",
        ])
    };
    p4(&cat(&[
        &global("pandas.core.frame", "DataFrame"),
        b")\x81}",
        &short_str("_mgr"),
        &global("pandas.core.internals.managers", "BlockManager"),
        b")(", // no blocks; axes:
        &range_index(n),
        &range_index(0),
        b"l\x86R", // [columns, index] -> (blocks, axes) -> BlockManager(...)
        b"sb",
    ]))
}

/// Column labels and placements are bounded by the pickle's size (beyond
/// 65,536), so a made-up `RangeIndex` of ten million columns is refused
/// before ten million labels are made.
#[test]
fn column_counts_are_bounded_by_the_pickle_size() {
    let data = range_columns_frame(10_000_000);
    assert_eq!(
        frame_err(&data),
        format!(
            "malformed DataFrame pickle: RangeIndex of 10000000 columns in a {}-byte pickle",
            data.len()
        )
    );
    // Within the bound the same shape gets as far as its (missing) blocks.
    assert_contains(
        &frame_err(&range_columns_frame(1000)),
        &["column 0 ('0') is in no block"],
    );
}

/// The flag reaches the reader: `--max-memory-factor 1` refuses a 4 MB dict
/// bomb (4 MB + 32 MiB of budget), exits 1 and says which flag to raise;
/// 0 is no factor.
#[test]
fn max_memory_factor_flag_sets_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bomb.pkl");
    let data = list_of(b"}a", 2_000_000);
    std::fs::write(&input, &data).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_embedstream"))
        .args(["convert", "--no-progress", "--max-memory-factor", "1"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let budget = arena_budget(data.len(), 1);
    assert_contains(
        &err,
        &[
            "cannot convert: pickle exceeds its memory budget at byte offset ",
            &format!(
                "would take more than {budget} bytes, the budget for a {}-byte input",
                data.len()
            ),
            "allow more with --max-memory-factor (now 1)",
        ],
    );
    assert!(!input.with_extension("arrow").exists());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_embedstream"))
        .args(["convert", "--max-memory-factor", "0"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_contains(
        &String::from_utf8_lossy(&out.stderr),
        &["--max-memory-factor"],
    );
}

/// A list of `n` dicts, row `i` holding `{key(i): i}`.
fn list_of_one_key_dicts(n: usize, key: impl Fn(usize) -> String) -> Vec<u8> {
    let mut body = vec![b']', b'('];
    for i in 0..n {
        body.push(b'}');
        body.extend(short_str(&key(i)));
        body.push(b'J');
        body.extend((i as i32).to_le_bytes());
        body.push(b's');
    }
    body.push(b'e');
    p4(&body)
}

/// Every row of a list of dicts gets a cell in every column: rows so sparse
/// that the cells would dwarf the pairs are refused (3,000 dicts of one
/// distinct key each would make 9,000,000 cells from a 45 kB pickle);
/// shared keys, missing in some rows, still make columns with nulls.
#[test]
fn sparse_list_of_dicts_is_bounded_by_its_pairs() {
    let data = list_of_one_key_dicts(3000, |i| format!("k{i}"));
    assert_eq!(
        frame_err(&data),
        "a list of 3000 dicts with 3000 distinct keys would make 9000000 cells from only 3000 \
         key/value pairs; rows this sparse are not supported"
    );
    let data = list_of_one_key_dicts(3000, |i| format!("k{}", i % 3));
    let frame = read_pickle_bytes(Bytes::from(data), &FrameOptions::default()).unwrap();
    assert_eq!(frame.rows, 3000);
    let names: Vec<&str> = frame.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["k0", "k1", "k2"]);
    for c in &frame.columns {
        assert_eq!(c.data.null_count(), 2000, "{}", c.name);
    }
}
