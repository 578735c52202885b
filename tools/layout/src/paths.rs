//! Paths and `use` trees read from a token stream.

use crate::token::Token;

/// One path a file names, as its segments (`["crate", "state", "State"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseTree {
    pub segments: Vec<String>,
}

/// A `use` declaration's leaves: (the name it binds, the full path).
/// A glob (`a::*`) gives the module's path and no name.
pub fn parse_use(tokens: &[Token], i: &mut usize) -> Vec<(Option<String>, UseTree)> {
    let mut out = Vec::new();
    tree(tokens, i, &mut Vec::new(), &mut out);
    out
}

fn tree(
    tokens: &[Token],
    i: &mut usize,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Option<String>, UseTree)>,
) {
    let depth = prefix.len();
    if tokens.get(*i) == Some(&Token::PathSep) {
        *i += 1;
    }
    loop {
        match tokens.get(*i) {
            Some(Token::Punct('{')) => {
                *i += 1;
                group(tokens, i, prefix, out);
                break;
            }
            Some(Token::Punct('*')) => {
                *i += 1;
                out.push((
                    None,
                    UseTree {
                        segments: prefix.clone(),
                    },
                ));
                break;
            }
            Some(Token::Ident(name)) => {
                *i += 1;
                if tokens.get(*i) == Some(&Token::PathSep) {
                    *i += 1;
                    prefix.push(name.clone());
                    continue;
                }
                let mut bound = name.clone();
                let mut segments = prefix.clone();
                if name != "self" {
                    segments.push(name.clone());
                } else if let Some(last) = prefix.last() {
                    bound = last.clone();
                }
                if tokens.get(*i) == Some(&Token::Ident("as".into())) {
                    if let Some(Token::Ident(alias)) = tokens.get(*i + 1) {
                        bound = alias.clone();
                    }
                    *i += 2;
                }
                out.push((Some(bound), UseTree { segments }));
                break;
            }
            _ => break,
        }
    }
    prefix.truncate(depth);
}

fn group(
    tokens: &[Token],
    i: &mut usize,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Option<String>, UseTree)>,
) {
    // Bounded by the token count: each turn consumes at least one token.
    while *i < tokens.len() {
        match tokens.get(*i) {
            Some(Token::Punct('}')) => {
                *i += 1;
                return;
            }
            Some(Token::Punct(',')) => *i += 1,
            _ => {
                let before = *i;
                tree(tokens, i, prefix, out);
                if *i == before {
                    *i += 1;
                }
            }
        }
    }
}

/// A path in code starting at `tokens[*i]` (an identifier followed by `::`).
pub fn parse_path(tokens: &[Token], i: &mut usize) -> UseTree {
    let mut segments = Vec::new();
    while let Some(Token::Ident(name)) = tokens.get(*i) {
        segments.push(name.clone());
        *i += 1;
        if tokens.get(*i) == Some(&Token::PathSep) {
            *i += 1;
        } else {
            break;
        }
    }
    UseTree { segments }
}
