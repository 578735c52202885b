//! The V2 gRPC messages to and from the V2 HTTP protocol. A `ModelInfer` becomes a
//! `POST /v2/models/{m}[/versions/{v}]/infer` whose inputs travel in the binary
//! tensor data extension (`raw_input_contents` as they are, typed `contents` as
//! little-endian bytes) and whose outputs are all asked for in binary; the response
//! comes back as `raw_output_contents`, which is what tritonclient reads.

use std::collections::HashMap;

use bytes::Bytes;
use gpuctl_proto::inference::model_infer_request::InferInputTensor;
use gpuctl_proto::inference::model_infer_response::InferOutputTensor;
use gpuctl_proto::inference::model_metadata_response::TensorMetadata;
use gpuctl_proto::inference::{ModelInferRequest, ModelInferResponse, ModelMetadataResponse};
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tonic::{Code, Status};

/// The bytes one element of `datatype` takes, for fixed-size datatypes.
fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" | "FP16" | "BF16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => return None,
    })
}

/// `/v2/models/{model}[/versions/{version}]{tail}`, refusing names that would
/// change the path.
pub fn model_path(model: &str, version: &str, tail: &str) -> Result<String, Status> {
    let bad = |what: &str, v: &str| {
        Status::invalid_argument(format!(
            "{what} {v:?} is not a valid name (empty, or holds '/', '?', '#' or '%')"
        ))
    };
    let invalid = |s: &str| s.is_empty() || s.contains(['/', '?', '#', '%', ' ']);
    if invalid(model) {
        return Err(bad("model name", model));
    }
    if version.is_empty() {
        return Ok(format!("/v2/models/{model}{tail}"));
    }
    if invalid(version) {
        return Err(bad("model version", version));
    }
    Ok(format!("/v2/models/{model}/versions/{version}{tail}"))
}

/// A gRPC status for an HTTP answer that is not 200, carrying its `{"error"}` text.
pub fn status_of(code: StatusCode, body: &[u8]) -> Status {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let message = if message.is_empty() {
        format!("HTTP {code}")
    } else {
        message
    };
    let grpc = match code.as_u16() {
        400 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 | 504 => Code::DeadlineExceeded,
        413 | 429 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        502 | 503 => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(grpc, message)
}

fn le<T: Copy>(v: &[T], f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// An input's typed `contents` as the bytes of the binary extension.
fn contents_bytes(input: &InferInputTensor) -> Result<Vec<u8>, Status> {
    let c = input.contents.clone().unwrap_or_default();
    let dt = input.datatype.as_str();
    let bytes = match dt {
        "BOOL" => c.bool_contents.iter().map(|&b| b as u8).collect(),
        "INT8" => le(&c.int_contents, |x| (x as i8).to_le_bytes().to_vec()),
        "INT16" => le(&c.int_contents, |x| (x as i16).to_le_bytes().to_vec()),
        "INT32" => le(&c.int_contents, |x| x.to_le_bytes().to_vec()),
        "INT64" => le(&c.int64_contents, |x| x.to_le_bytes().to_vec()),
        "UINT8" => le(&c.uint_contents, |x| (x as u8).to_le_bytes().to_vec()),
        "UINT16" => le(&c.uint_contents, |x| (x as u16).to_le_bytes().to_vec()),
        "UINT32" => le(&c.uint_contents, |x| x.to_le_bytes().to_vec()),
        "UINT64" => le(&c.uint64_contents, |x| x.to_le_bytes().to_vec()),
        "FP32" => le(&c.fp32_contents, |x| x.to_le_bytes().to_vec()),
        "FP64" => le(&c.fp64_contents, |x| x.to_le_bytes().to_vec()),
        "BYTES" => c
            .bytes_contents
            .iter()
            .flat_map(|b| {
                let mut e = (b.len() as u32).to_le_bytes().to_vec();
                e.extend_from_slice(b);
                e
            })
            .collect(),
        other => {
            return Err(Status::invalid_argument(format!(
                "input {}: datatype {other:?} has no typed contents field; send it in raw_input_contents",
                input.name
            )))
        }
    };
    Ok(bytes)
}

/// The HTTP body (JSON header + binary part) and the JSON header's length for one
/// `ModelInfer`.
pub fn infer_body(req: &ModelInferRequest) -> Result<(Vec<u8>, usize), Status> {
    if !req.raw_input_contents.is_empty() && req.raw_input_contents.len() != req.inputs.len() {
        return Err(Status::invalid_argument(format!(
            "raw_input_contents has {} entries for {} inputs; give one per input or none",
            req.raw_input_contents.len(),
            req.inputs.len()
        )));
    }
    let mut raw = Vec::new();
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for (i, input) in req.inputs.iter().enumerate() {
        let bytes = match req.raw_input_contents.get(i) {
            Some(b) => b.to_vec(),
            None => contents_bytes(input)?,
        };
        inputs.push(serde_json::json!({
            "name": input.name,
            "datatype": input.datatype,
            "shape": input.shape,
            "parameters": {"binary_data_size": bytes.len()},
        }));
        raw.extend_from_slice(&bytes);
    }
    let mut json = serde_json::json!({
        "inputs": inputs,
        "parameters": {"binary_data_output": true},
    });
    if !req.id.is_empty() {
        json["id"] = Value::String(req.id.clone());
    }
    if !req.outputs.is_empty() {
        json["outputs"] = req
            .outputs
            .iter()
            .map(|o| serde_json::json!({"name": o.name, "parameters": {"binary_data": true}}))
            .collect();
    }
    let mut body = serde_json::to_vec(&json).unwrap_or_default();
    let header = body.len();
    body.extend_from_slice(&raw);
    Ok((body, header))
}

#[derive(Deserialize)]
struct HttpResponse {
    #[serde(default)]
    model_name: String,
    #[serde(default)]
    model_version: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    outputs: Vec<HttpOutput>,
}

#[derive(Deserialize)]
struct HttpOutput {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[serde(default)]
    parameters: HashMap<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

fn internal(what: String) -> Status {
    Status::internal(format!("the model server's response: {what}"))
}

/// JSON `data` (flat or nested) as the bytes of the binary extension.
fn json_bytes(name: &str, datatype: &str, data: &Value) -> Result<Vec<u8>, Status> {
    let mut flat = Vec::new();
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            other => out.push(other),
        }
    }
    walk(data, &mut flat);
    let bad = |v: &Value| internal(format!("output {name}: {v} is not a valid {datatype}"));
    let mut out = Vec::new();
    for v in flat {
        match datatype {
            "BOOL" => out.push(v.as_bool().ok_or_else(|| bad(v))? as u8),
            "BYTES" => {
                let s = v.as_str().ok_or_else(|| bad(v))?;
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            "FP32" => {
                out.extend_from_slice(&(v.as_f64().ok_or_else(|| bad(v))? as f32).to_le_bytes())
            }
            "FP64" => out.extend_from_slice(&v.as_f64().ok_or_else(|| bad(v))?.to_le_bytes()),
            "UINT8" | "UINT16" | "UINT32" | "UINT64" => {
                let x = v.as_u64().ok_or_else(|| bad(v))?;
                let size = element_size(datatype).unwrap_or(8);
                out.extend_from_slice(&x.to_le_bytes()[..size]);
            }
            "INT8" | "INT16" | "INT32" | "INT64" => {
                let x = v.as_i64().ok_or_else(|| bad(v))?;
                let size = element_size(datatype).unwrap_or(8);
                out.extend_from_slice(&x.to_le_bytes()[..size]);
            }
            other => {
                return Err(internal(format!(
                    "output {name}: datatype {other} in JSON cannot be converted"
                )))
            }
        }
    }
    Ok(out)
}

/// A `ModelInferResponse` from the HTTP answer's body (`header`: the value of its
/// `Inference-Header-Content-Length`, if it had one).
pub fn infer_response(body: &Bytes, header: Option<usize>) -> Result<ModelInferResponse, Status> {
    let (json, mut binary) = match header {
        Some(n) if n <= body.len() => (body.slice(..n), body.slice(n..)),
        Some(n) => {
            return Err(internal(format!(
                "Inference-Header-Content-Length {n} is past its end ({} bytes)",
                body.len()
            )))
        }
        None => (body.clone(), Bytes::new()),
    };
    let parsed: HttpResponse =
        serde_json::from_slice(&json).map_err(|e| internal(format!("invalid JSON: {e}")))?;
    let mut outputs = Vec::with_capacity(parsed.outputs.len());
    let mut raw = Vec::with_capacity(parsed.outputs.len());
    for o in parsed.outputs {
        let size = o.parameters.get("binary_data_size").and_then(Value::as_u64);
        let bytes = match (size, &o.data) {
            (Some(n), _) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > binary.len() {
                    return Err(internal(format!(
                        "output {}: binary_data_size {n} runs past the body",
                        o.name
                    )));
                }
                binary.split_to(n)
            }
            (None, Some(data)) => Bytes::from(json_bytes(&o.name, &o.datatype, data)?),
            (None, None) => {
                return Err(internal(format!(
                    "output {}: neither data nor binary data",
                    o.name
                )))
            }
        };
        raw.push(bytes);
        outputs.push(InferOutputTensor {
            name: o.name,
            datatype: o.datatype,
            shape: o.shape,
            parameters: HashMap::new(),
            contents: None,
        });
    }
    Ok(ModelInferResponse {
        model_name: parsed.model_name,
        model_version: parsed.model_version,
        id: parsed.id.unwrap_or_default(),
        parameters: HashMap::new(),
        outputs,
        raw_output_contents: raw.into_iter().map(|b| b.to_vec()).collect(),
    })
}

#[derive(Deserialize)]
struct HttpMetadata {
    name: String,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    platform: String,
    #[serde(default)]
    inputs: Vec<HttpTensor>,
    #[serde(default)]
    outputs: Vec<HttpTensor>,
}

#[derive(Deserialize)]
struct HttpTensor {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

/// `GET /v2/models/{m}`'s JSON as a `ModelMetadataResponse`.
pub fn metadata_response(body: &[u8]) -> Result<ModelMetadataResponse, Status> {
    let m: HttpMetadata = serde_json::from_slice(body)
        .map_err(|e| internal(format!("invalid metadata JSON: {e}")))?;
    let tensors = |ts: Vec<HttpTensor>| {
        ts.into_iter()
            .map(|t| TensorMetadata {
                name: t.name,
                datatype: t.datatype,
                shape: t.shape,
            })
            .collect()
    };
    Ok(ModelMetadataResponse {
        name: m.name,
        versions: m.versions,
        platform: m.platform,
        inputs: tensors(m.inputs),
        outputs: tensors(m.outputs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuctl_proto::inference::model_infer_request::InferRequestedOutputTensor;
    use gpuctl_proto::inference::InferTensorContents;

    fn input(name: &str, data: &[f32]) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape: vec![1, data.len() as i64],
            parameters: HashMap::new(),
            contents: Some(InferTensorContents {
                fp32_contents: data.to_vec(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn an_infer_request_becomes_a_binary_http_body() {
        let req = ModelInferRequest {
            model_name: "m".into(),
            id: "r1".into(),
            inputs: vec![input("a", &[1.0, 2.0]), input("b", &[3.0, 4.0])],
            outputs: vec![InferRequestedOutputTensor {
                name: "sum".into(),
                parameters: HashMap::new(),
            }],
            ..Default::default()
        };
        let (body, header) = infer_body(&req).unwrap();
        let json: Value = serde_json::from_slice(&body[..header]).unwrap();
        assert_eq!(json["id"], "r1");
        assert_eq!(json["inputs"][1]["parameters"]["binary_data_size"], 8);
        assert_eq!(json["outputs"][0]["parameters"]["binary_data"], true);
        assert_eq!(&body[header..header + 4], &1.0f32.to_le_bytes());
        assert_eq!(body.len() - header, 16);

        let mut raw = req.clone();
        raw.raw_input_contents = vec![vec![0; 8]];
        let e = infer_body(&raw).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("1 entries for 2 inputs"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn responses_come_back_raw_whether_binary_or_json() {
        let json = serde_json::json!({
            "model_name": "m", "model_version": "1", "id": "r1",
            "outputs": [
                {"name": "sum", "datatype": "FP32", "shape": [1, 2],
                 "parameters": {"binary_data_size": 8}},
                {"name": "n", "datatype": "INT64", "shape": [1], "data": [7]},
            ]
        });
        let mut body = serde_json::to_vec(&json).unwrap();
        let header = body.len();
        body.extend(1.5f32.to_le_bytes());
        body.extend(2.5f32.to_le_bytes());
        let r = infer_response(&Bytes::from(body), Some(header)).unwrap();
        assert_eq!(r.id, "r1");
        assert_eq!(r.outputs[1].name, "n");
        assert_eq!(r.raw_output_contents[0][..4], 1.5f32.to_le_bytes());
        assert_eq!(r.raw_output_contents[1], 7i64.to_le_bytes());
    }

    #[test]
    fn http_errors_map_to_grpc_codes_with_their_text() {
        let s = status_of(
            StatusCode::NOT_FOUND,
            br#"{"error": "no endpoint named x"}"#,
        );
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "no endpoint named x")
        );
        let s = status_of(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(model_path("m", "", "/infer").unwrap(), "/v2/models/m/infer");
        assert_eq!(
            model_path("m", "2", "/ready").unwrap(),
            "/v2/models/m/versions/2/ready"
        );
        assert_eq!(
            model_path("a/b", "", "").unwrap_err().code(),
            Code::InvalidArgument
        );
    }
}
