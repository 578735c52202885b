use super::*;

const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMA=="; // 16 bytes

fn config(providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}"
    )
}

fn aesgcm(keys: &[(&str, &str)]) -> String {
    let mut s = "      - aesgcm:\n          keys:\n".to_string();
    for (n, k) in keys {
        s += &format!("            - name: {n}\n              secret: {k}\n");
    }
    s
}

const IDENTITY: &str = "      - identity: {}\n";

#[test]
fn a_sealed_value_opens_with_its_key_and_its_place_only() {
    let ring = Keyring::parse(&config(&aesgcm(&[("k1", K1), ("k2", K2)]))).unwrap();
    assert!(ring.encrypts());
    assert_eq!(ring.write_key(), Some("k1"));
    let (name, sealed) = ring.seal(b"secret/hf/TOKEN", b"s3cret").unwrap();
    assert_eq!(name, "k1");
    assert_eq!(sealed.len(), OVERHEAD + 6);
    assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
    assert_eq!(
        ring.open("k1", b"secret/hf/TOKEN", &sealed).unwrap(),
        b"s3cret"
    );
    // A fresh nonce each time: the same value seals differently.
    let (_, again) = ring.seal(b"secret/hf/TOKEN", b"s3cret").unwrap();
    assert_ne!(sealed, again);

    // Moved to another secret or key, it does not open.
    let e = ring.open("k1", b"secret/other/TOKEN", &sealed).unwrap_err();
    assert!(e.contains("does not decrypt with key \"k1\""), "{e}");
    // Altered, it does not open.
    let mut bad = sealed.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(ring.open("k1", b"secret/hf/TOKEN", &bad).is_err());
    // Under another key's name, it does not open.
    assert!(ring.open("k2", b"secret/hf/TOKEN", &sealed).is_err());
    let e = ring.open("k9", b"secret/hf/TOKEN", &sealed).unwrap_err();
    assert!(
        e.contains("key \"k9\", which the encryption configuration does not hold"),
        "{e}"
    );
    let e = ring.open("k1", b"x", &sealed[..10]).unwrap_err();
    assert!(e.contains("too short"), "{e}");
}

#[test]
fn a_rotated_configuration_reads_the_old_key_and_writes_the_new_one() {
    let old = Keyring::parse(&config(&aesgcm(&[("k1", K1)]))).unwrap();
    let (_, sealed) = old.seal(b"a", b"value").unwrap();
    let new = Keyring::parse(&config(&aesgcm(&[("k2", K2), ("k1", K1)]))).unwrap();
    assert_eq!(new.write_key(), Some("k2"));
    assert_eq!(new.open("k1", b"a", &sealed).unwrap(), b"value");
    let (name, _) = new.seal(b"a", b"value").unwrap();
    assert_eq!(name, "k2");
}

#[test]
fn identity_first_stores_as_given_and_still_reads_sealed_values() {
    let keys = format!("{IDENTITY}{}", aesgcm(&[("k1", K1)]));
    let ring = Keyring::parse(&config(&keys)).unwrap();
    assert!(!ring.encrypts());
    assert_eq!(ring.write_key(), None);
    assert!(ring.seal(b"a", b"v").is_none());
    let (_, sealed) = Keyring::parse(&config(&aesgcm(&[("k1", K1)])))
        .unwrap()
        .seal(b"a", b"v")
        .unwrap();
    assert_eq!(ring.open("k1", b"a", &sealed).unwrap(), b"v");
}

#[test]
fn a_new_configuration_parses_and_encrypts() {
    let text = new_config("dev-1");
    let ring = Keyring::parse(&text).unwrap();
    assert_eq!(ring.write_key(), Some("dev-1"));
    assert_ne!(new_config("dev-1"), text, "each key is random");
    assert!(!format!("{ring:?}").contains("secret"), "{ring:?}");
}

#[test]
fn wildcards_cover_secrets_and_the_first_entry_that_covers_them_wins() {
    let first = config(&aesgcm(&[("k1", K1)])).replace("[secrets]", "['*.*']");
    let ring = Keyring::parse(&first).unwrap();
    assert_eq!(ring.write_key(), Some("k1"));
    let two = format!(
        "{}  - resources: ['*.']\n    providers:\n{IDENTITY}",
        config(&aesgcm(&[("k1", K1)]))
    );
    assert_eq!(Keyring::parse(&two).unwrap().write_key(), Some("k1"));
    let again = format!(
        "{}  - resources: [secrets]\n    providers:\n{IDENTITY}",
        config(&aesgcm(&[("k1", K1)]))
    );
    let e = Keyring::parse(&again).unwrap_err();
    assert!(
        e.contains("resources[1].resources[0]: secrets are already configured"),
        "{e}"
    );
}

#[test]
fn mistakes_in_the_configuration_name_the_field() {
    let cases: Vec<(String, &str)> = vec![
        (
            config(&aesgcm(&[("k1", "not base64!")])),
            "resources[0].providers[0].aesgcm.keys[0].secret: is not base64",
        ),
        (
            config(&aesgcm(&[("k1", "AAAA")])),
            "resources[0].providers[0].aesgcm.keys[0].secret: is 3 bytes",
        ),
        (
            config(&aesgcm(&[("k1", K1), ("k1", K2)])),
            "resources[0].providers[0].aesgcm.keys[1].name: \"k1\" is listed twice",
        ),
        (
            config(&aesgcm(&[("a:b", K1)])),
            "resources[0].providers[0].aesgcm.keys[0].name",
        ),
        (
            config("      - aescbc:\n          keys: []\n"),
            "resources[0].providers[0].aescbc: this provider is not supported",
        ),
        (
            config("      - {}\n"),
            "resources[0].providers[0]: give exactly one of aesgcm and identity",
        ),
        (config(""), "providers"),
        (
            config(&aesgcm(&[("k1", K1)])).replace("[secrets]", "[secrets, configmaps]"),
            "resources[0].resources[1]: \"configmaps\": only secrets",
        ),
        (
            config(&aesgcm(&[("k1", K1)])).replace("v1", "v9"),
            "apiVersion/kind: expected apiserver.config.k8s.io/v1",
        ),
        (
            config(&aesgcm(&[("k1", K1)])).replace("keys:", "keyz:"),
            "unknown field `keyz`",
        ),
    ];
    for (text, want) in cases {
        let e = Keyring::parse(&text).unwrap_err();
        assert!(e.contains(want), "{want:?} not in {e:?} for\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let e = Keyring::read(&missing).unwrap_err();
    assert!(
        e.starts_with(&format!("{}: cannot read it", missing.display())),
        "{e}"
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, config(&aesgcm(&[("k1", "AAAA")]))).unwrap();
    let e = Keyring::read(&bad).unwrap_err();
    assert!(
        e.starts_with(&format!("{}: resources[0]", bad.display())),
        "{e}"
    );
}
