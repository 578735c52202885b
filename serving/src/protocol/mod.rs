//! The Open Inference Protocol (KServe V2) JSON codec: pure code over bytes.
//!
//! Decoding is model-aware: [`decode_infer_request`] checks every input against the
//! model's [`ModelSpec`] (names, datatypes, ranks and fixed dimensions) and turns flat or
//! nested (row-major) `data` into typed [`Tensor`]s in the model's input order. Every
//! failure is a [`ProtocolError`] that names the input and the dimension or element that
//! is wrong, and renders as a 4xx `{"error": "..."}`.

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

mod binary;
mod decode;
pub use binary::{encode_infer_response_binary, split_body, HEADER_LENGTH};
pub use decode::{decode_infer_request, decode_infer_request_parts};

/// A tensor element type, spelled as in the protocol (`FP32`, `INT64`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Bf16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses a protocol datatype name (case-sensitive, as the protocol specifies).
    pub fn parse(s: &str) -> Option<DataType> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Whether this server can carry tensors of this type in JSON (see [`TensorData`]).
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            DataType::Bool | DataType::Int32 | DataType::Int64 | DataType::Fp32 | DataType::Fp64
        )
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Flat, row-major tensor elements of one of the supported datatypes.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
}

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::Bool(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Fp32(v) => v.len(),
            TensorData::Fp64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty buffer of the same type, with room for `cap` elements.
    pub fn empty_like(&self, cap: usize) -> TensorData {
        match self {
            TensorData::Bool(_) => TensorData::Bool(Vec::with_capacity(cap)),
            TensorData::Int32(_) => TensorData::Int32(Vec::with_capacity(cap)),
            TensorData::Int64(_) => TensorData::Int64(Vec::with_capacity(cap)),
            TensorData::Fp32(_) => TensorData::Fp32(Vec::with_capacity(cap)),
            TensorData::Fp64(_) => TensorData::Fp64(Vec::with_capacity(cap)),
        }
    }

    /// Appends `other`'s elements; returns false (and appends nothing) if the types differ.
    pub fn extend_from(&mut self, other: &TensorData) -> bool {
        match (self, other) {
            (TensorData::Bool(a), TensorData::Bool(b)) => a.extend_from_slice(b),
            (TensorData::Int32(a), TensorData::Int32(b)) => a.extend_from_slice(b),
            (TensorData::Int64(a), TensorData::Int64(b)) => a.extend_from_slice(b),
            (TensorData::Fp32(a), TensorData::Fp32(b)) => a.extend_from_slice(b),
            (TensorData::Fp64(a), TensorData::Fp64(b)) => a.extend_from_slice(b),
            _ => return false,
        }
        true
    }

    /// A copy of elements `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> TensorData {
        match self {
            TensorData::Bool(v) => TensorData::Bool(v[range].to_vec()),
            TensorData::Int32(v) => TensorData::Int32(v[range].to_vec()),
            TensorData::Int64(v) => TensorData::Int64(v[range].to_vec()),
            TensorData::Fp32(v) => TensorData::Fp32(v[range].to_vec()),
            TensorData::Fp64(v) => TensorData::Fp64(v[range].to_vec()),
        }
    }
}

/// A flat JSON list of the elements, written straight from the typed buffer. Floats are
/// written in their shortest round-tripping form (an FP32 0.1 as `0.1`); NaN and
/// infinities have no JSON spelling and are written as `null`, as serde_json does.
impl Serialize for TensorData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn seq<S: Serializer, T: Serialize>(s: S, v: &[T]) -> Result<S::Ok, S::Error> {
            let mut out = s.serialize_seq(Some(v.len()))?;
            for x in v {
                out.serialize_element(x)?;
            }
            out.end()
        }
        match self {
            TensorData::Bool(v) => seq(s, v),
            TensorData::Int32(v) => seq(s, v),
            TensorData::Int64(v) => seq(s, v),
            TensorData::Fp32(v) => seq(s, v),
            TensorData::Fp64(v) => seq(s, v),
        }
    }
}

/// A named tensor: shape plus flat row-major data (`data.len() == shape.product()`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// What a model takes or produces, as its metadata reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorSpec {
    pub name: String,
    #[serde(serialize_with = "ser_datatype")]
    pub datatype: DataType,
    /// -1 marks a dynamic dimension.
    pub shape: Vec<i64>,
}

fn ser_datatype<S: serde::Serializer>(d: &DataType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(d.as_str())
}

/// A model's name and signature: everything request validation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// A validated inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// Echoed back in the response, as the protocol asks.
    pub id: Option<String>,
    /// One tensor per model input, in the model's input order.
    pub inputs: Vec<Tensor>,
    /// The outputs the client asked for by name; `None` means all of them.
    pub outputs: Option<Vec<String>>,
    /// The outputs to send in the binary part of the response (binary tensor data
    /// extension): those asked for with `parameters.binary_data`, or all with the
    /// request's `parameters.binary_data_output`.
    pub binary_outputs: Vec<String>,
}

/// Everything that can be wrong with a request, with what the client needs to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request JSON is truncated at line {line}, column {column}")]
    TruncatedJson { line: usize, column: usize },
    #[error("invalid request JSON at line {line}, column {column}: {reason}")]
    MalformedJson {
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{what}: missing field `{field}`")]
    MissingField { what: String, field: &'static str },
    #[error("input {input}: unknown datatype {datatype:?}")]
    UnknownDatatype { input: String, datatype: String },
    #[error("input {input}: datatype {datatype} is not supported by this server (supported: BOOL, INT32, INT64, FP32, FP64)")]
    UnsupportedDatatype { input: String, datatype: DataType },
    #[error("input {input}: datatype {got} does not match the model's {expected}")]
    WrongDatatype {
        input: String,
        expected: DataType,
        got: DataType,
    },
    #[error("input {input}: dimension {dim} is negative ({value})")]
    NegativeDim {
        input: String,
        dim: usize,
        value: i64,
    },
    #[error("input {input}: shape has {got} dimensions but the model takes {expected}")]
    RankMismatch {
        input: String,
        expected: usize,
        got: usize,
    },
    #[error("input {input}: dimension {dim} is {got} but the model takes {expected}")]
    DimMismatch {
        input: String,
        dim: usize,
        expected: i64,
        got: usize,
    },
    #[error("input {input}: shape {shape:?} needs {expected} elements but data has {got}")]
    ElementCount {
        input: String,
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("input {input}: data at {at} has {got} elements along dimension {dim} but shape says {expected}")]
    NestedShape {
        input: String,
        dim: usize,
        at: String,
        expected: usize,
        got: usize,
    },
    #[error("input {input}: data at {at} should be a list (dimension {dim} of shape {shape:?})")]
    NotNested {
        input: String,
        dim: usize,
        at: String,
        shape: Vec<usize>,
    },
    #[error("input {input}: data at {at} is nested deeper than shape {shape:?}")]
    TooDeep {
        input: String,
        at: String,
        shape: Vec<usize>,
    },
    #[error("input {input}: element {index} ({value}) is not a valid {datatype}")]
    InvalidElement {
        input: String,
        index: usize,
        datatype: DataType,
        value: String,
    },
    #[error("unknown input {input} for model {model} (it takes {})", .expected.join(", "))]
    UnknownInput {
        input: String,
        model: String,
        expected: Vec<String>,
    },
    #[error("input {input} is given more than once")]
    DuplicateInput { input: String },
    #[error("missing input {input} for model {model}")]
    MissingInput { input: String, model: String },
    #[error("unknown output {output} requested from model {model} (it produces {})", .expected.join(", "))]
    UnknownOutput {
        output: String,
        model: String,
        expected: Vec<String>,
    },
    #[error(
        "Inference-Header-Content-Length {value:?} is not a length within the body of {body} bytes"
    )]
    BadHeaderLength { value: String, body: usize },
    #[error("input {input}: has both `data` and parameters.binary_data_size; give one")]
    BinaryAndData { input: String },
    #[error("input {input}: parameters.binary_data_size needs the Inference-Header-Content-Length header (binary tensor data extension)")]
    BinaryWithoutHeader { input: String },
    #[error("input {input}: binary_data_size {size} runs past the end of the binary data ({left} bytes left)")]
    BinaryOverrun {
        input: String,
        size: u64,
        left: usize,
    },
    #[error("input {input}: binary_data_size is {got} bytes but shape {shape:?} of {datatype} needs {expected}")]
    BinarySize {
        input: String,
        shape: Vec<usize>,
        datatype: DataType,
        expected: usize,
        got: usize,
    },
    #[error("the binary data has {extra} bytes after the last input's")]
    BinaryTrailing { extra: usize },
}

impl ProtocolError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ProtocolError::BodyTooLarge { .. } => 413,
            _ => 400,
        }
    }
}

/// The `{"error": "..."}` body every failure is answered with.
pub fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default()
}

/// An infer response as serialised, JSON or the JSON header of a binary one.
#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputTensor<'a>>,
}

/// One output: its `data` inline, or (binary tensor extension) its size in
/// `parameters` with the bytes after the JSON header.
#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<OutputParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a TensorData>,
}

#[derive(Serialize)]
struct OutputParameters {
    binary_data_size: usize,
}

/// Renders an infer response: outputs with flat row-major `data`, serialised straight
/// from the tensors (no intermediate `Value`).
pub fn encode_infer_response(model: &str, id: Option<&str>, outputs: &[Tensor]) -> Vec<u8> {
    let body = InferResponse {
        model_name: model,
        model_version: "1",
        id,
        outputs: outputs
            .iter()
            .map(|t| OutputTensor {
                name: &t.name,
                datatype: t.data.datatype().as_str(),
                shape: &t.shape,
                parameters: None,
                data: Some(&t.data),
            })
            .collect(),
    };
    let size: usize = outputs.iter().map(|t| 64 + t.data.len() * 12).sum();
    let mut buf = Vec::with_capacity(128 + size);
    // Serialising borrowed strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, &body);
    buf
}

/// The one version of its model a model server serves: `/versions/{v}` paths
/// with another `v` are not found.
pub const MODEL_VERSION: &str = "1";

/// Renders `GET /v2/models/{m}`.
pub fn encode_model_metadata(model: &ModelSpec) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "name": model.name,
        "versions": [MODEL_VERSION],
        "platform": "onnx",
        "inputs": model.inputs,
        "outputs": model.outputs,
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn spec() -> ModelSpec {
        let t = |name: &str, datatype, shape: &[i64]| TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        };
        ModelSpec {
            name: "m".into(),
            inputs: vec![
                t("a", DataType::Fp32, &[-1, 2]),
                t("b", DataType::Int64, &[-1]),
            ],
            outputs: vec![t("y", DataType::Fp32, &[-1, 2])],
        }
    }

    fn decode(body: &str) -> Result<InferRequest, ProtocolError> {
        decode_infer_request(body.as_bytes(), &spec())
    }

    fn err(body: &str) -> String {
        decode(body).unwrap_err().to_string()
    }

    #[test]
    fn decodes_flat_and_nested_in_model_order() {
        let flat = decode(
            r#"{"id":"7","parameters":{"whatever":1},"inputs":[
                {"name":"b","shape":[2],"datatype":"INT64","data":[5,6]},
                {"name":"a","shape":[2,2],"datatype":"FP32","data":[1,2,3,4.5],"parameters":{"x":"y"}}]}"#,
        )
        .unwrap();
        assert_eq!(flat.id.as_deref(), Some("7"));
        assert_eq!(flat.inputs[0].name, "a");
        assert_eq!(flat.inputs[0].shape, vec![2, 2]);
        assert_eq!(
            flat.inputs[0].data,
            TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.5])
        );
        assert_eq!(flat.inputs[1].data, TensorData::Int64(vec![5, 6]));
        assert_eq!(flat.outputs, None);

        let nested = decode(
            r#"{"inputs":[{"name":"a","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]},
                {"name":"b","shape":[2],"datatype":"INT64","data":[5,6]}],
                "outputs":[{"name":"y","parameters":{"binary_data":false}}]}"#,
        )
        .unwrap();
        assert_eq!(nested.inputs, flat.inputs);
        assert_eq!(nested.outputs, Some(vec!["y".to_string()]));
    }

    #[test]
    fn every_bad_request_names_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"FP32","data":[1,2]}"#,
                "truncated at line 1",
            ),
            (
                r#"{"inputs":[{"name":"a",,]}"#,
                "invalid request JSON at line 1, column 24",
            ),
            (
                r#"{"inputs":[{"name":"c","shape":[1],"datatype":"FP32","data":[1]}]}"#,
                "unknown input c for model m (it takes a, b)",
            ),
            (
                r#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#,
                "missing input b for model m",
            ),
            (
                r#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"INT32","data":[1,2]}]}"#,
                "input a: datatype INT32 does not match the model's FP32",
            ),
            (
                r#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"FP33","data":[1,2]}]}"#,
                "input a: unknown datatype \"FP33\"",
            ),
            (
                r#"{"inputs":[{"name":"a","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
                "input a: dimension 1 is 3 but the model takes 2",
            ),
            (
                r#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","data":[1,2]}]}"#,
                "input a: shape has 1 dimensions but the model takes 2",
            ),
            (
                r#"{"inputs":[{"name":"a","shape":[-1,2],"datatype":"FP32","data":[1,2]}]}"#,
                "input a: dimension 0 is negative (-1)",
            ),
            (
                r#"{"inputs":[{"name":"a","shape":[2,2],"datatype":"FP32","data":[1,2,3]}]}"#,
                "input a: shape [2, 2] needs 4 elements but data has 3",
            ),
            (
                r#"{"inputs":[{"name":"a","shape":[2,2],"datatype":"FP32","data":[[1,2],[3]]}]}"#,
                "input a: data at [1] has 1 elements along dimension 1 but shape says 2",
            ),
            (
                r#"{"inputs":[{"name":"a","shape":[2,2],"datatype":"FP32","data":[[1,2],3]}]}"#,
                "input a: data at [1] should be a list (dimension 1",
            ),
            (
                r#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"FP32","data":[[[1],[2]]]}]}"#,
                "input a: data at [0][0] is nested deeper",
            ),
            (
                r#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"FP32","data":[1,"x"]}]}"#,
                "input a: element 1 (\"x\") is not a valid FP32",
            ),
            (
                r#"{"inputs":[{"name":"b","shape":[1],"datatype":"INT64","data":[1.5]}]}"#,
                "input b: element 0 (1.5) is not a valid INT64",
            ),
            (
                r#"{"inputs":[{"name":"a","datatype":"FP32","data":[1,2]}]}"#,
                "input a: missing field `shape`",
            ),
            (
                r#"{"inputs":[{"shape":[1],"datatype":"FP32","data":[1,2]}]}"#,
                "inputs[0]: missing field `name`",
            ),
            (
                r#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"a","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#,
                "input a is given more than once",
            ),
            (
                r#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"b","shape":[1],"datatype":"INT64","data":[1]}],"outputs":[{"name":"z"}]}"#,
                "unknown output z requested from model m",
            ),
            (r#"{"id":"1"}"#, "missing field `inputs`"),
        ];
        for (body, want) in cases {
            let got = err(body);
            assert!(
                got.contains(want),
                "body {body}\n  got:  {got}\n  want: {want}"
            );
        }
    }

    #[test]
    fn flat_lists_decode_without_values_and_keep_the_same_errors() {
        let t = |name: &str, datatype, shape: &[i64]| TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        };
        let model = |datatype| ModelSpec {
            name: "m".into(),
            inputs: vec![t("x", datatype, &[-1, 3])],
            outputs: vec![],
        };
        let decode = |datatype, data: &str| {
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":[1,3],"datatype":"{datatype}","data":{data}}}]}}"#
            );
            decode_infer_request(body.as_bytes(), &model(datatype))
                .map(|r| r.inputs[0].data.clone())
                .map_err(|e| e.to_string())
        };
        use DataType::*;
        // Integers, negatives and decimals are all numbers for the float types.
        assert_eq!(
            decode(Fp32, "[1, -2, 0.25]"),
            Ok(TensorData::Fp32(vec![1.0, -2.0, 0.25]))
        );
        assert_eq!(
            decode(Fp64, "[1e3, -2, 0.1]"),
            Ok(TensorData::Fp64(vec![1000.0, -2.0, 0.1]))
        );
        assert_eq!(
            decode(Int64, "[-9223372036854775808, 0, 9223372036854775807]"),
            Ok(TensorData::Int64(vec![i64::MIN, 0, i64::MAX]))
        );
        assert_eq!(
            decode(Int32, "[-2147483648, 0, 2147483647]"),
            Ok(TensorData::Int32(vec![i32::MIN, 0, i32::MAX]))
        );
        assert_eq!(
            decode(Bool, "[true, false, true]"),
            Ok(TensorData::Bool(vec![true, false, true]))
        );
        // Flat and nested spellings of the same data decode alike.
        assert_eq!(decode(Fp32, "[[1, 2, 3]]"), decode(Fp32, "[1, 2, 3]"));
        // Every element that is not a valid value is named, and quoted as it was sent.
        let cases: &[(DataType, &str, &str)] = &[
            (
                Int64,
                "[1, 9223372036854775808, 3]",
                "input x: element 1 (9223372036854775808) is not a valid INT64",
            ),
            (
                Int64,
                "[1, 2, 2.5]",
                "input x: element 2 (2.5) is not a valid INT64",
            ),
            (
                Int32,
                "[1, 2147483648, 3]",
                "input x: element 1 (2147483648) is not a valid INT32",
            ),
            (
                Int32,
                "[-2147483649, 0, 0]",
                "input x: element 0 (-2147483649) is not a valid INT32",
            ),
            (
                Bool,
                "[true, 1, false]",
                "input x: element 1 (1) is not a valid BOOL",
            ),
            (
                Fp32,
                "[true, 1, 2]",
                "input x: element 0 (true) is not a valid FP32",
            ),
            (
                Fp32,
                "[1, null, 2]",
                "input x: element 1 (null) is not a valid FP32",
            ),
            (
                Fp32,
                r#"[1, 2, "3"]"#,
                r#"input x: element 2 ("3") is not a valid FP32"#,
            ),
            (
                Fp32,
                r#"[1, {"a": 2}, 3]"#,
                r#"input x: element 1 ({"a":2}) is not a valid FP32"#,
            ),
            (
                Fp32,
                "[1, 2]",
                "input x: shape [1, 3] needs 3 elements but data has 2",
            ),
            (
                Fp32,
                "[1, 2, 3, 4]",
                "input x: shape [1, 3] needs 3 elements but data has 4",
            ),
            (
                Fp32,
                "[1, [2], 3]",
                "input x: data at [] has 3 elements along dimension 0 but shape says 1",
            ),
            (
                Fp32,
                "7",
                "input x: shape [1, 3] needs 3 elements but data has 1",
            ),
            (
                Fp32,
                r#""abc""#,
                "input x: shape [1, 3] needs 3 elements but data has 1",
            ),
        ];
        for (datatype, data, want) in cases {
            let got = decode(*datatype, data).unwrap_err();
            assert!(
                got.contains(want),
                "data {data}\n  got:  {got}\n  want: {want}"
            );
        }
        // A list mixing scalars and lists goes the general way and names the place.
        let mixed = decode(Fp32, "[[1, 2, 3], 4]").unwrap_err();
        assert!(
            mixed.contains("data at [] has 2 elements along dimension 0"),
            "{mixed}"
        );
    }

    #[test]
    fn unsupported_datatypes_are_named() {
        let mut m = spec();
        m.inputs[0].datatype = DataType::Fp16;
        let e = decode_infer_request(
            br#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"FP16","data":[1,2]}]}"#,
            &m,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "input a: datatype FP16 is not supported by this server (supported: BOOL, INT32, INT64, FP32, FP64)"
        );
        assert_eq!(e.status(), 400);
        // Asking an FP32 input with INT8 data is a datatype mismatch, named as such.
        let e = err(r#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"INT8","data":[1,2]}]}"#);
        assert!(
            e.contains("datatype INT8 does not match the model's FP32"),
            "{e}"
        );
    }

    #[test]
    fn int32_range_and_bool_and_scalars() {
        let t = |name: &str, datatype, shape: &[i64]| TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        };
        let m = ModelSpec {
            name: "m".into(),
            inputs: vec![t("i", DataType::Int32, &[-1]), t("f", DataType::Bool, &[])],
            outputs: vec![],
        };
        let ok = decode_infer_request(
            br#"{"inputs":[{"name":"i","shape":[2],"datatype":"INT32","data":[[1],[2]]},{"name":"f","shape":[],"datatype":"BOOL","data":true}]}"#,
            &m,
        );
        // A rank-1 shape with nested data is nested too deep.
        assert!(ok.unwrap_err().to_string().contains("nested deeper"));
        let ok = decode_infer_request(
            br#"{"inputs":[{"name":"i","shape":[2],"datatype":"INT32","data":[1,2]},{"name":"f","shape":[],"datatype":"BOOL","data":[true]}]}"#,
            &m,
        )
        .unwrap();
        assert_eq!(ok.inputs[0].data, TensorData::Int32(vec![1, 2]));
        assert_eq!(ok.inputs[1].data, TensorData::Bool(vec![true]));
        let e = decode_infer_request(
            br#"{"inputs":[{"name":"i","shape":[1],"datatype":"INT32","data":[3000000000]},{"name":"f","shape":[],"datatype":"BOOL","data":[1]}]}"#,
            &m,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("element 0 (3000000000) is not a valid INT32"),
            "{e}"
        );
    }

    #[test]
    fn responses_and_metadata_render() {
        let out = Tensor {
            name: "y".into(),
            shape: vec![1, 2],
            data: TensorData::Fp32(vec![1.5, f32::NAN]),
        };
        let body: Value =
            serde_json::from_slice(&encode_infer_response("m", Some("r1"), &[out])).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"model_name":"m","model_version":"1","id":"r1",
                "outputs":[{"name":"y","datatype":"FP32","shape":[1,2],"data":[1.5,null]}]})
        );
        let meta: Value = serde_json::from_slice(&encode_model_metadata(&spec())).unwrap();
        assert_eq!(meta["platform"], "onnx");
        assert_eq!(
            meta["inputs"][0],
            serde_json::json!({"name":"a","datatype":"FP32","shape":[-1,2]})
        );
        assert_eq!(error_body("x"), br#"{"error":"x"}"#.to_vec());
        // Written straight from the typed buffers: FP32 in its shortest form, no id
        // when the request had none, every datatype.
        let outs = [
            Tensor {
                name: "f".into(),
                shape: vec![1, 3],
                data: TensorData::Fp32(vec![0.1, -2.0, f32::INFINITY]),
            },
            Tensor {
                name: "d".into(),
                shape: vec![2],
                data: TensorData::Fp64(vec![0.1, 1e300]),
            },
            Tensor {
                name: "i".into(),
                shape: vec![2],
                data: TensorData::Int64(vec![-1, i64::MAX]),
            },
            Tensor {
                name: "j".into(),
                shape: vec![1],
                data: TensorData::Int32(vec![7]),
            },
            Tensor {
                name: "b\"q".into(),
                shape: vec![],
                data: TensorData::Bool(vec![true]),
            },
        ];
        let text = String::from_utf8(encode_infer_response("m", None, &outs)).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"model_name":"m","model_version":"1","outputs":["#,
                r#"{"name":"f","datatype":"FP32","shape":[1,3],"data":[0.1,-2.0,null]},"#,
                r#"{"name":"d","datatype":"FP64","shape":[2],"data":[0.1,1e+300]},"#,
                r#"{"name":"i","datatype":"INT64","shape":[2],"data":[-1,9223372036854775807]},"#,
                r#"{"name":"j","datatype":"INT32","shape":[1],"data":[7]},"#,
                r#"{"name":"b\"q","datatype":"BOOL","shape":[],"data":[true]}]}"#
            )
        );
        assert_eq!(ProtocolError::BodyTooLarge { limit: 1 }.status(), 413);
    }
}
