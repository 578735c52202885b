//! `{{...}}` variables: finding them in a string, and substituting them.
//!
//! Argo's syntax: `{{` name `}}`, with spaces around the name trimmed. A name
//! is a dotted path such as `inputs.parameters.lr`,
//! `tasks.train.outputs.result` or `item.lr`. `{{=...}}` holds an
//! expr-lang expression ([`crate::expr::eval_expr`]).

use std::collections::BTreeMap;

use crate::expr::{eval_expr, to_text};

/// A piece of a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    Text(&'a str),
    /// The trimmed name between `{{` and `}}`.
    Var(&'a str),
    /// The expression between `{{=` and `}}`.
    Expr(&'a str),
}

/// Split `s` into text and variables; `Err((byte offset, reason))` when a
/// `{{` is not closed, is empty, or holds an expression.
pub fn segments(s: &str) -> Result<Vec<Segment<'_>>, (usize, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    let mut base = 0;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Segment::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| {
            (
                base + open,
                format!("unterminated `{{{{` (no matching `}}}}`) in {s:?}"),
            )
        })?;
        let name = after[..close].trim();
        if name.is_empty() {
            return Err((base + open, format!("empty variable `{{{{}}}}` in {s:?}")));
        }
        if let Some(expr) = name.strip_prefix('=') {
            out.push(Segment::Expr(expr.trim()));
            let consumed = open + 2 + close + 2;
            base += consumed;
            rest = &rest[consumed..];
            continue;
        }
        if name.contains("{{") {
            return Err((base + open, format!("nested `{{{{` in {s:?}")));
        }
        let valid = name.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '[' | ']' | '\'' | '"')
        }) && !name.split('.').any(str::is_empty);
        if !valid {
            return Err((
                base + open,
                format!("malformed variable `{{{{{name}}}}}`: use a dotted name such as `inputs.parameters.x`"),
            ));
        }
        out.push(Segment::Var(name));
        let consumed = open + 2 + close + 2;
        base += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest));
    }
    Ok(out)
}

/// The variable names in `s` (empty when it is malformed; validation
/// reports that separately).
pub fn var_names(s: &str) -> Vec<&str> {
    segments(s)
        .map(|segs| {
            segs.into_iter()
                .filter_map(|s| match s {
                    Segment::Var(v) => Some(v),
                    Segment::Text(_) | Segment::Expr(_) => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Values of the variables in reach of one field.
pub type Scope = BTreeMap<String, String>;

/// Replace every `{{name}}` in `s` with its value in `scope`; the error names
/// the first variable that has no value.
pub fn substitute(s: &str, scope: &Scope) -> Result<String, String> {
    if !s.contains("{{") {
        return Ok(s.to_string());
    }
    let segs = segments(s).map_err(|(_, e)| e)?;
    let mut out = String::with_capacity(s.len());
    for seg in segs {
        match seg {
            Segment::Text(t) => out.push_str(t),
            Segment::Var(v) => match scope.get(v) {
                Some(val) => out.push_str(val),
                None => return Err(format!("unable to resolve `{{{{{v}}}}}`")),
            },
            Segment::Expr(e) => out.push_str(&to_text(&eval_expr(e, scope)?)),
        }
    }
    Ok(out)
}

/// If `s` is exactly one variable (`"{{tasks.a.outputs.artifacts.m}}"`),
/// its name.
pub fn sole_var(s: &str) -> Option<&str> {
    match segments(s.trim()).ok()?.as_slice() {
        [Segment::Var(v)] => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_substitutes() {
        let segs = segments("a {{ inputs.parameters.x }}b{{item}}").unwrap();
        assert_eq!(
            segs,
            vec![
                Segment::Text("a "),
                Segment::Var("inputs.parameters.x"),
                Segment::Text("b"),
                Segment::Var("item"),
            ]
        );
        let mut scope = Scope::new();
        scope.insert("inputs.parameters.x".into(), "1".into());
        scope.insert("item".into(), "z".into());
        assert_eq!(
            substitute("a {{ inputs.parameters.x }}b{{item}}", &scope).unwrap(),
            "a 1bz"
        );
        assert!(substitute("{{nope}}", &scope).unwrap_err().contains("nope"));
        assert_eq!(sole_var(" {{a.b}} "), Some("a.b"));
        assert_eq!(
            substitute("n={{= asInt(inputs.parameters.x) + 1 }}", &scope).unwrap(),
            "n=2"
        );
        assert_eq!(sole_var("x{{a.b}}"), None);
    }

    #[test]
    fn malformed() {
        assert!(segments("{{inputs.parameters.x")
            .unwrap_err()
            .1
            .contains("unterminated"));
        assert!(segments("{{ }}").unwrap_err().1.contains("empty"));
        assert!(segments("{{a..b}}").unwrap_err().1.contains("malformed"));
        assert!(segments("{{a b}}").unwrap_err().1.contains("malformed"));
    }
}
