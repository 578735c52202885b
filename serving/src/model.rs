//! An ONNX model loaded with tract: its signature for the protocol, and a thread-safe
//! `run` over [`Tensor`]s.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::{
    DatumType, Framework, InferenceModelExt, IntoRunnable, IntoTValue, TDim, TVec,
    Tensor as TractTensor, TypedRunnableModel,
};

use crate::protocol::{DataType, ModelSpec, Tensor, TensorData, TensorSpec};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("loading model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("running model {model}: {reason}")]
    Run { model: String, reason: String },
}

/// A loaded, optimised model. `run` may be called from many threads at once.
pub struct OnnxModel {
    spec: ModelSpec,
    /// Whether every input and output has the same dynamic first dimension, so requests
    /// can be stacked along it and the outputs cut back.
    batchable: bool,
    plan: Arc<TypedRunnableModel>,
}

fn datatype(d: DatumType) -> Option<DataType> {
    Some(match d {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::F16 => DataType::Fp16,
        DatumType::F32 => DataType::Fp32,
        DatumType::F64 => DataType::Fp64,
        DatumType::String => DataType::Bytes,
        _ => return None,
    })
}

impl OnnxModel {
    /// Loads `path` and names the model `name`.
    pub fn load(path: &Path, name: &str) -> Result<OnnxModel, ModelError> {
        let load_err = |e: &dyn std::fmt::Display| ModelError::Load {
            path: path.display().to_string(),
            reason: format!("{e:#}"),
        };
        let typed = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_decluttered())
            .map_err(|e| load_err(&e))?;
        let mut batch_dim: Option<TDim> = None;
        let mut batchable = true;
        let mut describe = |outlets: &[tract_onnx::prelude::OutletId],
                            is_input: bool|
         -> Result<Vec<TensorSpec>, ModelError> {
            let mut specs = Vec::new();
            for outlet in outlets {
                let fact = typed.outlet_fact(*outlet).map_err(|e| load_err(&e))?;
                let name = if is_input {
                    typed.node(outlet.node).name.clone()
                } else {
                    typed
                        .outlet_label(*outlet)
                        .map(str::to_owned)
                        .unwrap_or_else(|| typed.node(outlet.node).name.clone())
                };
                let dt = datatype(fact.datum_type).ok_or_else(|| {
                    load_err(&format!(
                        "{name} has datatype {:?}, which the protocol cannot carry",
                        fact.datum_type
                    ))
                })?;
                let dims: Vec<TDim> = fact.shape.iter().cloned().collect();
                match (dims.first(), &batch_dim) {
                    (Some(d0), _) if d0.to_i64().is_ok() => batchable = false,
                    (None, _) => batchable = false,
                    (Some(d0), None) => batch_dim = Some(d0.clone()),
                    (Some(d0), Some(b)) if d0 != b => batchable = false,
                    _ => {}
                }
                specs.push(TensorSpec {
                    name,
                    datatype: dt,
                    shape: dims.iter().map(|d| d.to_i64().unwrap_or(-1)).collect(),
                });
            }
            Ok(specs)
        };
        let inputs = describe(typed.input_outlets().map_err(|e| load_err(&e))?, true)?;
        let outputs = describe(typed.output_outlets().map_err(|e| load_err(&e))?, false)?;
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| load_err(&e))?;
        Ok(OnnxModel {
            spec: ModelSpec {
                name: name.to_string(),
                inputs,
                outputs,
            },
            batchable,
            plan,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn batchable(&self) -> bool {
        self.batchable
    }

    /// Runs the model on `inputs` (one per model input, in order). Blocking and CPU-bound:
    /// call it off the async threads.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
        let run_err = |e: &dyn std::fmt::Display| ModelError::Run {
            model: self.spec.name.clone(),
            reason: format!("{e:#}"),
        };
        let mut values = TVec::new();
        for t in inputs {
            let tensor = match &t.data {
                TensorData::Bool(v) => TractTensor::from_shape(&t.shape, v),
                TensorData::Int32(v) => TractTensor::from_shape(&t.shape, v),
                TensorData::Int64(v) => TractTensor::from_shape(&t.shape, v),
                TensorData::Fp32(v) => TractTensor::from_shape(&t.shape, v),
                TensorData::Fp64(v) => TractTensor::from_shape(&t.shape, v),
            }
            .map_err(|e| run_err(&e))?;
            values.push(tensor.into_tvalue());
        }
        let outputs = self.plan.run(values).map_err(|e| run_err(&e))?;
        outputs
            .iter()
            .zip(&self.spec.outputs)
            .map(|(v, spec)| {
                let data = match v.datum_type() {
                    DatumType::Bool => v
                        .to_plain_array_view::<bool>()
                        .map(|a| TensorData::Bool(a.iter().copied().collect())),
                    DatumType::I32 => v
                        .to_plain_array_view::<i32>()
                        .map(|a| TensorData::Int32(a.iter().copied().collect())),
                    DatumType::I64 => v
                        .to_plain_array_view::<i64>()
                        .map(|a| TensorData::Int64(a.iter().copied().collect())),
                    DatumType::F32 => v
                        .to_plain_array_view::<f32>()
                        .map(|a| TensorData::Fp32(a.iter().copied().collect())),
                    DatumType::F64 => v
                        .to_plain_array_view::<f64>()
                        .map(|a| TensorData::Fp64(a.iter().copied().collect())),
                    other => {
                        return Err(run_err(&format!(
                            "output {} has datatype {other:?}, which this server cannot return",
                            spec.name
                        )))
                    }
                }
                .map_err(|e| run_err(&e))?;
                Ok(Tensor {
                    name: spec.name.clone(),
                    shape: v.shape().to_vec(),
                    data,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name)
    }

    #[test]
    fn reads_signatures_from_the_committed_models() {
        let m = OnnxModel::load(&testdata("add_mul.onnx"), "add_mul").unwrap();
        let s = |n: &str, d, shape: &[i64]| TensorSpec {
            name: n.into(),
            datatype: d,
            shape: shape.to_vec(),
        };
        assert_eq!(
            m.spec().inputs,
            vec![
                s("a", DataType::Fp32, &[-1, 4]),
                s("b", DataType::Fp32, &[-1, 4])
            ]
        );
        assert_eq!(
            m.spec().outputs,
            vec![
                s("sum", DataType::Fp32, &[-1, 4]),
                s("product", DataType::Fp32, &[-1, 4])
            ]
        );
        assert!(m.batchable());
        let lin = OnnxModel::load(&testdata("linear.onnx"), "linear").unwrap();
        assert_eq!(lin.spec().outputs, vec![s("y", DataType::Fp32, &[-1, 2])]);
        let ib = OnnxModel::load(&testdata("int_bool.onnx"), "int_bool").unwrap();
        assert_eq!(
            ib.spec().inputs,
            vec![
                s("x", DataType::Int64, &[-1, 3]),
                s("mask", DataType::Bool, &[-1, 3])
            ]
        );
        assert_eq!(
            ib.spec().outputs,
            vec![
                s("masked", DataType::Int64, &[-1, 3]),
                s("positive", DataType::Bool, &[-1, 3])
            ]
        );
    }

    #[test]
    fn runs_linear() {
        let lin = OnnxModel::load(&testdata("linear.onnx"), "linear").unwrap();
        let x = Tensor {
            name: "x".into(),
            shape: vec![2, 3],
            data: TensorData::Fp32(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
        };
        let out = lin.run(&[x]).unwrap();
        assert_eq!(out[0].shape, vec![2, 2]);
        assert_eq!(out[0].data, TensorData::Fp32(vec![1.5, 1.5, 9.5, 11.5]));
    }

    #[test]
    fn missing_file_is_a_load_error() {
        let e = OnnxModel::load(Path::new("/nonexistent.onnx"), "x")
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("loading model /nonexistent.onnx"),
            "{e}"
        );
    }
}
