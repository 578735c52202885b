//! Bearer tokens.
//!
//! A token reads `gpuctl_<id>_<secret>`: `id` is 12 hex digits, public (it
//! names the token in listings, revocation and the audit log); `secret` is 40
//! hex digits (160 random bits). The cluster keeps only the SHA-256 of the
//! whole token, so a copy of the state gives no usable token.

use std::fmt;

use rand::RngCore;

/// Every token starts with this, so that it is recognisable in a leaked file
/// (secret scanners match on it).
pub const PREFIX: &str = "gpuctl_";
const ID_HEX: usize = 12;
const SECRET_HEX: usize = 40;

/// A freshly made token: the whole secret (shown once) and its parts.
#[derive(Clone, PartialEq, Eq)]
pub struct NewToken {
    /// `gpuctl_<id>_<secret>`: give this to the user, then forget it.
    pub token: String,
    /// The public id.
    pub id: String,
    /// What the state stores: [`hash`] of `token`.
    pub hash: String,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Make a new random token.
pub fn generate() -> NewToken {
    let mut bytes = [0u8; (ID_HEX + SECRET_HEX) / 2];
    rand::rng().fill_bytes(&mut bytes);
    let id = hex(&bytes[..ID_HEX / 2]);
    let secret = hex(&bytes[ID_HEX / 2..]);
    let token = format!("{PREFIX}{id}_{secret}");
    let hash = hash(&token);
    NewToken { token, id, hash }
}

/// SHA-256 of the whole token, lowercase hex.
pub fn hash(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// Whether `token` hashes to `stored` (a [`hash`] result), compared in
/// constant time.
pub fn matches(token: &str, stored: &str) -> bool {
    let h = hash(token);
    h.len() == stored.len() && ring_eq(h.as_bytes(), stored.as_bytes())
}

fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    // Constant-time for equal lengths: no early exit.
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a presented credential is not a token at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the authorization header is not \"Bearer <token>\"")]
    NotBearer,
    #[error("the token does not look like a gpuctl token (gpuctl_<id>_<secret>)")]
    Malformed,
}

/// The id of a well-formed token.
pub fn id_of(token: &str) -> Result<&str, ParseError> {
    let rest = token.strip_prefix(PREFIX).ok_or(ParseError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(ParseError::Malformed)?;
    let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    if id.len() != ID_HEX || secret.len() != SECRET_HEX || !is_hex(id) || !is_hex(secret) {
        return Err(ParseError::Malformed);
    }
    Ok(id)
}

/// The token in an `authorization` header value (`Bearer <token>`, the
/// scheme matched case-insensitively as RFC 6750 allows).
pub fn from_bearer(header: &str) -> Result<&str, ParseError> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').ok_or(ParseError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ParseError::NotBearer);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(ParseError::NotBearer);
    }
    Ok(token)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_and_matches_only_its_hash() {
        let a = generate();
        let b = generate();
        assert_ne!(a.token, b.token);
        assert_eq!(id_of(&a.token).unwrap(), a.id);
        assert!(matches(&a.token, &a.hash));
        assert!(!matches(&b.token, &a.hash));
        assert!(!format!("{a:?}").contains(&a.token));
        assert_eq!(a.hash.len(), 64);
    }

    #[test]
    fn the_hash_is_sha256() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn malformed_tokens_and_headers_are_named() {
        assert_eq!(id_of("abc"), Err(ParseError::Malformed));
        assert_eq!(id_of("gpuctl_xyz_123"), Err(ParseError::Malformed));
        let t = generate().token;
        assert_eq!(from_bearer(&format!("Bearer {t}")), Ok(t.as_str()));
        assert_eq!(from_bearer(&format!("bearer  {t} ")), Ok(t.as_str()));
        assert_eq!(
            from_bearer(&format!("Basic {t}")),
            Err(ParseError::NotBearer)
        );
        assert_eq!(from_bearer("Bearer "), Err(ParseError::NotBearer));
        assert_eq!(from_bearer(&t), Err(ParseError::NotBearer));
    }
}
