//! Errors in what users write, naming the file, document and field, and the
//! name rule every object follows.

/// An error in a document a user supplied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{source_name}{doc}: {path}{sep}{reason}",
    doc = if *.document > 0 { format!(" (document {})", .document) } else { String::new() },
    sep = if .path.is_empty() { "" } else { ": " })]
pub struct ManifestError {
    /// File name, or `<submit>` / `<stdin>`.
    pub source_name: String,
    /// 1-based document number in a multi-document file; 0 when there is one.
    pub document: usize,
    /// Field path such as `spec.tasks[0].resources.gpus`; empty for the whole document.
    pub path: String,
    /// What is wrong and, where it helps, what to do.
    pub reason: String,
}

/// A problem with one field, before the file name is known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Attach the file name and document number.
    pub fn in_source(self, source_name: &str, document: usize) -> ManifestError {
        ManifestError {
            source_name: source_name.to_string(),
            document,
            path: self.path,
            reason: self.reason,
        }
    }
}

/// Check a DNS-1123 label: what Kubernetes allows as an object name.
pub fn validate_name(path: &str, name: &str) -> Result<(), FieldError> {
    if name.is_empty() {
        return Err(FieldError::new(path, "must not be empty"));
    }
    if name.len() > 63 {
        return Err(FieldError::new(
            path,
            format!("{name:?} is longer than 63 characters"),
        ));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let ok_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok_chars || !ok_ends {
        return Err(FieldError::new(
            path,
            format!("{name:?} is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit"),
        ));
    }
    Ok(())
}
