//! The KServe v2 / Open Inference Protocol on the wire, written once for the remote client
//! ([`crate::remote`]), the server's `/v2` routes and `inferscope bench`: the inference request's JSON
//! types, Triton's binary tensor extension (the JSON header's length in
//! `Inference-Header-Content-Length`, the inputs' bytes after it in order, BYTES elements each with a
//! 4-byte little-endian length) and FP32 tensors as little-endian bytes.
//!
//! Parsing never trusts a declared size: [`split_body`] checks the header length against the body,
//! [`bytes_elements`] each element's length against what remains, and [`Floats`] reads JSON numbers
//! straight into `f32` (a `serde_json::Value` per number would cost 32 bytes against the 2 a number
//! may take on the wire, so a 64 MB body of zeros would become a 1 GB tree before any check ran).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Map, Value};

use crate::{INPUT_SIZE, NUM_CLASSES};

/// The header with the JSON part's length in a binary request or answer.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// `POST /v2/models/{name}/infer`'s body (its JSON part).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct InferRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    pub inputs: Vec<RequestInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One input tensor of a request.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    /// JSON data, flattened row-major (absent for binary data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Floats>,
}

/// One output a request asks for.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
}

impl RequestInput {
    /// `parameters.binary_data_size`: `Ok(None)` when absent, `Err` when it is not a byte count.
    pub fn binary_data_size(&self) -> Result<Option<usize>, String> {
        match self.parameters.get("binary_data_size") {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| "parameters.binary_data_size must be a byte count".into()),
        }
    }
}

/// The value of `Inference-Header-Content-Length`, when there is one.
pub fn header_length(value: Option<&[u8]>) -> Result<Option<usize>, String> {
    value
        .map(|v| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| "Inference-Header-Content-Length must be a byte count".to_string())
        })
        .transpose()
}

/// Splits a body into its JSON header and binary section (`header_len` `None`: all JSON).
pub fn split_body(body: &[u8], header_len: Option<usize>) -> Result<(&[u8], &[u8]), String> {
    let n = header_len.unwrap_or(body.len());
    if n > body.len() {
        return Err(format!(
            "Inference-Header-Content-Length is {n} but the body has only {} bytes",
            body.len()
        ));
    }
    Ok(body.split_at(n))
}

/// A body of `head` (JSON) followed by `binary`, with the header length to send.
pub fn binary_body(head: &Value, binary: &[u8]) -> (Vec<u8>, usize) {
    let mut body = serde_json::to_vec(head).expect("JSON values serialize");
    let n = body.len();
    body.extend_from_slice(binary);
    (body, n)
}

/// `values` as little-endian bytes (FP32 binary data).
pub fn f32_to_le(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    push_f32_le(&mut out, values);
    out
}

/// Appends `values` to `out` as little-endian FP32 binary data.
pub fn push_f32_le(out: &mut Vec<u8>, values: &[f32]) {
    out.reserve(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Little-endian FP32 binary data as floats (`None` when its length is not a multiple of 4).
pub fn f32_from_le(bytes: &[u8]) -> Option<Vec<f32>> {
    bytes.len().is_multiple_of(4).then(|| {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    })
}

/// Why a BYTES tensor's binary data could not be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BytesError {
    /// Fewer bytes than the elements' length prefixes and contents need.
    Truncated(String),
    /// Bytes after the last element.
    LeftOver(String),
}

/// Splits BYTES binary data into its `n` elements. `n` is checked against the data (each element
/// takes at least its 4-byte length) before anything of size `n` is allocated.
pub fn bytes_elements(mut raw: &[u8], n: usize) -> Result<Vec<&[u8]>, BytesError> {
    if n.checked_mul(4).is_none_or(|min| raw.len() < min) {
        return Err(BytesError::Truncated(format!(
            "BYTES input declares {n} elements but its {} bytes cannot hold their length prefixes",
            raw.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if raw.len() < 4 {
            return Err(BytesError::Truncated(format!(
                "BYTES element {i}: its length prefix is missing"
            )));
        }
        let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        let rest = &raw[4..];
        if rest.len() < len {
            return Err(BytesError::Truncated(format!(
                "BYTES element {i} declares {len} bytes but only {} remain",
                rest.len()
            )));
        }
        out.push(&rest[..len]);
        raw = &rest[len..];
    }
    if !raw.is_empty() {
        return Err(BytesError::LeftOver(format!(
            "{} bytes left over after {n} BYTES elements",
            raw.len()
        )));
    }
    Ok(out)
}

/// Appends one BYTES element (length, then bytes).
pub fn push_bytes_element(out: &mut Vec<u8>, element: &[u8]) {
    let len = u32::try_from(element.len()).expect("a BYTES element is under 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(element);
}

/// A binary request of `batch` images for a ResNet-shaped model: FP32 `[batch, 3, 224, 224]` input
/// `input_name` (binary), output `output_name` asked for as binary (`binary_out`) or JSON.
pub fn fp32_request(
    input_name: &str,
    output_name: &str,
    input: &[f32],
    batch: usize,
    binary_out: bool,
) -> (Vec<u8>, usize) {
    let head = json!({
        "inputs": [{
            "name": input_name, "datatype": "FP32",
            "shape": [batch, 3, INPUT_SIZE, INPUT_SIZE],
            "parameters": { "binary_data_size": input.len() * 4 },
        }],
        "outputs": [{ "name": output_name, "parameters": { "binary_data": binary_out } }],
    });
    binary_body(&head, &f32_to_le(input))
}

/// A binary request of `batch` images as the bytes preprocessing produces before it normalizes:
/// UINT8 `[batch, 224, 224, 3]` (HWC RGB, [`crate::preprocess::PIXELS_LEN`] bytes each), a quarter
/// of the FP32 request's size; the server normalizes them (on the GPU for a CUDA variant).
pub fn u8_request(
    input_name: &str,
    output_name: &str,
    pixels: &[u8],
    batch: usize,
    binary_out: bool,
) -> (Vec<u8>, usize) {
    let head = json!({
        "inputs": [{
            "name": input_name, "datatype": "UINT8",
            "shape": [batch, INPUT_SIZE, INPUT_SIZE, 3],
            "parameters": { "binary_data_size": pixels.len() },
        }],
        "outputs": [{ "name": output_name, "parameters": { "binary_data": binary_out } }],
    });
    binary_body(&head, pixels)
}

/// A binary request of encoded photos: BYTES `[n]` input `input_name`.
pub fn bytes_request(
    input_name: &str,
    output_name: &str,
    photos: &[&[u8]],
    binary_out: bool,
) -> (Vec<u8>, usize) {
    let mut raw = Vec::new();
    for p in photos {
        push_bytes_element(&mut raw, p);
    }
    let head = json!({
        "inputs": [{"name": input_name, "shape": [photos.len()], "datatype": "BYTES",
                    "parameters": {"binary_data_size": raw.len()}}],
        "outputs": [{"name": output_name, "parameters": {"binary_data": binary_out}}],
    });
    binary_body(&head, &raw)
}

/// The `batch × 1000` logits in output `output` of an answer, binary or JSON.
pub fn parse_logits(
    bytes: &[u8],
    header_len: Option<usize>,
    output: &str,
    batch: usize,
) -> Result<Vec<f32>, String> {
    let (head, mut binary) =
        split_body(bytes, header_len).map_err(|e| format!("answer truncated: {e}"))?;
    let head: Value =
        serde_json::from_slice(head).map_err(|e| format!("invalid JSON answer: {e}"))?;
    let outputs = head["outputs"]
        .as_array()
        .ok_or("the answer has no `outputs`")?;
    let want = batch * NUM_CLASSES;
    for o in outputs {
        let size = o["parameters"]["binary_data_size"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok());
        if o["name"] != output {
            if let Some(size) = size {
                binary = binary.get(size..).ok_or("binary section truncated")?;
            }
            continue;
        }
        if o["datatype"] != "FP32" {
            return Err(format!("output `{output}` is {}, not FP32", o["datatype"]));
        }
        let logits: Vec<f32> = match size {
            Some(size) => f32_from_le(binary.get(..size).ok_or("binary section truncated")?)
                .ok_or("binary FP32 data is not a multiple of 4 bytes")?,
            None => o["data"]
                .as_array()
                .ok_or(format!("output `{output}` has no data"))?
                .iter()
                .map(|v| v.as_f64().map(|f| f as f32).ok_or("non-numeric logit"))
                .collect::<Result<_, _>>()?,
        };
        if logits.len() != want {
            return Err(format!(
                "output `{output}` has {} values, expected {batch} × {NUM_CLASSES}",
                logits.len()
            ));
        }
        return Ok(logits);
    }
    Err(format!("the answer has no output `{output}`"))
}

/// The numbers of a JSON value (a number, or arrays of them nested as deep as serde_json allows),
/// read straight into `f32`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Floats {
    /// The numbers, row-major.
    pub values: Vec<f32>,
    /// The first thing found that is not a number (`"a string"`, `"a boolean"`, `"null"`, `"an
    /// object"`); such items are skipped, so that the caller can report a bad input rather than bad
    /// JSON.
    pub not_a_number: Option<&'static str>,
}

impl Floats {
    /// How many numbers there were.
    pub fn count(&self) -> usize {
        self.values.len()
    }
}

impl From<Vec<f32>> for Floats {
    fn from(values: Vec<f32>) -> Self {
        Floats {
            values,
            not_a_number: None,
        }
    }
}

impl Serialize for Floats {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.values.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Floats {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut floats = Floats::default();
        d.deserialize_any(Flatten(&mut floats))?;
        Ok(floats)
    }
}

/// Reads one JSON value into the [`Floats`] it borrows (also as a visitor of a sequence already
/// opened, for parsers that meet an array where other things may stand).
pub struct Flatten<'a>(pub &'a mut Floats);

impl Flatten<'_> {
    fn note(self, what: &'static str) {
        self.0.not_a_number.get_or_insert(what);
    }
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("numbers or (nested) arrays of numbers")
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.values.push(v as f32);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.values.push(v as f32);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.values.push(v as f32);
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.note("a string");
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.note("a boolean");
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.note("null");
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        self.note("null");
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.note("an object");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(self.0))?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_arrays_flatten_and_strangers_are_noted() {
        let f: Floats = serde_json::from_str("[[1, 2.5], [-3, [4e0]]]").unwrap();
        assert_eq!(f.values, [1.0, 2.5, -3.0, 4.0]);
        assert_eq!(f.not_a_number, None);
        let f: Floats = serde_json::from_str(r#"[1, "a", true, null, {"x": [1]}, 2]"#).unwrap();
        assert_eq!(f.values, [1.0, 2.0]);
        assert_eq!(f.not_a_number, Some("a string"));
        let f: Floats = serde_json::from_str("7").unwrap();
        assert_eq!(f.count(), 1);
    }

    #[test]
    fn bytes_elements_check_every_declared_length() {
        let mut raw = Vec::new();
        push_bytes_element(&mut raw, b"abc");
        push_bytes_element(&mut raw, b"");
        assert_eq!(bytes_elements(&raw, 2).unwrap(), [&b"abc"[..], &b""[..]]);
        assert!(matches!(
            bytes_elements(&raw, 1),
            Err(BytesError::LeftOver(_))
        ));
        assert!(matches!(
            bytes_elements(&raw, 3),
            Err(BytesError::Truncated(_))
        ));
        assert!(matches!(
            bytes_elements(&[0xff, 0xff, 0xff, 0xff, 1], 1),
            Err(BytesError::Truncated(m)) if m.contains("declares 4294967295 bytes")
        ));
        assert!(matches!(
            bytes_elements(&raw, usize::MAX),
            Err(BytesError::Truncated(_))
        ));
    }

    #[test]
    fn requests_round_trip_through_the_parser() {
        let x = vec![0.5f32; 2 * crate::INPUT_LEN];
        let (body, n) = fp32_request("input", "logits", &x, 2, true);
        let (head, binary) = split_body(&body, Some(n)).unwrap();
        let req: InferRequest = serde_json::from_slice(head).unwrap();
        assert_eq!(req.inputs[0].shape, [2, 3, 224, 224]);
        assert_eq!(
            req.inputs[0].binary_data_size().unwrap(),
            Some(binary.len())
        );
        assert_eq!(f32_from_le(binary).unwrap(), x);
        assert!(split_body(&body, Some(body.len() + 1)).is_err());
        assert_eq!(header_length(Some(b" 12 ")).unwrap(), Some(12));
        assert!(header_length(Some(b"-1")).is_err());
    }

    #[test]
    fn answers_parse_binary_and_json_outputs() {
        let logits: Vec<f32> = (0..NUM_CLASSES).map(|i| i as f32).collect();
        let head = json!({"outputs": [
            {"name": "other", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}},
            {"name": "logits", "datatype": "FP32", "shape": [1, NUM_CLASSES],
             "parameters": {"binary_data_size": logits.len() * 4}},
        ]});
        let mut binary = vec![0u8; 4];
        binary.extend(f32_to_le(&logits));
        let (body, n) = binary_body(&head, &binary);
        assert_eq!(parse_logits(&body, Some(n), "logits", 1).unwrap(), logits);
        let json = serde_json::to_vec(&json!({"outputs": [{"name": "logits", "datatype": "FP32",
            "shape": [1, NUM_CLASSES], "data": logits}]}))
        .unwrap();
        assert_eq!(parse_logits(&json, None, "logits", 1).unwrap(), logits);
        assert!(parse_logits(&body, Some(n), "logits", 2).is_err());
        assert!(parse_logits(&body[..n + 10], Some(n), "logits", 1).is_err());
    }
}
