//! Values in an expression: JSON's values, with integers kept apart from
//! floats, and what every part needs to make, name, print and compare them.

use serde_json::{Number, Value};

/// A value in an expression: JSON's values, with integers kept apart from
/// floats.
pub type Val = Value;

/// A number as a value: an integer when it is one.
pub fn num(f: f64) -> Val {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

pub fn float(f: f64) -> Val {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

pub fn type_name(v: &Val) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "map",
    }
}

/// A value as the text `{{=...}}` writes: a string as it is, anything else
/// as JSON (as Argo does).
pub fn to_text(v: &Val) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn as_f64(v: &Val) -> Option<f64> {
    v.as_f64()
}

/// `==`: numbers by value (an int equals the same float), the rest by
/// type and content.
pub fn equal(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => as_f64(a) == as_f64(b),
        _ => a == b,
    }
}

/// An integer (not a float that happens to be whole).
pub fn is_int(v: &Val) -> bool {
    matches!(v, Value::Number(n) if !n.is_f64())
}
