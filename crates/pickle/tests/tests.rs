//! The pickle reader against streams written by CPython's own `pickle` module (hex below, made
//! with `pickle.dumps(..., protocol=N)`), and fuzzed with arbitrary bytes.

use fleetscore_pickle::{AllowList, Limits, Node, Pickle, Value, load, unpickle};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn read(bytes: &[u8]) -> Pickle {
    unpickle(bytes, &AllowList::new(), &Limits::default()).unwrap()
}

#[test]
fn protocol_4_scalars_strings_and_shared_references() {
    // x = [1, 2]; pickle.dumps({"a": x, "b": [x, x], "t": (1, -2, 2**40, -2**70, 1.5, True,
    // None, "é", b"\x00\xff")}, protocol=4)
    let pk = read(&hex(
        "80049553000000000000007d94288c0161945d94284b014b02658c0162945d942868026802658c017494284b014afeffffff8a060000000000018a090000000000000000c0473ff8000000000000884e8c02c3a994430200ff947494752e",
    ));
    assert_eq!(pk.protocol, 4);
    let root = pk.root();
    let a = pk.dict_get(root, "a").unwrap();
    let b = pk.as_seq(pk.dict_get(root, "b").unwrap()).unwrap();
    assert_eq!(b, [a, a], "memoized list must stay one object");
    let t = pk.as_seq(pk.dict_get(root, "t").unwrap()).unwrap();
    assert_eq!(t[0], Value::Int(1));
    assert_eq!(t[1], Value::Int(-2));
    assert_eq!(t[2], Value::Int(1 << 40));
    assert!(matches!(pk.get(t[3]), Some(Node::BigInt(_))));
    assert_eq!(t[4], Value::Float(1.5));
    assert_eq!(t[5], Value::Bool(true));
    assert_eq!(t[6], Value::None);
    assert_eq!(pk.as_str(t[7]), Some("é"));
    assert_eq!(pk.as_bytes(t[8]), Some(&[0u8, 255][..]));
}

#[test]
fn protocol_5_bytearray_sets_and_frames() {
    // pickle.dumps({"buf": bytearray(b"abc"), "s": {1, 2}, "f": frozenset([3])}, protocol=5)
    let pk = read(&hex(
        "8005952d000000000000007d94288c0362756694960300000000000000616263948c0173948f94284b014b02908c016694284b039194752e",
    ));
    let root = pk.root();
    assert_eq!(
        pk.as_bytes(pk.dict_get(root, "buf").unwrap()),
        Some(&b"abc"[..])
    );
    match pk.get(pk.dict_get(root, "s").unwrap()) {
        Some(Node::Set(items)) => assert_eq!(items, &[Value::Int(1), Value::Int(2)]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        pk.get(pk.dict_get(root, "f").unwrap()),
        Some(Node::Set(_))
    ));
}

#[test]
fn protocol_0_text_opcodes() {
    // pickle.dumps({"x": [1, 2.5, "s", None, True, 12345678901234]}, protocol=0)
    let pk = read(&hex(
        "286470300a56780a70310a286c70320a49310a6146322e350a6156730a70330a614e614930310a614c31323334353637383930313233344c0a61732e",
    ));
    let x = pk.as_seq(pk.dict_get(pk.root(), "x").unwrap()).unwrap();
    assert_eq!(x[0], Value::Int(1));
    assert_eq!(x[1], Value::Float(2.5));
    assert_eq!(pk.as_str(x[2]), Some("s"));
    assert_eq!(x[3], Value::None);
    assert_eq!(x[4], Value::Bool(true));
    assert_eq!(x[5], Value::Int(12_345_678_901_234));
}

#[test]
fn every_truncation_of_a_valid_stream_is_an_error() {
    let bytes = hex(
        "80049553000000000000007d94288c0161945d94284b014b02658c0162945d942868026802658c017494284b014afeffffff8a060000000000018a090000000000000000c0473ff8000000000000884e8c02c3a994430200ff947494752e",
    );
    for n in 0..bytes.len() {
        let err = load(&bytes[..n], &AllowList::new(), &Limits::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("byte") || msg.contains("truncated"),
            "{n}: {msg}"
        );
    }
}

#[test]
fn object_limit_stops_a_stream_that_builds_too_much() {
    // EMPTY_LIST repeated: each one a new object.
    let mut bytes = vec![0x80, 0x04];
    bytes.extend(std::iter::repeat_n(b']', 1000));
    bytes.push(b'.');
    let limits = Limits {
        max_nodes: 100,
        ..Limits::default()
    };
    let err = unpickle(&bytes, &AllowList::new(), &limits).unwrap_err();
    assert!(err.to_string().contains("more than 100 objects"), "{err}");
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    // 200,000 nested lists: [[[[...]]]] built with EMPTY_LIST and APPEND. The arena keeps
    // dropping and reading iterative.
    let n = 200_000;
    let mut bytes = vec![0x80, 0x04];
    bytes.extend(std::iter::repeat_n(b']', n));
    bytes.extend(std::iter::repeat_n(b'a', n - 1));
    bytes.push(b'.');
    let pk = read(&bytes);
    assert_eq!(pk.len(), n);
}

#[test]
fn a_corrupt_length_never_allocates_it() {
    // BINBYTES8 claiming 2^62 bytes.
    let mut bytes = vec![0x80, 0x04, 0x8e];
    bytes.extend((1u64 << 62).to_le_bytes());
    let err = read_err(&bytes);
    assert!(err.contains("truncated pickle: bytes at byte 2"), "{err}");
}

fn read_err(bytes: &[u8]) -> String {
    unpickle(bytes, &AllowList::new(), &Limits::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn unknown_opcode_and_stack_errors_name_the_offset() {
    assert_eq!(
        read_err(b"\x80\x04\xff"),
        "corrupt pickle: unknown opcode 0xff at byte 2"
    );
    assert_eq!(
        read_err(b"\x80\x04a"),
        "corrupt pickle at byte 2: stack is empty"
    );
    assert!(
        read_err(b"\x80\x04K\x01K\x02a.")
            .contains("expected a container on the stack, found int 1")
    );
    assert!(read_err(b"\x80\x04\x97").contains("out-of-band buffers"));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = load(&bytes, &AllowList::new(), &Limits::default());
    }

    #[test]
    fn opcode_soup_never_panics(ops in prop::collection::vec(
        prop::sample::select(b"()]}.0125acdehjlpqrstuNKJMGXBC\x80\x85\x86\x87\x88\x89\x8a\x8c\x8e\x8f\x90\x91\x93\x94\x95\x96R\x81b".to_vec()),
        0..256,
    )) {
        let _ = load(&ops, &AllowList::new(), &Limits::default());
    }
}

/// The memory bombs of `scripts/fixtures/gen_bombs.py`: each needs gigabytes if nothing counts
/// what the stack, memo or arena grow to; each stops at the budget with an error naming it and
/// the byte offset. (A small budget here keeps the test quick; the CLI tests run the default
/// one under an address-space limit.)
#[test]
fn memory_bombs_stop_at_the_budget_with_the_limit_and_offset_named() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bombs");
    let limits = Limits {
        max_memory_bytes: 300 << 20,
        ..Limits::default()
    };
    for name in ["dup.pkl.bz2", "memo.pkl.bz2", "lists.pkl.bz2"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        assert!(bytes.len() < 16 << 10, "{name} is a small file");
        let err = load(&bytes, &AllowList::new(), &limits).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, fleetscore_pickle::Error::Memory { limit, offset }
                if limit == 300 << 20 && offset > 0),
            "{name}: {message}"
        );
        assert!(
            message.contains("needs more than 314572800 bytes of memory")
                && message.contains("stopped at byte"),
            "{name}: {message}"
        );
    }
    // A budget smaller than the decompressed stream stops the decompression itself.
    let bytes = std::fs::read(dir.join("dup.pkl.bz2")).unwrap();
    let tiny = Limits {
        max_memory_bytes: 1 << 20,
        ..Limits::default()
    };
    let err = load(&bytes, &AllowList::new(), &tiny).unwrap_err();
    assert!(
        matches!(err, fleetscore_pickle::Error::Memory { offset: 0, .. }),
        "{err}"
    );
}

#[test]
fn the_budget_counts_what_a_real_load_allocates() {
    // As Python writes pickle.dumps([[0.5] * 1000] * 3, protocol=2): one list of 1,000
    // floats, shared three times (memoized, so built once).
    let shared = {
        let mut b = vec![0x80, 0x02, b']', b'q', 0, b'(', b'G'];
        b.extend_from_slice(&0.5f64.to_be_bytes());
        b.extend(std::iter::repeat_n(b'2', 999));
        b.extend_from_slice(b"e]q\x01(h\x00h\x00h\x00e.");
        b
    };
    let budget = fleetscore_pickle::Budget::new(usize::MAX);
    fleetscore_pickle::load_within(&shared, &AllowList::new(), &Limits::default(), &budget)
        .unwrap();
    let used = budget.used();
    // 1,000 values of 16 bytes in the list and as many on the stack (each charged at twice its
    // capacity, the doubling that grows it paid in advance) and the arena's slots: tens of
    // kilobytes.
    assert!((16_000..200_000).contains(&used), "{used}");
}

/// What the writer produces is what Python's own `pickle.loads` reads, as numpy itself would have
/// pickled it: values, arrays, dtypes (structured and aligned included) and scalars. Runs when
/// `FLEETSCORE_TEST_PYTHON` names a Python with numpy.
#[test]
fn python_reads_what_the_writer_writes() {
    use fleetscore_pickle::write::{Py, dumps};
    let Ok(python) = std::env::var("FLEETSCORE_TEST_PYTHON") else {
        eprintln!("FLEETSCORE_TEST_PYTHON not set: the pickle writer not checked against Python");
        return;
    };
    let mut nodes = Vec::new();
    for (a, b) in [(7i64, 0.5f64), (-3, 1e9)] {
        nodes.extend_from_slice(&a.to_le_bytes());
        nodes.extend_from_slice(&b.to_le_bytes());
    }
    let value = Py::Dict(vec![
        (
            Py::str("ints"),
            Py::List(vec![
                Py::Int(0),
                Py::Int(300),
                Py::Int(-70_000),
                Py::Int(i64::MAX),
                Py::Int(i64::MIN),
            ]),
        ),
        (Py::str("float"), Py::Float(0.1)),
        (
            Py::str("strs"),
            Py::Tuple(vec![
                Py::str("é"),
                Py::str("x".repeat(70_000)),
                Py::Bytes(vec![0, 255]),
            ]),
        ),
        (
            Py::str("consts"),
            Py::Tuple(vec![
                Py::None,
                Py::Bool(true),
                Py::Bool(false),
                Py::Tuple(vec![]),
            ]),
        ),
        (
            Py::str("f8"),
            Py::array_f64(&[2, 3], &[1.0, -2.0, 3.5, 1e-310, f64::MAX, -0.0]),
        ),
        (Py::str("f4"), Py::array_f32(&[2], &[0.1, -7.0])),
        (Py::str("i8"), Py::array_i64(&[0], &[])),
        (Py::str("i4"), Py::array_i32(&[1, 2], &[i32::MIN, 5])),
        (
            Py::str("u1"),
            Py::ndarray(Py::dtype("u1"), &[3], vec![1, 2, 250]),
        ),
        (
            Py::str("nodes"),
            Py::ndarray(
                Py::struct_dtype(&[("a", "i8", 0), ("b", "f8", 8)], 16, true),
                &[2],
                nodes,
            ),
        ),
        (
            Py::str("scalars"),
            Py::List(vec![Py::float64(2.5), Py::int64(-4)]),
        ),
        (
            Py::str("call"),
            Py::Call(
                Box::new(Py::global("builtins", "complex")),
                vec![Py::Float(1.0), Py::Float(2.0)],
            ),
        ),
    ]);
    let dir = std::env::temp_dir().join(format!("fleetscore-pickle-write-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("written.pkl");
    std::fs::write(&file, dumps(&value)).unwrap();
    let script = r#"
import pickle, sys, warnings
import numpy as np
warnings.simplefilter("error")
with open(sys.argv[1], "rb") as f:
    got = pickle.load(f)
want = {
    "ints": [0, 300, -70000, 2**63 - 1, -2**63],
    "float": 0.1,
    "strs": ("é", "x" * 70000, b"\x00\xff"),
    "consts": (None, True, False, ()),
    "f8": np.array([[1.0, -2.0, 3.5], [1e-310, np.finfo(np.float64).max, -0.0]]),
    "f4": np.array([0.1, -7.0], dtype=np.float32),
    "i8": np.zeros(0, dtype=np.int64),
    "i4": np.array([[-2**31, 5]], dtype=np.int32),
    "u1": np.array([1, 2, 250], dtype=np.uint8),
    "nodes": np.array([(7, 0.5), (-3, 1e9)], dtype=np.dtype([("a", "<i8"), ("b", "<f8")], align=True)),
    "scalars": [np.float64(2.5), np.int64(-4)],
    "call": complex(1, 2),
}
assert list(got) == list(want), list(got)
for k, w in want.items():
    g = got[k]
    if isinstance(w, np.ndarray):
        assert type(g) is np.ndarray and g.dtype == w.dtype and g.shape == w.shape, (k, g)
        # (numpy 2.x reads the aligned flag numpy 1.x writes as unset; the dtypes still compare
        # equal, offsets and itemsize included.)
        assert g.tobytes() == w.tobytes() and g.flags.c_contiguous and g.flags.writeable, k
        # Our bytes equal numpy's own pickle of the same array once read back.
        assert pickle.loads(pickle.dumps(w)).tobytes() == g.tobytes(), k
    elif k == "scalars":
        assert [type(x) for x in g] == [np.float64, np.int64] and g == w, g
    else:
        assert g == w and type(g) is type(w), (k, g)
print("ok", np.__version__)
"#;
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
