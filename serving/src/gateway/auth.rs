//! An endpoint's API keys: a request to an endpoint with `spec.auth` must
//! carry one of its keys, as `Authorization: Bearer KEY` (what OpenAI-style
//! clients send) or `x-api-key: KEY`. The gateway knows only the keys'
//! SHA-256 hashes and removes both headers before forwarding, so a replica
//! never sees a key.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

use crate::http;

/// The header some clients use instead of `Authorization`.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The key a request presents, if any.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(API_KEY_HEADER).and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, key) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// Whether `headers` carry one of `hashes`' keys; why not, if not (answer
/// it with [`unauthorized`]).
pub fn check(endpoint: &str, hashes: &[String], headers: &HeaderMap) -> Result<(), String> {
    let Some(key) = presented(headers).filter(|k| !k.is_empty()) else {
        return Err(format!(
            "endpoint {endpoint} requires an API key: send \"Authorization: Bearer KEY\" or \"x-api-key: KEY\""
        ));
    };
    // Compare every hash (no early exit) so timing says nothing about which.
    let ok = hashes.iter().fold(false, |acc, h| {
        acc | gpuctl_security::token::matches(key, h)
    });
    if ok {
        Ok(())
    } else {
        Err(format!("endpoint {endpoint}: the API key is not valid"))
    }
}

/// The 401 for a request [`check`] refused.
pub fn unauthorized(message: &str) -> Response<Full<Bytes>> {
    let mut resp = http::error(StatusCode::UNAUTHORIZED, message);
    resp.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"gpuctl\""),
    );
    resp
}

/// Remove the credentials before the request goes to a replica.
pub fn strip(headers: &mut HeaderMap) {
    headers.remove(AUTHORIZATION);
    headers.remove(API_KEY_HEADER);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn message(r: Result<(), String>) -> (StatusCode, String) {
        let resp = unauthorized(&r.unwrap_err());
        let status = resp.status();
        assert_eq!(resp.headers()[WWW_AUTHENTICATE], "Bearer realm=\"gpuctl\"");
        let body = futures_body(resp);
        (status, body)
    }

    fn futures_body(resp: Response<Full<Bytes>>) -> String {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(resp.into_body().collect()).unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_key_is_accepted_by_bearer_or_header_and_refused_otherwise() {
        let hashes = vec![
            gpuctl_security::token::hash("k1"),
            gpuctl_security::token::hash("k2"),
        ];
        assert!(check("e", &hashes, &headers(&[("authorization", "Bearer k2")])).is_ok());
        assert!(check("e", &hashes, &headers(&[("x-api-key", "k1")])).is_ok());
        let (s, m) = message(check("e", &hashes, &headers(&[])));
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(m.contains("endpoint e requires an API key"), "{m}");
        let (_, m) = message(check(
            "e",
            &hashes,
            &headers(&[("authorization", "Bearer k3")]),
        ));
        assert!(m.contains("the API key is not valid"), "{m}");
        let (_, m) = message(check(
            "e",
            &hashes,
            &headers(&[("authorization", "Basic k1")]),
        ));
        assert!(m.contains("requires an API key"), "{m}");
        // No hashes (the secret is gone): nothing is accepted.
        assert!(check("e", &[], &headers(&[("x-api-key", "k1")])).is_err());
    }

    #[test]
    fn credentials_are_stripped() {
        let mut h = headers(&[
            ("authorization", "Bearer k"),
            ("x-api-key", "k"),
            ("x-other", "1"),
        ]);
        strip(&mut h);
        assert!(h.get(AUTHORIZATION).is_none() && h.get(API_KEY_HEADER).is_none());
        assert!(h.get("x-other").is_some());
    }
}
