//! The functions an expression may call: expr-lang's built-ins users reach
//! for, Argo's own (`asInt`, `asFloat`, `jsonpath`, `toJson`) and the
//! `sprig.*` functions workflows use. Anything else is refused when the
//! workflow is submitted, by name ([`is_known`]).

use serde_json::Value;

use super::value::{float, num, to_text, type_name, Val};

/// expr-lang built-ins and Argo's additions.
const BUILTINS: &[&str] = &[
    "asInt",
    "asFloat",
    "jsonpath",
    "toJson",
    "toJSON",
    "fromJSON",
    "string",
    "int",
    "float",
    "len",
    "lower",
    "upper",
    "trim",
    "trimPrefix",
    "trimSuffix",
    "split",
    "join",
    "replace",
    "repeat",
    "indexOf",
    "lastIndexOf",
    "hasPrefix",
    "hasSuffix",
    "abs",
    "ceil",
    "floor",
    "round",
    "max",
    "min",
    "sum",
    "mean",
    "first",
    "last",
    "keys",
    "values",
    "type",
];

/// `sprig.*` functions.
const SPRIG: &[&str] = &[
    "trim",
    "trimAll",
    "trimPrefix",
    "trimSuffix",
    "upper",
    "lower",
    "title",
    "replace",
    "default",
    "empty",
    "coalesce",
    "ternary",
    "join",
    "split",
    "splitList",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "quote",
    "squote",
    "repeat",
    "substr",
    "trunc",
    "nospace",
    "toString",
    "atoi",
    "int",
    "int64",
    "float64",
    "add",
    "add1",
    "sub",
    "mul",
    "div",
    "mod",
    "max",
    "min",
    "list",
    "first",
    "last",
    "toJson",
    "fromJson",
    "len",
    "cat",
    "indent",
];

/// Whether `name` (`asInt`, `sprig.trim`) can be called.
pub fn is_known(name: &str) -> bool {
    match name.strip_prefix("sprig.") {
        Some(f) => SPRIG.contains(&f),
        None => BUILTINS.contains(&name),
    }
}

fn s(v: &Val) -> String {
    to_text(v)
}

fn arity(name: &str, args: &[Val], n: usize) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!(
            "{name}() takes {n} argument(s), got {}",
            args.len()
        ))
    }
}

fn to_int(name: &str, v: &Val) -> Result<i64, String> {
    match v {
        Value::Number(n) => Ok(n
            .as_i64()
            .unwrap_or_else(|| n.as_f64().unwrap_or(0.0) as i64)),
        Value::String(t) => t
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("{name}: {t:?} is not a whole number")),
        Value::Bool(b) => Ok(*b as i64),
        other => Err(format!(
            "{name}: cannot convert {} to int",
            type_name(other)
        )),
    }
}

fn to_float(name: &str, v: &Val) -> Result<f64, String> {
    match v {
        Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0)),
        Value::String(t) => t
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("{name}: {t:?} is not a number")),
        other => Err(format!(
            "{name}: cannot convert {} to float",
            type_name(other)
        )),
    }
}

fn list(name: &str, v: &Val) -> Result<Vec<Val>, String> {
    match v {
        Value::Array(a) => Ok(a.clone()),
        other => Err(format!("{name}: needs an array, got {}", type_name(other))),
    }
}

/// Sprig's idea of empty: nil, false, 0, "", [] and {}.
fn empty(v: &Val) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(t) => t.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

fn fold_nums(name: &str, args: &[Val], f: fn(f64, f64) -> f64) -> Result<Val, String> {
    let items = match args {
        [Value::Array(a)] => a.clone(),
        _ => args.to_vec(),
    };
    let mut acc: Option<f64> = None;
    let all_int = items
        .iter()
        .all(|v| matches!(v, Value::Number(n) if !n.is_f64()));
    for v in &items {
        let x = to_float(name, v)?;
        acc = Some(acc.map_or(x, |a| f(a, x)));
    }
    let r = acc.ok_or_else(|| format!("{name}() of nothing"))?;
    Ok(if all_int { num(r) } else { float(r) })
}

/// Call function `name` with `args`.
pub fn call(name: &str, args: &[Val]) -> Result<Val, String> {
    if let Some(f) = name.strip_prefix("sprig.") {
        return sprig(f, args);
    }
    let a = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    Ok(match name {
        "asInt" | "int" => {
            arity(name, args, 1)?;
            Value::from(to_int(name, &a(0))?)
        }
        "asFloat" | "float" => {
            arity(name, args, 1)?;
            float(to_float(name, &a(0))?)
        }
        "string" => {
            arity(name, args, 1)?;
            Value::String(s(&a(0)))
        }
        "toJson" | "toJSON" => {
            arity(name, args, 1)?;
            Value::String(a(0).to_string())
        }
        "fromJSON" => {
            arity(name, args, 1)?;
            serde_json::from_str(&s(&a(0))).map_err(|e| format!("fromJSON: {e}"))?
        }
        "jsonpath" => {
            arity(name, args, 2)?;
            jsonpath(&a(0), &s(&a(1)))?
        }
        "len" => {
            arity(name, args, 1)?;
            Value::from(match a(0) {
                Value::String(t) => t.chars().count(),
                Value::Array(v) => v.len(),
                Value::Object(m) => m.len(),
                other => return Err(format!("len: cannot measure {}", type_name(&other))),
            })
        }
        "type" => Value::String(type_name(&a(0)).into()),
        "lower" => Value::String(s(&a(0)).to_lowercase()),
        "upper" => Value::String(s(&a(0)).to_uppercase()),
        "trim" => match args.get(1) {
            Some(cut) => {
                let cut: Vec<char> = s(cut).chars().collect();
                Value::String(s(&a(0)).trim_matches(|c| cut.contains(&c)).into())
            }
            None => Value::String(s(&a(0)).trim().into()),
        },
        "trimPrefix" => Value::String(
            s(&a(0))
                .strip_prefix(s(&a(1)).as_str())
                .map(String::from)
                .unwrap_or_else(|| s(&a(0))),
        ),
        "trimSuffix" => Value::String(
            s(&a(0))
                .strip_suffix(s(&a(1)).as_str())
                .map(String::from)
                .unwrap_or_else(|| s(&a(0))),
        ),
        "split" => {
            arity(name, args, 2)?;
            Value::Array(
                s(&a(0))
                    .split(s(&a(1)).as_str())
                    .map(|p| Value::String(p.into()))
                    .collect(),
            )
        }
        "join" => {
            let sep = if args.len() > 1 {
                s(&a(1))
            } else {
                String::new()
            };
            let items = list(name, &a(0))?;
            Value::String(items.iter().map(s).collect::<Vec<_>>().join(&sep))
        }
        "replace" => {
            arity(name, args, 3)?;
            Value::String(s(&a(0)).replace(&s(&a(1)), &s(&a(2))))
        }
        "repeat" => Value::String(s(&a(0)).repeat(to_int(name, &a(1))?.clamp(0, 10_000) as usize)),
        "indexOf" => Value::from(s(&a(0)).find(&s(&a(1))).map_or(-1, |i| i as i64)),
        "lastIndexOf" => Value::from(s(&a(0)).rfind(&s(&a(1))).map_or(-1, |i| i as i64)),
        "hasPrefix" => Value::Bool(s(&a(0)).starts_with(&s(&a(1)))),
        "hasSuffix" => Value::Bool(s(&a(0)).ends_with(&s(&a(1)))),
        "abs" => match a(0) {
            v @ Value::Number(_) if v.is_i64() => Value::from(v.as_i64().unwrap_or(0).abs()),
            v => float(to_float(name, &v)?.abs()),
        },
        "ceil" => float(to_float(name, &a(0))?.ceil()),
        "floor" => float(to_float(name, &a(0))?.floor()),
        "round" => float(to_float(name, &a(0))?.round()),
        "max" => fold_nums(name, args, f64::max)?,
        "min" => fold_nums(name, args, f64::min)?,
        "sum" => fold_nums(name, args, |x, y| x + y)?,
        "mean" => {
            let items = list(name, &a(0))?;
            let n = items.len().max(1) as f64;
            let total = items
                .iter()
                .map(|v| to_float(name, v))
                .sum::<Result<f64, _>>()?;
            float(total / n)
        }
        "first" => list(name, &a(0))?.first().cloned().unwrap_or(Value::Null),
        "last" => list(name, &a(0))?.last().cloned().unwrap_or(Value::Null),
        "keys" | "values" => match a(0) {
            Value::Object(m) if name == "keys" => {
                Value::Array(m.keys().map(|k| Value::String(k.clone())).collect())
            }
            Value::Object(m) => Value::Array(m.values().cloned().collect()),
            other => return Err(format!("{name}: needs a map, got {}", type_name(&other))),
        },
        other => return Err(format!("unknown function {other}()")),
    })
}

/// `sprig.NAME(args)`: Sprig's argument order (the string last).
fn sprig(f: &str, args: &[Val]) -> Result<Val, String> {
    let name = format!("sprig.{f}");
    let a = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    let last = || args.last().cloned().unwrap_or(Value::Null);
    Ok(match f {
        "trim" => Value::String(s(&a(0)).trim().into()),
        "trimAll" => {
            let cut: Vec<char> = s(&a(0)).chars().collect();
            Value::String(s(&a(1)).trim_matches(|c| cut.contains(&c)).into())
        }
        "trimPrefix" | "trimSuffix" | "hasPrefix" | "hasSuffix" | "contains" => {
            arity(&name, args, 2)?;
            let (p, t) = (s(&a(0)), s(&a(1)));
            match f {
                "trimPrefix" => Value::String(t.strip_prefix(p.as_str()).unwrap_or(&t).into()),
                "trimSuffix" => Value::String(t.strip_suffix(p.as_str()).unwrap_or(&t).into()),
                "hasPrefix" => Value::Bool(t.starts_with(&p)),
                "hasSuffix" => Value::Bool(t.ends_with(&p)),
                _ => Value::Bool(t.contains(&p)),
            }
        }
        "upper" => Value::String(s(&a(0)).to_uppercase()),
        "lower" => Value::String(s(&a(0)).to_lowercase()),
        "title" => Value::String(
            s(&a(0))
                .split(' ')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_uppercase().chain(c).collect())
                        .unwrap_or_default()
                })
                .collect::<Vec<String>>()
                .join(" "),
        ),
        "nospace" => Value::String(s(&a(0)).chars().filter(|c| !c.is_whitespace()).collect()),
        "replace" => {
            arity(&name, args, 3)?;
            Value::String(s(&a(2)).replace(&s(&a(0)), &s(&a(1))))
        }
        "default" => {
            arity(&name, args, 2)?;
            if empty(&a(1)) {
                a(0)
            } else {
                a(1)
            }
        }
        "empty" => Value::Bool(empty(&a(0))),
        "coalesce" => args
            .iter()
            .find(|v| !empty(v))
            .cloned()
            .unwrap_or(Value::Null),
        "ternary" => {
            arity(&name, args, 3)?;
            if a(2) == Value::Bool(true) {
                a(0)
            } else {
                a(1)
            }
        }
        "join" => {
            let items = match a(1) {
                Value::Array(v) => v,
                other => vec![other],
            };
            Value::String(items.iter().map(s).collect::<Vec<_>>().join(&s(&a(0))))
        }
        // Sprig's `split` gives a map `_0`, `_1`, ...; `splitList` a list.
        "split" => {
            let mut m = serde_json::Map::new();
            for (i, p) in s(&a(1)).split(s(&a(0)).as_str()).enumerate() {
                m.insert(format!("_{i}"), Value::String(p.into()));
            }
            Value::Object(m)
        }
        "splitList" => Value::Array(
            s(&a(1))
                .split(s(&a(0)).as_str())
                .map(|p| Value::String(p.into()))
                .collect(),
        ),
        "quote" => Value::String(format!("{:?}", s(&a(0)))),
        "squote" => Value::String(format!("'{}'", s(&a(0)))),
        "cat" => Value::String(
            args.iter()
                .filter(|v| !v.is_null())
                .map(s)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "indent" => {
            let pad = " ".repeat(to_int(&name, &a(0))?.clamp(0, 1000) as usize);
            Value::String(
                s(&a(1))
                    .split('\n')
                    .map(|l| format!("{pad}{l}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        }
        "repeat" => Value::String(s(&a(1)).repeat(to_int(&name, &a(0))?.clamp(0, 10_000) as usize)),
        "substr" => {
            let chars: Vec<char> = s(&a(2)).chars().collect();
            let start = to_int(&name, &a(0))?.clamp(0, chars.len() as i64) as usize;
            let end = to_int(&name, &a(1))?;
            let end = if end < 0 {
                chars.len()
            } else {
                (end as usize).min(chars.len())
            };
            Value::String(chars[start.min(end)..end].iter().collect())
        }
        "trunc" => {
            let chars: Vec<char> = s(&a(1)).chars().collect();
            let n = to_int(&name, &a(0))?;
            let n = if n < 0 {
                chars.len().saturating_sub((-n) as usize)
            } else {
                (n as usize).min(chars.len())
            };
            Value::String(chars[..n].iter().collect())
        }
        "toString" => Value::String(s(&a(0))),
        "atoi" => Value::from(to_int(&name, &a(0)).unwrap_or(0)),
        "int" | "int64" => Value::from(to_int(&name, &a(0)).unwrap_or(0)),
        "float64" => float(to_float(&name, &a(0)).unwrap_or(0.0)),
        "add" | "sub" | "mul" | "div" | "mod" | "add1" => {
            let x = to_int(&name, &a(0))?;
            let y = if f == "add1" {
                1
            } else {
                to_int(&name, &a(1))?
            };
            Value::from(match f {
                "add" | "add1" => x.wrapping_add(y),
                "sub" => x.wrapping_sub(y),
                "mul" => x.wrapping_mul(y),
                _ if y == 0 => return Err(format!("{name}: divide by zero")),
                "div" => x / y,
                _ => x % y,
            })
        }
        "max" | "min" => {
            let mut best = to_int(&name, &a(0))?;
            for v in &args[1.min(args.len())..] {
                let x = to_int(&name, v)?;
                best = if f == "max" { best.max(x) } else { best.min(x) };
            }
            Value::from(best)
        }
        "list" => Value::Array(args.to_vec()),
        "first" => list(&name, &a(0))?.first().cloned().unwrap_or(Value::Null),
        "last" => list(&name, &last())?.last().cloned().unwrap_or(Value::Null),
        "toJson" => Value::String(a(0).to_string()),
        "fromJson" => serde_json::from_str(&s(&a(0))).unwrap_or(Value::Null),
        "len" => Value::from(match a(0) {
            Value::String(t) => t.chars().count(),
            Value::Array(v) => v.len(),
            Value::Object(m) => m.len(),
            _ => 0,
        }),
        other => return Err(format!("unknown function sprig.{other}()")),
    })
}

/// `jsonpath(json, '$.a.b[0]')`: the JSON text (or value) at a path of
/// `.key`, `['key']` and `[index]` steps.
fn jsonpath(doc: &Val, path: &str) -> Result<Val, String> {
    let mut v = match doc {
        Value::String(t) => {
            serde_json::from_str(t).map_err(|e| format!("jsonpath: the input is not JSON: {e}"))?
        }
        other => other.clone(),
    };
    let p = path.trim();
    let mut rest = p
        .strip_prefix('$')
        .ok_or_else(|| format!("jsonpath: {path:?} must start with $"))?;
    let bad = || format!("jsonpath: cannot read path {path:?}");
    while !rest.is_empty() {
        let key: Val;
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            key = Value::String(r[..end].to_string());
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(bad)?;
            let inner = r[..end].trim();
            key = if let Some(q) = inner
                .strip_prefix('\'')
                .and_then(|q| q.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|q| q.strip_suffix('"')))
            {
                Value::String(q.to_string())
            } else {
                Value::from(inner.parse::<i64>().map_err(|_| bad())?)
            };
            rest = &r[end + 1..];
        } else {
            return Err(bad());
        }
        v = match (&v, &key) {
            (Value::Object(m), Value::String(k)) => m
                .get(k)
                .cloned()
                .ok_or_else(|| format!("jsonpath: no key {k:?} in {path:?}"))?,
            (Value::Array(a), k) => {
                let i = k.as_i64().ok_or_else(bad)?;
                let idx = if i < 0 { a.len() as i64 + i } else { i };
                a.get(idx as usize)
                    .filter(|_| idx >= 0)
                    .cloned()
                    .ok_or_else(|| format!("jsonpath: index {i} out of range in {path:?}"))?
            }
            _ => return Err(bad()),
        };
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::super::value::equal;
    use super::*;

    #[test]
    fn sprig_and_builtins() {
        let st = |x: &str| Value::String(x.into());
        assert_eq!(
            call("sprig.replace", &[st("a"), st("b"), st("aaa")]).unwrap(),
            st("bbb")
        );
        assert_eq!(call("sprig.default", &[st("d"), st("")]).unwrap(), st("d"));
        assert_eq!(
            call("sprig.join", &[st(","), Value::from(vec!["a", "b"])]).unwrap(),
            st("a,b")
        );
        assert_eq!(call("asInt", &[st("42")]).unwrap(), Value::from(42));
        assert!(call("asInt", &[st("4x")])
            .unwrap_err()
            .contains("whole number"));
        assert_eq!(
            jsonpath(&st(r#"{"a": {"b": [1, {"c": "x"}]}}"#), "$.a.b[1].c").unwrap(),
            st("x")
        );
        assert!(equal(&Value::from(2), &float(2.0)));
        assert!(is_known("sprig.trim") && is_known("asFloat"));
        assert!(!is_known("sprig.env") && !is_known("filter"));
    }
}
