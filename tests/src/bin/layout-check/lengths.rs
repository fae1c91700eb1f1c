//! Functions too long to read at once, unless they say why.

use crate::tokens::{tokens, Tok};

const MAX_FN_LINES: usize = 120;

#[derive(Debug)]
pub(crate) struct LongFn {
    pub(crate) name: String,
    pub(crate) line: usize,
    pub(crate) lines: usize,
}

/// Functions over [`MAX_FN_LINES`] lines that do not say why.
pub(crate) fn long_functions(src: &str) -> Vec<LongFn> {
    let toks = tokens(src);
    let lines: Vec<&str> = src.lines().collect();
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if t.tok != Tok::Ident("fn".into()) {
            continue;
        }
        let Some(Tok::Ident(name)) = toks.get(i + 1).map(|t| &t.tok) else {
            continue;
        };
        // The body starts at the first `{` outside parentheses/brackets; a `;` first means a
        // declaration without a body.
        let mut nest = 0i32;
        let mut open = None;
        for (j, u) in toks.iter().enumerate().skip(i + 2) {
            match u.tok {
                Tok::Punct('(') | Tok::Punct('[') | Tok::Punct('<') => nest += 1,
                Tok::Punct(')') | Tok::Punct(']') | Tok::Punct('>') => nest -= 1,
                Tok::Punct(';') if nest <= 0 => break,
                Tok::Punct('{') if nest <= 0 => {
                    open = Some(j);
                    break;
                }
                _ => {}
            }
        }
        let Some(open) = open else { continue };
        let mut depth = 0;
        let mut close = None;
        for (j, u) in toks.iter().enumerate().skip(open) {
            match u.tok {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(j);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { continue };
        let (first, last) = (t.line, toks[close].line);
        let len = last + 1 - first;
        if len <= MAX_FN_LINES || says_why(&lines, first, toks[open].line) {
            continue;
        }
        out.push(LongFn {
            name: name.clone(),
            line: first,
            lines: len,
        });
    }
    out
}

/// A `//` comment (not `///`) just above the signature (over attributes and doc comments)
/// or as the first line of the body.
fn says_why(lines: &[&str], fn_line: usize, open_line: usize) -> bool {
    let is_reason = |l: &str| {
        let l = l.trim_start();
        l.starts_with("//") && !l.starts_with("///") && !l.starts_with("//!")
    };
    if lines.get(open_line).is_some_and(|l| is_reason(l)) {
        return true;
    }
    let mut at = fn_line.saturating_sub(1);
    while at > 0 {
        at -= 1;
        let l = lines[at].trim_start();
        if is_reason(l) {
            return true;
        }
        if !(l.starts_with("///") || l.starts_with("#[") || l.starts_with("#![")) {
            return false;
        }
    }
    false
}
