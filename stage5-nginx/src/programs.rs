//! Finding the two programs stage 5 runs: nginx, and stage 4's binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// nginx: `--nginx PATH`, else the first one on PATH, else where packages
/// put it (`/usr/sbin` is not on every user's PATH).
pub fn find_nginx(given: Option<&Path>) -> Result<PathBuf, String> {
    let install = "install it (apt-get install nginx, or brew install nginx) or give its path with --nginx PATH";
    if let Some(path) = given {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!("nginx is not at {}: {install}", path.display()))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(
            [
                "/usr/sbin",
                "/usr/local/sbin",
                "/usr/local/bin",
                "/opt/homebrew/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("nginx is not installed: {install}"))
}

/// `nginx/1.22.1`, from `nginx -v` (which prints to stderr).
pub fn nginx_version(nginx: &Path) -> Result<String, String> {
    let out = Command::new(nginx)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", nginx.display()))?;
    let text = String::from_utf8_lossy(&out.stderr);
    match text.trim().strip_prefix("nginx version: ") {
        Some(version) => Ok(version.to_string()),
        None => Err(format!(
            "{} does not look like nginx (its -v printed no nginx version): give nginx's path with --nginx PATH",
            nginx.display()
        )),
    }
}

// ANCHOR: find_stage4
/// The `stage4-uwsgi-socket` binary, next to this one.
///
/// Cargo cannot make one package's binary depend on another's (artifact
/// dependencies are unstable), and depending on stage 4's library does not
/// build its binary. So when `cargo run -p stage5-nginx` started us, we ask
/// cargo to build stage 4 too, with the same profile, as the test harness
/// does; otherwise (an installed binary) it must already be there.
pub fn find_stage4() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this program: {e}"))?;
    let stage4 = exe.with_file_name(format!(
        "stage4-uwsgi-socket{}",
        std::env::consts::EXE_SUFFIX
    ));
    if started_by_cargo_run() {
        build_stage4(&exe)?;
    }
    if stage4.is_file() {
        Ok(stage4)
    } else {
        Err(format!(
            "stage 4 is not built ({} is missing): build it with cargo build -p stage4-uwsgi-socket",
            stage4.display()
        ))
    }
}

/// `cargo run` sets, for the program it runs, the variables it sets at
/// compile time: CARGO (its own path) and CARGO_PKG_NAME among them.
fn started_by_cargo_run() -> bool {
    std::env::var_os("CARGO").is_some()
        && std::env::var("CARGO_PKG_NAME").is_ok_and(|name| name == env!("CARGO_PKG_NAME"))
}

/// `cargo build -p stage4-uwsgi-socket`, into the directory `exe` is in.
fn build_stage4(exe: &Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let profile_dir = exe.parent().unwrap_or(Path::new("."));
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "-p", "stage4-uwsgi-socket", "--bin"])
        .arg("stage4-uwsgi-socket")
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"))
        .stdin(Stdio::null());
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    // target/<profile>/stage5-nginx: build into that same target directory
    // (cargo marks its root with CACHEDIR.TAG).
    if let Some(target) = profile_dir
        .parent()
        .filter(|t| t.join("CACHEDIR.TAG").exists())
    {
        cmd.arg("--target-dir").arg(target);
    }
    log::info!("Building stage 4 first: cargo build -p stage4-uwsgi-socket");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", cargo.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo build -p stage4-uwsgi-socket failed ({status}): its errors are above"
        ))
    }
}
// ANCHOR_END: find_stage4
