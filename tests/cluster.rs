//! The cluster lab (`cluster`, stage 5's second binary): three hosts in
//! network namespaces behind one nginx. Requests spread over all of them;
//! a killed host costs no GET; a rolling restart under load fails nothing;
//! least_conn spares a slow host; nothing is left behind.
//!
//! Each test needs root (namespaces), `ip` and `tc`, and nginx; without
//! them it says so in one line and passes. The lab has fixed names
//! (`wcl-…`, /tmp/wcl-cluster): the tests take turns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use wsgi_course::server::{ServerProcess, workspace_bin};
use wsgi_course::wait_until;

const DIR: &str = "/tmp/wcl-cluster";

/// One cluster at a time: they share their names.
static TURN: Mutex<()> = Mutex::new(());

/// Whether this machine lets us make namespaces (root, iproute2, nginx);
/// otherwise one line saying why.
fn can_run() -> bool {
    let why = if wsgi_course::nginx::nginx_binary().is_none() {
        Some("nginx is not installed (apt-get install nginx)")
    } else if !nix::unistd::geteuid().is_root() {
        Some("the cluster lab needs root (network namespaces)")
    } else if !Command::new("ip")
        .args(["netns", "add", "wcl-probe"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        Some(
            "network namespaces cannot be made here (ip netns add failed; apt-get install iproute2)",
        )
    } else {
        let _ = Command::new("ip")
            .args(["netns", "del", "wcl-probe"])
            .status();
        None
    };
    match why {
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
        None => true,
    }
}

/// `cluster ARGS` to its end: its status and output.
fn cluster(args: &[&str]) -> (bool, String) {
    let out = Command::new(workspace_bin("cluster"))
        .args(args)
        .output()
        .expect("cluster runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A running `cluster up`; `cluster down` when dropped.
struct Cluster {
    up: Option<ServerProcess>,
    addr: SocketAddr,
}

impl Cluster {
    fn up(args: &[&str]) -> Cluster {
        workspace_bin("stage4-uwsgi-socket");
        let port = wsgi_course::nginx::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = Command::new(workspace_bin("cluster"));
        cmd.args(["up", "--listen", &addr.to_string()]).args(args);
        let up = ServerProcess::start_command_at("cluster", cmd, addr).expect("cluster up starts");
        // nginx's port accepts before the banner: wait for it too.
        up.wait_for_stderr("Listening at: http://", Duration::from_secs(10))
            .expect("cluster up's banner");
        Cluster { up: Some(up), addr }
    }

    fn load(&self, requests: u64, connections: usize) -> loadgen::LoadReport {
        let mut cfg = loadgen::LoadConfig::new(self.addr);
        cfg.connections = connections;
        cfg.requests = Some(requests);
        cfg.duration = Some(Duration::from_secs(60));
        cfg.timeout = Duration::from_secs(20);
        loadgen::run_blocking(&cfg)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let (ok, out) = cluster(&["down"]);
        if !ok {
            eprintln!("cluster down: {out}");
        }
        if let Some(mut up) = self.up.take() {
            up.terminate(Duration::from_secs(20));
        }
    }
}

/// Requests per host, from nginx's access log (`upstream=198.18.0.12:3031`
/// names the host that answered; a retried request names each it tried).
fn per_host() -> BTreeMap<String, u64> {
    let log = std::fs::read_to_string(format!("{DIR}/access.log")).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in log.lines() {
        if let Some(upstream) = line.split("upstream=").nth(1) {
            let last = upstream.split(" time=").next().unwrap_or("");
            let last = last.rsplit(", ").next().unwrap_or(last);
            if let Some(ip) = last.strip_suffix(":3031") {
                *counts.entry(ip.to_string()).or_insert(0) += 1;
            }
        }
    }
    counts
}

fn total(counts: &BTreeMap<String, u64>) -> u64 {
    counts.values().sum()
}

/// Everything of the lab still on this machine: namespaces, links,
/// processes, files. Empty when the lab cleaned up.
fn leftovers() -> Vec<String> {
    let mut left = Vec::new();
    let words = |args: &[&str]| -> String {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for line in words(&["netns", "list"]).lines() {
        if line.starts_with("wcl-") {
            left.push(format!("namespace {line}"));
        }
    }
    for line in words(&["-o", "link", "show"]).lines() {
        if let Some(name) = line.split(": ").nth(1)
            && name.starts_with("wcl-")
        {
            left.push(format!("link {name}"));
        }
    }
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        if cmdline.contains("198.18.0.") || cmdline.contains(DIR) {
            left.push(format!("process {pid}: {cmdline}"));
        }
    }
    if std::path::Path::new(DIR).exists() {
        left.push(format!("directory {DIR}"));
    }
    left
}

// ---------------------------------------------------------------------------

#[test]
fn three_hosts_serve_and_requests_spread_over_all() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run() {
        return;
    }
    let lab = Cluster::up(&["--hosts", "3"]);
    let report = lab.load(600, 4);
    assert_eq!(report.errors, 0, "{:?}", report.error_kinds);
    assert_eq!(report.requests, 600);
    wait_until("nginx logs every request", Duration::from_secs(5), || {
        total(&per_host()) >= 600
    });
    let counts = per_host();
    println!("round robin over 3 hosts: {counts:?}");
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (host, n) in &counts {
        // Round robin: a third each, give or take nginx's two workers
        // each keeping its own turn.
        assert!((150..=250).contains(n), "{host}: {n} of 600");
    }
    let (ok, status) = cluster(&["status"]);
    assert!(ok, "{status}");
    for host in ["h1   198.18.0.11:3031", "h2", "h3   198.18.0.13:3031"] {
        assert!(status.contains(host), "{status}");
    }
    assert!(status.contains("total requests: "), "{status}");
}

#[test]
fn a_killed_host_costs_no_get_with_retries_and_none_after_fail_timeout() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run() {
        return;
    }
    let lab = Cluster::up(&["--hosts", "3", "--fail-timeout", "2"]);
    let mut cfg = loadgen::LoadConfig::new(lab.addr);
    cfg.connections = 8;
    cfg.requests = Some(200_000);
    cfg.duration = Some(Duration::from_secs(3));
    let load = std::thread::spawn(move || loadgen::run_blocking(&cfg));
    std::thread::sleep(Duration::from_millis(1000));
    let (ok, out) = cluster(&["kill", "h2"]);
    assert!(ok, "{out}");
    let during = load.join().unwrap();
    println!(
        "GETs while h2 was killed: {} ok, {} failed {:?}",
        during.requests, during.errors, during.error_kinds
    );
    assert!(during.requests > 100, "the load ran: {}", during.requests);
    assert!(
        during.errors <= 1,
        "a killed host may cost at most one GET: {:?}",
        during.error_kinds
    );
    assert_eq!(
        during.errors, 0,
        "GETs are retried: {:?}",
        during.error_kinds
    );
    // Past fail_timeout nginx tries h2 again, finds it dead, and passes
    // the request on: still nothing fails.
    std::thread::sleep(Duration::from_millis(2500));
    let after = lab.load(600, 4);
    assert_eq!(after.errors, 0, "{:?}", after.error_kinds);
    let log = std::fs::read_to_string(format!("{DIR}/access.log")).unwrap();
    assert!(
        log.contains("upstream=198.18.0.12:3031, 198.18.0.1"),
        "the access log shows requests passed on from h2"
    );
}

#[test]
fn a_rolling_restart_under_load_fails_no_request() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run() {
        return;
    }
    let lab = Cluster::up(&["--hosts", "3"]);
    let mut cfg = loadgen::LoadConfig::new(lab.addr);
    cfg.connections = 16;
    // 3 s of load, whatever the machine's speed (at most 200,000
    // requests); the restart starts half a second in.
    cfg.requests = Some(200_000);
    cfg.duration = Some(Duration::from_secs(3));
    let load = std::thread::spawn(move || loadgen::run_blocking(&cfg));
    std::thread::sleep(Duration::from_millis(500));
    let (ok, out) = cluster(&["restart", "--rolling"]);
    let load_still_running = !load.is_finished();
    let report = load.join().unwrap();
    println!("{out}");
    assert!(ok, "{out}");
    for host in ["h1", "h2", "h3"] {
        assert!(out.contains(&format!("{host}: serving again")), "{out}");
    }
    println!(
        "rolling restart: {} requests, {} failed",
        report.requests, report.errors
    );
    assert!(load_still_running, "the restart ended under load");
    assert!(report.requests >= 10_000, "{}", report.requests);
    assert_eq!(report.errors, 0, "{:?}", report.error_kinds);
}

#[test]
fn least_conn_sends_fewer_requests_to_a_slow_host_than_round_robin() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run() {
        return;
    }
    let mut share = Vec::new();
    for method in [None, Some("--least-conn")] {
        let mut args = vec!["--hosts", "3"];
        args.extend(method);
        let lab = Cluster::up(&args);
        // netem's delay where the kernel has it, else tbf's rate.
        let (ok, out) = cluster(&["slow", "h3", "--delay", "50ms"]);
        if !ok {
            assert!(out.contains("no netem"), "{out}");
            let (ok, out) = cluster(&["slow", "h3", "--rate", "1mbit"]);
            assert!(ok, "{out}");
        }
        let report = lab.load(600, 6);
        assert_eq!(report.errors, 0, "{:?}", report.error_kinds);
        wait_until("nginx logs every request", Duration::from_secs(5), || {
            total(&per_host()) >= 600
        });
        let counts = per_host();
        let slow = counts.get("198.18.0.13").copied().unwrap_or(0);
        println!(
            "{}: {counts:?}, {:.0} requests/s",
            method.unwrap_or("round robin"),
            report.rps()
        );
        share.push(slow);
    }
    let (round_robin, least_conn) = (share[0], share[1]);
    assert!(
        round_robin >= 150,
        "round robin gives it its third: {round_robin}"
    );
    assert!(
        least_conn * 2 < round_robin,
        "least_conn: {least_conn} to the slow host, round robin: {round_robin}"
    );
}

#[test]
fn teardown_leaves_nothing_behind() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run() {
        return;
    }
    // Ctrl-C in up's terminal.
    let mut lab = Cluster::up(&["--hosts", "2"]);
    assert!(!leftovers().is_empty(), "the lab made something");
    let mut up = lab.up.take().unwrap();
    up.signal(libc::SIGINT);
    let status = up.wait_timeout(Duration::from_secs(30));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        up.stderr_text()
    );
    assert_eq!(leftovers(), Vec::<String>::new(), "after Ctrl-C");

    // `cluster down` from another terminal.
    let lab = Cluster::up(&["--hosts", "2"]);
    let (ok, out) = cluster(&["down"]);
    assert!(ok, "{out}");
    assert_eq!(leftovers(), Vec::<String>::new(), "after cluster down");
    drop(lab);

    // A crash: up killed with SIGKILL. Its programs die with it (their
    // parent-death signal), the namespaces stay; `down` removes them.
    let mut lab = Cluster::up(&["--hosts", "2"]);
    let mut up = lab.up.take().unwrap();
    up.signal(libc::SIGKILL);
    up.wait_timeout(Duration::from_secs(10));
    let left = leftovers();
    assert!(left.iter().any(|l| l.starts_with("namespace")), "{left:?}");
    let (ok, out) = cluster(&["down"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Removed what a cluster that did not stop cleanly left"),
        "{out}"
    );
    assert_eq!(leftovers(), Vec::<String>::new(), "after a crash and down");
    drop(lab);
}

#[test]
fn without_root_it_says_so_in_one_sentence() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if !nix::unistd::geteuid().is_root() {
        // Run as we are: no privileges already.
        let (ok, out) = cluster(&["up"]);
        assert!(!ok);
        assert!(out.contains("needs root"), "{out}");
        return;
    }
    let setpriv = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(workspace_bin("cluster"))
        .args(["up", "--hosts", "2"])
        .output();
    let Ok(out) = setpriv else {
        eprintln!("SKIPPED: setpriv (util-linux) is not installed");
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("needs root"), "{err}");
}
