//! The expression languages of a workflow.
//!
//! - expr-lang, as Argo uses it in `{{=...}}` and `valueFrom.expression`:
//!   parsed in `lang`, evaluated in `eval` with the functions of `funcs`.
//! - `depends`: task results joined with `&&`, `||`, `!` and parentheses,
//!   e.g. `(train.Succeeded || fallback.Failed) && !eval.Skipped`. Parsed
//!   once at validation into a [`Depends`] tree and evaluated against the
//!   phases of the dependencies.
//! - `when`: evaluated after `{{...}}` substitution, govaluate-style:
//!   numbers, quoted strings, bare words (taken as strings), `true`/`false`,
//!   `==`, `!=`, `<`, `<=`, `>`, `>=`, `=~`, `!~`, `&&`, `||`, `!`, parentheses.
//!
//! Both are a hand-written lexer plus a recursive-descent parser. Errors give
//! the 1-based column and what was expected there.

use std::fmt;

use serde::{Deserialize, Serialize};

mod eval;
mod funcs;
mod lang;
mod value;

pub use eval::eval as eval_ast;
pub use eval::eval_expr;
pub use funcs::is_known as is_known_function;
pub use lang::{parse_expr, Ast};
pub use value::{to_text, Val};

/// A syntax error in an expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {column}: expected {expected}, found {found}")]
pub struct SyntaxError {
    /// 1-based character column.
    pub column: usize,
    pub expected: String,
    pub found: String,
}

// ---------------------------------------------------------------- depends

/// The result of a task that a `depends` term asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskResult {
    Succeeded,
    Failed,
    Errored,
    Skipped,
    Omitted,
    /// Daemon steps are not supported: never true.
    Daemoned,
    /// Some child of a fan-out task succeeded.
    AnySucceeded,
    /// Every child of a fan-out task failed.
    AllFailed,
}

impl TaskResult {
    const ALL: [(&'static str, TaskResult); 8] = [
        ("Succeeded", TaskResult::Succeeded),
        ("Failed", TaskResult::Failed),
        ("Errored", TaskResult::Errored),
        ("Skipped", TaskResult::Skipped),
        ("Omitted", TaskResult::Omitted),
        ("Daemoned", TaskResult::Daemoned),
        ("AnySucceeded", TaskResult::AnySucceeded),
        ("AllFailed", TaskResult::AllFailed),
    ];
}

/// A parsed `depends` expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Depends {
    /// `task` alone (`result: None`) or `task.Result`.
    Task {
        name: String,
        result: Option<TaskResult>,
    },
    Not(Box<Depends>),
    And(Box<Depends>, Box<Depends>),
    Or(Box<Depends>, Box<Depends>),
}

/// What a `depends` expression can ask about one finished dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskResults {
    pub succeeded: bool,
    pub failed: bool,
    pub errored: bool,
    pub skipped: bool,
    pub omitted: bool,
    pub any_succeeded: bool,
    pub all_failed: bool,
    /// A bare `task` also accepts Failed / Errored when the task has
    /// `continueOn.failed` / `continueOn.error` (Argo's `expandDependency`).
    pub continue_on_failed: bool,
    pub continue_on_error: bool,
}

impl Depends {
    /// `dependencies: [a, b]` as the equivalent `a && b`.
    pub fn all_of(names: &[String]) -> Option<Depends> {
        names
            .iter()
            .map(|n| Depends::Task {
                name: n.clone(),
                result: None,
            })
            .reduce(|a, b| Depends::And(Box::new(a), Box::new(b)))
    }

    /// Every task named, in order of first appearance.
    pub fn task_names(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.walk(&mut |name, _| {
            if !out.contains(&name) {
                out.push(name)
            }
        });
        out
    }

    /// Calls `f(task, result)` for every term.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a str, Option<TaskResult>)) {
        match self {
            Depends::Task { name, result } => f(name, *result),
            Depends::Not(e) => e.walk(f),
            Depends::And(a, b) | Depends::Or(a, b) => {
                a.walk(f);
                b.walk(f);
            }
        }
    }

    /// Evaluate with `lookup(task)` giving the results of each finished task.
    pub fn eval(&self, lookup: &dyn Fn(&str) -> TaskResults) -> bool {
        match self {
            Depends::Task { name, result } => {
                let r = lookup(name);
                match result {
                    None => {
                        r.succeeded
                            || r.skipped
                            || (r.continue_on_failed && r.failed)
                            || (r.continue_on_error && r.errored)
                    }
                    Some(TaskResult::Succeeded) => r.succeeded,
                    Some(TaskResult::Failed) => r.failed,
                    Some(TaskResult::Errored) => r.errored,
                    Some(TaskResult::Skipped) => r.skipped,
                    Some(TaskResult::Omitted) => r.omitted,
                    Some(TaskResult::Daemoned) => false,
                    Some(TaskResult::AnySucceeded) => r.any_succeeded,
                    Some(TaskResult::AllFailed) => r.all_failed,
                }
            }
            Depends::Not(e) => !e.eval(lookup),
            Depends::And(a, b) => a.eval(lookup) && b.eval(lookup),
            Depends::Or(a, b) => a.eval(lookup) || b.eval(lookup),
        }
    }
}

impl fmt::Display for Depends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Depends::Task { name, result: None } => write!(f, "{name}"),
            Depends::Task {
                name,
                result: Some(r),
            } => write!(f, "{name}.{r:?}"),
            Depends::Not(e) => write!(f, "!{e}"),
            Depends::And(a, b) => write!(f, "({a} && {b})"),
            Depends::Or(a, b) => write!(f, "({a} || {b})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum DTok {
    Name(String),
    Dot,
    And,
    Or,
    Not,
    LParen,
    RParen,
    End,
}

fn describe_dtok(t: &DTok) -> String {
    match t {
        DTok::Name(n) => format!("{n:?}"),
        DTok::Dot => "\".\"".into(),
        DTok::And => "\"&&\"".into(),
        DTok::Or => "\"||\"".into(),
        DTok::Not => "\"!\"".into(),
        DTok::LParen => "\"(\"".into(),
        DTok::RParen => "\")\"".into(),
        DTok::End => "the end".into(),
    }
}

fn lex_depends(s: &str) -> Result<Vec<(usize, DTok)>, SyntaxError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        match c {
            c if c.is_whitespace() => i += 1,
            '.' => {
                out.push((col, DTok::Dot));
                i += 1;
            }
            '(' => {
                out.push((col, DTok::LParen));
                i += 1;
            }
            ')' => {
                out.push((col, DTok::RParen));
                i += 1;
            }
            '!' => {
                out.push((col, DTok::Not));
                i += 1;
            }
            '&' | '|' => {
                if chars.get(i + 1) == Some(&c) {
                    out.push((col, if c == '&' { DTok::And } else { DTok::Or }));
                    i += 2;
                } else {
                    return Err(SyntaxError {
                        column: col,
                        expected: format!("\"{c}{c}\""),
                        found: format!("\"{c}\""),
                    });
                }
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '-')
                {
                    i += 1;
                }
                out.push((col, DTok::Name(chars[start..i].iter().collect())));
            }
            other => {
                return Err(SyntaxError {
                    column: col,
                    expected: "a task name, \"&&\", \"||\", \"!\" or parentheses".into(),
                    found: format!("{other:?}"),
                })
            }
        }
    }
    out.push((chars.len() + 1, DTok::End));
    Ok(out)
}

struct DParser {
    toks: Vec<(usize, DTok)>,
    pos: usize,
}

impl DParser {
    fn peek(&self) -> &(usize, DTok) {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }
    fn bump(&mut self) -> (usize, DTok) {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }
    fn err(&self, expected: &str) -> SyntaxError {
        let (col, t) = self.peek();
        SyntaxError {
            column: *col,
            expected: expected.into(),
            found: describe_dtok(t),
        }
    }
    fn or(&mut self) -> Result<Depends, SyntaxError> {
        let mut left = self.and()?;
        while self.peek().1 == DTok::Or {
            self.bump();
            let right = self.and()?;
            left = Depends::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<Depends, SyntaxError> {
        let mut left = self.unary()?;
        while self.peek().1 == DTok::And {
            self.bump();
            let right = self.unary()?;
            left = Depends::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn unary(&mut self) -> Result<Depends, SyntaxError> {
        match self.peek().1.clone() {
            DTok::Not => {
                self.bump();
                Ok(Depends::Not(Box::new(self.unary()?)))
            }
            DTok::LParen => {
                self.bump();
                let e = self.or()?;
                if self.peek().1 != DTok::RParen {
                    return Err(self.err("\")\""));
                }
                self.bump();
                Ok(e)
            }
            DTok::Name(name) => {
                self.bump();
                if self.peek().1 != DTok::Dot {
                    return Ok(Depends::Task { name, result: None });
                }
                self.bump();
                let (col, t) = self.peek().clone();
                let DTok::Name(r) = t else {
                    return Err(self.err("a task result such as Succeeded or Failed"));
                };
                let Some((_, result)) = TaskResult::ALL.iter().find(|(n, _)| *n == r) else {
                    return Err(SyntaxError {
                        column: col,
                        expected: format!(
                            "a task result ({})",
                            TaskResult::ALL.map(|(n, _)| n).join(", ")
                        ),
                        found: format!("{r:?}"),
                    });
                };
                self.bump();
                Ok(Depends::Task {
                    name,
                    result: Some(*result),
                })
            }
            _ => Err(self.err("a task name, \"(\" or \"!\"")),
        }
    }
}

/// Parse a `depends` expression.
pub fn parse_depends(s: &str) -> Result<Depends, SyntaxError> {
    let mut p = DParser {
        toks: lex_depends(s)?,
        pos: 0,
    };
    let e = p.or()?;
    if p.peek().1 != DTok::End {
        return Err(p.err("\"&&\", \"||\" or the end"));
    }
    Ok(e)
}

// ---------------------------------------------------------------- when

#[derive(Debug, Clone, PartialEq)]
enum WTok {
    /// A number, a quoted string or a bare word.
    Value(Value),
    Op(CmpOp),
    And,
    Or,
    Not,
    LParen,
    RParen,
    End,
}

/// A value in a `when` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(f64),
    Str(String),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Num(n) => write!(f, "{n}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Match,
    NotMatch,
}

fn describe_wtok(t: &WTok) -> String {
    match t {
        WTok::Value(v) => v.to_string(),
        WTok::Op(op) => format!("{op:?}"),
        WTok::And => "\"&&\"".into(),
        WTok::Or => "\"||\"".into(),
        WTok::Not => "\"!\"".into(),
        WTok::LParen => "\"(\"".into(),
        WTok::RParen => "\")\"".into(),
        WTok::End => "the end".into(),
    }
}

fn is_word_char(c: char) -> bool {
    !(c.is_whitespace()
        || matches!(
            c,
            '(' | ')' | '!' | '=' | '<' | '>' | '&' | '|' | '"' | '\''
        ))
}

fn lex_when(s: &str) -> Result<Vec<(usize, WTok)>, SyntaxError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let two = |i: usize| -> String { chars[i..(i + 2).min(chars.len())].iter().collect() };
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let pair = two(i);
        let (tok, len) = match pair.as_str() {
            "==" => (WTok::Op(CmpOp::Eq), 2),
            "!=" => (WTok::Op(CmpOp::Ne), 2),
            "<=" => (WTok::Op(CmpOp::Le), 2),
            ">=" => (WTok::Op(CmpOp::Ge), 2),
            "=~" => (WTok::Op(CmpOp::Match), 2),
            "!~" => (WTok::Op(CmpOp::NotMatch), 2),
            "&&" => (WTok::And, 2),
            "||" => (WTok::Or, 2),
            _ => match c {
                '<' => (WTok::Op(CmpOp::Lt), 1),
                '>' => (WTok::Op(CmpOp::Gt), 1),
                '!' => (WTok::Not, 1),
                '(' => (WTok::LParen, 1),
                ')' => (WTok::RParen, 1),
                '"' | '\'' => {
                    let mut j = i + 1;
                    let mut text = String::new();
                    while j < chars.len() && chars[j] != c {
                        if chars[j] == '\\' && j + 1 < chars.len() {
                            j += 1;
                        }
                        text.push(chars[j]);
                        j += 1;
                    }
                    if j >= chars.len() {
                        return Err(SyntaxError {
                            column: col,
                            expected: format!("a closing {c}"),
                            found: "the end".into(),
                        });
                    }
                    (WTok::Value(Value::Str(text)), j + 1 - i)
                }
                c if is_word_char(c) => {
                    let mut j = i;
                    while j < chars.len() && is_word_char(chars[j]) {
                        j += 1;
                    }
                    let word: String = chars[i..j].iter().collect();
                    let v = if let Ok(n) = word.parse::<f64>() {
                        Value::Num(n)
                    } else if word == "true" {
                        Value::Bool(true)
                    } else if word == "false" {
                        Value::Bool(false)
                    } else {
                        Value::Str(word)
                    };
                    (WTok::Value(v), j - i)
                }
                other => {
                    return Err(SyntaxError {
                        column: col,
                        expected: "a value or an operator".into(),
                        found: format!("{other:?}"),
                    })
                }
            },
        };
        out.push((col, tok));
        i += len;
    }
    out.push((chars.len() + 1, WTok::End));
    Ok(out)
}

/// A parsed `when` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    Lit(Value),
    Cmp(CmpOp, Box<When>, Box<When>),
    Not(Box<When>),
    And(Box<When>, Box<When>),
    Or(Box<When>, Box<When>),
}

struct WParser {
    toks: Vec<(usize, WTok)>,
    pos: usize,
}

impl WParser {
    fn peek(&self) -> &(usize, WTok) {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }
    fn bump(&mut self) -> (usize, WTok) {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }
    fn err(&self, expected: &str) -> SyntaxError {
        let (col, t) = self.peek();
        SyntaxError {
            column: *col,
            expected: expected.into(),
            found: describe_wtok(t),
        }
    }
    fn or(&mut self) -> Result<When, SyntaxError> {
        let mut left = self.and()?;
        while self.peek().1 == WTok::Or {
            self.bump();
            left = When::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<When, SyntaxError> {
        let mut left = self.cmp()?;
        while self.peek().1 == WTok::And {
            self.bump();
            left = When::And(Box::new(left), Box::new(self.cmp()?));
        }
        Ok(left)
    }
    fn cmp(&mut self) -> Result<When, SyntaxError> {
        let left = self.unary()?;
        if let WTok::Op(op) = self.peek().1 {
            self.bump();
            let right = self.unary()?;
            return Ok(When::Cmp(op, Box::new(left), Box::new(right)));
        }
        Ok(left)
    }
    fn unary(&mut self) -> Result<When, SyntaxError> {
        match self.peek().1.clone() {
            WTok::Not => {
                self.bump();
                Ok(When::Not(Box::new(self.unary()?)))
            }
            WTok::LParen => {
                self.bump();
                let e = self.or()?;
                if self.peek().1 != WTok::RParen {
                    return Err(self.err("\")\""));
                }
                self.bump();
                Ok(e)
            }
            WTok::Value(v) => {
                self.bump();
                Ok(When::Lit(v))
            }
            _ => Err(self.err("a value, \"(\" or \"!\"")),
        }
    }
}

/// Parse a `when` expression (after substitution).
pub fn parse_when(s: &str) -> Result<When, SyntaxError> {
    let mut p = WParser {
        toks: lex_when(s)?,
        pos: 0,
    };
    if p.peek().1 == WTok::End {
        return Err(p.err("a condition"));
    }
    let e = p.or()?;
    if p.peek().1 != WTok::End {
        return Err(p.err("an operator or the end"));
    }
    Ok(e)
}

impl When {
    fn value(&self) -> Result<Value, String> {
        Ok(match self {
            When::Lit(v) => v.clone(),
            When::Cmp(op, a, b) => Value::Bool(compare(*op, &a.value()?, &b.value()?)?),
            When::Not(e) => Value::Bool(!as_bool(&e.value()?)?),
            When::And(a, b) => Value::Bool(as_bool(&a.value()?)? && as_bool(&b.value()?)?),
            When::Or(a, b) => Value::Bool(as_bool(&a.value()?)? || as_bool(&b.value()?)?),
        })
    }

    /// Evaluate to a boolean.
    pub fn eval(&self) -> Result<bool, String> {
        as_bool(&self.value()?)
    }
}

fn as_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Str(s) if s == "true" => Ok(true),
        Value::Str(s) if s == "false" => Ok(false),
        other => Err(format!("{other} is not true or false")),
    }
}

fn as_num(v: &Value) -> Option<f64> {
    match v {
        Value::Num(n) => Some(*n),
        Value::Str(s) => s.trim().parse().ok(),
        Value::Bool(_) => None,
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::Num(n) => n.to_string(),
        Value::Str(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
    }
}

fn compare(op: CmpOp, a: &Value, b: &Value) -> Result<bool, String> {
    use std::cmp::Ordering;
    if matches!(op, CmpOp::Match | CmpOp::NotMatch) {
        let re = regex::Regex::new(&as_text(b))
            .map_err(|e| format!("invalid regular expression {b}: {e}"))?;
        return Ok(re.is_match(&as_text(a)) == (op == CmpOp::Match));
    }
    // Numbers compare as numbers when both sides are numeric; otherwise as text.
    let numeric = matches!(a, Value::Num(_)) || matches!(b, Value::Num(_));
    let ord = match (as_num(a), as_num(b)) {
        (Some(x), Some(y)) if numeric => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => {
            if let (Value::Bool(x), Value::Bool(y)) = (a, b) {
                x.cmp(y)
            } else if matches!(op, CmpOp::Eq | CmpOp::Ne) || !numeric {
                as_text(a).cmp(&as_text(b))
            } else {
                return Err(format!("cannot compare {a} with {b} using {op:?}"));
            }
        }
    };
    Ok(match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
        CmpOp::Match | CmpOp::NotMatch => unreachable!("handled above"),
    })
}

/// Parse and evaluate a substituted `when` expression.
pub fn eval_when(s: &str) -> Result<bool, String> {
    parse_when(s).map_err(|e| e.to_string())?.eval()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(succeeded: bool, failed: bool, skipped: bool) -> TaskResults {
        TaskResults {
            succeeded,
            failed,
            skipped,
            ..Default::default()
        }
    }

    #[test]
    fn depends_parses_and_evaluates() {
        let e = parse_depends("(A.Succeeded || B.Failed) && !C.Skipped").unwrap();
        assert_eq!(e.task_names(), vec!["A", "B", "C"]);
        let lookup = |a: TaskResults, b: TaskResults, c: TaskResults| {
            move |n: &str| match n {
                "A" => a,
                "B" => b,
                _ => c,
            }
        };
        let ok = res(true, false, false);
        let bad = res(false, true, false);
        let skip = res(false, false, true);
        assert!(e.eval(&lookup(ok, ok, ok)));
        assert!(e.eval(&lookup(bad, bad, ok)));
        assert!(!e.eval(&lookup(bad, ok, ok)));
        assert!(!e.eval(&lookup(ok, ok, skip)));
        // A bare name: Succeeded or Skipped, plus Failed with continueOn.
        let bare = parse_depends("a-1").unwrap();
        assert!(bare.eval(&|_| skip));
        assert!(!bare.eval(&|_| bad));
        assert!(bare.eval(&|_| TaskResults {
            continue_on_failed: true,
            ..bad
        }));
        assert!(!parse_depends("x.Daemoned").unwrap().eval(&|_| ok));
    }

    #[test]
    fn depends_syntax_errors_have_positions() {
        let cases = [
            ("A &&", 5, "a task name"),
            ("A.Succeded", 3, "a task result"),
            ("(A || B", 8, "\")\""),
            ("A & B", 3, "\"&&\""),
            ("A B", 3, "\"&&\", \"||\" or the end"),
            ("A.", 3, "a task result"),
        ];
        for (src, col, expected) in cases {
            let e = parse_depends(src).unwrap_err();
            assert_eq!(e.column, col, "{src}: {e}");
            assert!(e.expected.starts_with(expected), "{src}: {e}");
        }
    }

    #[test]
    fn when_table() {
        let cases = [
            ("heads == heads", Ok(true)),
            ("tails == heads", Ok(false)),
            ("\"a b\" == 'a b'", Ok(true)),
            ("5 > 3", Ok(true)),
            ("10 < 9", Ok(false)),
            ("0.5 >= 0.5 && 1 != 2", Ok(true)),
            ("!(1 == 1) || false", Ok(false)),
            ("true", Ok(true)),
            ("model-v2 =~ '^model-v[0-9]+$'", Ok(true)),
            ("abc !~ b", Ok(false)),
            ("\"12\" == 12", Ok(true)),
            ("1 <= 2 && (x == y || 3 == 3)", Ok(true)),
        ];
        for (src, want) in cases {
            assert_eq!(eval_when(src), want, "{src}");
        }
        for bad in ["", "1 ==", "(1 == 1", "a == 'b", "1 == 1 2"] {
            assert!(eval_when(bad).is_err(), "{bad}");
        }
        assert!(eval_when("hello")
            .unwrap_err()
            .contains("not true or false"));
        let e = parse_when("1 == ").unwrap_err();
        assert_eq!(e.column, 6);
    }
}
