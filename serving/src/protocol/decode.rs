//! Decoding an inference request against its model: the JSON body read into
//! raw inputs (flat or nested `data`, element by element), then every input
//! checked against the model's spec and converted into a typed tensor.

use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::binary::{self, BinaryPart};
use super::{DataType, InferRequest, ModelSpec, ProtocolError, Tensor, TensorData};

#[derive(Deserialize)]
struct RawRequest {
    #[serde(default)]
    id: Option<String>,
    // Read for the binary data extension; other keys are tolerated and ignored
    // (clients such as tritonclient send their own parameters).
    #[serde(default)]
    parameters: Option<RawParameters>,
    inputs: Vec<RawInput>,
    #[serde(default)]
    outputs: Option<Vec<RawOutput>>,
}

/// The `parameters` of a request, an input or an output: the binary data extension's
/// keys are read, anything else is skipped unparsed.
#[derive(Deserialize, Default)]
struct RawParameters {
    #[serde(default)]
    binary_data_output: Option<bool>,
    #[serde(default)]
    binary_data: Option<bool>,
    #[serde(default)]
    binary_data_size: Option<u64>,
    #[serde(flatten)]
    #[allow(dead_code)]
    rest: std::collections::HashMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct RawInput {
    name: Option<String>,
    shape: Option<Vec<i64>>,
    datatype: Option<String>,
    data: Option<RawData>,
    #[serde(default)]
    parameters: Option<RawParameters>,
}

/// One JSON scalar of a tensor's `data`, kept without a `serde_json::Value` per element.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    Bool(bool),
    /// serde_json hands non-negative integers over as u64 and negative ones as i64.
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Scalar {
    fn to_value(self) -> Value {
        match self {
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::U64(x) => Value::from(x),
            Scalar::I64(x) => Value::from(x),
            Scalar::F64(x) => serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number),
        }
    }
}

/// A tensor's `data` as parsed: the common flat list of numbers (or booleans) straight
/// into a vector of [`Scalar`]s; anything else (nested lists, a lone scalar, strings,
/// nulls) as a `Value`, checked by the general code with its detailed errors.
#[derive(Debug)]
enum RawData {
    Flat(Vec<Scalar>),
    Other(Value),
}

impl RawData {
    fn into_value(self) -> Value {
        match self {
            RawData::Flat(v) => Value::Array(v.into_iter().map(Scalar::to_value).collect()),
            RawData::Other(v) => v,
        }
    }
}

/// A list element: a scalar, or anything else as a `Value`.
enum Elem {
    Scalar(Scalar),
    Other(Value),
}

struct ElemVisitor;

impl<'de> Visitor<'de> for ElemVisitor {
    type Value = Elem;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Elem, E> {
        Ok(Elem::Scalar(Scalar::Bool(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Elem, E> {
        Ok(Elem::Scalar(Scalar::U64(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Elem, E> {
        Ok(Elem::Scalar(Scalar::I64(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Elem, E> {
        Ok(Elem::Scalar(Scalar::F64(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Elem, E> {
        Ok(Elem::Other(Value::String(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Elem, E> {
        Ok(Elem::Other(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Elem, E> {
        Ok(Elem::Other(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Elem, E> {
        Ok(Elem::Other(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Elem, D::Error> {
        Elem::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Elem, A::Error> {
        Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Elem::Other)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Elem, A::Error> {
        Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(Elem::Other)
    }
}

impl<'de> Deserialize<'de> for Elem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Elem, D::Error> {
        d.deserialize_any(ElemVisitor)
    }
}

struct RawDataVisitor;

impl<'de> Visitor<'de> for RawDataVisitor {
    type Value = RawData;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawData, A::Error> {
        let mut flat: Vec<Scalar> = Vec::with_capacity(seq.size_hint().unwrap_or(16));
        while let Some(e) = seq.next_element::<Elem>()? {
            match e {
                Elem::Scalar(x) => flat.push(x),
                Elem::Other(v) => {
                    // Not a flat list of scalars: keep the whole list as a Value.
                    let mut items: Vec<Value> = flat.into_iter().map(Scalar::to_value).collect();
                    items.push(v);
                    while let Some(v) = seq.next_element::<Value>()? {
                        items.push(v);
                    }
                    return Ok(RawData::Other(Value::Array(items)));
                }
            }
        }
        Ok(RawData::Flat(flat))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawData, E> {
        Ok(RawData::Other(Value::Bool(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawData, E> {
        Ok(RawData::Other(Value::from(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawData, E> {
        Ok(RawData::Other(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawData, E> {
        Ok(RawData::Other(Scalar::F64(v).to_value()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawData, E> {
        Ok(RawData::Other(Value::String(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawData, E> {
        Ok(RawData::Other(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawData, E> {
        Ok(RawData::Other(Value::Null))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawData, A::Error> {
        Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawData::Other)
    }
}

impl<'de> Deserialize<'de> for RawData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawData, D::Error> {
        d.deserialize_any(RawDataVisitor)
    }
}

#[derive(Deserialize)]
struct RawOutput {
    name: String,
    #[serde(default)]
    parameters: Option<RawParameters>,
}

fn json_error(e: serde_json::Error) -> ProtocolError {
    if e.classify() == serde_json::error::Category::Eof {
        ProtocolError::TruncatedJson {
            line: e.line(),
            column: e.column(),
        }
    } else {
        // serde_json appends " at line L column C" to its message; we say it ourselves.
        let reason = e.to_string();
        let reason = match reason.rfind(" at line ") {
            Some(i) => reason[..i].to_string(),
            None => reason,
        };
        ProtocolError::MalformedJson {
            line: e.line(),
            column: e.column(),
            reason,
        }
    }
}

/// Parses and validates an infer request body (JSON only) against `model`.
pub fn decode_infer_request(body: &[u8], model: &ModelSpec) -> Result<InferRequest, ProtocolError> {
    decode_infer_request_parts(body, None, model)
}

/// Parses and validates an infer request against `model`: `json` is its JSON part and
/// `binary` the binary part that follows it when the request has an
/// `Inference-Header-Content-Length` header (see [`super::split_body`]).
pub fn decode_infer_request_parts(
    json: &[u8],
    binary: Option<&[u8]>,
    model: &ModelSpec,
) -> Result<InferRequest, ProtocolError> {
    let raw: RawRequest = serde_json::from_slice(json).map_err(json_error)?;
    let mut part = BinaryPart::new(binary);
    let mut slots: Vec<Option<Tensor>> = vec![None; model.inputs.len()];
    for (i, input) in raw.inputs.into_iter().enumerate() {
        let name = input.name.ok_or_else(|| ProtocolError::MissingField {
            what: format!("inputs[{i}]"),
            field: "name",
        })?;
        let Some(idx) = model.inputs.iter().position(|s| s.name == name) else {
            return Err(ProtocolError::UnknownInput {
                input: name,
                model: model.name.clone(),
                expected: model.inputs.iter().map(|s| s.name.clone()).collect(),
            });
        };
        if slots[idx].is_some() {
            return Err(ProtocolError::DuplicateInput { input: name });
        }
        let spec = &model.inputs[idx];
        let missing = |field| ProtocolError::MissingField {
            what: format!("input {name}"),
            field,
        };
        let dt_name = input.datatype.ok_or_else(|| missing("datatype"))?;
        let datatype = DataType::parse(&dt_name).ok_or_else(|| ProtocolError::UnknownDatatype {
            input: name.clone(),
            datatype: dt_name.clone(),
        })?;
        if datatype != spec.datatype {
            return Err(ProtocolError::WrongDatatype {
                input: name,
                expected: spec.datatype,
                got: datatype,
            });
        }
        if !datatype.is_supported() {
            return Err(ProtocolError::UnsupportedDatatype {
                input: name,
                datatype,
            });
        }
        let raw_shape = input.shape.ok_or_else(|| missing("shape"))?;
        let shape = check_shape(&name, &raw_shape, &spec.shape)?;
        let binary_size = input.parameters.and_then(|p| p.binary_data_size);
        let data = match (input.data, binary_size) {
            (Some(_), Some(_)) => return Err(ProtocolError::BinaryAndData { input: name }),
            (None, Some(size)) => {
                let bytes = part.take(&name, size)?;
                let data = binary::tensor_data(&name, datatype, &shape, bytes)?;
                slots[idx] = Some(Tensor { name, shape, data });
                continue;
            }
            (data, None) => data.ok_or_else(|| missing("data"))?,
        };
        let expected: usize = shape.iter().product();
        let data = match data {
            // The common case, without a Value per element. Rank 1 goes the general way,
            // which checks a list against dimension 0 (and says so when it is wrong).
            RawData::Flat(items) if shape.len() != 1 && items.len() == expected => {
                match convert_scalars(datatype, &items) {
                    Ok(data) => data,
                    Err(index) => {
                        return Err(ProtocolError::InvalidElement {
                            input: name,
                            index,
                            datatype,
                            value: items[index].to_value().to_string(),
                        })
                    }
                }
            }
            other => {
                let value = other.into_value();
                let mut flat = Vec::new();
                flatten(&name, &value, &shape, &mut flat)?;
                convert(&name, datatype, &flat)?
            }
        };
        slots[idx] = Some(Tensor { name, shape, data });
    }
    part.finish()?;
    let mut inputs = Vec::with_capacity(slots.len());
    for (slot, spec) in slots.into_iter().zip(&model.inputs) {
        inputs.push(slot.ok_or_else(|| ProtocolError::MissingInput {
            input: spec.name.clone(),
            model: model.name.clone(),
        })?);
    }
    // Triton's rule: the request's binary_data_output is the default for every
    // output, and an output's own binary_data overrides it.
    let all_binary = raw
        .parameters
        .and_then(|p| p.binary_data_output)
        .unwrap_or(false);
    let mut binary_outputs = Vec::new();
    let outputs = match raw.outputs {
        None => {
            if all_binary {
                binary_outputs = model.outputs.iter().map(|s| s.name.clone()).collect();
            }
            None
        }
        Some(outs) => {
            let mut names = Vec::with_capacity(outs.len());
            for o in outs {
                let binary = o.parameters.and_then(|p| p.binary_data);
                if binary.unwrap_or(all_binary) {
                    binary_outputs.push(o.name.clone());
                }
                if !model.outputs.iter().any(|s| s.name == o.name) {
                    return Err(ProtocolError::UnknownOutput {
                        output: o.name,
                        model: model.name.clone(),
                        expected: model.outputs.iter().map(|s| s.name.clone()).collect(),
                    });
                }
                names.push(o.name);
            }
            Some(names)
        }
    };
    Ok(InferRequest {
        id: raw.id,
        inputs,
        outputs,
        binary_outputs,
    })
}

fn check_shape(input: &str, raw: &[i64], model: &[i64]) -> Result<Vec<usize>, ProtocolError> {
    let mut shape = Vec::with_capacity(raw.len());
    for (dim, &value) in raw.iter().enumerate() {
        if value < 0 {
            return Err(ProtocolError::NegativeDim {
                input: input.to_string(),
                dim,
                value,
            });
        }
        shape.push(value as usize);
    }
    if shape.len() != model.len() {
        return Err(ProtocolError::RankMismatch {
            input: input.to_string(),
            expected: model.len(),
            got: shape.len(),
        });
    }
    for (dim, (&got, &expected)) in shape.iter().zip(model).enumerate() {
        if expected >= 0 && got as i64 != expected {
            return Err(ProtocolError::DimMismatch {
                input: input.to_string(),
                dim,
                expected,
                got,
            });
        }
    }
    Ok(shape)
}

fn at(path: &[usize]) -> String {
    let parts: Vec<String> = path.iter().map(|i| i.to_string()).collect();
    format!("[{}]", parts.join("]["))
}

/// Collects the elements of flat or nested `data` in row-major order, checking them
/// against `shape`.
fn flatten<'a>(
    input: &str,
    data: &'a Value,
    shape: &[usize],
    out: &mut Vec<&'a Value>,
) -> Result<(), ProtocolError> {
    let expected: usize = shape.iter().product();
    match data {
        Value::Array(items) if !items.iter().any(Value::is_array) && shape.len() != 1 => {
            // Flat: the common case for clients (tritonclient always sends flat data).
            if items.len() != expected {
                return Err(ProtocolError::ElementCount {
                    input: input.to_string(),
                    shape: shape.to_vec(),
                    expected,
                    got: items.len(),
                });
            }
            out.extend(items);
            Ok(())
        }
        Value::Array(_) => nested(input, data, shape, 0, &mut Vec::new(), out),
        scalar => {
            if expected != 1 {
                return Err(ProtocolError::ElementCount {
                    input: input.to_string(),
                    shape: shape.to_vec(),
                    expected,
                    got: 1,
                });
            }
            out.push(scalar);
            Ok(())
        }
    }
}

fn nested<'a>(
    input: &str,
    value: &'a Value,
    shape: &[usize],
    dim: usize,
    path: &mut Vec<usize>,
    out: &mut Vec<&'a Value>,
) -> Result<(), ProtocolError> {
    if dim == shape.len() {
        if value.is_array() {
            return Err(ProtocolError::TooDeep {
                input: input.to_string(),
                at: at(path),
                shape: shape.to_vec(),
            });
        }
        out.push(value);
        return Ok(());
    }
    let Value::Array(items) = value else {
        return Err(ProtocolError::NotNested {
            input: input.to_string(),
            dim,
            at: at(path),
            shape: shape.to_vec(),
        });
    };
    if items.len() != shape[dim] {
        return Err(ProtocolError::NestedShape {
            input: input.to_string(),
            dim,
            at: at(path),
            expected: shape[dim],
            got: items.len(),
        });
    }
    for (i, item) in items.iter().enumerate() {
        path.push(i);
        nested(input, item, shape, dim + 1, path, out)?;
        path.pop();
    }
    Ok(())
}

/// Typed elements from scalars, with what [`convert`] accepts; `Err(i)` names the first
/// element that is not a valid `datatype`.
fn convert_scalars(datatype: DataType, items: &[Scalar]) -> Result<TensorData, usize> {
    fn each<T>(items: &[Scalar], f: impl Fn(Scalar) -> Option<T>) -> Result<Vec<T>, usize> {
        let mut out = Vec::with_capacity(items.len());
        for (i, &x) in items.iter().enumerate() {
            out.push(f(x).ok_or(i)?);
        }
        Ok(out)
    }
    // As serde_json's Value: as_i64 takes integers within i64, as_f64 any number.
    let as_i64 = |x: Scalar| match x {
        Scalar::I64(v) => Some(v),
        Scalar::U64(v) => i64::try_from(v).ok(),
        _ => None,
    };
    let as_f64 = |x: Scalar| match x {
        Scalar::I64(v) => Some(v as f64),
        Scalar::U64(v) => Some(v as f64),
        Scalar::F64(v) => Some(v),
        Scalar::Bool(_) => None,
    };
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(each(items, |x| match x {
            Scalar::Bool(b) => Some(b),
            _ => None,
        })?),
        DataType::Int32 => TensorData::Int32(each(items, |x| {
            as_i64(x).and_then(|v| i32::try_from(v).ok())
        })?),
        DataType::Int64 => TensorData::Int64(each(items, as_i64)?),
        DataType::Fp32 => TensorData::Fp32(each(items, |x| as_f64(x).map(|v| v as f32))?),
        DataType::Fp64 => TensorData::Fp64(each(items, as_f64)?),
        // Refused before any element is looked at (is_supported).
        _ => return Err(0),
    })
}

fn convert(
    input: &str,
    datatype: DataType,
    values: &[&Value],
) -> Result<TensorData, ProtocolError> {
    let bad = |index: usize, v: &Value| ProtocolError::InvalidElement {
        input: input.to_string(),
        index,
        datatype,
        value: v.to_string(),
    };
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_bool().ok_or_else(|| bad(i, v)))
                .collect::<Result<_, _>>()?,
        ),
        DataType::Int32 => TensorData::Int32(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_i64()
                        .and_then(|x| i32::try_from(x).ok())
                        .ok_or_else(|| bad(i, v))
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::Int64 => TensorData::Int64(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_i64().ok_or_else(|| bad(i, v)))
                .collect::<Result<_, _>>()?,
        ),
        DataType::Fp32 => TensorData::Fp32(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_f64().map(|x| x as f32).ok_or_else(|| bad(i, v)))
                .collect::<Result<_, _>>()?,
        ),
        DataType::Fp64 => TensorData::Fp64(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v.as_f64().ok_or_else(|| bad(i, v)))
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(ProtocolError::UnsupportedDatatype {
                input: input.to_string(),
                datatype: other,
            })
        }
    })
}
