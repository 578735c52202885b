//! Parsing text into a [`Workflow`]: one YAML (or JSON) document of
//! `kind: Workflow` in Argo's `apiVersion`, strictly, with errors that name
//! the field. Semantic checks are [`crate::validate`]'s.

use gpuctl_common::api::FieldError;
use gpuctl_common::manifest::Document;
use serde::Deserialize;

use super::workflow::Workflow;

/// `apiVersion` of an Argo workflow.
pub const ARGO_API_VERSION: &str = "argoproj.io/v1alpha1";

/// Parse without semantic validation: structure and unknown fields only.
pub fn parse_unvalidated(text: &str) -> Result<Workflow, FieldError> {
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let value = serde_yaml_ng::Value::deserialize(de)
            .map_err(|e| FieldError::new("", format!("malformed YAML: {e}")))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    let value = match docs.len() {
        0 => return Err(FieldError::new("", "no workflow found (the file is empty)")),
        1 => docs.pop().unwrap_or_default(),
        n => {
            return Err(FieldError::new(
                "",
                format!("expected one Workflow, found {n} documents"),
            ))
        }
    };
    from_document(value)
}

/// [`parse_unvalidated`] of a document already read (an API payload).
pub fn from_document(value: Document) -> Result<Workflow, FieldError> {
    from_document_as(value, &["Workflow"])
}

/// A document of one of `kinds` (`Workflow`, `WorkflowTemplate`,
/// `ClusterWorkflowTemplate`: the same document under another kind),
/// strictly.
pub fn from_document_as(value: Document, kinds: &[&str]) -> Result<Workflow, FieldError> {
    check_header(&value, kinds)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        FieldError::new(path, e.into_inner().to_string())
    })
}

/// `apiVersion` is Argo's and `kind` one of `kinds`.
pub fn check_header(value: &Document, kinds: &[&str]) -> Result<(), FieldError> {
    let map = value.as_mapping().ok_or_else(|| {
        FieldError::new(
            "",
            "expected a mapping with apiVersion, kind, metadata and spec",
        )
    })?;
    match map.get("apiVersion").map(|v| v.as_str()) {
        None => {
            return Err(FieldError::new(
                "apiVersion",
                format!("missing field (expected `apiVersion: {ARGO_API_VERSION}`)"),
            ))
        }
        Some(Some(ARGO_API_VERSION)) => {}
        Some(other) => {
            return Err(FieldError::new(
                "apiVersion",
                format!(
                    "unsupported version {:?} (expected `{ARGO_API_VERSION}`)",
                    other.unwrap_or("")
                ),
            ))
        }
    }
    let want = kinds.join("` or `");
    match map.get("kind").map(|v| v.as_str()) {
        Some(Some(k)) if kinds.contains(&k) => Ok(()),
        Some(Some(k @ ("WorkflowTemplate" | "ClusterWorkflowTemplate" | "CronWorkflow"))) => {
            Err(FieldError::new(
                "kind",
                format!(
                    "a {k} is stored with `gpuctl apply -f`, not submitted; expected `{want}` here"
                ),
            ))
        }
        None => Err(FieldError::new(
            "kind",
            format!("missing field (expected `kind: {want}`)"),
        )),
        Some(other) => Err(FieldError::new(
            "kind",
            format!("expected `{want}`, got {:?}", other.unwrap_or("")),
        )),
    }
}
