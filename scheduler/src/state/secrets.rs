//! Secrets in the state machine: `PutSecret` creates or replaces one (its
//! values as given), `DeleteSecret` removes it. Tasks read them only
//! through their assignments; `get` shows them redacted.

use std::collections::BTreeMap;

use gpuctl_common::api::{TaskSpec, API_VERSION};
use gpuctl_common::endpoint::Endpoint;
use gpuctl_common::secret::Secret;
use gpuctl_security::sealing::Keyring;

use super::command::{Applied, ApplyError};
use super::objects::ObjKey;
use super::State;

impl State {
    pub(super) fn put_secret(
        &mut self,
        index: u64,
        now: u64,
        secret: &Secret,
    ) -> Result<Applied, ApplyError> {
        let mut s = secret.clone();
        s.validate_stored()
            .map_err(|e| ApplyError::Invalid(format!("secret {:?}: {e}", s.metadata.name)))?;
        s.api_version = API_VERSION.to_string();
        let name = s.metadata.name.clone();
        let expected = s.metadata.resource_version;
        s.metadata.resource_version = Some(index);
        match self.secrets.get(&name) {
            Some(old) => {
                if let Some(want) = expected {
                    let have = old.metadata.resource_version.unwrap_or(0);
                    if want != have {
                        return Err(ApplyError::Conflict(format!(
                            "secret {name:?} was changed (resourceVersion {have}) after version {want} that this update is based on; apply it again without resourceVersion"
                        )));
                    }
                }
                s.metadata.uid = old.metadata.uid;
                s.metadata.creation_timestamp_ms = old.metadata.creation_timestamp_ms;
            }
            None => {
                s.metadata.uid = Some(index);
                s.metadata.creation_timestamp_ms = Some(now);
            }
        }
        let shown = s.redacted();
        self.secrets.insert(name.clone(), s);
        self.dirty.insert(ObjKey::Secret(name));
        Ok(Applied::Secret(Box::new(shown)))
    }

    pub(super) fn delete_secret(&mut self, name: &str) -> Result<Applied, ApplyError> {
        let Some(old) = self.secrets.remove(name) else {
            return Err(ApplyError::NotFound {
                kind: "secret",
                name: name.to_string(),
            });
        };
        self.dirty.insert(ObjKey::Secret(name.to_string()));
        Ok(Applied::Secret(Box::new(old.redacted())))
    }
}

/// Decrypts sealed secret values with `keys`, the replica's encryption
/// configuration (`--encryption-provider-config`), if it has one.
fn opener(keys: Option<&Keyring>) -> impl Fn(&str, &[u8], &[u8]) -> Result<Vec<u8>, String> + '_ {
    const NO_KEYS: &str = "this replica was started without --encryption-provider-config";
    move |name, context, sealed| match keys {
        Some(k) => k.open(name, context, sealed),
        None => Err(format!("it is encrypted with key {name:?} and {NO_KEYS}")),
    }
}

/// What a task gets from its secrets: environment variables, and files by
/// their path under `$GPUCTL_SECRETS_DIR` (`<dir>/<key>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskSecrets {
    pub env: BTreeMap<String, String>,
    pub files: BTreeMap<String, Vec<u8>>,
}

impl State {
    /// The first secret `spec` names that does not exist, as a message
    /// naming the field (`spec.tasks[0].envFrom[0]: secret "hf" does not
    /// exist`); `path` is where `spec` sits.
    pub fn missing_secret(&self, path: &str, spec: &TaskSpec) -> Option<String> {
        let env = spec
            .env_from
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("{path}.envFrom[{i}]"), &e.secret_ref.name));
        let files = spec
            .secret_files
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("{path}.secretFiles[{i}]"), &f.secret_ref.name));
        env.chain(files)
            .find(|(_, name)| !self.secrets.contains_key(*name))
            .map(|(at, name)| {
                format!("{at}: secret {name:?} does not exist; apply it first (kind: Secret)")
            })
    }

    /// The values a task's secrets give it, or why they cannot be given
    /// (a secret deleted after the task was submitted, or encrypted with a
    /// key `keys` does not hold). A value that is not UTF-8 cannot be an
    /// environment variable and is an error too.
    pub fn task_secrets(
        &self,
        spec: &TaskSpec,
        keys: Option<&Keyring>,
    ) -> Result<TaskSecrets, String> {
        let mut out = TaskSecrets::default();
        let get = |name: &str| {
            self.secrets
                .get(name)
                .ok_or_else(|| format!("secret {name:?} no longer exists"))
                .and_then(|s| s.open_values(opener(keys)))
        };
        for e in &spec.env_from {
            for (k, v) in get(&e.secret_ref.name)? {
                let v = String::from_utf8(v).map_err(|_| {
                    format!(
                        "secret {:?} key {k:?} is not UTF-8 text and cannot be an environment variable (use secretFiles)",
                        e.secret_ref.name
                    )
                })?;
                out.env.insert(format!("{}{k}", e.prefix), v);
            }
        }
        for f in &spec.secret_files {
            for (k, v) in get(&f.secret_ref.name)? {
                out.files.insert(format!("{}/{k}", f.dir()), v);
            }
        }
        Ok(out)
    }

    /// SHA-256 of each API key an endpoint accepts (the values of its
    /// `spec.auth` secret); empty when it has none, the secret is gone or
    /// cannot be decrypted with `keys`, which the gateway treats as "no
    /// key is valid".
    pub fn api_key_hashes(&self, e: &Endpoint, keys: Option<&Keyring>) -> Vec<String> {
        let Some(auth) = &e.spec.auth else {
            return Vec::new();
        };
        let Some(secret) = self.secrets.get(&auth.api_key_secret.name) else {
            return Vec::new();
        };
        let values = match secret.open_values(opener(keys)) {
            Ok(v) => v,
            Err(why) => {
                tracing::debug!("endpoint {:?}: no API key is valid: {why}", e.metadata.name);
                return Vec::new();
            }
        };
        values
            .into_values()
            .filter_map(|v| String::from_utf8(v).ok())
            .map(|k| gpuctl_security::token::hash(k.trim()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use gpuctl_common::endpoint::EndpointAuth;
    use gpuctl_common::secret::SecretRef;

    use super::*;

    fn secret(name: &str, pairs: &[(&str, &str)]) -> Secret {
        Secret {
            api_version: API_VERSION.into(),
            kind: "Secret".into(),
            metadata: gpuctl_common::api::ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            data: BTreeMap::new(),
            string_data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn an_endpoint_with_auth_shows_the_hashes_of_its_keys_only() {
        let mut st = State::default();
        st.put_secret(1, 0, &secret("keys", &[("a", "key-1"), ("b", "key-2\n")]))
            .unwrap();
        let mut ep = gpuctl_testkit::endpoint("chat").build();
        assert!(st.api_key_hashes(&ep, None).is_empty());
        ep.spec.auth = Some(EndpointAuth {
            api_key_secret: SecretRef {
                name: "keys".into(),
            },
        });
        let mut h = st.api_key_hashes(&ep, None);
        h.sort();
        let mut want = vec![
            gpuctl_security::token::hash("key-1"),
            gpuctl_security::token::hash("key-2"),
        ];
        want.sort();
        assert_eq!(h, want);
        st.delete_secret("keys").unwrap();
        assert!(st.api_key_hashes(&ep, None).is_empty());
        assert!(matches!(
            st.delete_secret("keys"),
            Err(ApplyError::NotFound { kind: "secret", .. })
        ));
    }

    #[test]
    fn sealed_secrets_open_with_the_replicas_keys_and_say_why_without_them() {
        let keys = Keyring::parse(&gpuctl_security::sealing::new_config("k1")).unwrap();
        let other = Keyring::parse(&gpuctl_security::sealing::new_config("k2")).unwrap();
        let mut s = secret("hf", &[("TOKEN", "s3cret")]);
        s.validate().unwrap();
        s.seal_values(|ctx, plain| keys.seal(ctx, plain));
        assert!(s.is_sealed());
        // The size a sealed value shows assumes the cipher's overhead.
        assert_eq!(
            gpuctl_common::secret::SEAL_OVERHEAD,
            gpuctl_security::sealing::OVERHEAD
        );
        let mut st = State::default();
        let shown = st.put_secret(1, 0, &s).unwrap();
        let Applied::Secret(shown) = shown else {
            panic!("PutSecret answers with the secret")
        };
        assert_eq!(shown.data["TOKEN"], "<redacted> (6 bytes)");
        assert!(st.secrets["hf"].is_sealed(), "stored as sealed");

        let mut spec = gpuctl_testkit::job("j").build().spec.tasks[0].clone();
        spec.env_from = vec![gpuctl_common::secret::EnvFromSource {
            secret_ref: SecretRef { name: "hf".into() },
            prefix: String::new(),
        }];
        let got = st.task_secrets(&spec, Some(&keys)).unwrap();
        assert_eq!(got.env["TOKEN"], "s3cret");
        let e = st.task_secrets(&spec, None).unwrap_err();
        assert!(
            e.contains("secret \"hf\" key \"TOKEN\": it is encrypted with key \"k1\" and this replica was started without --encryption-provider-config"),
            "{e}"
        );
        let e = st.task_secrets(&spec, Some(&other)).unwrap_err();
        assert!(
            e.contains("which the encryption configuration does not hold"),
            "{e}"
        );

        let mut ep = gpuctl_testkit::endpoint("chat").build();
        ep.spec.auth = Some(EndpointAuth {
            api_key_secret: SecretRef { name: "hf".into() },
        });
        assert_eq!(
            st.api_key_hashes(&ep, Some(&keys)),
            vec![gpuctl_security::token::hash("s3cret")]
        );
        assert!(st.api_key_hashes(&ep, None).is_empty());
    }
}
