//! Encryption at rest for Secret values, configured as the Kubernetes API
//! server's `--encryption-provider-config`: an `EncryptionConfiguration`
//! whose entry for `secrets` lists providers, the first of which encrypts
//! new writes and all of which decrypt what is stored.
//!
//! ```yaml
//! apiVersion: apiserver.config.k8s.io/v1
//! kind: EncryptionConfiguration
//! resources:
//!   - resources: [secrets]
//!     providers:
//!       - aesgcm:
//!           keys:
//!             - name: key1
//!               secret: <base64 of 16 or 32 random bytes>
//!       - identity: {}
//! ```
//!
//! Providers here are `aesgcm` (AES-GCM with a random 96-bit nonce per
//! value, through `ring`) and `identity` (stored as given). A sealed value is
//! bound to where it is stored (the caller's associated data, e.g. the
//! secret's name and key), so it cannot be moved to another secret.
//! A [`Keyring`] is read once at start; [`install`] makes it the process's.

use std::path::Path;
use std::sync::OnceLock;

use base64::Engine;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

/// The `apiVersion` and `kind` an encryption configuration must have.
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
pub const KIND: &str = "EncryptionConfiguration";

/// What a sealed value holds beyond its plaintext: the nonce and the tag.
pub const OVERHEAD: usize = NONCE_LEN + 16;

struct Key {
    name: String,
    key: LessSafeKey,
}

/// The keys of an encryption configuration.
pub struct Keyring {
    keys: Vec<Key>,
    /// Whether the first provider is `aesgcm` (new values are encrypted
    /// with `keys[0]`) rather than `identity` (stored as given).
    encrypt: bool,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        f.debug_struct("Keyring")
            .field("keys", &names)
            .field("encrypt", &self.encrypt)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    api_version: String,
    kind: String,
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceConfig {
    resources: Vec<String>,
    providers: Vec<Provider>,
}

/// One provider: exactly one of these is set. The ones not supported here
/// are read so that the error can name them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Provider {
    aesgcm: Option<KeysConfig>,
    identity: Option<serde_yaml_ng::Value>,
    aescbc: Option<serde_yaml_ng::Value>,
    secretbox: Option<serde_yaml_ng::Value>,
    kms: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysConfig {
    keys: Vec<KeyConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    name: String,
    secret: String,
}

impl Keyring {
    /// Read an encryption configuration file; errors name the file and the field.
    pub fn read(path: &Path) -> Result<Keyring, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
        Keyring::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parse an encryption configuration's text.
    pub fn parse(text: &str) -> Result<Keyring, String> {
        let c: Config = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        if c.api_version != API_VERSION || c.kind != KIND {
            return Err(format!(
                "apiVersion/kind: expected {API_VERSION} {KIND}, found {} {}",
                c.api_version, c.kind
            ));
        }
        // As Kubernetes reads it: the first entry that covers secrets (by
        // name, or the wildcards `*.` and `*.*`) gives their providers.
        let mut found = None;
        for (i, r) in c.resources.iter().enumerate() {
            for (j, res) in r.resources.iter().enumerate() {
                let named = res == "secrets" || res == "secrets.";
                if !named && res != "*." && res != "*.*" {
                    return Err(format!(
                        "resources[{i}].resources[{j}]: {res:?}: only secrets are stored encrypted here"
                    ));
                }
                if named && found.is_some() {
                    return Err(format!(
                        "resources[{i}].resources[{j}]: secrets are already configured by an earlier entry"
                    ));
                }
            }
            found.get_or_insert(i);
        }
        let Some(i) = found else {
            return Err("resources: no entry names secrets".into());
        };
        keyring(
            &c.resources[i].providers,
            &format!("resources[{i}].providers"),
        )
    }

    /// Whether new values are encrypted (the first provider is `aesgcm`).
    pub fn encrypts(&self) -> bool {
        self.encrypt
    }

    /// The key new values are encrypted with, when they are.
    pub fn write_key(&self) -> Option<&str> {
        self.encrypt.then(|| self.keys[0].name.as_str())
    }

    /// Encrypt `plaintext` bound to `aad`: the key's name and the nonce
    /// followed by the ciphertext and tag; `None` when the first provider
    /// is `identity` (the value is stored as given).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Option<(String, Vec<u8>)> {
        if !self.encrypt {
            return None;
        }
        let k = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        // The system's random source failing is not something to store
        // plaintext over.
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random number generator failed");
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = k
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .expect("AES-GCM seals any value under 64 GiB");
        out.extend_from_slice(tag.as_ref());
        Some((k.name.clone(), out))
    }

    /// Decrypt what [`Keyring::seal`] made with key `name` for `aad`.
    pub fn open(&self, name: &str, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, String> {
        let Some(k) = self.keys.iter().find(|k| k.name == name) else {
            return Err(format!(
                "it is encrypted with key {name:?}, which the encryption configuration does not hold"
            ));
        };
        if sealed.len() < OVERHEAD {
            return Err(format!(
                "its encrypted value is too short ({} bytes)",
                sealed.len()
            ));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_string())?;
        let mut buf = rest.to_vec();
        let plain = k
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| {
                format!(
                    "it does not decrypt with key {name:?} (another key of that name, or the value was altered or moved)"
                )
            })?;
        Ok(plain.to_vec())
    }
}

fn keyring(providers: &[Provider], at: &str) -> Result<Keyring, String> {
    if providers.is_empty() {
        return Err(format!(
            "{at}: list at least one provider (aesgcm or identity)"
        ));
    }
    let mut keys: Vec<Key> = Vec::new();
    let mut encrypt = None;
    for (i, p) in providers.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let unsupported = [
            ("aescbc", p.aescbc.is_some()),
            ("secretbox", p.secretbox.is_some()),
            ("kms", p.kms.is_some()),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(format!(
                "{at}.{name}: this provider is not supported; use aesgcm (or identity)"
            ));
        }
        match (&p.aesgcm, &p.identity) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(format!("{at}: give exactly one of aesgcm and identity"));
            }
            (None, Some(_)) => {
                encrypt.get_or_insert(false);
            }
            (Some(c), None) => {
                encrypt.get_or_insert(true);
                if c.keys.is_empty() {
                    return Err(format!("{at}.aesgcm.keys: list at least one key"));
                }
                for (j, kc) in c.keys.iter().enumerate() {
                    let at = format!("{at}.aesgcm.keys[{j}]");
                    keys.push(key(kc, &at, &keys)?);
                }
            }
        }
    }
    Ok(Keyring {
        keys,
        encrypt: encrypt.unwrap_or(false),
    })
}

fn key(kc: &KeyConfig, at: &str, earlier: &[Key]) -> Result<Key, String> {
    let name = kc.name.trim();
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "{at}.name: {:?}: give a name without ':' or spaces",
            kc.name
        ));
    }
    if earlier.iter().any(|k| k.name == name) {
        return Err(format!("{at}.name: {name:?} is listed twice"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(kc.secret.trim())
        .map_err(|e| format!("{at}.secret: is not base64 ({e})"))?;
    let alg = match bytes.len() {
        16 => &aead::AES_128_GCM,
        32 => &aead::AES_256_GCM,
        n => {
            return Err(format!(
                "{at}.secret: is {n} bytes; an AES-GCM key is 16 or 32 bytes (e.g. `head -c 32 /dev/urandom | base64`)"
            ))
        }
    };
    let key = UnboundKey::new(alg, &bytes).map_err(|_| format!("{at}.secret: not a usable key"))?;
    Ok(Key {
        name: name.to_string(),
        key: LessSafeKey::new(key),
    })
}

/// A new configuration with one random 32-byte `aesgcm` key named `name`
/// (what `gpuctl dev` writes on first start).
pub fn new_config(name: &str) -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random number generator failed");
    let secret = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        "apiVersion: {API_VERSION}\nkind: {KIND}\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n            - name: {name}\n              secret: {secret}\n      - identity: {{}}\n"
    )
}

static INSTALLED: OnceLock<Keyring> = OnceLock::new();

/// Make `keys` this process's keyring (once; a second call is refused).
pub fn install(keys: Keyring) -> Result<(), String> {
    INSTALLED
        .set(keys)
        .map_err(|_| "an encryption configuration is already installed".to_string())
}

/// This process's keyring, if one was installed.
pub fn installed() -> Option<&'static Keyring> {
    INSTALLED.get()
}

#[cfg(test)]
#[path = "sealing_tests.rs"]
mod tests;
