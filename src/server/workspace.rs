//! The workspace's binaries: where the repository is, and building a stage
//! (or any workspace binary) with the cargo profile and target directory
//! of the running test or benchmark.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The repository root: the directory of the root `Cargo.toml`, where `apps/`,
/// `tests/` and the stage crates live.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of the workspace binary `bin`, built first (once per process per
/// binary) with the same cargo profile and target directory as the running
/// test or benchmark.
///
/// # Panics
/// If the build fails; the message contains cargo's output.
pub fn workspace_bin(bin: &str) -> PathBuf {
    match try_workspace_bin(bin) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// [`workspace_bin`] returning the build error instead of panicking.
///
/// Runs `cargo build -q -p <package> --bin <bin>` where the package is the
/// binary's name (`loadgen`, the stages), or the package that has it (`uwsgi-dump`). The
/// profile (`--release`, `--profile NAME` or the default dev profile) and the
/// target directory come from the path of the running executable
/// (`<target>/<profile>/deps/<test>`), so a `cargo test --release` starts
/// release servers and a `cargo bench` benchmarks optimised ones.
pub fn try_workspace_bin(bin: &str) -> Result<PathBuf, String> {
    static BUILT: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    // Holding the lock while cargo runs serialises builds from parallel tests:
    // they would only queue on cargo's own build lock anyway.
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = built.get(bin) {
        return r.clone();
    }
    let r = build_bin(bin);
    built.insert(bin.to_string(), r.clone());
    r
}

/// Where cargo put the running executable, understood as a target layout.
struct Layout {
    /// `target/<profile>` (or `target/<triple>/<profile>`).
    profile_dir: PathBuf,
    /// The `--target-dir`.
    target_dir: PathBuf,
    /// The profile's directory name: `debug`, `release`, or a custom profile.
    profile: String,
    /// The `--target` triple, if the build was a cross build.
    triple: Option<String>,
}

fn current_layout() -> Result<Layout, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot locate the running executable: {e}"))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", exe.display()))?
        .to_path_buf();
    // Tests and benches live in <profile>/deps; binaries and examples in
    // <profile> and <profile>/examples.
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("cannot tell the cargo profile from {}", exe.display()))?
        .to_string();
    let parent = dir
        .parent()
        .ok_or_else(|| format!("cannot find the target directory of {}", exe.display()))?;
    // Cargo marks the root of a target directory with CACHEDIR.TAG; if the
    // parent is not it, the parent is a target triple's directory.
    let (target_dir, triple) = if !parent.join("CACHEDIR.TAG").exists()
        && parent
            .parent()
            .is_some_and(|p| p.join("CACHEDIR.TAG").exists())
    {
        let triple = parent
            .file_name()
            .and_then(|n| n.to_str())
            .map(String::from);
        (parent.parent().unwrap_or(parent).to_path_buf(), triple)
    } else {
        (parent.to_path_buf(), None)
    };
    Ok(Layout {
        profile_dir: dir,
        target_dir,
        profile,
        triple,
    })
}

fn package_of(bin: &str) -> &str {
    match bin {
        "uwsgi-dump" => "stage4-uwsgi-socket",
        "trace-view" | "conformance-report" => "wsgi-course",
        "cluster" => "stage5-nginx",
        "null-server" => "course-bench",
        other => other,
    }
}

fn build_bin(bin: &str) -> Result<PathBuf, String> {
    let layout = current_layout()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("-q")
        .arg("--manifest-path")
        .arg(repo_root().join("Cargo.toml"))
        .arg("-p")
        .arg(package_of(bin))
        .arg("--bin")
        .arg(bin)
        .arg("--target-dir")
        .arg(&layout.target_dir);
    match layout.profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.arg("--profile").arg(other);
        }
    }
    if let Some(t) = &layout.triple {
        cmd.arg("--target").arg(t);
    }
    cmd.stdin(Stdio::null());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cargo:?} to build {bin}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building {bin} failed ({}): {cmd:?}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = layout
        .profile_dir
        .join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        return Err(format!(
            "cargo built {bin} but {} does not exist",
            path.display()
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ServerProcess;

    #[test]
    fn builds_and_starts_a_workspace_binary() {
        // The loadgen binary (the `loadgen` package) always compiles, and
        // quickly: no Python. It prints no banner, so starting it fails, but
        // with its own message.
        let path = workspace_bin("loadgen");
        assert!(path.exists());
        let layout = current_layout().unwrap();
        assert!(path.starts_with(&layout.profile_dir));
        let err = ServerProcess::start("loadgen", &["not-a-url"]).unwrap_err();
        assert!(err.contains("loadgen"), "{err}");
        assert!(err.contains("exited with"), "{err}");
    }
}
