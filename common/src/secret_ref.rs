//! How a task refers to secrets (`envFrom`, `secretFiles`, an endpoint's
//! `auth`), and the check of those references. The `Secret` object itself
//! is in [`crate::secret`].

use serde::{Deserialize, Serialize};

use crate::field::{validate_name, FieldError};

/// A task's reference to a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretRef {
    pub name: String,
}

/// `envFrom` entry: every key of the secret becomes an environment variable
/// (`prefix` + key), as Kubernetes' `envFrom.secretRef`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvFromSource {
    pub secret_ref: SecretRef,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// `secretFiles` entry: every key of the secret becomes a file
/// `$GPUCTL_SECRETS_DIR/<dir>/<key>` (mode 0400, owned by the task's user);
/// `dir` defaults to the secret's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretFilesSource {
    pub secret_ref: SecretRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

impl SecretFilesSource {
    /// The folder under `$GPUCTL_SECRETS_DIR` the files go to.
    pub fn dir(&self) -> &str {
        self.dir.as_deref().unwrap_or(&self.secret_ref.name)
    }
}

/// Check the secret references of one task template (`path` is where they
/// sit, e.g. `spec.tasks[0]`).
pub fn validate_refs(
    path: &str,
    env_from: &[EnvFromSource],
    files: &[SecretFilesSource],
) -> Result<(), FieldError> {
    for (i, e) in env_from.iter().enumerate() {
        let p = format!("{path}.envFrom[{i}]");
        validate_name(&format!("{p}.secretRef.name"), &e.secret_ref.name)?;
        if !e.prefix.is_empty() && !is_env_name(&e.prefix) {
            return Err(FieldError::new(
                format!("{p}.prefix"),
                format!("{:?} is not a valid environment variable prefix (letters, digits, '_', not starting with a digit)", e.prefix),
            ));
        }
    }
    let mut dirs = std::collections::BTreeSet::new();
    for (i, f) in files.iter().enumerate() {
        let p = format!("{path}.secretFiles[{i}]");
        validate_name(&format!("{p}.secretRef.name"), &f.secret_ref.name)?;
        if let Some(d) = &f.dir {
            validate_name(&format!("{p}.dir"), d)?;
        }
        if !dirs.insert(f.dir()) {
            return Err(FieldError::new(
                format!("{p}.dir"),
                format!("two secretFiles entries use the folder {:?}", f.dir()),
            ));
        }
    }
    Ok(())
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
