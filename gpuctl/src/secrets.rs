//! `gpuctl get secrets` and `gpuctl describe secret`: names, keys and
//! sizes; the server never sends values (each reads `<redacted> (N bytes)`).

use gpuctl_common::secret::Secret;

use crate::render::{format_age, table};

/// The size the server reports for a redacted value, or `?`.
fn size(shown: &str) -> String {
    shown
        .rsplit_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(" bytes)"))
        .unwrap_or("?")
        .to_string()
}

pub fn secrets_table(secrets: &[Secret], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .map(|s| {
            vec![
                s.metadata.name.clone(),
                s.data.len().to_string(),
                s.metadata.owner.clone().unwrap_or_else(|| "-".into()),
                format_age(s.metadata.creation_timestamp_ms, now_ms),
            ]
        })
        .collect();
    table(&["NAME", "KEYS", "OWNER", "AGE"], &rows)
}

pub fn describe_secret(s: &Secret, now_ms: u64) -> String {
    let mut out = format!(
        "Name:   {}\nOwner:  {}\nAge:    {}\nData (values are never shown):\n",
        s.metadata.name,
        s.metadata.owner.as_deref().unwrap_or("-"),
        format_age(s.metadata.creation_timestamp_ms, now_ms)
    );
    for (k, v) in &s.data {
        out.push_str(&format!("  {k}: {} bytes\n", size(v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shown_and_values_are_not_asked_for() {
        let s: Secret = serde_json::from_str(
            r#"{"apiVersion":"gpuctl.io/v1","kind":"Secret","metadata":{"name":"hf"},
                "data":{"token":"<redacted> (7 bytes)"}}"#,
        )
        .unwrap();
        let d = describe_secret(&s, 0);
        assert!(d.contains("token: 7 bytes"), "{d}");
        let t = secrets_table(&[s], 0);
        assert!(t.contains("hf") && t.contains(" 1 "), "{t}");
    }
}
