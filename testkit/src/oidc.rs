//! An OpenID Connect issuer for tests: an ES256 key that signs ID tokens,
//! and its public key as a JWKS document.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

/// A signing key with its key id.
pub struct IdTokenSigner {
    key: EcdsaKeyPair,
    pub kid: String,
}

impl IdTokenSigner {
    /// A new P-256 key.
    pub fn new(kid: &str) -> IdTokenSigner {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("a P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("the key just made");
        IdTokenSigner {
            key,
            kid: kid.to_string(),
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// `{"keys": [these keys]}`.
    pub fn jwks(keys: &[&IdTokenSigner]) -> String {
        json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()
    }

    /// A JWT of `header` and `claims` signed with this key (whatever
    /// `alg` the header names).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let msg = format!("{h}.{p}");
        let sig = self
            .key
            .sign(&SystemRandom::new(), msg.as_bytes())
            .expect("signing");
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// An ES256 ID token with this key's id.
    pub fn token(&self, claims: &Value) -> String {
        self.sign(
            &json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }
}
