//! A file's text to what the checks need: child modules, the paths it names,
//! the names its `use` declarations bind, and its lines of non-test code.

use std::collections::BTreeMap;

use crate::paths::{parse_path, parse_use, UseTree};
use crate::token::{tokenize, Token};

/// What one file declares and names, test items left out.
#[derive(Debug, Default)]
pub struct Parsed {
    pub children: Vec<String>,
    /// Paths that are dependencies: private `use` trees and paths in code.
    pub uses: Vec<UseTree>,
    /// Every name a `use` binds (public or not), for following re-exports.
    pub bindings: BTreeMap<String, UseTree>,
    pub code_lines: usize,
}

pub fn parse_file(text: &str) -> Parsed {
    let blank = blank_comments_and_literals(text);
    let (code, test_lines) = drop_test_items(&blank);
    let total = text.lines().count();
    let tokens = tokenize(&code);
    let mut p = Parsed {
        code_lines: total.saturating_sub(test_lines),
        ..Parsed::default()
    };
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Ident(k) if k == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Punct(';'))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    p.children.push(name.clone());
                }
                i += 1;
            }
            Token::Ident(k) if k == "use" => {
                let public = is_public(&tokens, i);
                i += 1;
                for (name, tree) in parse_use(&tokens, &mut i) {
                    if let Some(name) = name {
                        p.bindings.insert(name, tree.clone());
                    }
                    if !public {
                        p.uses.push(tree);
                    }
                }
            }
            Token::Ident(_)
                if tokens.get(i + 1) == Some(&Token::PathSep)
                    && (i == 0 || tokens[i - 1] != Token::PathSep) =>
            {
                let path = parse_path(&tokens, &mut i);
                p.uses.push(path);
            }
            _ => i += 1,
        }
    }
    p
}

/// Whether the `use` at `tokens[i]` is preceded by `pub` or `pub(...)`.
fn is_public(tokens: &[Token], i: usize) -> bool {
    let pubkw = Token::Ident("pub".into());
    if i >= 1 && tokens[i - 1] == pubkw {
        return true;
    }
    if i >= 1 && tokens[i - 1] == Token::Punct(')') {
        // pub(crate), pub(super), pub(in path): look back for `pub (`.
        let mut j = i - 1;
        let mut steps = 0;
        while j > 0 && steps < 8 {
            j -= 1;
            steps += 1;
            if tokens[j] == Token::Punct('(') {
                return j >= 1 && tokens[j - 1] == pubkw;
            }
        }
    }
    false
}

/// The text with comments, strings and char literals replaced by spaces;
/// newlines are kept so that line numbers stay.
fn blank_comments_and_literals(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&b, i) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < b.len() {
                if b[j] == '"' && (0..hashes).all(|h| b.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &b[i..j.min(b.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != '"' {
                j += if b[j] == '\\' { 2 } else { 1 };
            }
            for &ch in &b[i..(j + 1).min(b.len())] {
                out.push(blank(ch));
            }
            i = j + 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a).
            let end = if next == Some('\\') {
                (i + 2..b.len().min(i + 12)).find(|&j| b[j] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    for _ in i..=e {
                        out.push(' ');
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// The code with every `#[cfg(test)]` item blanked, and how many lines those
/// items took.
fn drop_test_items(code: &str) -> (String, usize) {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut test_lines = 0;
    let mut rest = code;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let len = item_len(item, MARK.len());
        let span = &item[..len];
        test_lines += span.matches('\n').count() + 1;
        // A test item that ends mid-line leaves the rest of that line as code.
        if span.ends_with('\n') {
            test_lines -= 1;
        }
        out.extend(span.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
        rest = &item[len..];
    }
    out.push_str(rest);
    (out, test_lines)
}

/// The length of the item that starts at `item` (its attribute included):
/// up to its `;` or the `}` that closes its first brace.
fn item_len(item: &str, skip: usize) -> usize {
    let mut depth = 0usize;
    let mut in_attr = 0usize;
    for (k, c) in item.char_indices().skip(skip) {
        match c {
            '#' if depth == 0 && item[k..].starts_with("#[") => in_attr += 1,
            '[' if in_attr > 0 => {}
            ']' if in_attr > 0 && depth == 0 => in_attr -= 1,
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return k + 1;
                }
            }
            ';' if depth == 0 && in_attr == 0 => return k + 1,
            _ => {}
        }
    }
    item.len()
}
