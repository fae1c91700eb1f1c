//! Writing figures: a section of bench/RESULTS.md between markers, and a JSON file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The bench/ folder of this workspace.
pub fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in
/// bench/RESULTS.md (appending the section if it is not there yet).
pub fn update_results(name: &str, body: &str) -> Result<()> {
    let path = bench_dir().join("RESULTS.md");
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmark results\n\nFigures from real runs, each with the command and the machine that produced it.\n\
         Each scenario is described in `bench/README.md`.\n"
            .to_string()
    });
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => text.replace_range(b..e + end.len(), &section),
        _ => {
            text.push('\n');
            text.push_str(&section);
            text.push('\n');
        }
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes `json` to bench/results/<name>-<stamp>.json and returns the path.
pub fn write_json(name: &str, stamp: &str, json: &str) -> Result<PathBuf> {
    let dir = bench_dir().join("results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}-{}.json", stamp.replace(':', "")));
    std::fs::write(&path, json)?;
    Ok(path)
}
