use super::*;
use gpuctl_testkit::oidc::IdTokenSigner as Signer;
use serde_json::json;

const ISSUER: &str = "https://login.example.com";
const NOW_MS: u64 = 1_800_000_000_000;

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": ["other", "gpuctl"],
        "sub": "alice",
        "email": "alice@example.com",
        "exp": NOW_MS / 1000 + 600,
        "iat": NOW_MS / 1000,
    })
}

fn config(keys: Vec<Jwk>) -> OidcConfig {
    OidcConfig {
        issuer: ISSUER.into(),
        client_id: "gpuctl".into(),
        username_claim: "sub".into(),
        username_prefix: "oidc:".into(),
        keys: KeySet::new(keys),
        required_claims: Vec::new(),
        signing_algs: Vec::new(),
    }
}

fn jwks(keys: &[Value]) -> Vec<Jwk> {
    parse_jwks(&json!({ "keys": keys }).to_string()).unwrap()
}

#[test]
fn a_token_signed_by_the_issuer_names_its_user() {
    let s = Signer::new("k1");
    let other = Signer::new("k2");
    let cfg = config(jwks(&[other.jwk(), s.jwk()]));
    let t = s.token(&claims());
    assert!(looks_like_jwt(&t));
    let v = cfg.verify(&t, NOW_MS).unwrap();
    assert_eq!(v.username, "oidc:alice");
    assert_eq!(v.expires_ms, NOW_MS + 600_000);
    // Without a kid every key of the algorithm is tried.
    let no_kid = s.sign(&json!({"alg": "ES256"}), &claims());
    assert_eq!(cfg.verify(&no_kid, NOW_MS).unwrap().username, "oidc:alice");
    // The email claim, when asked for, and only when not unverified.
    let mut by_email = config(jwks(&[s.jwk()]));
    by_email.username_claim = "email".into();
    by_email.username_prefix = String::new();
    assert_eq!(
        by_email.verify(&t, NOW_MS).unwrap().username,
        "alice@example.com"
    );
    let mut c = claims();
    c["email_verified"] = false.into();
    let err = by_email.verify(&s.token(&c), NOW_MS).unwrap_err();
    assert!(err.contains("is not verified"), "{err}");
}

#[test]
fn required_claims_and_signing_algorithms_narrow_what_is_accepted() {
    let s = Signer::new("k1");
    let mut cfg = config(jwks(&[s.jwk()]));
    cfg.required_claims = vec![("hd".into(), "example.com".into())];
    let e = cfg.verify(&s.token(&claims()), NOW_MS).unwrap_err();
    assert_eq!(
        e,
        "it has no \"hd\" claim, which is required (\"example.com\")"
    );
    let mut c = claims();
    c["hd"] = "evil.example".into();
    let e = cfg.verify(&s.token(&c), NOW_MS).unwrap_err();
    assert_eq!(
        e,
        "claim \"hd\" is \"evil.example\", not \"example.com\" as required"
    );
    c["hd"] = "example.com".into();
    assert_eq!(
        cfg.verify(&s.token(&c), NOW_MS).unwrap().username,
        "oidc:alice"
    );

    // The test issuer signs ES256: accepted unless the list leaves it out.
    cfg.signing_algs = vec!["RS256".into()];
    let e = cfg.verify(&s.token(&c), NOW_MS).unwrap_err();
    assert!(
        e.contains("\"ES256\" is not one this cluster accepts (--oidc-signing-algs RS256)"),
        "{e}"
    );
    cfg.signing_algs = vec!["RS256".into(), "ES256".into()];
    assert!(cfg.verify(&s.token(&c), NOW_MS).is_ok());
}

#[test]
fn forged_foreign_stale_or_unaddressed_tokens_are_refused_with_the_reason() {
    let s = Signer::new("k1");
    let cfg = config(jwks(&[s.jwk()]));
    let refuse = |t: &str, now: u64| cfg.verify(t, now).unwrap_err();

    // Signed by another key under the same kid.
    let forger = Signer::new("k1");
    let e = refuse(&forger.token(&claims()), NOW_MS);
    assert_eq!(e, "the signature does not verify with the issuer's keys");
    // A payload changed after signing.
    let t = s.token(&claims());
    let mut parts: Vec<&str> = t.split('.').collect();
    let mut c = claims();
    c["sub"] = "root".into();
    let forged_payload = URL_SAFE_NO_PAD.encode(c.to_string());
    parts[1] = &forged_payload;
    assert_eq!(
        refuse(&parts.join("."), NOW_MS),
        "the signature does not verify with the issuer's keys"
    );
    // `none` and HMAC are never accepted.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    assert!(refuse(&none, NOW_MS).starts_with("signature algorithm \"none\" is not accepted"));
    let hs = s.sign(&json!({"alg": "HS256", "kid": "k1"}), &claims());
    assert!(refuse(&hs, NOW_MS).contains("\"HS256\" is not accepted"));
    // An unknown kid.
    let t = Signer::new("k9").token(&claims());
    assert_eq!(
        refuse(&t, NOW_MS),
        "no ES256 key with kid \"k9\" in the issuer's keys"
    );
    // Another issuer, another audience, no expiry, expired, not yet valid.
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        s.token(&c)
    };
    let e = refuse(&with(&|c| c["iss"] = "https://evil.example".into()), NOW_MS);
    assert!(e.starts_with("issued by \"https://evil.example\""), "{e}");
    let e = refuse(&with(&|c| c["aud"] = "someone-else".into()), NOW_MS);
    assert_eq!(e, "its audience does not include \"gpuctl\"");
    let e = refuse(
        &with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
        NOW_MS,
    );
    assert_eq!(e, "it has no expiry (\"exp\")");
    let t = s.token(&claims());
    assert!(cfg.verify(&t, NOW_MS + 600_000 + LEEWAY_MS - 1).is_ok());
    let e = refuse(&t, NOW_MS + 700_000);
    assert!(e.starts_with("it expired 100s ago"), "{e}");
    let e = refuse(&with(&|c| c["nbf"] = (NOW_MS / 1000 + 300).into()), NOW_MS);
    assert!(e.starts_with("it is not valid for another 300s"), "{e}");
    let e = refuse(
        &with(&|c| {
            c.as_object_mut().unwrap().remove("sub");
        }),
        NOW_MS,
    );
    assert_eq!(e, "it has no \"sub\" claim to name the user");
    // Not a JWT at all.
    assert!(!looks_like_jwt("gpuctl_abc_def"));
    assert!(refuse("eyJ.abc", NOW_MS).contains("three parts"));
}

#[test]
fn a_jwks_file_is_read_with_errors_that_name_the_key() {
    let s = Signer::new("k1");
    let rsa = json!({"kty": "RSA", "kid": "r1", "n": "sXch", "e": "AQAB"});
    let enc = json!({"kty": "RSA", "use": "enc", "n": "sXch", "e": "AQAB"});
    let okp = json!({"kty": "OKP", "crv": "Ed25519", "x": "abc"});
    let keys = jwks(&[rsa, enc, okp, s.jwk()]);
    assert_eq!(
        keys.len(),
        2,
        "the encryption key and the OKP key are skipped"
    );
    assert_eq!(keys[0].kid.as_deref(), Some("r1"));
    let err = |doc: &str| parse_jwks(doc).unwrap_err();
    assert!(err("{").starts_with("not JSON"));
    assert_eq!(
        err("{\"nokeys\": 1}"),
        "no \"keys\" array (a JWKS document is {\"keys\": [...]})"
    );
    assert_eq!(
        err(r#"{"keys": [{"kty": "RSA", "e": "AQAB"}]}"#),
        "keys[0]: no \"n\""
    );
    assert!(
        err(r#"{"keys": [{"kty": "EC", "crv": "P-521", "x": "", "y": ""}]}"#)
            .contains("curve Some(\"P-521\") is not supported")
    );
    assert_eq!(
        err(r#"{"keys": [{"kty": "OKP"}]}"#),
        "no RSA or EC signing key in \"keys\""
    );
    // An RS256 token checked against the RSA key: not a valid signature.
    let cfg = config(keys);
    let t = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"r1"}"#),
        URL_SAFE_NO_PAD.encode(claims().to_string()),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    );
    assert_eq!(
        cfg.verify(&t, NOW_MS).unwrap_err(),
        "the signature does not verify with the issuer's keys"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    assert!(read_jwks(&path)
        .unwrap_err()
        .starts_with(&path.display().to_string()));
}
