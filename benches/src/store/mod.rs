//! The pieces of `store-vs-etcd`: gpuctl's replicated store and a 3-member
//! etcd, written to side by side with the same closed-loop client shape.
//!
//! ```text
//! load::closed_loop ── N clients ─┬─ gpuctl::ApplyWriter ── Control.Apply(Secret) ──► gpu-scheduler × 3
//!   (one counter → distinct names) └─ etcd::PutWriter ───── KV.Put(same document) ──► etcd × 3
//! ```
//!
//! Both writes carry the same ~1 KiB JSON document ([`secret_document`]):
//! gpuctl stores it as a Secret object, etcd as the value of a key.

pub mod etcd;
pub mod gpuctl;
pub mod load;
pub mod procs;

use rand::{Rng, SeedableRng};

/// The object both systems store: a Secret named `name` holding `payload`
/// (base64) under one key, as `Control.Apply` takes it.
pub fn secret_document(name: &str, payload: &str) -> String {
    serde_json::json!({
        "apiVersion": gpuctl_common::api::API_VERSION,
        "kind": "Secret",
        "metadata": { "name": name },
        "data": { "blob": payload },
    })
    .to_string()
}

/// A base64 payload (seeded, so every run writes the same bytes) that
/// makes [`secret_document`] about `object_bytes` long for a name of
/// `name_len` characters; at least 4 characters.
pub fn payload(object_bytes: usize, name_len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let envelope = secret_document(&"x".repeat(name_len), "").len();
    // Whole 4-character groups are valid base64 without padding.
    let len = (object_bytes.saturating_sub(envelope) / 4 * 4).max(4);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_a_valid_secret_of_about_the_size_asked() {
        let p = payload(1024, 16, 19);
        assert_eq!(p, payload(1024, 16, 19), "seeded");
        let doc = secret_document("g-r1-c64-123456", &p);
        assert!((1020..=1024).contains(&doc.len()), "{}", doc.len());
        let m = gpuctl_common::manifest::parse_manifest_json("doc", &doc).unwrap();
        assert_eq!((m.kind(), m.name()), ("Secret", "g-r1-c64-123456"));
        assert!(payload(10, 16, 1).len() == 4);
    }
}
