//! Documents to objects: `gpuctl apply` input (YAML, several documents per
//! file) and API payloads (JSON) parsed into the kind they name, with errors
//! that name the source, the document and the field path.

use serde::{Deserialize, Serialize};

use crate::api::{FieldError, Job, ManifestError, API_VERSION};
use crate::endpoint::Endpoint;
use crate::queue::Queue;
use crate::secret::Secret;

/// Any object a user can apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
// One per applied document, moved a few times: boxing the larger kinds would
// cost every match on it more than the copies do.
#[allow(clippy::large_enum_variant)]
pub enum Manifest {
    Job(Job),
    Queue(Queue),
    Endpoint(Endpoint),
    Secret(Secret),
}

impl Manifest {
    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::Job(_) => "Job",
            Manifest::Queue(_) => "Queue",
            Manifest::Endpoint(_) => "Endpoint",
            Manifest::Secret(_) => "Secret",
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Manifest::Job(j) => &j.metadata.name,
            Manifest::Queue(q) => &q.metadata.name,
            Manifest::Endpoint(e) => &e.metadata.name,
            Manifest::Secret(s) => &s.metadata.name,
        }
    }
}

/// The deepest nesting of flow collections (`[...]`, `{...}`) a manifest may
/// have: the YAML parser's own recursion limit, checked first in linear time
/// (the parser takes time quadratic in the depth before it gets there).
pub const MAX_NESTING: usize = 128;

/// Refuses a text whose flow collections nest deeper than [`MAX_NESTING`],
/// naming the line and column, before any YAML parser sees it. A linear scan
/// that skips quoted strings and comments; brackets inside plain scalars
/// (`a[1]`) are not counted.
pub fn check_nesting(source_name: &str, text: &str) -> Result<(), ManifestError> {
    let (mut depth, mut line, mut col) = (0usize, 1usize, 0usize);
    // The previous significant character on this line: a bracket opens a
    // collection only where a node may start.
    let mut prev: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        col += 1;
        let node_start = match prev {
            None => true,
            Some(':' | '-' | '?') => true,
            // Flow indicators only inside a flow collection; outside, `a[b`
            // and `a, b` are plain text.
            Some(',' | '[' | '{') => depth > 0,
            Some(_) => false,
        };
        match c {
            '\n' => {
                line += 1;
                col = 0;
                prev = None;
                continue;
            }
            ' ' | '\t' | '\r' => continue,
            '#' => {
                // A comment runs to the end of the line.
                for n in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                        col = 0;
                        break;
                    }
                }
                prev = None;
                continue;
            }
            '"' | '\'' if node_start => {
                // A quoted scalar: skip to its closing quote.
                let mut escaped = false;
                for n in chars.by_ref() {
                    col += 1;
                    if n == '\n' {
                        line += 1;
                        col = 0;
                    }
                    if c == '"' && escaped {
                        escaped = false;
                        continue;
                    }
                    if c == '"' && n == '\\' {
                        escaped = true;
                    } else if n == c {
                        break;
                    }
                }
            }
            '[' | '{' if node_start || depth > 0 => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ManifestError {
                        source_name: source_name.to_string(),
                        document: 0,
                        path: String::new(),
                        reason: format!(
                            "nested more than {MAX_NESTING} levels deep at line {line} column {col}"
                        ),
                    });
                }
            }
            ']' | '}' if depth > 0 => depth -= 1,
            _ => {}
        }
        prev = Some(c);
    }
    Ok(())
}

/// Parse every document in a YAML (or JSON) text and validate each one.
///
/// `source_name` is used only in error messages.
pub fn parse_manifests(source_name: &str, text: &str) -> Result<Vec<Manifest>, ManifestError> {
    check_nesting(source_name, text)?;
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let value = match serde_yaml_ng::Value::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                return Err(ManifestError {
                    source_name: source_name.to_string(),
                    document: docs.len() + 1,
                    path: String::new(),
                    reason: format!("malformed YAML: {e}"),
                })
            }
        };
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        docs.push(value);
    }
    if docs.is_empty() {
        return Err(ManifestError {
            source_name: source_name.to_string(),
            document: 0,
            path: String::new(),
            reason: "no objects found (the file is empty)".into(),
        });
    }
    let numbered = docs.len() > 1;
    docs.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let doc = if numbered { i + 1 } else { 0 };
            parse_value(v).map_err(|e| e.in_source(source_name, doc))
        })
        .collect()
}

/// One document as read, before its kind is known: what the object model
/// here and the workflow format (`gpuctl-pipelines`) each parse from, so
/// that an API payload is read once whatever its kind.
pub type Document = serde_yaml_ng::Value;

/// Read one object given as JSON (what travels over the API).
pub fn json_document(source_name: &str, json: &str) -> Result<Document, ManifestError> {
    serde_json::from_str(json).map_err(|e| ManifestError {
        source_name: source_name.to_string(),
        document: 0,
        path: String::new(),
        reason: format!("malformed JSON: {e}"),
    })
}

/// The `kind` a document names, when it names one as a string.
pub fn document_kind(doc: &Document) -> Option<&str> {
    doc.get("kind")?.as_str()
}

/// Parse and validate one document (from [`json_document`]) into the
/// object it names.
pub fn parse_manifest_document(
    source_name: &str,
    doc: Document,
) -> Result<Manifest, ManifestError> {
    parse_value(doc).map_err(|e| e.in_source(source_name, 0))
}

/// Parse and validate one object given as JSON (what travels over the API).
pub fn parse_manifest_json(source_name: &str, json: &str) -> Result<Manifest, ManifestError> {
    parse_manifest_document(source_name, json_document(source_name, json)?)
}

fn parse_value(value: serde_yaml_ng::Value) -> Result<Manifest, FieldError> {
    let map = value.as_mapping().ok_or_else(|| {
        FieldError::new(
            "",
            "expected a mapping with apiVersion, kind, metadata and spec",
        )
    })?;
    let kind = match map.get("kind") {
        None => {
            return Err(FieldError::new(
                "kind",
                "missing field (expected `kind: Job`)",
            ))
        }
        Some(k) => k
            .as_str()
            .ok_or_else(|| FieldError::new("kind", "expected a string such as `Job`"))?
            .to_string(),
    };
    match map.get("apiVersion").map(|v| v.as_str()) {
        None => {
            return Err(FieldError::new(
                "apiVersion",
                format!("missing field (expected `apiVersion: {API_VERSION}`)"),
            ))
        }
        Some(Some(API_VERSION)) => {}
        Some(other) => {
            return Err(FieldError::new(
                "apiVersion",
                format!(
                    "unsupported version {:?} (expected `{API_VERSION}`)",
                    other.unwrap_or("")
                ),
            ))
        }
    }
    match kind.as_str() {
        "Job" => {
            let job: Job = serde_path_to_error::deserialize(value).map_err(path_error)?;
            job.validate()?;
            Ok(Manifest::Job(job))
        }
        "Queue" => {
            let q: Queue = serde_path_to_error::deserialize(value).map_err(path_error)?;
            q.validate()?;
            Ok(Manifest::Queue(q))
        }
        "Endpoint" => {
            let ep: Endpoint = serde_path_to_error::deserialize(value).map_err(path_error)?;
            ep.validate()?;
            Ok(Manifest::Endpoint(ep))
        }
        "Secret" => {
            let mut s: Secret = serde_path_to_error::deserialize(value).map_err(path_error)?;
            s.validate()?;
            Ok(Manifest::Secret(s))
        }
        other => Err(FieldError::new(
            "kind",
            format!("unknown kind {other:?} (this server knows: Job, Queue, Endpoint, Secret)"),
        )),
    }
}

fn path_error(e: serde_path_to_error::Error<serde_yaml_ng::Error>) -> FieldError {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let inner = e.into_inner().to_string();
    // serde_yaml_ng appends " at line L column C" for positioned errors; keep it.
    FieldError::new(path, inner)
}
