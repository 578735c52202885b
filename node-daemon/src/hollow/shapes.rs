//! What each hollow node reports: the same simulated inventory for every
//! node (`--gpus`, `--gpu-file`, as one real daemon takes them), or a node
//! list whose rows are dealt to the nodes in turn (`--node-list`, the
//! openb trace's CSV: `sn,cpu_milli,memory_mib,gpu,model`).

use std::path::Path;
use std::sync::Arc;

use crate::inventory::{GpuInventory, SimError, SimulatedInventory};

/// Why a node list was rejected: the file, the line and the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapeError {
    #[error("{file}: {reason}")]
    File { file: String, reason: String },
    #[error("{file}:{line}: {field}: {reason}")]
    Row {
        file: String,
        line: usize,
        field: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Inventory(#[from] SimError),
}

/// One node's shape: its GPUs as `--gpus` specs, CPU and memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeShape {
    /// `COUNTxMODEL` specs; empty: a node without GPUs.
    pub gpus: Vec<String>,
    /// 0: the fleet's default.
    pub cpu_milli: u64,
    /// 0: the fleet's default.
    pub memory_bytes: u64,
}

/// How the fleet's nodes are described.
#[derive(Debug, Clone)]
pub enum Shapes {
    /// Every node the same: `--gpus` specs.
    Specs(Vec<String>),
    /// Every node the same: a simulated inventory's YAML (its text and
    /// file name, read once).
    Yaml { file: String, text: String },
    /// Rows dealt to the nodes in turn.
    List(Vec<NodeShape>),
}

impl Shapes {
    /// The inventory node `i` (named `name`) reports, with its CPU and
    /// memory when the description gives them.
    pub fn inventory(
        &self,
        i: usize,
        name: &str,
    ) -> Result<(Arc<dyn GpuInventory>, u64, u64), ShapeError> {
        let (inv, cpu, mem) = match self {
            Shapes::Specs(specs) => (SimulatedInventory::from_specs(name, specs)?, 0, 0),
            Shapes::Yaml { file, text } => (SimulatedInventory::from_yaml(name, file, text)?, 0, 0),
            Shapes::List(rows) => {
                let row = &rows[i % rows.len()];
                (
                    SimulatedInventory::from_specs(name, &row.gpus)?,
                    row.cpu_milli,
                    row.memory_bytes,
                )
            }
        };
        Ok((Arc::new(inv), cpu, mem))
    }

    /// A YAML inventory file, checked once here so that a bad file is one
    /// error before any node starts.
    pub fn from_yaml_file(path: &Path) -> Result<Shapes, ShapeError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ShapeError::File {
            file: file.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        SimulatedInventory::from_yaml("check", &file, &text)?;
        Ok(Shapes::Yaml { file, text })
    }

    /// A node list file (see [`parse_node_list`]).
    pub fn from_node_list(path: &Path) -> Result<Shapes, ShapeError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ShapeError::File {
            file: file.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        Ok(Shapes::List(parse_node_list(&file, &text)?))
    }
}

/// A node list in the openb trace's CSV form: a header naming at least
/// `cpu_milli`, `memory_mib`, `gpu` and `model` (any order; other columns
/// such as `sn` are ignored), then one row per node.
pub fn parse_node_list(file: &str, text: &str) -> Result<Vec<NodeShape>, ShapeError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(ShapeError::File {
            file: file.to_string(),
            reason: "empty: expected a header line `sn,cpu_milli,memory_mib,gpu,model`".into(),
        });
    };
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &'static str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| ShapeError::File {
                file: file.to_string(),
                reason: format!("the header has no {name:?} column (found {header:?})"),
            })
    };
    let (cpu_c, mem_c, gpu_c, model_c) = (
        col("cpu_milli")?,
        col("memory_mib")?,
        col("gpu")?,
        col("model")?,
    );
    let mut out = Vec::new();
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let row_err = |field: &'static str, reason: String| ShapeError::Row {
            file: file.to_string(),
            line: i + 1,
            field,
            reason,
        };
        let cell = |c: usize, field: &'static str| {
            cells
                .get(c)
                .copied()
                .ok_or_else(|| row_err(field, "missing".into()))
        };
        let number = |c: usize, field: &'static str| -> Result<u64, ShapeError> {
            let v = cell(c, field)?;
            v.parse::<u64>()
                .map_err(|_| row_err(field, format!("{v:?} is not a whole number")))
        };
        let cpu_milli = number(cpu_c, "cpu_milli")?;
        let memory_mib = number(mem_c, "memory_mib")?;
        let gpus = number(gpu_c, "gpu")?;
        let model = cell(model_c, "model")?;
        let specs = match (gpus, model.is_empty()) {
            (0, _) => Vec::new(),
            (_, true) => return Err(row_err("model", format!("{gpus} GPUs need a model"))),
            (n, false) => {
                let spec = format!("{n}x{model}");
                crate::inventory::parse_gpu_spec(&spec)
                    .map_err(|e| row_err("gpu", e.to_string()))?;
                vec![spec]
            }
        };
        out.push(NodeShape {
            gpus: specs,
            cpu_milli,
            memory_bytes: memory_mib.saturating_mul(1 << 20),
        });
    }
    if out.is_empty() {
        return Err(ShapeError::File {
            file: file.to_string(),
            reason: "no nodes after the header".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_openb_node_list_form() {
        let text = "sn,cpu_milli,memory_mib,gpu,model\n\
                    openb-node-0000,64000,262144,2,P100\n\
                    openb-node-0001,96000,786432,8,V100M32\n\
                    openb-node-1300,32000,131072,0,\n";
        let rows = parse_node_list("nodes.csv", text).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].gpus, ["2xP100"]);
        assert_eq!(rows[1].cpu_milli, 96_000);
        assert_eq!(rows[1].memory_bytes, 786_432 << 20);
        assert!(rows[2].gpus.is_empty(), "a CPU-only node");
        let shapes = Shapes::List(rows);
        let (inv, cpu, _) = shapes.inventory(4, "h4").unwrap();
        assert_eq!(cpu, 96_000, "rows are dealt in turn: node 4 gets row 1");
        assert_eq!(inv.devices().len(), 8);
        assert_eq!(inv.devices()[0].model, "V100M32");
    }

    #[test]
    fn a_bad_row_names_file_line_and_field() {
        let text = "sn,cpu_milli,memory_mib,gpu,model\nn0,lots,1,1,T4\n";
        let e = parse_node_list("nodes.csv", text).unwrap_err().to_string();
        assert_eq!(e, "nodes.csv:2: cpu_milli: \"lots\" is not a whole number");
        let e = parse_node_list("nodes.csv", "sn,gpu\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no \"cpu_milli\" column"), "{e}");
        let e = parse_node_list("n.csv", "cpu_milli,memory_mib,gpu,model\n1,1,2,\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "n.csv:2: model: 2 GPUs need a model");
    }
}
