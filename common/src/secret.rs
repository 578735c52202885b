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

/// How a value encrypted at rest is stored in `data`: this prefix, the
/// key's name, `:`, and the base64 of the nonce, ciphertext and tag
/// (`gpuctl_security::sealing`). `:` is not base64, so no value a user
/// gives can look like one.
pub const SEALED_PREFIX: &str = "gpuctl:enc:aesgcm:v1:";

/// What a sealed value holds beyond the plaintext (AES-GCM's nonce and
/// tag: `gpuctl_security::sealing::OVERHEAD`).
pub const SEAL_OVERHEAD: usize = 28;

/// A sealed value's key name and its base64 text, read without decoding.
fn split_sealed(v: &str) -> Option<(&str, &str)> {
    v.strip_prefix(SEALED_PREFIX)?.split_once(':')
}

/// A sealed value's key name and its bytes (nonce, ciphertext, tag).
fn parse_sealed(v: &str) -> Option<(&str, Vec<u8>)> {
    let (key, b64) = split_sealed(v)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some((key, bytes))
}

/// The plaintext size of a sealed value.
fn sealed_len(v: &str) -> Option<usize> {
    parse_sealed(v).map(|(_, sealed)| sealed.len().saturating_sub(SEAL_OVERHEAD))
}

/// What a sealed value of key `key` of secret `secret` is bound to, so that
/// it cannot be moved to another secret or key.
fn seal_context(secret: &str, key: &str) -> Vec<u8> {
    format!("gpuctl/secret/{secret}/{key}").into_bytes()
}

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
        self.check(false)
    }

    /// [`Secret::validate`] for a secret as it is stored: values may be
    /// sealed (encrypted at rest).
    pub fn validate_stored(&mut self) -> Result<(), FieldError> {
        self.check(true)
    }

    fn check(&mut self, sealed_ok: bool) -> Result<(), FieldError> {
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
            if let Some(n) = sealed_ok.then(|| sealed_len(v)).flatten() {
                total += n;
                continue;
            }
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

    /// The decoded values (of a validated secret that holds no sealed
    /// value: see [`Secret::open_values`]).
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

    /// Whether any value is stored encrypted.
    pub fn is_sealed(&self) -> bool {
        self.data.values().any(|v| v.starts_with(SEALED_PREFIX))
    }

    /// Encrypt every value not yet encrypted (of a validated secret):
    /// `seal(context, plaintext)` gives the key's name and the sealed
    /// bytes, or `None` to keep the value as it is.
    pub fn seal_values(&mut self, seal: impl Fn(&[u8], &[u8]) -> Option<(String, Vec<u8>)>) {
        let b64 = &base64::engine::general_purpose::STANDARD;
        for (k, v) in self.data.iter_mut() {
            if v.starts_with(SEALED_PREFIX) {
                continue;
            }
            let Ok(plain) = b64.decode(v.trim()) else {
                continue;
            };
            if let Some((name, sealed)) = seal(&seal_context(&self.metadata.name, k), &plain) {
                *v = format!("{SEALED_PREFIX}{name}:{}", b64.encode(sealed));
            }
        }
    }

    /// The values, sealed ones decrypted by `open(key name, context,
    /// sealed bytes)`; an error names the secret's key that could not be read.
    pub fn open_values(
        &self,
        open: impl Fn(&str, &[u8], &[u8]) -> Result<Vec<u8>, String>,
    ) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.data {
            let value = if v.starts_with(SEALED_PREFIX) {
                let (name, sealed) = parse_sealed(v).ok_or_else(|| {
                    format!(
                        "secret {:?} key {k:?}: malformed encrypted value",
                        self.metadata.name
                    )
                })?;
                open(name, &seal_context(&self.metadata.name, k), &sealed)
                    .map_err(|e| format!("secret {:?} key {k:?}: {e}", self.metadata.name))?
            } else {
                match base64::engine::general_purpose::STANDARD.decode(v.trim()) {
                    Ok(b) => b,
                    Err(_) => continue,
                }
            };
            out.insert(k.clone(), value);
        }
        Ok(out)
    }

    /// Whether some value is not stored as `key` would store it: sealed with
    /// another key, or plain where `key` names one (`None`: plain).
    pub fn needs_reseal(&self, key: Option<&str>) -> bool {
        // Only the key's name is read (the leader asks this of every secret
        // once a second): no value is decoded.
        self.data
            .values()
            .any(|v| split_sealed(v).map(|(name, _)| name) != key)
    }

    /// This secret with every value opened by `open` and stored again by
    /// `seal` (see [`Secret::open_values`], [`Secret::seal_values`]).
    pub fn resealed(
        &self,
        open: impl Fn(&str, &[u8], &[u8]) -> Result<Vec<u8>, String>,
        seal: impl Fn(&[u8], &[u8]) -> Option<(String, Vec<u8>)>,
    ) -> Result<Secret, String> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        let mut s = self.clone();
        s.data = self
            .open_values(open)?
            .into_iter()
            .map(|(k, v)| (k, b64.encode(v)))
            .collect();
        s.seal_values(seal);
        Ok(s)
    }

    /// A value's size in bytes, sealed or not.
    fn value_len(v: &str) -> usize {
        sealed_len(v).unwrap_or_else(|| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_or(0, |b| b.len())
        })
    }

    /// The secret as `get` shows it: every value replaced by
    /// `<redacted>` and its size.
    pub fn redacted(&self) -> Secret {
        let mut s = self.clone();
        s.string_data.clear();
        for v in s.data.values_mut() {
            let n = Secret::value_len(v);
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
    fn sealed_values_are_stored_as_such_and_open_only_in_place() {
        // A stand-in cipher: the context and the reversed value, 28 bytes
        // longer as AES-GCM's output is (the real one is
        // gpuctl_security::sealing, tested there).
        let seal = |ctx: &[u8], plain: &[u8]| {
            let mut out = vec![0u8; 28];
            out[..ctx.len().min(28)].copy_from_slice(&ctx[..ctx.len().min(28)]);
            out.extend(plain.iter().rev());
            Some(("k1".to_string(), out))
        };
        let open = |name: &str, ctx: &[u8], sealed: &[u8]| -> Result<Vec<u8>, String> {
            if name != "k1" {
                return Err(format!("no key {name:?}"));
            }
            if sealed[..ctx.len().min(28)] != ctx[..ctx.len().min(28)] {
                return Err("moved".to_string());
            }
            Ok(sealed[28..].iter().rev().copied().collect())
        };
        let mut s = secret(&[("b", "AAE=")], &[("token", "hunter2")]);
        s.validate().unwrap();
        assert!(!s.is_sealed());
        s.seal_values(seal);
        assert!(s.is_sealed());
        assert!(
            s.data["token"].starts_with("gpuctl:enc:aesgcm:v1:k1:"),
            "{:?}",
            s.data
        );
        assert!(!serde_json::to_string(&s).unwrap().contains("aHVudGVyMg"));
        // Stored, it validates and shows its size; the values open.
        s.clone().validate_stored().unwrap();
        assert_eq!(s.redacted().data["token"], "<redacted> (7 bytes)");
        assert_eq!(s.redacted().data["b"], "<redacted> (2 bytes)");
        let v = s.open_values(open).unwrap();
        assert_eq!(v["token"], b"hunter2");
        assert_eq!(v["b"], vec![0u8, 1]);
        // Sealing again leaves sealed values alone.
        let before = s.data.clone();
        s.seal_values(seal);
        assert_eq!(s.data, before);
        // The value moved to another secret does not open, naming the key.
        let mut moved = s.clone();
        moved.metadata.name = "other".into();
        let e = moved.open_values(open).unwrap_err();
        assert!(e.starts_with("secret \"other\" key \"b\": moved"), "{e}");
        // A user cannot hand in a value that looks sealed.
        let mut forged = secret(&[("token", s.data["token"].as_str())], &[]);
        let e = forged.validate().unwrap_err();
        assert!(e.to_string().contains("is not base64"), "{e}");
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
