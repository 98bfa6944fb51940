//! The parsers fuzzed at their boundary (issue 10): [`kserve::parse_infer`],
//! [`vertex::parse_predict`] and [`vertex::instance_input`] get arbitrary bytes and structured
//! requests with hostile declared sizes (batch dimensions up to `i64::MAX`, negative ones,
//! `binary_data_size` up to `u64::MAX`, header lengths past the body, BYTES length prefixes past the
//! data, thousands of instances). Properties: nothing panics; every refusal is a 4xx; an accepted
//! request has the sizes it declares, within `max_batch_size`; and no parse allocates more than a small
//! multiple of the body it was given (a counting allocator measures the parsing thread's peak).
//!
//! Bounded for CI: `INFERSCOPE_FUZZ_CASES` cases per property (default 300; ~seconds in release).
//! proptest rather than cargo-fuzz: it runs inside `cargo test` on stable, with shrinking, and needs
//! no extra toolchain in CI.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use serde_json::json;

use super::{kserve, vertex};

/// The allocator of the test binary: `System`, counting the live bytes of each thread.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now)
            }
        });
    });
}

// SAFETY: every call forwards to `System` unchanged; the counting touches only const-initialized
// thread-locals (no allocation, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most bytes it had allocated at once on this thread.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, usize::try_from(peak - start).unwrap_or(0))
}

/// What a parse of a `body_len`-byte body may allocate: a few copies of the body (floats take 4
/// bytes for the ≥ 2 a JSON number takes) and some fixed overhead, never anything of a declared size.
fn allowed(body_len: usize) -> usize {
    8 * body_len + (256 << 10)
}

fn cases() -> u32 {
    std::env::var("INFERSCOPE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

const MAX_IMAGES: usize = 8;

fn dims() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(1i64),
        Just(3),
        Just(224),
        Just(0),
        Just(-1),
        Just(8),
        Just(9),
        Just(100_000),
        Just(1 << 31),
        Just(1 << 62),
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i64>(),
    ]
}

fn sizes() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        Just(None),
        Just(Some(0u64)),
        Just(Some(4)),
        Just(Some(602_112)),
        Just(Some(u64::MAX)),
        (0u64..256).prop_map(Some),
        any::<u64>().prop_map(Some),
    ]
}

/// A structured KServe request: (header length to send, body).
fn kserve_request() -> impl Strategy<Value = (Option<Vec<u8>>, Vec<u8>)> {
    (
        prop::collection::vec(dims(), 0..5),
        prop_oneof![Just("FP32"), Just("BYTES"), Just("FP16"), Just("")],
        sizes(),
        prop::option::of(prop::collection::vec(-3.0f32..3.0, 0..16)),
        prop::collection::vec(any::<u8>(), 0..64),
        0u8..4,
        any::<u64>(),
    )
        .prop_map(|(shape, datatype, size, data, binary, header, any_len)| {
            let mut input = json!({"name": "input", "shape": shape, "datatype": datatype});
            if let Some(size) = size {
                input["parameters"] = json!({ "binary_data_size": size });
            }
            if let Some(data) = data {
                input["data"] = json!(data);
            }
            let head = serde_json::to_vec(
                &json!({"inputs": [input], "parameters": {"timeout": any_len % 3}}),
            )
            .unwrap();
            let n = head.len();
            let mut body = head;
            body.extend_from_slice(&binary);
            let header = match header {
                0 => None,
                1 => Some(n.to_string()),
                2 => Some(any_len.to_string()),
                _ => Some(format!("{}", n + binary.len() + 1)),
            };
            (header.map(String::into_bytes), body)
        })
}

/// Parses a KServe body and checks the properties.
fn check_kserve(header: Option<&[u8]>, body: &[u8]) -> Result<(), TestCaseError> {
    let (result, peak) = peak_of(|| kserve::parse_infer(header, body, MAX_IMAGES));
    prop_assert!(
        peak <= allowed(body.len()),
        "parsing {} bytes allocated {peak} bytes",
        body.len()
    );
    match result {
        Ok(parsed) => {
            let images = parsed.input.images();
            prop_assert!((1..=MAX_IMAGES).contains(&images));
            if let kserve::Input::Tensor(t, n) = &parsed.input {
                prop_assert_eq!(t.len(), n * engine::INPUT_LEN);
            }
        }
        Err(e) => prop_assert!(e.status.is_client_error(), "{:?}", e),
    }
    Ok(())
}

/// A structured Vertex body.
fn vertex_request() -> impl Strategy<Value = Vec<u8>> {
    let instance = prop_oneof![
        Just(json!([])),
        Just(json!([[1.0, 2.0], [3.0]])),
        Just(json!({"b64": "not base64!"})),
        Just(json!({"b64": "iVBORw0KGgo="})),
        Just(json!({"b64": 7})),
        Just(json!({"image_bytes": {"b64": "AAAA"}})),
        Just(json!({"image_bytes": 1})),
        Just(json!({"tensor_b64": "AAAA"})),
        Just(json!({"tensor_b64": null})),
        Just(json!({"pixels": [1, 2]})),
        Just(json!("x")),
        Just(json!(null)),
        Just(json!([["a"], true, {"x": 1}])),
    ];
    (
        prop::collection::vec(instance, 0..20),
        0usize..3000,
        any::<bool>(),
    )
        .prop_map(|(mut instances, many, top)| {
            // Sometimes thousands of tiny instances.
            if many > 2500 {
                instances.extend(std::iter::repeat_n(json!([]), many));
            }
            let mut v = json!({ "instances": instances });
            if top {
                v["parameters"] = json!({"top_k": -1, "variant": 3});
            }
            serde_json::to_vec(&v).unwrap()
        })
}

fn check_vertex(body: &[u8]) -> Result<(), TestCaseError> {
    let (result, peak) = peak_of(|| {
        vertex::parse_predict(body).map(|r| {
            r.instances
                .kept
                .into_iter()
                .map(vertex::instance_input)
                .collect::<Vec<_>>()
        })
    });
    prop_assert!(
        peak <= allowed(body.len()),
        "parsing {} bytes allocated {peak} bytes",
        body.len()
    );
    match result {
        Ok(inputs) => {
            for input in inputs {
                match input {
                    Ok(vertex::InstanceInput::Tensor(t)) => {
                        prop_assert_eq!(t.len(), engine::INPUT_LEN)
                    }
                    Ok(vertex::InstanceInput::Photo(_)) => {}
                    Err(e) => prop_assert!(e.status.is_client_error(), "{:?}", e),
                }
            }
        }
        Err(e) => prop_assert!(e.status.is_client_error(), "{:?}", e),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn kserve_parser_survives_arbitrary_bytes(
        header in prop::option::of(prop::collection::vec(any::<u8>(), 0..24)),
        body in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        check_kserve(header.as_deref(), &body)?;
    }

    #[test]
    fn kserve_parser_checks_every_declared_size((header, body) in kserve_request()) {
        check_kserve(header.as_deref(), &body)?;
    }

    #[test]
    fn vertex_parser_survives_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_vertex(&body)?;
    }

    #[test]
    fn vertex_parser_checks_every_instance(body in vertex_request()) {
        check_vertex(&body)?;
    }
}

/// Valid requests pass the same checks (the properties above are not vacuous).
#[test]
fn valid_requests_parse_within_the_allocation_bound() {
    let x = vec![0.25f32; 2 * engine::INPUT_LEN];
    let (body, n) = engine::kserve_wire::fp32_request("input", "logits", &x, 2, true);
    let (parsed, peak) =
        peak_of(|| kserve::parse_infer(Some(n.to_string().as_bytes()), &body, MAX_IMAGES));
    let parsed = parsed.expect("a valid request");
    assert_eq!(parsed.input.images(), 2);
    assert!(peak <= allowed(body.len()), "{peak}");
    let json = serde_json::to_vec(
        &json!({"inputs": [{"name": "input", "shape": [1, 3, 224, 224],
        "datatype": "FP32", "data": vec![0; engine::INPUT_LEN]}]}),
    )
    .unwrap();
    let (parsed, peak) = peak_of(|| kserve::parse_infer(None, &json, MAX_IMAGES));
    assert_eq!(parsed.expect("valid JSON").input.images(), 1);
    assert!(peak <= allowed(json.len()), "{peak} for {}", json.len());
    let vertex = serde_json::to_vec(&json!({"instances": [vec![0.5; engine::INPUT_LEN]]})).unwrap();
    let r = vertex::parse_predict(&vertex).unwrap();
    let inputs: Vec<_> = r
        .instances
        .kept
        .into_iter()
        .map(vertex::instance_input)
        .collect();
    assert!(
        matches!(&inputs[..], [Ok(vertex::InstanceInput::Tensor(t))] if t.len() == engine::INPUT_LEN)
    );
    // And a declared size that would have allocated 60 GB is refused having allocated almost nothing.
    let huge = serde_json::to_vec(
        &json!({"inputs": [{"name": "input", "shape": [100_000, 3, 224, 224],
        "datatype": "FP32", "data": []}]}),
    )
    .unwrap();
    let (e, peak) = peak_of(|| kserve::parse_infer(None, &huge, MAX_IMAGES));
    assert_eq!(e.unwrap_err().cause, "batch_too_large");
    assert!(peak < 64 << 10, "{peak}");
}
