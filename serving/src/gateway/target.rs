//! Where a replica is, from its base URL: `host:port`, and for an
//! `https://` replica the name its certificate must hold.

use hyper::Uri;

/// Where a replica is: `host:port`, and for an `https://` one the name its
/// certificate must hold.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) authority: String,
    pub(super) tls: Option<rustls::pki_types::ServerName<'static>>,
}

/// The `host:port` of a replica's base URL and whether it speaks TLS, or why
/// it cannot be reached.
pub(super) fn parse_base(base: &str) -> Result<Target, String> {
    let uri: Uri = base
        .parse()
        .map_err(|e| format!("replica URL {base:?} is not a valid URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(format!(
                "replica URL {base:?} must start with https:// or http://"
            ))
        }
    };
    let Some(authority) = uri.authority() else {
        return Err(format!(
            "replica URL {base:?} needs a host (https://host:port)"
        ));
    };
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tls = match tls {
        false => None,
        true => Some(
            crate::replica_stream::server_name(authority.host())
                .map_err(|e| format!("replica URL {base:?}: {e}"))?,
        ),
    };
    Ok(Target {
        authority: format!("{}:{port}", authority.host()),
        tls,
    })
}
