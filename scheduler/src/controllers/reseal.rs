//! Secrets stored again under the encryption configuration's first
//! provider: a secret whose values are plain while the first provider is
//! `aesgcm` (stored before encryption was turned on), sealed with another
//! key (the configuration was rotated), or sealed while `identity` is first
//! (encryption being turned off) is rewritten, a few at a time, so that an
//! old key can be removed once nothing uses it. Each rewrite names the
//! version it read, so a secret applied meanwhile is not reverted.

use gpuctl_common::secret::Secret;
use gpuctl_security::sealing::Keyring;

use crate::state::State;

/// What is due: at most `limit` secrets as they are to be stored again
/// (each a `PutSecret`), and why each secret that cannot be opened (a key
/// the configuration no longer holds) stays as it is.
#[derive(Debug, Default)]
pub struct Due {
    pub secrets: Vec<Secret>,
    pub unreadable: Vec<String>,
}

/// The secrets to store again under `keys`' first provider.
pub fn due(st: &State, keys: &Keyring, limit: usize) -> Due {
    let want = keys.write_key();
    let mut out = Due::default();
    for s in st.secrets.values().filter(|s| s.needs_reseal(want)) {
        if out.secrets.len() >= limit {
            break;
        }
        match resealed(s, keys) {
            Ok(s) => out.secrets.push(s),
            Err(why) => out.unreadable.push(why),
        }
    }
    out
}

fn resealed(s: &Secret, keys: &Keyring) -> Result<Secret, String> {
    let mut out = s.resealed(
        |name, context, sealed| keys.open(name, context, sealed),
        |context, plain| keys.seal(context, plain),
    )?;
    // Applied only over the version read here.
    out.metadata.resource_version = s.metadata.resource_version;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use gpuctl_common::api::{ObjectMeta, API_VERSION};

    use super::*;
    use crate::state::{ApplyError, Command, Envelope};

    /// The `PutSecret` commands of what is due.
    fn commands(d: Due) -> Vec<Command> {
        d.secrets
            .into_iter()
            .map(|s| Command::PutSecret {
                secret: Box::new(s),
            })
            .collect()
    }

    fn keyring(first: &str, keys: &[(&str, &str)], identity_first: bool) -> Keyring {
        let mut providers = String::new();
        if identity_first {
            providers += "      - identity: {}\n";
        }
        providers += "      - aesgcm:\n          keys:\n";
        for (n, k) in std::iter::once(&(first, keys[0].1)).chain(keys[1..].iter()) {
            providers += &format!("            - name: {n}\n              secret: {k}\n");
        }
        Keyring::parse(&format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}"
        ))
        .unwrap()
    }

    const A: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const B: &str = "ZmVkY2JhOTg3NjU0MzIxMA==";

    fn put(st: &mut State, index: u64, name: &str, value: &str, keys: Option<&Keyring>) {
        let mut s = Secret {
            api_version: API_VERSION.into(),
            kind: "Secret".into(),
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            data: BTreeMap::new(),
            string_data: [("v".to_string(), value.to_string())].into(),
        };
        s.validate().unwrap();
        if let Some(k) = keys {
            s.seal_values(|c, p| k.seal(c, p));
        }
        st.apply(
            index,
            &Envelope::new(
                0,
                Command::PutSecret {
                    secret: Box::new(s),
                },
            ),
        )
        .unwrap();
    }

    fn value(st: &State, name: &str, keys: &Keyring) -> Vec<u8> {
        st.secrets[name]
            .open_values(|n, c, s| keys.open(n, c, s))
            .unwrap()
            .remove("v")
            .unwrap()
    }

    #[test]
    fn plain_and_old_key_values_are_stored_again_under_the_first_key() {
        let old = keyring("old", &[("old", A)], false);
        let rotated = keyring("new", &[("new", B), ("old", A)], false);
        let mut st = State::default();
        put(&mut st, 1, "plain", "p-value", None);
        put(&mut st, 2, "by-old", "o-value", Some(&old));
        put(&mut st, 3, "by-new", "n-value", Some(&rotated));

        assert_eq!(due(&st, &rotated, 1).secrets.len(), 1, "at most the limit");
        let cmds = commands(due(&st, &rotated, 10));
        assert_eq!(cmds.len(), 2);
        for (i, cmd) in cmds.into_iter().enumerate() {
            st.apply(10 + i as u64, &Envelope::new(0, cmd)).unwrap();
        }
        assert!(due(&st, &rotated, 10).secrets.is_empty(), "nothing left");
        for s in st.secrets.values() {
            assert!(!s.needs_reseal(Some("new")), "{:?}", s.data);
        }
        assert_eq!(value(&st, "plain", &rotated), b"p-value");
        assert_eq!(value(&st, "by-old", &rotated), b"o-value");
        assert_eq!(value(&st, "by-new", &rotated), b"n-value");
        // Without the old key nothing is needed any more.
        let only_new = keyring("new", &[("new", B)], false);
        assert_eq!(value(&st, "by-old", &only_new), b"o-value");

        // identity first: sealed values are stored plain again.
        let off = keyring("new", &[("new", B)], true);
        for (i, cmd) in commands(due(&st, &off, 10)).into_iter().enumerate() {
            st.apply(20 + i as u64, &Envelope::new(0, cmd)).unwrap();
        }
        assert!(st.secrets.values().all(|s| !s.is_sealed()));
        assert_eq!(st.secrets["by-old"].values()["v"], b"o-value");
    }

    #[test]
    fn a_secret_applied_after_it_was_read_is_not_reverted() {
        let keys = keyring("k", &[("k", A)], false);
        let mut st = State::default();
        put(&mut st, 1, "s", "first", None);
        let cmds = commands(due(&st, &keys, 10));
        put(&mut st, 2, "s", "second", None);
        let e = st.apply(3, &Envelope::new(0, cmds.into_iter().next().unwrap()));
        assert!(matches!(e, Err(ApplyError::Conflict(_))), "{e:?}");
        assert_eq!(st.secrets["s"].values()["v"], b"second");
        // A secret sealed with a key the configuration lacks is left alone.
        let other = keyring("o", &[("o", B)], false);
        put(&mut st, 4, "t", "x", Some(&other));
        let d = due(&st, &keys, 10);
        assert!(
            d.secrets.iter().all(|s| s.metadata.name != "t"),
            "{:?}",
            d.secrets
        );
        assert_eq!(d.unreadable.len(), 1, "{:?}", d.unreadable);
        assert!(
            d.unreadable[0].starts_with("secret \"t\" key \"v\": it is encrypted with key \"o\""),
            "{:?}",
            d.unreadable
        );
    }
}
