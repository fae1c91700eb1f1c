//! `layout-check`: the layout rules of the workspace, checked from the source text.
//!
//! ```text
//! cargo run -p christmas-tests --bin layout-check            # from the workspace root
//! cargo run -p christmas-tests --bin layout-check -- --graph # also print every import edge
//! cargo run -p christmas-tests --bin layout-check -- --root DIR # another checkout
//! ```
//!
//! 1. **No import circles** inside a crate's `src/` (`core/src`, `ingest-server/src`): each
//!    file is a module; `use crate::…`, `super::…`, `self::…`, a child module's name and
//!    inline `crate::…` paths are edges to the module that *defines* the item (a `pub use`
//!    re-export is followed to its source, so `crate::Result` is an edge to `error.rs`, not to
//!    `lib.rs`). Edges from `#[cfg(test)]` modules are left out: tests may look up. Every
//!    strongly connected component of more than one module is a circle, printed with the
//!    lines that close it.
//! 2. **No source file over 700 lines** in the workspace's crates, tests and examples.
//! 3. **No function over 120 lines** unless it says why: a `//` comment on the line above
//!    the `fn` (after its doc comment and attributes) or on the first line of its body.
//!
//! Exits 1 when a rule is broken. It reads text and runs nothing, so it needs no server.

mod graph;
mod lengths;
mod tokens;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use graph::ImportGraph;
use lengths::long_functions;

const MAX_FILE_LINES: usize = 700;
const CRATES: &[&str] = &["core/src", "ingest-server/src"];
const SOURCE_DIRS: &[&str] = &[
    "core",
    "ingest-server",
    "bench/src",
    "tests/src",
    "tests/it",
    "examples",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let show_graph = args.iter().any(|a| a == "--graph");
    let root = args
        .iter()
        .position(|a| a == "--root")
        .and_then(|i| args.get(i + 1))
        .map_or_else(workspace_root, PathBuf::from);
    let mut broken = 0usize;
    for krate in CRATES {
        let graph = ImportGraph::read(&root.join(krate));
        if show_graph {
            graph.print_edges(krate);
        }
        let circles = graph.circles();
        println!(
            "{krate}: {} modules, {} import edges, {} circles",
            graph.module_count(),
            graph.edge_count(),
            circles.len()
        );
        for circle in circles {
            broken += 1;
            let (path, members): (Vec<String>, Vec<String>) =
                circle.into_iter().partition(|l| !l.starts_with('('));
            println!("  circle: {}", path.join(" -> "));
            for m in members {
                println!("    {m}");
            }
        }
    }
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let shown = file.strip_prefix(&root).unwrap_or(file).display();
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            broken += 1;
            println!("{shown}: {lines} lines (over {MAX_FILE_LINES})");
        }
        for f in long_functions(&text) {
            broken += 1;
            println!(
                "{shown}:{}: fn {} is {} lines (over 120) and does not say why",
                f.line, f.name, f.lines
            );
        }
    }
    println!("{} files checked, {broken} problems", files.len());
    if broken == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

pub(crate) fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}
