//! The binary tensor data extension of the V2 protocol (the one `tritonclient` uses by
//! default): a request or response body is a JSON header of
//! `Inference-Header-Content-Length` bytes followed by the raw tensors, each input or
//! output with binary data naming its size in `parameters.binary_data_size` instead of
//! carrying `data`. Elements are little-endian, row-major; a BOOL is one byte.

use super::{
    DataType, InferResponse, OutputParameters, OutputTensor, ProtocolError, Tensor, TensorData,
};

/// The header that splits a body into its JSON part and its binary part.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Splits `body` at the value of an `Inference-Header-Content-Length` header.
pub fn split_body<'a>(body: &'a [u8], header: &str) -> Result<(&'a [u8], &'a [u8]), ProtocolError> {
    match header.trim().parse::<usize>() {
        Ok(n) if n <= body.len() => Ok(body.split_at(n)),
        _ => Err(ProtocolError::BadHeaderLength {
            value: header.to_string(),
            body: body.len(),
        }),
    }
}

/// The bytes one element of `datatype` takes in binary form, for the datatypes this
/// server computes with.
fn element_size(datatype: DataType) -> Option<usize> {
    match datatype {
        DataType::Bool => Some(1),
        DataType::Int32 | DataType::Fp32 => Some(4),
        DataType::Int64 | DataType::Fp64 => Some(8),
        _ => None,
    }
}

/// Reads one input's raw bytes into typed elements, checking the size against `shape`.
pub(super) fn tensor_data(
    input: &str,
    datatype: DataType,
    shape: &[usize],
    bytes: &[u8],
) -> Result<TensorData, ProtocolError> {
    let Some(size) = element_size(datatype) else {
        return Err(ProtocolError::UnsupportedDatatype {
            input: input.to_string(),
            datatype,
        });
    };
    let elements: usize = shape.iter().product();
    if elements.checked_mul(size) != Some(bytes.len()) {
        return Err(ProtocolError::BinarySize {
            input: input.to_string(),
            shape: shape.to_vec(),
            datatype,
            expected: elements.saturating_mul(size),
            got: bytes.len(),
        });
    }
    fn each<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    Ok(match datatype {
        DataType::Bool => {
            if let Some(index) = bytes.iter().position(|&b| b > 1) {
                return Err(ProtocolError::InvalidElement {
                    input: input.to_string(),
                    index,
                    datatype,
                    value: format!("byte {}", bytes[index]),
                });
            }
            TensorData::Bool(bytes.iter().map(|&b| b == 1).collect())
        }
        DataType::Int32 => TensorData::Int32(each(bytes, i32::from_le_bytes)),
        DataType::Int64 => TensorData::Int64(each(bytes, i64::from_le_bytes)),
        DataType::Fp32 => TensorData::Fp32(each(bytes, f32::from_le_bytes)),
        DataType::Fp64 => TensorData::Fp64(each(bytes, f64::from_le_bytes)),
        _ => unreachable!("element_size covers the datatypes handled here"),
    })
}

/// Hands out consecutive slices of a request's binary part, one per input in the
/// order the inputs appear in the JSON header, as the extension specifies.
pub(super) struct BinaryPart<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> BinaryPart<'a> {
    /// `None`: the request had no `Inference-Header-Content-Length` header.
    pub(super) fn new(bytes: Option<&'a [u8]>) -> BinaryPart<'a> {
        BinaryPart { rest: bytes }
    }

    pub(super) fn take(&mut self, input: &str, size: u64) -> Result<&'a [u8], ProtocolError> {
        let Some(rest) = self.rest else {
            return Err(ProtocolError::BinaryWithoutHeader {
                input: input.to_string(),
            });
        };
        let n = usize::try_from(size).unwrap_or(usize::MAX);
        if n > rest.len() {
            return Err(ProtocolError::BinaryOverrun {
                input: input.to_string(),
                size,
                left: rest.len(),
            });
        }
        let (head, tail) = rest.split_at(n);
        self.rest = Some(tail);
        Ok(head)
    }

    /// Every byte must belong to an input.
    pub(super) fn finish(self) -> Result<(), ProtocolError> {
        match self.rest {
            Some(rest) if !rest.is_empty() => {
                Err(ProtocolError::BinaryTrailing { extra: rest.len() })
            }
            _ => Ok(()),
        }
    }
}

fn write_le(out: &mut Vec<u8>, data: &TensorData) {
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
        TensorData::Int32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Int64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Fp32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Fp64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
}

/// Renders an infer response whose outputs named in `binary` carry their data in the
/// binary part. Returns the body and the length of its JSON header (the value of the
/// `Inference-Header-Content-Length` response header).
pub fn encode_infer_response_binary(
    model: &str,
    version: &'static str,
    id: Option<&str>,
    outputs: &[Tensor],
    binary: &[String],
) -> (Vec<u8>, usize) {
    let mut raw = Vec::new();
    let outputs: Vec<OutputTensor> = outputs
        .iter()
        .map(|t| {
            let as_binary = binary.contains(&t.name);
            let parameters = as_binary.then(|| {
                let start = raw.len();
                write_le(&mut raw, &t.data);
                OutputParameters {
                    binary_data_size: raw.len() - start,
                }
            });
            OutputTensor {
                name: &t.name,
                datatype: t.data.datatype().as_str(),
                shape: &t.shape,
                parameters,
                data: (!as_binary).then_some(&t.data),
            }
        })
        .collect();
    let response = InferResponse {
        model_name: model,
        model_version: version,
        id,
        outputs,
    };
    // Serialising borrowed strings and numbers into a Vec cannot fail.
    let mut body = serde_json::to_vec(&response).unwrap_or_default();
    let header = body.len();
    body.extend_from_slice(&raw);
    (body, header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_round_trip_little_endian() {
        let data = TensorData::Fp32(vec![1.5, -2.0, 0.25]);
        let mut bytes = Vec::new();
        write_le(&mut bytes, &data);
        assert_eq!(&bytes[..4], &1.5f32.to_le_bytes());
        assert_eq!(
            tensor_data("x", DataType::Fp32, &[3], &bytes).unwrap(),
            data
        );
        let b = tensor_data("x", DataType::Bool, &[2], &[1, 0]).unwrap();
        assert_eq!(b, TensorData::Bool(vec![true, false]));
    }

    #[test]
    fn sizes_and_bytes_are_checked() {
        let e = tensor_data("x", DataType::Int64, &[2, 2], &[0; 24]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "input x: binary_data_size is 24 bytes but shape [2, 2] of INT64 needs 32"
        );
        let e = tensor_data("x", DataType::Bool, &[2], &[1, 7]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "input x: element 1 (byte 7) is not a valid BOOL"
        );
        let e = tensor_data("x", DataType::Fp16, &[1], &[0, 0]).unwrap_err();
        assert!(e.to_string().contains("FP16 is not supported"), "{e}");
        let e = split_body(b"{}", "3").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Inference-Header-Content-Length \"3\" is not a length within the body of 2 bytes"
        );
        let mut part = BinaryPart::new(Some(&[0u8; 6]));
        assert_eq!(part.take("a", 4).unwrap().len(), 4);
        let e = part.take("b", 4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "input b: binary_data_size 4 runs past the end of the binary data (2 bytes left)"
        );
        let e = BinaryPart::new(Some(&[0u8; 2])).finish().unwrap_err();
        assert_eq!(
            e.to_string(),
            "the binary data has 2 bytes after the last input's"
        );
        let e = BinaryPart::new(None).take("a", 4).unwrap_err();
        assert!(
            e.to_string()
                .contains("needs the Inference-Header-Content-Length header"),
            "{e}"
        );
    }

    #[test]
    fn responses_put_binary_outputs_after_the_header() {
        let outputs = vec![
            Tensor {
                name: "sum".into(),
                shape: vec![2],
                data: TensorData::Int32(vec![1, 2]),
            },
            Tensor {
                name: "flag".into(),
                shape: vec![1],
                data: TensorData::Bool(vec![true]),
            },
        ];
        let (body, header) =
            encode_infer_response_binary("m", "1", Some("r1"), &outputs, &["sum".into()]);
        let json: serde_json::Value = serde_json::from_slice(&body[..header]).unwrap();
        assert_eq!(json["id"], "r1");
        assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert!(json["outputs"][0].get("data").is_none());
        assert_eq!(json["outputs"][1]["data"], serde_json::json!([true]));
        assert_eq!(&body[header..], &[1, 0, 0, 0, 2, 0, 0, 0]);
    }

    fn spec() -> crate::protocol::ModelSpec {
        let t = |name: &str| crate::protocol::TensorSpec {
            name: name.into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 2],
        };
        crate::protocol::ModelSpec {
            name: "m".into(),
            inputs: vec![t("a"), t("b")],
            outputs: vec![t("sum"), t("product")],
        }
    }

    fn body(json: serde_json::Value, raw: &[u8]) -> (Vec<u8>, String) {
        let mut b = serde_json::to_vec(&json).unwrap();
        let header = b.len().to_string();
        b.extend_from_slice(raw);
        (b, header)
    }

    fn decode(b: &[u8], header: &str) -> Result<crate::protocol::InferRequest, ProtocolError> {
        let (json, binary) = split_body(b, header)?;
        crate::protocol::decode_infer_request_parts(json, Some(binary), &spec())
    }

    #[test]
    fn requests_mix_binary_and_json_inputs_in_json_order() {
        let raw: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let (b, h) = body(
            serde_json::json!({
                "inputs": [
                    {"name": "b", "shape": [1, 2], "datatype": "FP32",
                     "parameters": {"binary_data_size": 8}},
                    {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [3, 4]},
                ],
                "outputs": [{"name": "sum", "parameters": {"binary_data": true}},
                            {"name": "product"}],
            }),
            &raw,
        );
        let r = decode(&b, &h).unwrap();
        assert_eq!(r.inputs[0].data, TensorData::Fp32(vec![3.0, 4.0]));
        assert_eq!(r.inputs[1].data, TensorData::Fp32(vec![1.0, 2.0]));
        assert_eq!(r.binary_outputs, vec!["sum".to_string()]);

        // binary_data_output on the request: every output, unless one says otherwise.
        let (b, h) = body(
            serde_json::json!({
                "parameters": {"binary_data_output": true, "other": [1, {"x": 2}]},
                "inputs": [
                    {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [3, 4]},
                    {"name": "b", "shape": [1, 2], "datatype": "FP32", "data": [3, 4]},
                ],
            }),
            &[],
        );
        let r = decode(&b, &h).unwrap();
        assert_eq!(
            r.binary_outputs,
            vec!["sum".to_string(), "product".to_string()]
        );
    }

    #[test]
    fn binary_requests_that_do_not_add_up_are_named() {
        let input = |size| {
            serde_json::json!({"name": "a", "shape": [1, 2], "datatype": "FP32",
                               "parameters": {"binary_data_size": size}})
        };
        let other = serde_json::json!({"name": "b", "shape": [1, 2], "datatype": "FP32",
                                       "data": [1, 2]});
        let err = |json, raw: &[u8]| {
            let (b, h) = body(json, raw);
            decode(&b, &h).unwrap_err().to_string()
        };
        assert_eq!(
            err(
                serde_json::json!({"inputs": [input(8), other.clone()]}),
                &[0; 12]
            ),
            "the binary data has 4 bytes after the last input's"
        );
        assert_eq!(
            err(
                serde_json::json!({"inputs": [input(12), other.clone()]}),
                &[0; 12]
            ),
            "input a: binary_data_size is 12 bytes but shape [1, 2] of FP32 needs 8"
        );
        let mut both = input(8);
        both["data"] = serde_json::json!([1, 2]);
        assert_eq!(
            err(
                serde_json::json!({"inputs": [both, other.clone()]}),
                &[0; 8]
            ),
            "input a: has both `data` and parameters.binary_data_size; give one"
        );
        // Without the header, binary_data_size cannot be honoured.
        let json = serde_json::to_vec(&serde_json::json!({"inputs": [input(8), other]})).unwrap();
        let e = crate::protocol::decode_infer_request(&json, &spec()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("input a: parameters.binary_data_size needs the Inference-Header-Content-Length header"),
            "{e}"
        );
    }
}
