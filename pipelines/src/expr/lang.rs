//! The expr-lang subset of `{{=...}}` and `valueFrom.expression`: lexing
//! and parsing into an [`Ast`].
//!
//! Literals (numbers, `'...'`/`"..."` strings, `true`, `false`, `nil`,
//! `[a, b]`, `{k: v}`), names and member access (`inputs.parameters.x`,
//! `tasks['flip-coin'].outputs.result`, `list[0]`), calls (`asInt(x)`,
//! `sprig.trim(s)`), unary `!`/`not`/`-`, `**`, `*` `/` `%`, `+` `-`,
//! comparisons and `in`/`matches`/`contains`/`startsWith`/`endsWith`,
//! `&&`/`and`, `||`/`or`, `??` and `c ? a : b`, lowest last.

use super::SyntaxError;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Ast {
    Num(f64, bool),
    Str(String),
    Bool(bool),
    Nil,
    Name(String),
    /// `x.name` or `x[index]`.
    Member(Box<Ast>, Box<Ast>),
    /// A function by its full name (`asInt`, `sprig.trim`) and arguments.
    Call(String, Vec<Ast>),
    Unary(&'static str, Box<Ast>),
    Binary(&'static str, Box<Ast>, Box<Ast>),
    Cond(Box<Ast>, Box<Ast>, Box<Ast>),
    Array(Vec<Ast>),
    Map(Vec<(String, Ast)>),
}

impl Ast {
    /// Every function called, by full name.
    pub fn functions(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.walk(&mut |a| {
            if let Ast::Call(f, _) = a {
                out.push(f.clone());
            }
        });
        out
    }

    /// Every variable read, as a dotted path as far as it is written with
    /// names and string keys (`tasks['a-b'].outputs.result` is
    /// `tasks.a-b.outputs.result`).
    pub fn variables(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_vars(&mut out);
        out
    }

    fn collect_vars(&self, out: &mut Vec<String>) {
        if let Some(p) = self.path() {
            out.push(p);
            return;
        }
        match self {
            Ast::Member(a, b) => {
                a.collect_vars(out);
                b.collect_vars(out);
            }
            Ast::Call(_, args) | Ast::Array(args) => args.iter().for_each(|a| a.collect_vars(out)),
            Ast::Unary(_, a) => a.collect_vars(out),
            Ast::Binary(_, a, b) => {
                a.collect_vars(out);
                b.collect_vars(out);
            }
            Ast::Cond(a, b, c) => {
                a.collect_vars(out);
                b.collect_vars(out);
                c.collect_vars(out);
            }
            Ast::Map(kv) => kv.iter().for_each(|(_, v)| v.collect_vars(out)),
            _ => {}
        }
    }

    /// `a.b['c']` as `a.b.c`.
    fn path(&self) -> Option<String> {
        match self {
            Ast::Name(n) => Some(n.clone()),
            Ast::Member(a, b) => match b.as_ref() {
                Ast::Str(k) => Some(format!("{}.{k}", a.path()?)),
                _ => None,
            },
            _ => None,
        }
    }

    fn walk(&self, f: &mut dyn FnMut(&Ast)) {
        f(self);
        match self {
            Ast::Member(a, b) | Ast::Binary(_, a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Ast::Call(_, args) | Ast::Array(args) => args.iter().for_each(|a| a.walk(f)),
            Ast::Unary(_, a) => a.walk(f),
            Ast::Cond(a, b, c) => {
                a.walk(f);
                b.walk(f);
                c.walk(f);
            }
            Ast::Map(kv) => kv.iter().for_each(|(_, v)| v.walk(f)),
            _ => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64, bool),
    Str(String),
    Name(String),
    Op(&'static str),
    End,
}

const OPS: [&str; 28] = [
    "**", "==", "!=", "<=", ">=", "&&", "||", "??", "?.", "<", ">", "+", "-", "*", "/", "%", "!",
    "?", ":", ".", ",", "(", ")", "[", "]", "{", "}", "^",
];

fn lex(s: &str) -> Result<Vec<(usize, Tok)>, SyntaxError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            let mut int = true;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '_') {
                i += 1;
            }
            if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                int = false;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                int = false;
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            let n = text.parse::<f64>().map_err(|_| SyntaxError {
                column: col,
                expected: "a number".into(),
                found: format!("{text:?}"),
            })?;
            out.push((col, Tok::Num(n, int)));
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            let mut j = i + 1;
            let mut text = String::new();
            while j < chars.len() && chars[j] != c {
                if chars[j] == '\\' && c != '`' && j + 1 < chars.len() {
                    j += 1;
                    text.push(match chars[j] {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        other => other,
                    });
                } else {
                    text.push(chars[j]);
                }
                j += 1;
            }
            if j >= chars.len() {
                return Err(SyntaxError {
                    column: col,
                    expected: format!("a closing {c}"),
                    found: "the end".into(),
                });
            }
            out.push((col, Tok::Str(text)));
            i = j + 1;
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            out.push((col, Tok::Name(chars[start..i].iter().collect())));
            continue;
        }
        let rest: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
            return Err(SyntaxError {
                column: col,
                expected: "a value or an operator".into(),
                found: format!("{c:?}"),
            });
        };
        out.push((col, Tok::Op(op)));
        i += op.chars().count();
    }
    out.push((chars.len() + 1, Tok::End));
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(n, _) => n.to_string(),
        Tok::Str(s) => format!("{s:?}"),
        Tok::Name(n) => format!("{n:?}"),
        Tok::Op(o) => format!("\"{o}\""),
        Tok::End => "the end".into(),
    }
}

/// Binary operators by precedence level, lowest first.
const LEVELS: [&[&str]; 6] = [
    &["||", "or"],
    &["&&", "and"],
    &[
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "in",
        "matches",
        "contains",
        "startsWith",
        "endsWith",
    ],
    &["+", "-"],
    &["*", "/", "%"],
    &["**", "^"],
];

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].1
    }
    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }
    fn err(&self, expected: &str) -> SyntaxError {
        let (col, t) = &self.toks[self.pos.min(self.toks.len() - 1)];
        SyntaxError {
            column: *col,
            expected: expected.into(),
            found: describe(t),
        }
    }
    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }
    fn expect(&mut self, op: &str) -> Result<(), SyntaxError> {
        if self.is_op(op) {
            self.bump();
            Ok(())
        } else {
            Err(self.err(&format!("\"{op}\"")))
        }
    }

    fn ternary(&mut self) -> Result<Ast, SyntaxError> {
        let mut cond = self.binary(0)?;
        while self.is_op("??") {
            self.bump();
            let b = self.binary(0)?;
            cond = Ast::Binary("??", Box::new(cond), Box::new(b));
        }
        if !self.is_op("?") {
            return Ok(cond);
        }
        self.bump();
        let a = self.ternary()?;
        self.expect(":")?;
        let b = self.ternary()?;
        Ok(Ast::Cond(Box::new(cond), Box::new(a), Box::new(b)))
    }

    /// The operator at the current token if it is one of `level`'s
    /// (`not in` is read as one operator).
    fn level_op(&mut self, level: usize) -> Option<&'static str> {
        let ops = LEVELS[level];
        let found = match self.peek() {
            Tok::Op(o) => ops.iter().find(|x| *x == o).copied(),
            Tok::Name(n) => ops.iter().find(|x| *x == n).copied(),
            _ => None,
        };
        if found.is_none() && level == 2 {
            if let (Tok::Name(n), Some((_, Tok::Name(m)))) =
                (self.peek(), self.toks.get(self.pos + 1))
            {
                if n == "not" && m == "in" {
                    self.bump();
                    return Some("not in");
                }
            }
        }
        found
    }

    fn binary(&mut self, level: usize) -> Result<Ast, SyntaxError> {
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        while let Some(op) = self.level_op(level) {
            self.bump();
            let right = self.binary(level + 1)?;
            left = Ast::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Ast, SyntaxError> {
        let op = match self.peek() {
            Tok::Op("!") => Some("!"),
            Tok::Name(n) if n == "not" => Some("!"),
            Tok::Op("-") => Some("-"),
            Tok::Op("+") => Some("+"),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            return Ok(Ast::Unary(op, Box::new(self.unary()?)));
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Ast, SyntaxError> {
        let mut e = self.primary()?;
        loop {
            if self.is_op(".") || self.is_op("?.") {
                self.bump();
                match self.bump() {
                    Tok::Name(n) => e = Ast::Member(Box::new(e), Box::new(Ast::Str(n))),
                    _ => {
                        self.pos -= 1;
                        return Err(self.err("a field name"));
                    }
                }
            } else if self.is_op("[") {
                self.bump();
                let i = self.ternary()?;
                self.expect("]")?;
                e = Ast::Member(Box::new(e), Box::new(i));
            } else if self.is_op("(") {
                let Some(name) = callee(&e) else {
                    return Err(self.err("an operator (only functions can be called)"));
                };
                self.bump();
                let args = self.list(")")?;
                e = Ast::Call(name, args);
            } else {
                return Ok(e);
            }
        }
    }

    /// Comma-separated expressions up to `close`.
    fn list(&mut self, close: &str) -> Result<Vec<Ast>, SyntaxError> {
        let mut args = Vec::new();
        while !self.is_op(close) {
            args.push(self.ternary()?);
            if !self.is_op(",") {
                break;
            }
            self.bump();
        }
        self.expect(close)?;
        Ok(args)
    }

    fn primary(&mut self) -> Result<Ast, SyntaxError> {
        match self.bump() {
            Tok::Num(n, int) => Ok(Ast::Num(n, int)),
            Tok::Str(s) => Ok(Ast::Str(s)),
            Tok::Name(n) => Ok(match n.as_str() {
                "true" => Ast::Bool(true),
                "false" => Ast::Bool(false),
                "nil" => Ast::Nil,
                _ => Ast::Name(n),
            }),
            Tok::Op("(") => {
                let e = self.ternary()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Op("[") => Ok(Ast::Array(self.list("]")?)),
            Tok::Op("{") => {
                let mut kv = Vec::new();
                while !self.is_op("}") {
                    let k = match self.bump() {
                        Tok::Name(k) | Tok::Str(k) => k,
                        _ => {
                            self.pos -= 1;
                            return Err(self.err("a key"));
                        }
                    };
                    self.expect(":")?;
                    kv.push((k, self.ternary()?));
                    if !self.is_op(",") {
                        break;
                    }
                    self.bump();
                }
                self.expect("}")?;
                Ok(Ast::Map(kv))
            }
            _ => {
                self.pos -= 1;
                Err(self.err("a value, a name, \"(\" or \"!\""))
            }
        }
    }
}

/// The name a call is made by: `f` or `sprig.f`.
fn callee(e: &Ast) -> Option<String> {
    match e {
        Ast::Name(n) => Some(n.clone()),
        Ast::Member(a, b) => match (a.as_ref(), b.as_ref()) {
            (Ast::Name(ns), Ast::Str(f)) => Some(format!("{ns}.{f}")),
            _ => None,
        },
        _ => None,
    }
}

/// Parse an expression.
pub fn parse_expr(s: &str) -> Result<Ast, SyntaxError> {
    let mut p = Parser {
        toks: lex(s)?,
        pos: 0,
    };
    if *p.peek() == Tok::End {
        return Err(p.err("an expression"));
    }
    let e = p.ternary()?;
    if *p.peek() != Tok::End {
        return Err(p.err("an operator or the end"));
    }
    Ok(e)
}
