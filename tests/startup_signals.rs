//! A stop signal that arrives while a server is still starting must stop
//! it, as it would a second later.
//!
//! A script that starts a server in the background (`server &`) starts it
//! with SIGINT ignored: that is what a shell without job control does to
//! background commands. Until the server installs its own handlers, a
//! Ctrl-C (or `kill -INT`) is then silently dropped. The servers install
//! their handlers first thing, and act on the signal once they are ready.
//! The app takes a second to import (`apps/slow_start.py`), and the signal
//! is sent during that second. (It has an ASGI callable too, for stage 6.)

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use wsgi_course::server::{repo_root, workspace_bin};

/// Starts `bin` as `server &` in a script would, sends SIGINT after
/// `after`, and returns how long it took to exit (`None`: it did not,
/// within 20 s; it is killed then).
fn exit_time_after_early_sigint(bin: &str, args: &[&str], after: Duration) -> Option<Duration> {
    let mut cmd = Command::new(workspace_bin(bin));
    cmd.args(args)
        .current_dir(repo_root())
        .env("SLOW_START_SECONDS", "1.5")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    // SAFETY: signal() is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("the server starts");
    let pgid = child.id() as i32;
    sleep(after);
    let sent = Instant::now();
    // SAFETY: plain kill(2) on the child we started.
    unsafe { libc::kill(pgid, libc::SIGINT) };
    let exited = loop {
        if let Ok(Some(_)) = child.try_wait() {
            break Some(sent.elapsed());
        }
        if sent.elapsed() > Duration::from_secs(20) {
            break None;
        }
        sleep(Duration::from_millis(20));
    };
    // Whatever happened, leave nothing running.
    // SAFETY: kill(2) on the child's process group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    exited
}

fn assert_stops(bin: &str, args: &[&str]) {
    let took = exit_time_after_early_sigint(bin, args, Duration::from_millis(400));
    match took {
        Some(t) => println!(
            "{bin}: stopped {:.2} s after an early SIGINT",
            t.as_secs_f64()
        ),
        None => panic!("{bin} ignored a SIGINT sent while it was starting"),
    }
}

#[test]
fn stage1_stops_on_a_sigint_during_start_up() {
    assert_stops(
        "stage1-single",
        &["apps.slow_start:app", "-b", "127.0.0.1:0"],
    );
}

#[test]
fn stage2_stops_on_a_sigint_during_start_up() {
    assert_stops(
        "stage2-threads",
        &["apps.slow_start:app", "-b", "127.0.0.1:0"],
    );
}

#[test]
fn stage3_with_preload_stops_on_a_sigint_during_start_up() {
    assert_stops(
        "stage3-prefork",
        &[
            "apps.slow_start:app",
            "-b",
            "127.0.0.1:0",
            "-w",
            "2",
            "--preload",
        ],
    );
}

#[test]
fn stage3_stops_on_a_sigint_while_workers_boot() {
    assert_stops(
        "stage3-prefork",
        &["apps.slow_start:app", "-b", "127.0.0.1:0", "-w", "2"],
    );
}

#[test]
fn stage4_stops_on_a_sigint_during_start_up() {
    let socket = std::env::temp_dir().join(format!("early-sigint-{}.sock", std::process::id()));
    assert_stops(
        "stage4-uwsgi-socket",
        &[
            "--module",
            "apps.slow_start:app",
            "--socket",
            socket.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(socket);
}

#[test]
fn stage5_stops_on_a_sigint_during_start_up() {
    if wsgi_course::nginx::nginx_binary().is_none() {
        println!("skipped: nginx is not installed (apt-get install nginx)");
        return;
    }
    assert_stops(
        "stage5-nginx",
        &["--listen", "127.0.0.1:0", "apps.slow_start:app"],
    );
}

#[test]
fn stage6_stops_on_a_sigint_during_start_up() {
    assert_stops(
        "stage6-asgi",
        &["apps.slow_start:asgi_app", "-b", "127.0.0.1:0"],
    );
}

#[test]
fn stage3_asgi_workers_stop_on_a_sigint_while_they_boot() {
    assert_stops(
        "stage3-prefork",
        &[
            "apps.slow_start:asgi_app",
            "-k",
            "asgi",
            "-b",
            "127.0.0.1:0",
            "-w",
            "2",
        ],
    );
}
