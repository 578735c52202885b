//! Secrets in the state machine: `PutSecret` creates or replaces one (its
//! values as given), `DeleteSecret` removes it. Tasks read them only
//! through their assignments; `get` shows them redacted.

use std::collections::BTreeMap;

use gpuctl_common::api::{TaskSpec, API_VERSION};
use gpuctl_common::endpoint::Endpoint;
use gpuctl_common::secret::Secret;

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
        s.validate()
            .map_err(|e| ApplyError::Invalid(format!("secret {:?}: {e}", s.metadata.name)))?;
        s.api_version = API_VERSION.to_string();
        let name = s.metadata.name.clone();
        s.metadata.resource_version = Some(index);
        match self.secrets.get(&name) {
            Some(old) => {
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
    /// (a secret deleted after the task was submitted). A value that is not
    /// UTF-8 cannot be an environment variable and is an error too.
    pub fn task_secrets(&self, spec: &TaskSpec) -> Result<TaskSecrets, String> {
        let mut out = TaskSecrets::default();
        let get = |name: &str| {
            self.secrets
                .get(name)
                .ok_or_else(|| format!("secret {name:?} no longer exists"))
        };
        for e in &spec.env_from {
            for (k, v) in get(&e.secret_ref.name)?.values() {
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
            for (k, v) in get(&f.secret_ref.name)?.values() {
                out.files.insert(format!("{}/{k}", f.dir()), v);
            }
        }
        Ok(out)
    }

    /// SHA-256 of each API key an endpoint accepts (the values of its
    /// `spec.auth` secret); empty when it has none or the secret is gone,
    /// which the gateway treats as "no key is valid".
    pub fn api_key_hashes(&self, e: &Endpoint) -> Vec<String> {
        let Some(auth) = &e.spec.auth else {
            return Vec::new();
        };
        let Some(secret) = self.secrets.get(&auth.api_key_secret.name) else {
            return Vec::new();
        };
        secret
            .values()
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
        assert!(st.api_key_hashes(&ep).is_empty());
        ep.spec.auth = Some(EndpointAuth {
            api_key_secret: SecretRef {
                name: "keys".into(),
            },
        });
        let mut h = st.api_key_hashes(&ep);
        h.sort();
        let mut want = vec![
            gpuctl_security::token::hash("key-1"),
            gpuctl_security::token::hash("key-2"),
        ];
        want.sort();
        assert_eq!(h, want);
        st.delete_secret("keys").unwrap();
        assert!(st.api_key_hashes(&ep).is_empty());
        assert!(matches!(
            st.delete_secret("keys"),
            Err(ApplyError::NotFound { kind: "secret", .. })
        ));
    }
}
