//! The `Secret` object: named keys whose values reach tasks and endpoint
//! replicas as environment variables (`envFrom`) or files (`secretFiles`),
//! and are never shown by `get` or `describe`.
//!
//! As Kubernetes' Secret: `data` holds base64 values, `stringData` plain
//! text; both are merged on apply (`stringData` wins) and stored as `data`.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::api::ObjectMeta;
use crate::field::{validate_name, FieldError};
pub use crate::secret_ref::{validate_refs, EnvFromSource, SecretFilesSource, SecretRef};

/// Largest total size of a secret's values (Kubernetes' limit).
pub const MAX_SECRET_BYTES: usize = 1 << 20;

/// What `get`/`describe` show instead of a value.
pub const REDACTED: &str = "<redacted>";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Secret {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    /// Values, base64-encoded (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Values as plain text; merged into `data` when applied.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
}

/// A key as Kubernetes allows: letters, digits, `-`, `_`, `.`; not `.` or `..`.
fn validate_key(path: &str, key: &str) -> Result<(), FieldError> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            format!("{path}[{key:?}]"),
            "is not a valid key: use letters, digits, '-', '_' and '.'",
        ))
    }
}

impl Secret {
    /// Check names, keys, encodings and size; merge `stringData` into `data`.
    pub fn validate(&mut self) -> Result<(), FieldError> {
        validate_name("metadata.name", &self.metadata.name)?;
        if self.metadata.queue.is_some() {
            return Err(FieldError::new(
                "metadata.queue",
                "a Secret belongs to no queue",
            ));
        }
        let mut total = 0usize;
        for (k, v) in &self.data {
            validate_key("data", k)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_err(|e| {
                    FieldError::new(format!("data[{k:?}]"), format!("is not base64 ({e})"))
                })?;
            total += bytes.len();
        }
        for (k, v) in std::mem::take(&mut self.string_data) {
            validate_key("stringData", &k)?;
            total += v.len();
            self.data.insert(
                k,
                base64::engine::general_purpose::STANDARD.encode(v.as_bytes()),
            );
        }
        if self.data.is_empty() {
            return Err(FieldError::new(
                "data",
                "a Secret needs at least one key in data or stringData",
            ));
        }
        if total > MAX_SECRET_BYTES {
            return Err(FieldError::new(
                "data",
                format!(
                    "the values add up to {total} bytes; a Secret holds at most {MAX_SECRET_BYTES}"
                ),
            ));
        }
        Ok(())
    }

    /// The decoded values (of a validated secret).
    pub fn values(&self) -> BTreeMap<String, Vec<u8>> {
        self.data
            .iter()
            .filter_map(|(k, v)| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .ok()
                    .map(|b| (k.clone(), b))
            })
            .collect()
    }

    /// The secret as `get` shows it: every value replaced by
    /// `<redacted>` and its size.
    pub fn redacted(&self) -> Secret {
        let mut s = self.clone();
        s.string_data.clear();
        for (k, v) in s.data.iter_mut() {
            let n = self.values().get(k).map_or(0, Vec::len);
            *v = format!("{REDACTED} ({n} bytes)");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(data: &[(&str, &str)], string_data: &[(&str, &str)]) -> Secret {
        Secret {
            api_version: crate::api::API_VERSION.into(),
            kind: "Secret".into(),
            metadata: ObjectMeta {
                name: "hf".into(),
                ..Default::default()
            },
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            string_data: string_data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn string_data_merges_into_data_and_wins() {
        let mut s = secret(&[("a", "eA=="), ("b", "eQ==")], &[("b", "zz")]);
        s.validate().unwrap();
        assert!(s.string_data.is_empty());
        let v = s.values();
        assert_eq!(v["a"], b"x");
        assert_eq!(v["b"], b"zz");
    }

    #[test]
    fn bad_keys_encodings_and_sizes_are_named() {
        let e = secret(&[("a", "!!")], &[]).validate().unwrap_err();
        assert_eq!(e.path, "data[\"a\"]");
        assert!(e.reason.contains("not base64"), "{}", e.reason);
        let e = secret(&[], &[("a/b", "x")]).validate().unwrap_err();
        assert_eq!(e.path, "stringData[\"a/b\"]");
        let e = secret(&[], &[]).validate().unwrap_err();
        assert_eq!(e.path, "data");
        let big = "x".repeat(MAX_SECRET_BYTES + 1);
        let e = secret(&[], &[("k", &big)]).validate().unwrap_err();
        assert!(e.reason.contains("at most"), "{}", e.reason);
    }

    #[test]
    fn redacted_shows_sizes_not_values() {
        let mut s = secret(&[], &[("token", "hunter2")]);
        s.validate().unwrap();
        let r = s.redacted();
        assert_eq!(r.data["token"], "<redacted> (7 bytes)");
        assert!(!serde_json::to_string(&r).unwrap().contains("aHVudGVyMg"));
    }

    #[test]
    fn references_are_checked() {
        let env = [EnvFromSource {
            secret_ref: SecretRef { name: "hf".into() },
            prefix: "9X".into(),
        }];
        let e = validate_refs("spec.tasks[0]", &env, &[]).unwrap_err();
        assert_eq!(e.path, "spec.tasks[0].envFrom[0].prefix");
        let files = [
            SecretFilesSource {
                secret_ref: SecretRef { name: "a".into() },
                dir: None,
            },
            SecretFilesSource {
                secret_ref: SecretRef { name: "b".into() },
                dir: Some("a".into()),
            },
        ];
        let e = validate_refs("spec.tasks[0]", &[], &files).unwrap_err();
        assert_eq!(e.path, "spec.tasks[0].secretFiles[1].dir");
    }
}
