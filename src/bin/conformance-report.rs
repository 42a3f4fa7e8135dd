//! `conformance-report`: per stage, how many conformance cases pass, for the
//! book's comparison page.
//!
//! ```text
//! cargo run --bin conformance-report              # runs the suite, then prints the table
//! cargo run --bin conformance-report -- --release # the suite against release builds
//! cargo run --bin conformance-report -- --from DIR
//! ```
//!
//! The stages are the ones `tests/conformance/main.rs` runs (one source of
//! truth): the suite is run with `WSGI_CONFORMANCE_REPORT=DIR`, and each
//! stage writes `DIR/<stage>.json` with one verdict per case, the
//! hand-written cases and the raw-request corpus of `tests/corpus/` alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Parser;
use serde_json::Value;

/// Print, per stage, the conformance cases passed and failed.
#[derive(Parser, Debug)]
#[command(name = "conformance-report")]
struct Args {
    /// Print the results already in DIR instead of running the suite.
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,

    /// Build and test with the release profile.
    #[arg(long)]
    release: bool,

    /// List every failed case with its reason, and every by-design case.
    #[arg(short, long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dir = match &args.from {
        Some(dir) => dir.clone(),
        None => match run_suite(args.release) {
            Ok(dir) => dir,
            Err(e) => {
                eprintln!("conformance-report: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    match read_results(&dir) {
        Ok(stages) if stages.is_empty() => {
            eprintln!(
                "conformance-report: no results in {} (did the suite run?)",
                dir.display()
            );
            ExitCode::FAILURE
        }
        Ok(stages) => {
            print!("{}", render(&stages, args.verbose));
            let failed = stages.iter().any(|s| s.count("fail") > 0);
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("conformance-report: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `cargo test --test conformance` with the report directory set;
/// the suite's own output goes to stderr.
fn run_suite(release: bool) -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("wsgi-course-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("test")
        .arg("-q")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["--test", "conformance"]);
    if release {
        cmd.arg("--release");
    }
    cmd.env("WSGI_CONFORMANCE_REPORT", &dir)
        .env("WSGI_HARNESS_QUIET", "1")
        .stdout(std::process::Stdio::null());
    eprintln!(
        "running the conformance suite (results in {}) ...",
        dir.display()
    );
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        eprintln!("(the suite reported failures; the table shows them)");
    }
    Ok(dir)
}

/// One stage's verdicts.
struct Stage {
    name: String,
    /// (case, verdict, detail) in the suite's order.
    results: Vec<(String, String, String)>,
}

impl Stage {
    fn count(&self, verdict: &str) -> usize {
        self.results.iter().filter(|(_, v, _)| v == verdict).count()
    }
}

fn read_results(dir: &Path) -> Result<Vec<Stage>, String> {
    let mut stages = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let field = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
        let results = doc["results"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| (field(r, "case"), field(r, "verdict"), field(r, "detail")))
                    .collect()
            })
            .unwrap_or_default();
        stages.push(Stage {
            name: field(&doc, "stage"),
            results,
        });
    }
    Ok(stages)
}

/// The Markdown table, then (verbose) the details.
fn render(stages: &[Stage], verbose: bool) -> String {
    let mut out = String::new();
    out.push_str("| stage | cases | passed | passed by design | known failures | failed |\n");
    out.push_str("|---|--:|--:|--:|--:|--:|\n");
    for s in stages {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            s.name,
            s.results.len(),
            s.count("pass"),
            s.count("by-design"),
            s.count("known-failure"),
            s.count("fail"),
        ));
    }
    // Which by-design differences each stage shows, by name (the notes in
    // tests/corpus/README.md explain each), and what failed.
    out.push('\n');
    for s in stages {
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, v, detail) in &s.results {
            if v == "by-design" {
                *names.entry(detail.as_str()).or_default() += 1;
            }
        }
        let mut lines = Vec::new();
        if !names.is_empty() {
            let list: Vec<String> = names.iter().map(|(n, c)| format!("{n} ({c})")).collect();
            lines.push(format!("  - by design: {}\n", list.join(", ")));
        }
        for (case, v, detail) in &s.results {
            let show = match v.as_str() {
                "fail" | "known-failure" => true,
                "by-design" => verbose,
                _ => false,
            };
            if show {
                let detail = if verbose || detail.len() <= 160 {
                    detail.clone()
                } else {
                    let mut end = 160;
                    while !detail.is_char_boundary(end) {
                        end -= 1;
                    }
                    format!("{}...", &detail[..end])
                };
                lines.push(format!("  - {v}: {case}: {detail}\n"));
            }
        }
        if !lines.is_empty() {
            out.push_str(&format!("- {}\n", s.name));
            out.extend(lines);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_table_and_the_failures() {
        let stage = Stage {
            name: "stage9".into(),
            results: vec![
                ("a".into(), "pass".into(), String::new()),
                ("b".into(), "by-design".into(), "nginx-x".into()),
                ("c".into(), "fail".into(), "expected 400, got 200".into()),
                ("d".into(), "known-failure".into(), "why".into()),
            ],
        };
        let text = render(&[stage], false);
        assert!(text.contains("| stage9 | 4 | 1 | 1 | 1 | 1 |"), "{text}");
        assert!(
            text.contains("- stage9\n  - by design: nginx-x (1)\n"),
            "{text}"
        );
        assert!(
            text.contains("  - fail: c: expected 400, got 200"),
            "{text}"
        );
        assert!(text.contains("  - known-failure: d: why"), "{text}");
    }
}
