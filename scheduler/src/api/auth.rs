//! Authentication: who a call's `authorization: Bearer <token>` metadata
//! says the caller is. The bootstrap admin (`--admin-token-file`) is
//! compared by hash; every other token is looked up by its id and must match
//! the stored hash, be unrevoked and unexpired. With `--oidc-issuer-url`, an
//! OpenID Connect ID token (a JWT) is accepted too: verified against the
//! issuer's keys (`gpuctl_security::oidc`), it names a user who must exist.
//! A scheduler started with `--no-auth` treats every caller as an anonymous
//! admin.

use std::sync::Arc;

use gpuctl_security::{oidc, token};
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::authz::Principal;
use crate::state::identity::{Role, TokenKind};
use crate::state::State;

/// The user name of the bootstrap admin.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// How this replica authenticates callers.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    /// Off (the default, for in-process tests and `--no-auth`): every caller
    /// is an anonymous admin.
    pub enabled: bool,
    /// [`token::hash`] of the bootstrap admin's token.
    pub admin_token_hash: Option<String>,
    /// ID tokens from this issuer are accepted as bearer tokens.
    pub oidc: Option<Arc<oidc::OidcConfig>>,
}

impl AuthOptions {
    /// Authentication on, with a bootstrap admin token.
    pub fn with_admin_token(admin_token: &str) -> AuthOptions {
        AuthOptions {
            enabled: true,
            admin_token_hash: Some(token::hash(admin_token.trim())),
            oidc: None,
        }
    }
}

const NO_TOKEN: &str =
    "no token: run `gpuctl login` with a token from your admin, or set GPUCTL_TOKEN";

/// The caller of a request with metadata `md`, at `now_ms`.
pub fn authenticate(
    opts: &AuthOptions,
    md: &MetadataMap,
    st: &State,
    now_ms: u64,
) -> Result<Principal, Status> {
    if !opts.enabled {
        return Ok(Principal::Anonymous);
    }
    let Some(value) = md.get("authorization") else {
        return Err(Status::unauthenticated(NO_TOKEN));
    };
    let value = value.to_str().map_err(|_| {
        Status::unauthenticated(
            "the authorization header is not text; send \"Bearer <token>\" (gpuctl login)",
        )
    })?;
    let presented = token::from_bearer(value)
        .map_err(|e| Status::unauthenticated(format!("{e}; run `gpuctl login` again")))?;
    if let Some(h) = &opts.admin_token_hash {
        if token::matches(presented, h) {
            return Ok(Principal::User {
                name: BOOTSTRAP_ADMIN.to_string(),
                role: Role::Admin,
                team: String::new(),
                team_lead: false,
                token_id: String::new(),
            });
        }
    }
    if oidc::looks_like_jwt(presented) {
        return id_token(opts, presented, st, now_ms);
    }
    let id = token::id_of(presented).map_err(|e| {
        Status::unauthenticated(format!(
            "{e}; check GPUCTL_TOKEN or run `gpuctl login` again"
        ))
    })?;
    let unknown = || {
        Status::unauthenticated(format!(
            "token gpuctl_{id} is not valid in this cluster; check GPUCTL_TOKEN or run `gpuctl login` with a token from your admin"
        ))
    };
    let t = st.tokens.get(id).ok_or_else(unknown)?;
    if !token::matches(presented, &t.hash) {
        return Err(unknown());
    }
    if t.revoked {
        return Err(Status::unauthenticated(format!(
            "token gpuctl_{id} was revoked; ask an admin for a new one (gpuctl admin create-token)"
        )));
    }
    if t.expired(now_ms) {
        return Err(Status::unauthenticated(format!(
            "token gpuctl_{id} expired at {}; ask an admin for a new one (gpuctl admin create-token)",
            gpuctl_common::format_time(t.expires_ms)
        )));
    }
    Ok(match t.kind {
        TokenKind::Join => Principal::Join {
            token_id: id.to_string(),
        },
        TokenKind::Node => Principal::Node {
            name: t.subject.clone(),
            token_id: id.to_string(),
        },
        TokenKind::User => {
            let u = st.users.get(&t.subject).ok_or_else(|| {
                Status::unauthenticated(format!(
                    "token gpuctl_{id} belongs to user {:?}, who no longer exists",
                    t.subject
                ))
            })?;
            Principal::User {
                name: u.name.clone(),
                role: u.role,
                team: u.team.clone(),
                team_lead: u.team_lead,
                token_id: id.to_string(),
            }
        }
    })
}

/// The user an OpenID Connect ID token names.
fn id_token(opts: &AuthOptions, jwt: &str, st: &State, now_ms: u64) -> Result<Principal, Status> {
    let Some(cfg) = &opts.oidc else {
        return Err(Status::unauthenticated(
            "this cluster accepts no OpenID Connect ID tokens (its schedulers run without \
             --oidc-issuer-url); use a gpuctl token (gpuctl login)",
        ));
    };
    let v = cfg.verify(jwt, now_ms).map_err(|why| {
        Status::unauthenticated(format!("ID token refused: {why} (issuer {:?})", cfg.issuer))
    })?;
    let u = st.users.get(&v.username).ok_or_else(|| {
        Status::unauthenticated(format!(
            "the ID token names user {:?}, who is not a user of this cluster; an admin adds \
             them with `gpuctl admin create-user {}`",
            v.username, v.username
        ))
    })?;
    Ok(Principal::User {
        name: u.name.clone(),
        role: u.role,
        team: u.team.clone(),
        team_lead: u.team_lead,
        token_id: "oidc".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::identity::{Token, User};

    fn md(value: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(v) = value {
            m.insert("authorization", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn tokens_are_checked_by_hash_revocation_and_expiry() {
        let admin = token::generate();
        let opts = AuthOptions::with_admin_token(&admin.token);
        let mut st = State::default();
        st.users.insert(
            "alice".into(),
            User {
                name: "alice".into(),
                team: "nlp".into(),
                role: Role::User,
                team_lead: false,
                uid: None,
                allow_root: false,
                created: 0,
            },
        );
        let t = token::generate();
        st.tokens.insert(
            t.id.clone(),
            Token {
                id: t.id.clone(),
                subject: "alice".into(),
                kind: TokenKind::User,
                hash: t.hash.clone(),
                created: 0,
                expires_ms: 1000,
                revoked: false,
                description: String::new(),
            },
        );
        let who = |v: Option<&str>, now| authenticate(&opts, &md(v), &st, now);
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(
            who(Some(&bearer(&admin.token)), 0).unwrap().subject(),
            "admin"
        );
        assert_eq!(
            who(Some(&bearer(&t.token)), 999).unwrap().subject(),
            "alice"
        );
        let err = who(Some(&bearer(&t.token)), 1000).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            err.message(),
            format!("token gpuctl_{} expired at 1970-01-01T00:00:01Z; ask an admin for a new one (gpuctl admin create-token)", t.id)
        );
        assert_eq!(who(None, 0).unwrap_err().message(), NO_TOKEN);
        // The right id with another secret is no better than an unknown id.
        let forged = format!("gpuctl_{}_{}", t.id, "0".repeat(40));
        assert!(who(Some(&bearer(&forged)), 0)
            .unwrap_err()
            .message()
            .contains("is not valid in this cluster"));
        assert!(who(Some("Basic abc"), 0)
            .unwrap_err()
            .message()
            .starts_with("the authorization header is not \"Bearer <token>\""));
        assert_eq!(
            authenticate(&AuthOptions::default(), &md(None), &st, 0).unwrap(),
            Principal::Anonymous
        );
    }

    #[test]
    fn an_id_token_from_the_issuer_names_an_existing_user() {
        use gpuctl_testkit::oidc::IdTokenSigner;
        let issuer = IdTokenSigner::new("k1");
        let keys = oidc::parse_jwks(&IdTokenSigner::jwks(&[&issuer])).unwrap();
        let mut opts = AuthOptions::with_admin_token(&token::generate().token);
        let mut st = State::default();
        st.users.insert(
            "oidc:alice".into(),
            User {
                name: "oidc:alice".into(),
                team: "nlp".into(),
                role: Role::Viewer,
                team_lead: false,
                uid: None,
                allow_root: false,
                created: 0,
            },
        );
        let now = 1_800_000_000_000u64;
        let claims = |sub: &str| {
            serde_json::json!({"iss": "https://idp.example", "aud": "gpuctl", "sub": sub,
                               "exp": now / 1000 + 60})
        };
        let bearer = |sub: &str| format!("Bearer {}", issuer.token(&claims(sub)));
        let who = |opts: &AuthOptions, v: &str| authenticate(opts, &md(Some(v)), &st, now);
        // Without an issuer configured, an ID token is refused, saying so.
        let e = who(&opts, &bearer("alice")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e
            .message()
            .starts_with("this cluster accepts no OpenID Connect ID tokens"));
        opts.oidc = Some(Arc::new(oidc::OidcConfig {
            issuer: "https://idp.example".into(),
            client_id: "gpuctl".into(),
            username_claim: "sub".into(),
            username_prefix: "oidc:".into(),
            keys: oidc::KeySet::new(keys),
            required_claims: Vec::new(),
            signing_algs: Vec::new(),
        }));
        match who(&opts, &bearer("alice")).unwrap() {
            Principal::User {
                name, role, team, ..
            } => assert_eq!(
                (name.as_str(), role, team.as_str()),
                ("oidc:alice", Role::Viewer, "nlp")
            ),
            other => panic!("{other:?}"),
        }
        let e = who(&opts, &bearer("bob")).unwrap_err();
        assert_eq!(
            e.message(),
            "the ID token names user \"oidc:bob\", who is not a user of this cluster; an admin adds them with `gpuctl admin create-user oidc:bob`"
        );
        // Another issuer's key: refused with the reason.
        let other = IdTokenSigner::new("k1");
        let forged = format!("Bearer {}", other.token(&claims("alice")));
        let e = who(&opts, &forged).unwrap_err();
        assert_eq!(
            e.message(),
            "ID token refused: the signature does not verify with the issuer's keys (issuer \"https://idp.example\")"
        );
    }
}
