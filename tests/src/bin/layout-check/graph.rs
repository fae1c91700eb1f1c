//! The module import graph of one crate's `src/`, and its circles.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::rust_files;
use crate::tokens::{tokens, Tok, Token};

type ModPath = Vec<String>;

/// One file's facts: what it imports, what it defines, what it re-exports.
#[derive(Debug, Default)]
struct ModuleFacts {
    file: PathBuf,
    /// Absolute paths this module refers to, with the line.
    uses: Vec<(ModPath, usize)>,
    /// Items defined at the top level.
    defines: BTreeSet<String>,
    /// `pub use a::b as c`: c → a::b (absolute).
    reexports: BTreeMap<String, ModPath>,
    /// `pub use a::*`: a (absolute).
    globs: Vec<ModPath>,
}

#[derive(Debug, Default)]
pub(crate) struct ImportGraph {
    modules: BTreeMap<ModPath, ModuleFacts>,
    /// (from, to) → the first line of `from` that makes the edge.
    edges: BTreeMap<(ModPath, ModPath), usize>,
}

fn module_path(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut segs: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(last) = segs.pop() {
        let stem = last.trim_end_matches(".rs");
        if !matches!(stem, "mod" | "lib" | "main") {
            segs.push(stem.to_string());
        }
    }
    segs
}

impl ImportGraph {
    pub(crate) fn read(src: &Path) -> Self {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let mut graph = ImportGraph::default();
        // main.rs is a separate (binary) crate root that reaches the library by name.
        files.retain(|f| !f.ends_with("main.rs") || f.parent() != Some(src));
        for f in &files {
            graph.modules.insert(
                module_path(src, f),
                ModuleFacts {
                    file: f.clone(),
                    ..Default::default()
                },
            );
        }
        let known: BTreeSet<ModPath> = graph.modules.keys().cloned().collect();
        for (path, facts) in graph.modules.iter_mut() {
            let text = std::fs::read_to_string(&facts.file).unwrap_or_default();
            scan_module(path, &tokens(&text), &known, facts);
        }
        let mut edges = BTreeMap::new();
        for (from, facts) in &graph.modules {
            for (used, line) in &facts.uses {
                let to = graph.resolve(used, 0);
                if &to != from {
                    edges.entry((from.clone(), to)).or_insert(*line);
                }
            }
        }
        graph.edges = edges;
        graph
    }

    /// The module that defines the item `path` names, following re-exports.
    fn resolve(&self, path: &[String], depth: usize) -> ModPath {
        let mut n = path.len();
        while n > 0 && !self.modules.contains_key(&path[..n]) {
            n -= 1;
        }
        let module = path[..n].to_vec();
        let Some(item) = path.get(n) else {
            return module;
        };
        let Some(facts) = self.modules.get(&module) else {
            return module;
        };
        if depth > 16 || facts.defines.contains(item) {
            return module;
        }
        if let Some(target) = facts.reexports.get(item) {
            let mut next = target.clone();
            next.extend_from_slice(&path[n + 1..]);
            return self.resolve(&next, depth + 1);
        }
        for glob in &facts.globs {
            let mut next = glob.clone();
            next.extend_from_slice(&path[n..]);
            let found = self.resolve(&next, depth + 1);
            if self
                .modules
                .get(&found)
                .is_some_and(|f| f.defines.contains(item) || f.reexports.contains_key(item))
            {
                return found;
            }
        }
        module
    }

    pub(crate) fn module_count(&self) -> usize {
        self.modules.len()
    }

    pub(crate) fn edge_count(&self) -> usize {
        self.edges.len()
    }

    pub(crate) fn print_edges(&self, krate: &str) {
        for ((from, to), line) in &self.edges {
            println!("{krate}: {} -> {} (line {line})", show(from), show(to));
        }
    }

    /// Every strongly connected component of more than one module, as a cycle through it.
    pub(crate) fn circles(&self) -> Vec<Vec<String>> {
        let nodes: Vec<&ModPath> = self.modules.keys().collect();
        let index: HashMap<&ModPath, usize> =
            nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut adj = vec![Vec::new(); nodes.len()];
        for (from, to) in self.edges.keys() {
            if let (Some(&a), Some(&b)) = (index.get(from), index.get(to)) {
                adj[a].push(b);
            }
        }
        let mut out = Vec::new();
        for comp in strongly_connected(&adj) {
            if comp.len() < 2 {
                continue;
            }
            let start = comp[0];
            let members: BTreeSet<usize> = comp.iter().copied().collect();
            let cycle = shortest_cycle(&adj, start, &members);
            let mut closed = cycle.clone();
            closed.push(start);
            let mut lines: Vec<String> = closed
                .windows(2)
                .map(|w| {
                    let (a, b) = (nodes[w[0]], nodes[w[1]]);
                    let line = self
                        .edges
                        .get(&(a.clone(), b.clone()))
                        .copied()
                        .unwrap_or(0);
                    format!("{} (line {line})", show(a))
                })
                .collect();
            lines.push(show(nodes[start]));
            if comp.len() > cycle.len() {
                let all: Vec<String> = comp.iter().map(|&m| show(nodes[m])).collect();
                lines.push(format!(
                    "(one circle of {} tangled modules: {})",
                    comp.len(),
                    all.join(", ")
                ));
            }
            out.push(lines);
        }
        out
    }
}

fn show(path: &ModPath) -> String {
    if path.is_empty() {
        "crate".into()
    } else {
        path.join("::")
    }
}

fn strongly_connected(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    // Tarjan's algorithm, iterative-free: the graphs are tens of nodes.
    struct State<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.adj[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(comp);
        }
    }
    let n = adj.len();
    let mut s = State {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

/// A shortest path `start → … → start` inside `members` (breadth first).
fn shortest_cycle(adj: &[Vec<usize>], start: usize, members: &BTreeSet<usize>) -> Vec<usize> {
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &adj[v] {
            if !members.contains(&w) {
                continue;
            }
            if w == start {
                let mut path = vec![v];
                let mut at = v;
                while at != start {
                    at = prev[&at];
                    path.push(at);
                }
                path.reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    vec![start]
}

const ITEM_KEYWORDS: &[&str] = &[
    "struct",
    "enum",
    "fn",
    "trait",
    "type",
    "const",
    "static",
    "mod",
    "union",
    "macro_rules",
];

/// Reads one module's uses, definitions and re-exports from its tokens.
fn scan_module(path: &ModPath, toks: &[Token], known: &BTreeSet<ModPath>, facts: &mut ModuleFacts) {
    let mut depth = 0usize;
    // Inline modules open at a brace depth: (name, depth inside, is a test module).
    let mut inline: Vec<(String, usize, bool)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let in_test = inline.iter().any(|m| m.2);
        let here: ModPath = path
            .iter()
            .cloned()
            .chain(inline.iter().map(|m| m.0.clone()))
            .collect();
        match &toks[i].tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|m| m.1 == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(kw) if kw == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) = (
                    toks.get(i + 1).map(|t| &t.tok),
                    toks.get(i + 2).map(|t| &t.tok),
                ) {
                    let test = is_cfg_test(toks, i);
                    depth += 1;
                    inline.push((name.clone(), depth, test || in_test));
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(kw) if kw == "use" => {
                let public = is_pub(toks, i);
                let end = toks[i..]
                    .iter()
                    .position(|t| t.tok == Tok::Punct(';'))
                    .map_or(toks.len(), |p| i + p);
                let mut leaves = Vec::new();
                use_tree(&toks[i + 1..end], Vec::new(), &mut leaves);
                for (segs, alias, glob) in leaves {
                    let Some(abs) = absolute(&here, &segs, known, true) else {
                        continue;
                    };
                    if !in_test {
                        facts.uses.push((abs.clone(), toks[i].line));
                    }
                    if public && depth == 0 && inline.is_empty() {
                        if glob {
                            facts.globs.push(abs);
                        } else if let Some(name) = alias.or_else(|| segs.last().cloned()) {
                            facts.reexports.insert(name, abs);
                        }
                    }
                }
                i = end + 1;
                continue;
            }
            Tok::Ident(kw) if ITEM_KEYWORDS.contains(&kw.as_str()) && depth == 0 => {
                if let Some(Tok::Ident(name)) = toks.get(i + 1).map(|t| &t.tok) {
                    facts.defines.insert(name.clone());
                }
            }
            Tok::Ident(kw)
                if matches!(kw.as_str(), "crate" | "super" | "self")
                    && toks.get(i + 1).map(|t| &t.tok) == Some(&Tok::Path)
                    && !in_test =>
            {
                let line = toks[i].line;
                let mut segs = vec![kw.clone()];
                let mut j = i + 1;
                while toks.get(j).map(|t| &t.tok) == Some(&Tok::Path) {
                    match toks.get(j + 1).map(|t| &t.tok) {
                        Some(Tok::Ident(s)) => {
                            segs.push(s.clone());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                if let Some(abs) = absolute(&here, &segs, known, false) {
                    facts.uses.push((abs, line));
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

fn is_pub(toks: &[Token], at: usize) -> bool {
    // `pub use`, `pub(crate) use`, `pub(super) use`, `pub(in path) use`.
    let mut j = at;
    while j > 0 {
        j -= 1;
        match &toks[j].tok {
            Tok::Ident(s) if s == "pub" => return true,
            Tok::Punct('(') | Tok::Punct(')') | Tok::Path => {}
            Tok::Ident(s) if matches!(s.as_str(), "crate" | "super" | "in" | "self") => {}
            _ => return false,
        }
    }
    false
}

fn is_cfg_test(toks: &[Token], at: usize) -> bool {
    // `#[cfg(test)] mod x {` — look back over `pub` and the attribute.
    let back: Vec<&Tok> = toks[at.saturating_sub(8)..at]
        .iter()
        .map(|t| &t.tok)
        .collect();
    back.windows(4).any(|w| {
        matches!(w, [Tok::Ident(a), Tok::Punct('('), Tok::Ident(b), Tok::Punct(')')] if a == "cfg" && b == "test")
    })
}

/// Expands a use tree into (segments, alias, is_glob) leaves.
fn use_tree(
    toks: &[Token],
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>, bool)>,
) {
    let mut segs = prefix;
    let mut i = 0;
    // A leading `::` (2015-style absolute path) is skipped.
    if toks.first().map(|t| &t.tok) == Some(&Tok::Path) {
        i = 1;
    }
    while i < toks.len() {
        match &toks[i].tok {
            Tok::Ident(s) if s == "as" => {
                let alias = match toks.get(i + 1).map(|t| &t.tok) {
                    Some(Tok::Ident(a)) if a != "_" => Some(a.clone()),
                    _ => None,
                };
                out.push((segs, alias, false));
                return;
            }
            Tok::Ident(s) if s == "self" && !segs.is_empty() => {
                // `a::{self}` names `a` itself.
            }
            Tok::Ident(s) => segs.push(s.clone()),
            Tok::Path => {}
            Tok::Punct('*') => {
                out.push((segs, None, true));
                return;
            }
            Tok::Punct('{') => {
                // Split the group at top-level commas.
                let mut depth = 0;
                let mut start = i + 1;
                for j in i + 1..toks.len() {
                    match toks[j].tok {
                        Tok::Punct('{') => depth += 1,
                        Tok::Punct('}') if depth == 0 => {
                            if start < j {
                                use_tree(&toks[start..j], segs.clone(), out);
                            }
                            return;
                        }
                        Tok::Punct('}') => depth -= 1,
                        Tok::Punct(',') if depth == 0 => {
                            if start < j {
                                use_tree(&toks[start..j], segs.clone(), out);
                            }
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
                return;
            }
            _ => {}
        }
        i += 1;
    }
    if !segs.is_empty() {
        out.push((segs, None, false));
    }
}

/// The absolute module path of `segs` as written in module `here`; `None` for another
/// crate's path (`std::…`, `tokio::…`).
fn absolute(
    here: &ModPath,
    segs: &[String],
    known: &BTreeSet<ModPath>,
    in_use: bool,
) -> Option<ModPath> {
    let first = segs.first()?;
    match first.as_str() {
        "crate" => Some(segs[1..].to_vec()),
        "self" => Some(here.iter().chain(&segs[1..]).cloned().collect()),
        "super" => {
            let mut base = here.clone();
            let mut rest = segs;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            Some(base.into_iter().chain(rest.iter().cloned()).collect())
        }
        // In a `use`, a bare first segment that names a child module is relative.
        _ if in_use => {
            let mut child = here.clone();
            child.push(first.clone());
            known
                .contains(&child)
                .then(|| here.iter().chain(segs).cloned().collect())
        }
        _ => None,
    }
}
