//! OpenID Connect ID tokens as bearer tokens, as the Kubernetes API server
//! accepts them (`--oidc-issuer-url`, `--oidc-client-id`,
//! `--oidc-username-claim`, `--oidc-username-prefix`, `--oidc-ca-file`): a
//! JWT signed by the issuer, checked against the issuer's keys (a JWKS file
//! read at start, or fetched through the issuer's discovery document and
//! kept fresh: [`crate::oidc_discovery`]), its `iss`, `aud`, `exp` and
//! `nbf`. The name it
//! carries is then a gpuctl user's, who must exist (`gpuctl admin
//! create-user`): the user object holds the role and team.
//!
//! Signatures: RS256/384/512 (RSA keys of 2048 bits or more) and ES256/384,
//! through ring; `none` and HMAC are refused (a public key is not a secret).

use std::path::Path;
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;

/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_MS: u64 = 30_000;

/// One of the issuer's public keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    key: Key,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point (`04 || x || y`) on P-256 or P-384.
    Ec {
        p384: bool,
        point: Vec<u8>,
    },
}

/// Which ID tokens this cluster accepts, and how their names map to users.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Must equal the token's `iss`.
    pub issuer: String,
    /// Must be in the token's `aud`.
    pub client_id: String,
    /// The claim that names the user (`sub` by default; `email` needs
    /// `email_verified` not false, as Kubernetes does).
    pub username_claim: String,
    /// Put before the claim's value to make the gpuctl user name, so that
    /// the issuer's names cannot collide with users made for tokens.
    pub username_prefix: String,
    pub keys: KeySet,
    /// Claims that must be present with exactly these string values
    /// (`--oidc-required-claim KEY=VALUE`).
    pub required_claims: Vec<(String, String)>,
    /// The signature algorithms accepted (`--oidc-signing-algs`); empty:
    /// every one of [`SIGNING_ALGS`].
    pub signing_algs: Vec<String>,
}

/// The signature algorithms an ID token may use.
pub const SIGNING_ALGS: [&str; 5] = ["RS256", "RS384", "RS512", "ES256", "ES384"];

/// The issuer's keys as they are now: read from a file once, or fetched
/// and replaced while the replica runs. Clones share the same set.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    inner: Arc<KeySetInner>,
}

#[derive(Debug, Default)]
struct KeySetInner {
    keys: RwLock<Arc<Vec<Jwk>>>,
    /// Woken when a token names a key the set lacks.
    missed: tokio::sync::Notify,
}

impl KeySet {
    /// A set holding `keys`.
    pub fn new(keys: Vec<Jwk>) -> KeySet {
        let set = KeySet::default();
        set.replace(keys);
        set
    }

    /// The keys now.
    pub fn get(&self) -> Arc<Vec<Jwk>> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Put `keys` in place of the set's; whether they differ.
    pub fn replace(&self, keys: Vec<Jwk>) -> bool {
        let mut k = self.inner.keys.write().unwrap_or_else(|p| p.into_inner());
        let changed = **k != keys;
        *k = Arc::new(keys);
        changed
    }

    /// Resolves after a token named a key the set lacks.
    pub async fn missed(&self) {
        self.inner.missed.notified().await
    }
}

/// What a valid ID token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The gpuctl user name (prefix + claim).
    pub username: String,
    pub expires_ms: u64,
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| format!("{what} is not base64url: {e}"))
}

/// Whether a bearer token has a JWT's shape (three base64url parts, a JSON
/// header first) rather than a gpuctl token's.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

/// The keys of a JWKS document (`{"keys": [...]}`); keys of other types or
/// uses (`"use": "enc"`) are skipped, a malformed one is an error naming it.
pub fn parse_jwks(text: &str) -> Result<Vec<Jwk>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array (a JWKS document is {\"keys\": [...]})")?;
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let field = |name: &str| -> Result<Vec<u8>, String> {
            let v = k
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("keys[{i}]: no \"{name}\""))?;
            b64(v, &format!("keys[{i}].{name}"))
        };
        if k.get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let kid = k.get("kid").and_then(Value::as_str).map(str::to_string);
        let key = match k.get("kty").and_then(Value::as_str) {
            Some("RSA") => Key::Rsa {
                n: field("n")?,
                e: field("e")?,
            },
            Some("EC") => {
                let p384 = match k.get("crv").and_then(Value::as_str) {
                    Some("P-256") => false,
                    Some("P-384") => true,
                    other => {
                        return Err(format!(
                            "keys[{i}]: curve {other:?} is not supported (P-256, P-384)"
                        ))
                    }
                };
                let (x, y) = (field("x")?, field("y")?);
                let len = if p384 { 48 } else { 32 };
                if x.len() != len || y.len() != len {
                    return Err(format!("keys[{i}]: x and y must be {len} bytes each"));
                }
                let mut point = vec![4u8];
                point.extend(x);
                point.extend(y);
                Key::Ec { p384, point }
            }
            _ => continue,
        };
        out.push(Jwk { kid, key });
    }
    if out.is_empty() {
        return Err("no RSA or EC signing key in \"keys\"".into());
    }
    Ok(out)
}

/// [`parse_jwks`] of a file, the error naming it.
pub fn read_jwks(path: &Path) -> Result<Vec<Jwk>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_jwks(&text).map_err(|e| format!("{}: {e}", path.display()))
}

impl Jwk {
    fn verify(&self, alg: &str, message: &[u8], sig: &[u8]) -> Option<bool> {
        match (&self.key, alg) {
            (Key::Rsa { n, e }, "RS256" | "RS384" | "RS512") => {
                let params = match alg {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA512,
                };
                let key = RsaPublicKeyComponents { n, e };
                Some(key.verify(params, message, sig).is_ok())
            }
            (Key::Ec { p384: false, point }, "ES256") => Some(
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok(),
            ),
            (Key::Ec { p384: true, point }, "ES384") => Some(
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, sig)
                    .is_ok(),
            ),
            _ => None,
        }
    }
}

fn seconds_claim(claims: &Value, name: &str) -> Result<Option<u64>, String> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Some((s * 1000.0) as u64))
            .ok_or_else(|| format!("claim \"{name}\" is not a number of seconds")),
    }
}

impl OidcConfig {
    /// Check `jwt` at `now_ms`; why not, in words, when it is refused.
    pub fn verify(&self, jwt: &str, now_ms: u64) -> Result<Verified, String> {
        let mut parts = jwt.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("an ID token has three parts separated by dots".into());
        };
        let header: Value = serde_json::from_slice(&b64(h, "the header")?)
            .map_err(|e| format!("the header is not JSON: {e}"))?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        if !SIGNING_ALGS.contains(&alg) {
            return Err(format!(
                "signature algorithm {alg:?} is not accepted ({})",
                SIGNING_ALGS.join(", ")
            ));
        }
        if !self.signing_algs.is_empty() && !self.signing_algs.iter().any(|a| a == alg) {
            return Err(format!(
                "signature algorithm {alg:?} is not one this cluster accepts (--oidc-signing-algs {})",
                self.signing_algs.join(",")
            ));
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let sig = b64(s, "the signature")?;
        let message = &jwt.as_bytes()[..h.len() + 1 + p.len()];
        let mut tried = false;
        let mut good = false;
        let keys = self.keys.get();
        if keys.is_empty() {
            return Err("the issuer's keys have not been fetched yet; try again shortly".into());
        }
        for k in keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        {
            if let Some(ok) = k.verify(alg, message, &sig) {
                tried = true;
                if ok {
                    good = true;
                    break;
                }
            }
        }
        if !tried {
            // The issuer may have rotated its keys: fetch them again soon.
            self.keys.inner.missed.notify_one();
            return Err(match kid {
                Some(kid) => format!("no {alg} key with kid {kid:?} in the issuer's keys"),
                None => format!("no {alg} key in the issuer's keys"),
            });
        }
        if !good {
            return Err("the signature does not verify with the issuer's keys".into());
        }
        let claims: Value = serde_json::from_slice(&b64(p, "the payload")?)
            .map_err(|e| format!("the payload is not JSON: {e}"))?;
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss != self.issuer {
            return Err(format!(
                "issued by {iss:?}, not by this cluster's issuer {:?}",
                self.issuer
            ));
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.client_id,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(&self.client_id)),
            _ => false,
        };
        if !aud_ok {
            return Err(format!(
                "its audience does not include {:?}",
                self.client_id
            ));
        }
        let exp = seconds_claim(&claims, "exp")?.ok_or("it has no expiry (\"exp\")")?;
        if now_ms >= exp.saturating_add(LEEWAY_MS) {
            return Err(format!(
                "it expired {}s ago; sign in with the issuer again",
                (now_ms - exp) / 1000
            ));
        }
        if let Some(nbf) = seconds_claim(&claims, "nbf")? {
            if now_ms.saturating_add(LEEWAY_MS) < nbf {
                return Err(format!(
                    "it is not valid for another {}s (\"nbf\")",
                    (nbf - now_ms) / 1000
                ));
            }
        }
        for (k, want) in &self.required_claims {
            match claims.get(k) {
                Some(Value::String(v)) if v == want => {}
                Some(v) => return Err(format!("claim {k:?} is {v}, not {want:?} as required")),
                None => {
                    return Err(format!(
                        "it has no {k:?} claim, which is required ({want:?})"
                    ))
                }
            }
        }
        let name = claims
            .get(&self.username_claim)
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                format!(
                    "it has no \"{}\" claim to name the user",
                    self.username_claim
                )
            })?;
        if self.username_claim == "email"
            && claims.get("email_verified").and_then(Value::as_bool) == Some(false)
        {
            return Err(format!(
                "its email {name:?} is not verified (email_verified: false)"
            ));
        }
        Ok(Verified {
            username: format!("{}{name}", self.username_prefix),
            expires_ms: exp,
        })
    }
}

#[cfg(test)]
#[path = "oidc_tests.rs"]
mod tests;
