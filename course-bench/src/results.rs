//! The results file, `target/bench-results.json`: the machine, the
//! settings, every server and every summary, rewritten after each
//! benchmark; and what `bench-report` reads back from it and from
//! criterion's own files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use wsgi_course::server::repo_root;

use crate::idle::IdleMeasurement;
use crate::measurement::Summary;
use crate::servers::{Family, Running, ServerSpec, Skip};
use crate::{Settings, WORKLOADS, Workload};

// ---- the results file ---------------------------------------------------

/// The machine, for the results page: numbers mean little without it.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| std::env::consts::OS.into());
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.version.split()[0])"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "cores": cores,
        "cpu": cpu,
        "kernel": kernel,
        "os": std::env::consts::OS,
        "python": python,
        "date": utc_date(now),
        "unix_time": now,
    })
}

/// `2026-11-21 10:31 UTC`.
pub fn utc_date(unix: u64) -> String {
    let c =
        http_codec::response::civil(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        c.year, c.month, c.day, c.hour, c.minute
    )
}

/// Where cargo puts its output: `CARGO_TARGET_DIR`, or `target/` in the
/// repository.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                repo_root().join(p)
            }
        })
        .unwrap_or_else(|| repo_root().join("target"))
}

/// `target/bench-results.json`.
pub fn results_path() -> PathBuf {
    target_dir().join("bench-results.json")
}

/// The summary file of one run of `benches/stages.rs`, rewritten after every
/// benchmark so an interrupted run keeps what it measured.
pub struct ResultsFile {
    path: PathBuf,
    doc: Value,
}

impl ResultsFile {
    pub fn new(settings: &Settings) -> ResultsFile {
        ResultsFile {
            path: results_path(),
            doc: json!({
                "machine": machine(),
                "settings": settings.to_json(),
                "workloads": WORKLOADS.iter().map(|w| json!({
                    "id": w.id, "method": w.method, "path": w.path, "body": w.body, "about": w.about,
                    "unit": w.unit(),
                })).collect::<Vec<_>>(),
                "servers": [],
                "skipped": [],
                "results": [],
                "idle": [],
            }),
        }
    }

    pub fn add_server(&mut self, spec: &ServerSpec, settings: &Settings, running: &Running) {
        push(
            &mut self.doc["servers"],
            json!({
                "id": spec.id,
                "title": spec.title,
                "family": match spec.family { Family::Course => "course", Family::Peer => "peer" },
                "shape": spec.shape(settings),
                "keeps_alive": running.keeps_alive,
                "version": running.version,
            }),
        );
        self.save();
    }

    pub fn add_skip(&mut self, spec: &ServerSpec, skip: &Skip) {
        push(
            &mut self.doc["skipped"],
            json!({ "id": spec.id, "title": spec.title, "reason": skip.reason, "install": skip.install }),
        );
        self.save();
    }

    pub fn add_result(&mut self, workload: &Workload, spec: &ServerSpec, summary: &Summary) {
        let mut row = summary.to_json();
        row["workload"] = workload.id.into();
        row["server"] = spec.id.into();
        push(&mut self.doc["results"], row);
        self.save();
    }

    /// One server's idle keep-alive connections ([`crate::idle`]).
    pub fn add_idle(&mut self, spec: &ServerSpec, idle: &IdleMeasurement) {
        let mut row = idle.to_json();
        row["server"] = spec.id.into();
        push(&mut self.doc["idle"], row);
        self.save();
    }

    fn save(&self) {
        let text = serde_json::to_string_pretty(&self.doc).unwrap_or_default();
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(&self.path, text) {
            eprintln!("cannot write {}: {e}", self.path.display());
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn push(array: &mut Value, item: Value) {
    if let Some(a) = array.as_array_mut() {
        a.push(item);
    }
}

/// Criterion's estimate of one benchmark: nanoseconds per iteration (the
/// slope where criterion fitted one, else the mean), with its confidence
/// interval.
pub fn criterion_estimate(group: &str, function: &str) -> Option<(f64, f64, f64)> {
    let path = target_dir()
        .join("criterion")
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let pick = |k: &str| -> Option<(f64, f64, f64)> {
        let e = v.get(k)?;
        Some((
            e["point_estimate"].as_f64()?,
            e["confidence_interval"]["lower_bound"].as_f64()?,
            e["confidence_interval"]["upper_bound"].as_f64()?,
        ))
    };
    pick("slope").or_else(|| pick("mean"))
}

/// Groups rows by a key, keeping the order of first appearance.
pub fn by_key<'a>(rows: &'a [Value], key: &str) -> BTreeMap<String, Vec<&'a Value>> {
    let mut map: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in rows {
        if let Some(k) = r[key].as_str() {
            map.entry(k.to_string()).or_default().push(r);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_795_256_400 + 3_660), "2026-11-21 11:21 UTC");
    }
}
