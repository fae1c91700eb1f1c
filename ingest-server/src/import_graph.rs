//! The crate's modules import each other without a circle: a module never imports, directly
//! or through others, a module that imports it back. Checked on the source text, so it
//! holds for every `crate::` path, not only `use` lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`http::auth`; `""` for lib.rs) → its source without the test module.
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("src entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let mut module = prefix.to_vec();
        if path.is_dir() {
            module.push(name.to_string());
            modules(&path, &module, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || name == "main" {
            continue;
        }
        if name != "mod" && name != "lib" {
            module.push(name.to_string());
        }
        let text = std::fs::read_to_string(&path).expect("source is UTF-8");
        // Tests sit at the end of a file and may reach anywhere.
        let shipped = text.split("#[cfg(test)]").next().unwrap_or_default();
        out.insert(module.join("::"), shipped.to_string());
    }
}

/// The longest known module that `path` (`http::reply::error`) names; the crate root (`""`)
/// for an item only the root re-exports.
fn resolve<'a>(known: &'a BTreeMap<String, String>, path: &str) -> Option<&'a String> {
    let mut parts: Vec<&str> = path.split("::").collect();
    loop {
        if let Some((name, _)) = known.get_key_value(&parts.join("::")) {
            return Some(name);
        }
        parts.pop()?;
    }
}

/// Each module → the modules it declares and those it names through `crate::` paths
/// (`use crate::{a, b::c}` too).
fn imports(known: &BTreeMap<String, String>) -> BTreeMap<&String, BTreeSet<&String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    known
        .iter()
        .map(|(module, text)| {
            let mut to = BTreeSet::new();
            // A parent imports the children it declares (`pub mod reply;`), so a child that
            // reaches back up through the parent closes a circle.
            for line in text.lines() {
                let line = line.trim().trim_start_matches("pub ");
                if let Some(child) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) {
                    let child = match module.as_str() {
                        "" => child.to_string(),
                        parent => format!("{parent}::{child}"),
                    };
                    if let Some(target) = resolve(known, &child) {
                        to.insert(target);
                    }
                }
            }
            for rest in text.split("crate::").skip(1) {
                let paths: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group
                        .split('}')
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .collect(),
                    None => vec![rest],
                };
                for p in paths {
                    let p = p.trim().trim_start_matches("self");
                    let p = p[..p.find(|c| !ident(c)).unwrap_or(p.len())].trim_end_matches(':');
                    if let Some(target) = resolve(known, p).filter(|t| *t != module) {
                        to.insert(target);
                    }
                }
            }
            (module, to)
        })
        .collect()
}

#[test]
fn modules_import_no_circle() {
    let mut known = BTreeMap::new();
    modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut known,
    );
    let graph = imports(&known);
    assert!(graph[&"http::ticks".to_string()].contains(&"state".to_string()));
    for start in graph.keys() {
        // Depth-first from `start`; reaching `start` again is a circle.
        let mut stack = vec![(*start, vec![*start])];
        let mut seen = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in &graph[at] {
                assert_ne!(next, start, "import circle: {trail:?} -> {next}");
                if seen.insert(*next) {
                    let mut longer = trail.clone();
                    longer.push(*next);
                    stack.push((*next, longer));
                }
            }
        }
    }
}
