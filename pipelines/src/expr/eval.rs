//! Evaluating an [`Ast`] against the variables in reach, with expr-lang's
//! rules (integers stay integers, `/` gives a float, `&&` wants booleans,
//! a missing map key is `nil`) and the functions Argo offers: expr-lang's
//! built-ins users reach for, `asInt`, `asFloat`, `jsonpath`, `toJson` and
//! `sprig.*`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::funcs::call;
use super::lang::{parse_expr, Ast};
use super::value::{equal, float, is_int, num, to_text, type_name, Val};

/// The variables in reach as expr-lang sees them: the flat `a.b.c` names
/// as nested maps (`inputs.parameters.x` is `inputs` → `parameters` → `x`).
/// Where a name is both a value and a prefix of others
/// (`tasks.A.outputs.parameters` and `tasks.A.outputs.parameters.x`), the
/// map wins.
pub fn env_of(scope: &BTreeMap<String, String>) -> Map<String, Value> {
    let mut root = Map::new();
    // Shorter names first, so that a map replaces a value, never the reverse.
    let mut names: Vec<(&String, &String)> = scope.iter().collect();
    names.sort_by_key(|(k, _)| k.matches('.').count());
    for (k, v) in names {
        let parts: Vec<&str> = k.split('.').collect();
        let mut m = &mut root;
        for p in &parts[..parts.len() - 1] {
            let e = m
                .entry(p.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !e.is_object() {
                *e = Value::Object(Map::new());
            }
            m = e.as_object_mut().expect("made a map above");
        }
        let last = parts[parts.len() - 1].to_string();
        if !m.get(&last).is_some_and(Value::is_object) {
            m.insert(last, Value::String(v.clone()));
        }
    }
    root
}

fn truthy(v: &Val, what: &str) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(format!(
            "{what} needs a bool, got {} {}",
            type_name(other),
            to_text(other)
        )),
    }
}

fn as_f64(v: &Val) -> Option<f64> {
    v.as_f64()
}

/// Evaluate `e` in `env`.
pub fn eval(e: &Ast, env: &Map<String, Value>) -> Result<Val, String> {
    Ok(match e {
        Ast::Num(n, true) => num(*n),
        Ast::Num(n, false) => float(*n),
        Ast::Str(s) => Value::String(s.clone()),
        Ast::Bool(b) => Value::Bool(*b),
        Ast::Nil => Value::Null,
        Ast::Name(n) => env
            .get(n)
            .cloned()
            .ok_or_else(|| format!("unknown name {n}"))?,
        Ast::Member(a, k) => {
            let obj = eval(a, env)?;
            let key = eval(k, env)?;
            member(&obj, &key)?
        }
        Ast::Call(f, args) => {
            let vals = args
                .iter()
                .map(|a| eval(a, env))
                .collect::<Result<Vec<_>, _>>()?;
            call(f, &vals)?
        }
        Ast::Unary(op, a) => {
            let v = eval(a, env)?;
            match *op {
                "!" => Value::Bool(!truthy(&v, "!")?),
                "-" if is_int(&v) => Value::from(-v.as_i64().unwrap_or(0)),
                "-" => {
                    float(-as_f64(&v).ok_or_else(|| format!("cannot negate {}", type_name(&v)))?)
                }
                _ => {
                    as_f64(&v).ok_or_else(|| format!("cannot use + on {}", type_name(&v)))?;
                    v
                }
            }
        }
        Ast::Binary("&&" | "and", a, b) => {
            Value::Bool(truthy(&eval(a, env)?, "&&")? && truthy(&eval(b, env)?, "&&")?)
        }
        Ast::Binary("||" | "or", a, b) => {
            Value::Bool(truthy(&eval(a, env)?, "||")? || truthy(&eval(b, env)?, "||")?)
        }
        Ast::Binary("??", a, b) => match eval(a, env) {
            Ok(Value::Null) | Err(_) => eval(b, env)?,
            Ok(v) => v,
        },
        Ast::Binary(op, a, b) => binary(op, &eval(a, env)?, &eval(b, env)?)?,
        Ast::Cond(c, a, b) => {
            if truthy(&eval(c, env)?, "the condition of ?:")? {
                eval(a, env)?
            } else {
                eval(b, env)?
            }
        }
        Ast::Array(items) => Value::Array(
            items
                .iter()
                .map(|a| eval(a, env))
                .collect::<Result<_, _>>()?,
        ),
        Ast::Map(kv) => {
            let mut m = Map::new();
            for (k, v) in kv {
                m.insert(k.clone(), eval(v, env)?);
            }
            Value::Object(m)
        }
    })
}

/// `obj.key` / `obj[key]`: a missing map key is `nil`.
fn member(obj: &Val, key: &Val) -> Result<Val, String> {
    match (obj, key) {
        (Value::Object(m), Value::String(k)) => Ok(m.get(k).cloned().unwrap_or(Value::Null)),
        (Value::Array(a), k) if is_int(k) => {
            let i = k.as_i64().unwrap_or(0);
            let idx = if i < 0 { a.len() as i64 + i } else { i };
            a.get(idx as usize)
                .cloned()
                .filter(|_| idx >= 0)
                .ok_or_else(|| format!("index {i} out of range (length {})", a.len()))
        }
        (Value::String(s), k) if is_int(k) => {
            let chars: Vec<char> = s.chars().collect();
            let i = k.as_i64().unwrap_or(0);
            let idx = if i < 0 { chars.len() as i64 + i } else { i };
            chars
                .get(idx as usize)
                .filter(|_| idx >= 0)
                .map(|c| Value::String(c.to_string()))
                .ok_or_else(|| format!("index {i} out of range (length {})", chars.len()))
        }
        (Value::Null, k) => Err(format!("cannot fetch {} from nil", to_text(k))),
        (o, k) => Err(format!(
            "cannot fetch {} from {} (a {})",
            to_text(k),
            to_text(o),
            type_name(o)
        )),
    }
}

fn binary(op: &str, a: &Val, b: &Val) -> Result<Val, String> {
    let bad = || {
        format!(
            "invalid operation: {} {op} {} ({} and {})",
            to_text(a),
            to_text(b),
            type_name(a),
            type_name(b)
        )
    };
    let nums = || Some((as_f64(a)?, as_f64(b)?));
    Ok(match op {
        "==" => Value::Bool(equal(a, b)),
        "!=" => Value::Bool(!equal(a, b)),
        "<" | "<=" | ">" | ">=" => {
            let ord = match (a, b) {
                (Value::String(x), Value::String(y)) => x.cmp(y),
                _ => {
                    let (x, y) = nums().ok_or_else(bad)?;
                    x.partial_cmp(&y).ok_or_else(bad)?
                }
            };
            use std::cmp::Ordering::*;
            Value::Bool(match op {
                "<" => ord == Less,
                "<=" => ord != Greater,
                ">" => ord == Greater,
                _ => ord != Less,
            })
        }
        "+" => match (a, b) {
            (Value::String(x), Value::String(y)) => Value::String(format!("{x}{y}")),
            (Value::Array(x), Value::Array(y)) => {
                Value::Array(x.iter().chain(y.iter()).cloned().collect())
            }
            _ if is_int(a) && is_int(b) => Value::from(
                a.as_i64()
                    .unwrap_or(0)
                    .wrapping_add(b.as_i64().unwrap_or(0)),
            ),
            _ => nums().map(|(x, y)| float(x + y)).ok_or_else(bad)?,
        },
        "-" if is_int(a) && is_int(b) => Value::from(
            a.as_i64()
                .unwrap_or(0)
                .wrapping_sub(b.as_i64().unwrap_or(0)),
        ),
        "*" if is_int(a) && is_int(b) => Value::from(
            a.as_i64()
                .unwrap_or(0)
                .wrapping_mul(b.as_i64().unwrap_or(0)),
        ),
        "%" => match (a.as_i64(), b.as_i64()) {
            (Some(_), Some(0)) => return Err("integer divide by zero".into()),
            (Some(x), Some(y)) if is_int(a) && is_int(b) => Value::from(x % y),
            _ => return Err(bad()),
        },
        "-" | "*" | "/" | "**" | "^" => {
            let (x, y) = nums().ok_or_else(bad)?;
            float(match op {
                "-" => x - y,
                "*" => x * y,
                "/" => x / y,
                _ => x.powf(y),
            })
        }
        "in" | "not in" => {
            let found = match b {
                Value::Array(items) => items.iter().any(|i| equal(i, a)),
                Value::Object(m) => a.as_str().is_some_and(|k| m.contains_key(k)),
                _ => return Err(bad()),
            };
            Value::Bool(found == (op == "in"))
        }
        "contains" | "startsWith" | "endsWith" | "matches" => {
            let (Value::String(x), Value::String(y)) = (a, b) else {
                return Err(bad());
            };
            Value::Bool(match op {
                "contains" => x.contains(y.as_str()),
                "startsWith" => x.starts_with(y.as_str()),
                "endsWith" => x.ends_with(y.as_str()),
                _ => regex::Regex::new(y)
                    .map_err(|e| format!("invalid regular expression {y:?}: {e}"))?
                    .is_match(x),
            })
        }
        _ => return Err(bad()),
    })
}

/// Evaluate an expr-lang expression (the inside of `{{=...}}`, or a
/// `valueFrom.expression`) with the `{{...}}` variables of `scope` in reach.
pub fn eval_expr(src: &str, scope: &BTreeMap<String, String>) -> Result<Val, String> {
    let ast = parse_expr(src).map_err(|e| format!("syntax error in expression {src:?} {e}"))?;
    let env = env_of(scope);
    match eval(&ast, &env) {
        Ok(Value::Null) => Err(format!("expression {src:?} evaluated to nil")),
        Ok(v) => Ok(v),
        Err(e) => Err(format!("expression {src:?}: {e}")),
    }
}
