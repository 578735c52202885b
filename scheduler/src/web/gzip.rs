//! Answers compressed for a browser that accepts gzip (`Accept-Encoding`):
//! the JSON API and the assets, when over [`MIN_BYTES`]; event streams are
//! left alone. The Cluster answer of a large cluster is mostly repeated
//! keys and names, which gzip shrinks about tenfold.

use std::io::Write;

use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use hyper::{HeaderMap, Response};

use super::Body;

/// Smaller answers go as they are (gzip's header and a round trip through
/// the compressor cost more than they save).
pub const MIN_BYTES: usize = 1024;

/// Whether `headers` (a request's) accept gzip: `gzip` listed without `q=0`.
pub fn accepts(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
        })
}

/// `r` gzipped when `accept` and its body is a whole one of at least
/// [`MIN_BYTES`] (not an event stream); `Vary: Accept-Encoding` either way.
pub async fn maybe(accept: bool, r: Response<Body>) -> Response<Body> {
    let streamed = r
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
    if streamed {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    parts
        .headers
        .insert(VARY, HeaderValue::from_static("accept-encoding"));
    // Whole bodies (`Full`) are ready at once.
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    if !accept || bytes.len() < MIN_BYTES {
        return Response::from_parts(parts, Full::new(bytes).boxed());
    }
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    match enc.write_all(&bytes).and_then(|_| enc.finish()) {
        Ok(z) => {
            parts
                .headers
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            parts.headers.remove(hyper::header::CONTENT_LENGTH);
            Response::from_parts(parts, Full::new(z.into()).boxed())
        }
        Err(_) => Response::from_parts(parts, Full::new(bytes).boxed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, v.parse().unwrap());
        h
    }

    #[test]
    fn gzip_is_accepted_as_browsers_say_it() {
        assert!(accepts(&headers("gzip, deflate, br, zstd")));
        assert!(accepts(&headers("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts(&headers("gzip;q=0, br")));
        assert!(!accepts(&headers("br")));
        assert!(!accepts(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn large_answers_are_gzipped_and_small_ones_not() {
        let text = "{\"model\":\"H100-80GB\"},".repeat(200);
        let r = maybe(
            true,
            super::super::respond(hyper::StatusCode::OK, "application/json", text.clone()),
        )
        .await;
        assert_eq!(r.headers()[CONTENT_ENCODING], "gzip");
        assert_eq!(r.headers()[VARY], "accept-encoding");
        let z = r.into_body().collect().await.unwrap().to_bytes();
        assert!(z.len() * 10 < text.len(), "{} of {}", z.len(), text.len());
        let mut back = String::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
        // Not accepted, or small: as it was.
        let r = maybe(
            false,
            super::super::respond(hyper::StatusCode::OK, "application/json", text.clone()),
        )
        .await;
        assert!(r.headers().get(CONTENT_ENCODING).is_none());
        let r = maybe(
            true,
            super::super::respond(hyper::StatusCode::OK, "application/json", "{}"),
        )
        .await;
        assert!(r.headers().get(CONTENT_ENCODING).is_none());
    }
}
