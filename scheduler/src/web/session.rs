//! Who the browser is. The cluster's bearer tokens, as the CLI uses them:
//! the login page posts one, the scheduler checks it with the gRPC API's
//! own authentication and authorization, and keeps it in a cookie the page's
//! scripts cannot read (`HttpOnly`), sent to this origin only
//! (`SameSite=Strict`) and only over TLS (`Secure`, when the UI speaks
//! TLS). Every request is checked again, so a revoked or expired token
//! stops working at once. An `Authorization: Bearer` header works too
//! (for scripts).

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};
use tonic::metadata::{MetadataMap, MetadataValue};

use super::{param, respond, Body, LOGIN_HTML};
use crate::api::authz::{Action, Principal};
use crate::api::Api;

/// The cookie holding the token.
const COOKIE: &str = "gpuctl_session";

/// The largest login form read.
const MAX_FORM: usize = 8 * 1024;

/// An authenticated browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user name (`anonymous` when the cluster runs without tokens).
    pub user: String,
    /// The role, as `gpuctl whoami` shows it.
    pub role: String,
    /// The token the browser presented, for calls made on its behalf.
    token: Option<String>,
}

impl Session {
    /// The session of a request with `headers`, or why there is none.
    pub async fn of(api: &Api, headers: &HeaderMap) -> Result<Session, String> {
        let token = bearer(headers).or_else(|| cookie(headers, COOKIE));
        Session::check(api, token).await
    }

    /// Whether `token` (None: no token) may read the cluster.
    async fn check(api: &Api, token: Option<String>) -> Result<Session, String> {
        let md = metadata(token.as_deref())?;
        let who = api
            .allow(&md, &Action::Read)
            .await
            .map_err(|s| s.message().to_string())?;
        let (user, role) = match who {
            Principal::Anonymous => ("anonymous".to_string(), "admin".to_string()),
            Principal::User { name, role, .. } => (name, format!("{role:?}").to_lowercase()),
            Principal::Node { .. } | Principal::Join { .. } => {
                return Err(
                    "this is a node's or a join token; sign in with a user's token (gpuctl admin create-token)"
                        .into(),
                )
            }
        };
        Ok(Session { user, role, token })
    }

    /// Whether this session's token still may read the cluster (not
    /// revoked, not expired since).
    pub async fn recheck(&self, api: &Api) -> Result<(), String> {
        Session::check(api, self.token.clone()).await.map(|_| ())
    }

    /// gRPC metadata carrying this session's token.
    pub fn metadata(&self) -> MetadataMap {
        metadata(self.token.as_deref()).unwrap_or_default()
    }
}

/// Metadata with `authorization: Bearer TOKEN` (none without a token).
fn metadata(token: Option<&str>) -> Result<MetadataMap, String> {
    let mut md = MetadataMap::new();
    if let Some(t) = token {
        let v: MetadataValue<_> = format!("Bearer {t}").parse().map_err(|_| {
            "the token holds characters a token never has; paste it again".to_string()
        })?;
        md.insert("authorization", v);
    }
    Ok(md)
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    gpuctl_security::token::from_bearer(v)
        .ok()
        .map(str::to_string)
}

/// The value of cookie `name`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name && !v.is_empty()).then(|| v.to_string())
        })
}

/// The login page, with `error` shown above the form.
pub fn login_page(error: Option<&str>, status: StatusCode) -> Response<Body> {
    let msg = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" id=\"login-error\">{}</p>", escape(e))
    });
    respond(
        status,
        "text/html; charset=utf-8",
        LOGIN_HTML.replace("<!--error-->", &msg),
    )
}

/// `POST /login` with `token=...`: the session cookie and the UI, or the
/// login page saying why not.
pub async fn login(api: &Api, tls: bool, req: Request<Incoming>) -> Response<Body> {
    let body = match http_body_util::Limited::new(req.into_body(), MAX_FORM)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return login_page(
                Some("the login form is larger than 8 KiB; paste only the token"),
                StatusCode::PAYLOAD_TOO_LARGE,
            )
        }
    };
    let form = String::from_utf8_lossy(&body);
    let token = param(&form, "token").unwrap_or_default();
    let token = token.trim();
    if token.is_empty() {
        return login_page(
            Some("paste a token (gpuctl admin create-token prints one)"),
            StatusCode::UNAUTHORIZED,
        );
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return login_page(
            Some("the token holds characters a token never has; paste it again"),
            StatusCode::UNAUTHORIZED,
        );
    }
    match Session::check(api, Some(token.to_string())).await {
        Ok(_) => {
            let mut r = respond(StatusCode::SEE_OTHER, "text/plain", "");
            let h = r.headers_mut();
            h.insert(
                hyper::header::LOCATION,
                hyper::header::HeaderValue::from_static("/"),
            );
            if let Ok(v) = set_cookie(token, tls).parse() {
                h.insert(hyper::header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => login_page(Some(&e), StatusCode::UNAUTHORIZED),
    }
}

/// `POST /logout`: the cookie cleared, back to the login page.
pub fn logout(tls: bool) -> Response<Body> {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain", "");
    let h = r.headers_mut();
    h.insert(
        hyper::header::LOCATION,
        hyper::header::HeaderValue::from_static("/login"),
    );
    let clear = format!("{}; Max-Age=0", set_cookie("", tls));
    if let Ok(v) = clear.parse() {
        h.insert(hyper::header::SET_COOKIE, v);
    }
    r
}

/// The session cookie holding `token`.
fn set_cookie(token: &str, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

/// Text made safe to put in HTML.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_kept_from_scripts_and_other_sites() {
        let c = set_cookie("gpuctl_abc.def", true);
        assert_eq!(
            c,
            "gpuctl_session=gpuctl_abc.def; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!set_cookie("t", false).contains("Secure"));
    }

    #[test]
    fn the_token_is_read_from_the_cookie_or_the_header() {
        let mut h = HeaderMap::new();
        h.insert(
            hyper::header::COOKIE,
            "a=1; gpuctl_session=tok123; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("tok123"));
        assert_eq!(bearer(&h), None);
        h.insert(hyper::header::AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("xyz"));
        h.insert(hyper::header::COOKIE, "gpuctl_session=".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE), None);
    }

    #[test]
    fn login_errors_are_escaped() {
        assert_eq!(escape("<b>\"x\"&'"), "&lt;b&gt;&quot;x&quot;&amp;&#39;");
    }
}
