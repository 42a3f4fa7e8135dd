//! The harness's own tests: banners, failures to start, signals, output,
//! the process tree killed on drop. (Building a workspace binary is tested
//! in `workspace.rs`.)

use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::ServerProcess;
use crate::testutil::python_server;

#[test]
fn starts_reads_banner_and_serves() {
    let s = python_server("ok", &[]).unwrap();
    assert_eq!(s.addr().ip().to_string(), "127.0.0.1");
    assert_ne!(s.addr().port(), 0);
    assert_eq!(s.listen_text(), format!("http://{}", s.addr()));
    let r = crate::client::get(s.addr(), "/").unwrap();
    assert_eq!(r.status, 200);
    assert!(s.stderr_text().contains("Listening at:"));
    assert!(s.stdout_text().contains("hello from stdout"));
}

#[test]
fn exit_before_banner_is_an_error_with_stderr() {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import sys; print('boom: bad app spec', file=sys.stderr); sys.exit(3)",
    ]);
    let err = ServerProcess::start_command("py", cmd).unwrap_err();
    assert!(err.contains("boom: bad app spec"), "{err}");
    assert!(err.contains("exit status: 3"), "{err}");
}

#[test]
fn missing_program_is_an_error() {
    let cmd = Command::new("/nonexistent/server");
    let err = ServerProcess::start_command("nope", cmd).unwrap_err();
    assert!(err.contains("cannot start nope"), "{err}");
}

#[test]
fn bad_banner_address_is_an_error() {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import sys,time; print('Listening at: http://nowhere', file=sys.stderr); time.sleep(30)",
    ]);
    let err = ServerProcess::start_command("py", cmd).unwrap_err();
    assert!(err.contains("not IP:PORT"), "{err}");
}

#[test]
fn unix_banner() {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import sys,time; print('[x] [1] [INFO] Listening at: unix:/tmp/x.sock (1)', file=sys.stderr); time.sleep(30)"]);
    let s = ServerProcess::start_command("py", cmd).unwrap();
    assert_eq!(s.listen_text(), "unix:/tmp/x.sock");
    assert_eq!(s.unix_path(), Some(PathBuf::from("/tmp/x.sock")));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.addr()));
    assert!(r.is_err());
}

#[test]
fn signal_wait_and_log_lines() {
    let mut s = python_server("ok", &[]).unwrap();
    let n = s.stderr_line_count();
    assert!(
        s.wait_for_stderr("Listening", Duration::from_secs(1))
            .is_some()
    );
    assert!(
        s.wait_for_stderr_from(n, "Listening", Duration::from_millis(50))
            .is_none()
    );
    assert!(s.wait_timeout(Duration::from_millis(50)).is_none());
    s.signal(libc::SIGTERM);
    let line = s.wait_for_stderr("Handling signal: term", Duration::from_secs(10));
    assert!(line.is_some(), "{}", s.stderr_text());
    let status = s.wait_timeout(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0));
    // Signalling a reaped process is harmless.
    s.signal(libc::SIGTERM);
}

#[test]
fn drop_kills_the_whole_tree() {
    // The server forks a child that ignores SIGTERM; both must be gone
    // after drop.
    let s = python_server("ok", &["fork"]).unwrap();
    let line = s
        .wait_for_stderr("forked child", Duration::from_secs(10))
        .unwrap();
    let child: u32 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let pid = s.pid();
    assert!(alive(child));
    drop(s);
    assert!(!alive(pid));
    let deadline = Instant::now() + Duration::from_secs(5);
    // The orphaned child is reaped by init (or a subreaper) shortly after.
    while alive(child) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(child), "child {child} survived");
}

#[test]
fn env_and_cwd_are_passed() {
    let dir = std::env::temp_dir();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import os,sys,time; print('cwd', os.getcwd(), os.environ.get('HARNESS_X'), os.environ.get('PYTHONUNBUFFERED')); print('Listening at: unix:/x', file=sys.stderr); time.sleep(30)"])
        .current_dir(&dir)
        .env("HARNESS_X", "42");
    let s = ServerProcess::start_command("py", cmd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.stdout_text().contains("cwd") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let out = s.stdout_text();
    assert!(out.contains(" 42 1"), "{out}");
    let canon = dir.canonicalize().unwrap();
    assert!(out.contains(canon.to_str().unwrap()), "{out}");
}

fn alive(pid: u32) -> bool {
    // A zombie still answers kill(0); look at its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rfind(')')
            .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
