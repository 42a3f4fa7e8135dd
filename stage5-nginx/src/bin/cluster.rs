//! `cluster`: the cluster lab. Several app hosts (network namespaces, each
//! running stage 4 on TCP) behind one nginx, on one machine; faults on
//! purpose, to watch what nginx does about them. Needs root.
//!
//! ```text
//! cargo run -p stage5-nginx --bin cluster -- up --hosts 3        # stays in the foreground
//! cargo run -p stage5-nginx --bin cluster -- status              # from another terminal
//! cargo run -p stage5-nginx --bin cluster -- kill h2             # kill -9 h2's stage 4
//! cargo run -p stage5-nginx --bin cluster -- slow h3 --delay 50ms --loss 1%
//! cargo run -p stage5-nginx --bin cluster -- slow h3 --rate 100kbit  # without netem: tbf
//! cargo run -p stage5-nginx --bin cluster -- cut h1              # h1's link down
//! cargo run -p stage5-nginx --bin cluster -- heal h1
//! cargo run -p stage5-nginx --bin cluster -- restart --rolling   # HUP each host in turn
//! cargo run -p stage5-nginx --bin cluster -- down                # or Ctrl-C in the first
//! ```

#[path = "../cluster/mod.rs"]
mod cluster;

// The cluster's modules name stage 5's library as `crate::config`.
use stage5_nginx::{config, programs};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use wsgi_bridge::logging::{self, LogLevel};

use cluster::hosts::AppSpec;
use cluster::{Host, net};
use config::{Balance, NginxSettings, ServerParams, UpstreamSettings};

#[derive(Parser, Debug)]
#[command(name = "cluster", version)]
/// Several app hosts behind one nginx, on one machine (network namespaces).
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create the hosts, start stage 4 in each and nginx in front; stay in
    /// the foreground until Ctrl-C or `cluster down`.
    Up(Box<UpArgs>),
    /// Stop a running cluster, and remove whatever a crashed one left.
    Down,
    /// Every host: its link, stage 4, workers and requests (their --stats).
    Status,
    /// Kill a host's stage 4 with SIGKILL (a crash).
    Kill { host: String },
    /// Delay, drop or throttle the packets to a host: tc netem on its link
    /// (tbf for --rate alone, on kernels without netem).
    Slow {
        host: String,
        /// How long each packet waits, as tc writes it (50ms, 1s); 50ms
        /// unless --rate is given.
        #[arg(long)]
        delay: Option<String>,
        /// The share of packets dropped (1%).
        #[arg(long)]
        loss: Option<String>,
        /// The link's bandwidth, as tc writes it (100kbit, 1mbit).
        #[arg(long)]
        rate: Option<String>,
    },
    /// Take a host's link down: its packets go nowhere.
    Cut { host: String },
    /// Undo `slow` and `cut` on a host.
    Heal { host: String },
    /// HUP a host's stage 4 (or start it again if it is down), and wait
    /// until it serves; --rolling: every host, one after the other.
    Restart {
        #[arg(required_unless_present = "rolling", conflicts_with = "rolling")]
        host: Option<String>,
        #[arg(long)]
        rolling: bool,
    },
}

#[derive(Args, Debug)]
struct UpArgs {
    /// The WSGI app every host runs, as MODULE:CALLABLE (default: hello).
    #[arg(value_name = "APP")]
    app: Option<String>,

    /// How many app hosts.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=cluster::MAX_HOSTS as i64))]
    hosts: u16,

    /// Stage 4 worker processes on each host.
    #[arg(short, long, value_name = "N", default_value_t = 2)]
    workers: usize,

    /// Where nginx listens for clients (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: String,

    /// Change to this directory before loading the app (default: here).
    #[arg(long, value_name = "DIR")]
    chdir: Option<PathBuf>,

    /// Kill a worker stuck on one request for more than SECS; nginx waits
    /// 10 s longer.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    harakiri: u64,

    /// The nginx program (default: the first on PATH, or /usr/sbin/nginx).
    #[arg(long, value_name = "PATH")]
    nginx: Option<PathBuf>,

    /// Send each request to the host with the fewest in flight.
    #[arg(long, conflicts_with = "ip_hash")]
    least_conn: bool,

    /// Send each client (by its address) to the same host.
    #[arg(long)]
    ip_hash: bool,

    /// A host's weight, as HOST=N (repeatable): N requests for every one of
    /// a weight-1 host.
    #[arg(long, value_name = "HOST=N")]
    weight: Vec<String>,

    /// Failures within --fail-timeout after which nginx leaves a host out
    /// for --fail-timeout (nginx's default: 1; 0: never).
    #[arg(long, value_name = "N")]
    max_fails: Option<u32>,

    /// (nginx's default: 10 s.)
    #[arg(long, value_name = "SECS")]
    fail_timeout: Option<u64>,

    /// A host used only when all the others are down (repeatable).
    #[arg(long, value_name = "HOST")]
    backup: Vec<String>,

    /// When a request goes on to the next host, as nginx's directive says
    /// it ("error timeout", nginx's default; "error timeout http_502";
    /// "off": never).
    #[arg(long, value_name = "CASES")]
    uwsgi_next_upstream: Option<String>,

    /// How many hosts one request may try (nginx's default: 0, all).
    #[arg(long, value_name = "N")]
    uwsgi_next_upstream_tries: Option<u32>,

    /// How long nginx waits for a host to accept a connection (nginx's
    /// default: 60 s).
    #[arg(long, value_name = "SECS")]
    uwsgi_connect_timeout: Option<u64>,

    /// Print the nginx configuration this would run with, and exit.
    #[arg(long)]
    print_nginx_config: bool,
}

fn main() {
    let cli = Cli::parse();
    logging::init(LogLevel::Info);
    let result = match cli.command {
        Cmd::Up(args) => up(*args),
        Cmd::Down => privileged().and_then(|()| down()),
        Cmd::Status => status(),
        Cmd::Kill { host } => fault(&host, cluster::faults::kill_host),
        Cmd::Slow {
            host,
            delay,
            loss,
            rate,
        } => fault(&host, |h| {
            cluster::faults::slow(h, &net::Slowdown { delay, loss, rate })
        }),
        Cmd::Cut { host } => fault(&host, cluster::faults::cut),
        Cmd::Heal { host } => fault(&host, cluster::faults::heal),
        Cmd::Restart { host, rolling: _ } => privileged().and_then(|()| {
            let host = host.as_deref().map(Host::parse).transpose()?;
            cluster::faults::restart(host)
        }),
    };
    if let Err(e) = result {
        eprintln!("cluster: {e}");
        std::process::exit(1);
    }
}

fn privileged() -> Result<(), String> {
    cluster::check_privileges()
}

fn fault(host: &str, action: impl FnOnce(Host) -> Result<(), String>) -> Result<(), String> {
    privileged()?;
    action(Host::parse(host)?)
}

fn status() -> Result<(), String> {
    let hosts = cluster::present_hosts();
    if hosts.is_empty() {
        return Err("no cluster is up: start one with `cluster up`".to_string());
    }
    if cluster::running_up().is_none() {
        println!("(cluster up is not running: these are leftovers; `cluster down` removes them)");
    }
    cluster::status::print(&hosts);
    Ok(())
}

fn up(args: UpArgs) -> Result<(), String> {
    let hosts = Host::all(usize::from(args.hosts));
    let upstream = upstream_settings(&args, &hosts)?;
    let mut settings = NginxSettings {
        run_dir: cluster::dir(),
        listen: "127.0.0.1:8080".parse().expect("an address"),
        worker_processes: None,
        static_dir: None,
        upstreams: hosts.iter().map(|h| h.socket().to_string()).collect(),
        max_body: 1 << 20,
        read_timeout: args.harakiri + 10,
        access_log: Some(cluster::dir().join("access.log")),
        user: None,
        max_temp_file: config::DEFAULT_MAX_TEMP_FILE,
        files: config::FileOptions::default(),
        upstream,
    };
    if args.print_nginx_config {
        settings.listen = cluster::up::listen_addr(&args.listen).unwrap_or(settings.listen);
        print!(
            "{}",
            config::nginx_conf_with(cluster::up::HEADER, &settings)
        );
        return Ok(());
    }
    privileged()?;
    if args.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    if let Some(pid) = cluster::running_up() {
        return Err(format!(
            "a cluster is already up (cluster up, pid {pid}): stop it with `cluster down` first"
        ));
    }
    net::tool("ip")?;
    net::tool("tc")?;
    let nginx = programs::find_nginx(args.nginx.as_deref())?;
    let nginx_version = programs::nginx_version(&nginx)?;
    settings.listen = cluster::up::listen_addr(&args.listen)?;
    let stage4 = programs::find_stage4()?;
    // From here on, Ctrl-C is handled: whatever is made gets removed.
    let signals = supervise::signals::SignalQueue::install()
        .map_err(|e| format!("cannot install the signal handlers: {e}"))?;
    sweep("a cluster that did not stop cleanly");
    let worker_user = config::unprivileged_user(None)?;
    config::make_run_dir(&cluster::dir(), worker_user.as_ref().map(|u| u.gid))?;
    settings.user = worker_user.map(|u| (u.user, u.group));
    std::fs::write(cluster::up_pid_file(), std::process::id().to_string())
        .map_err(|e| format!("cannot write {}: {e}", cluster::up_pid_file().display()))?;
    let plan = cluster::up::Plan {
        hosts,
        app: AppSpec {
            stage4,
            module: args.app.clone(),
            chdir: args.chdir.clone(),
            workers: args.workers,
            harakiri: args.harakiri,
        },
        nginx,
        nginx_version,
        settings,
    };
    log::info!("Starting cluster {}", env!("CARGO_PKG_VERSION"));
    cluster::up::run(plan, signals).map(drop)
}

/// The upstream flags, as nginx's settings; one sentence for what nginx
/// would refuse.
fn upstream_settings(args: &UpArgs, hosts: &[Host]) -> Result<UpstreamSettings, String> {
    let mut servers = vec![
        ServerParams {
            max_fails: args.max_fails,
            fail_timeout: args.fail_timeout,
            ..ServerParams::default()
        };
        hosts.len()
    ];
    let index = |name: &str| -> Result<usize, String> {
        let host = Host::parse(name)?;
        hosts.iter().position(|h| *h == host).ok_or_else(|| {
            format!(
                "there is no host {} with --hosts {}",
                host.name(),
                hosts.len()
            )
        })
    };
    for w in &args.weight {
        let (name, n) = w
            .split_once('=')
            .ok_or_else(|| format!("--weight {w}: write it HOST=N (h1=3)"))?;
        let n: u32 = n
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("--weight {w}: the weight is a whole number from 1"))?;
        servers[index(name)?].weight = Some(n);
    }
    for b in &args.backup {
        servers[index(b)?].backup = true;
    }
    let method = if args.least_conn {
        Balance::LeastConn
    } else if args.ip_hash {
        Balance::IpHash
    } else {
        Balance::RoundRobin
    };
    if method == Balance::IpHash && !args.backup.is_empty() {
        return Err("nginx refuses backup hosts with ip_hash: a client's host would change whenever the backup is used".into());
    }
    if !args.backup.is_empty() && servers.iter().all(|s| s.backup) {
        return Err("every host is a backup: leave at least one out of --backup".into());
    }
    Ok(UpstreamSettings {
        method,
        servers,
        next_upstream: args.uwsgi_next_upstream.clone(),
        next_upstream_tries: args.uwsgi_next_upstream_tries,
        connect_timeout: args.uwsgi_connect_timeout,
    })
}

/// `down`: TERM to a running `up` (it stops everything in order and
/// removes it), then whatever is left.
fn down() -> Result<(), String> {
    if let Some(pid) = cluster::running_up() {
        println!("Stopping cluster up (pid {pid})");
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(40);
        while cluster::alive(pid) {
            if Instant::now() >= deadline {
                println!("cluster up (pid {pid}) did not stop in 40 s: killing it");
                let _ = kill(pid, Signal::SIGKILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if !sweep("a cluster that did not stop cleanly") {
        println!("Nothing left: no namespace, link, process or file of the cluster");
    }
    Ok(())
}

/// Removes what a cluster left behind (after a crash: kill -9 of `up`, a
/// power cut of the terminal): processes in its namespaces and its nginx,
/// the namespaces, links and files. Whether there was anything.
fn sweep(whose: &str) -> bool {
    let dir = cluster::dir();
    let mut killed = Vec::new();
    if let Some(pid) = cluster::live_pid(&dir.join("nginx.pid"))
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("nginx"))
    {
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = kill(pid, Signal::SIGKILL);
        killed.push(pid.as_raw());
    }
    for ns in net::namespaces() {
        for pid in net::pids_in(&ns) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.push(pid);
        }
    }
    // A namespace goes once its last process has.
    let deadline = Instant::now() + Duration::from_secs(5);
    while killed.iter().any(|p| cluster::alive(Pid::from_raw(*p))) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (namespaces, links) = net::remove_all();
    let had_dir = dir.exists();
    let _ = std::fs::remove_dir_all(&dir);
    let any = !killed.is_empty() || !namespaces.is_empty() || !links.is_empty() || had_dir;
    if any {
        println!(
            "Removed what {whose} left: {} processes {:?}, namespaces {:?}, links {:?}{}",
            killed.len(),
            killed,
            namespaces,
            links,
            if had_dir {
                format!(", {}", cluster::DIR)
            } else {
                String::new()
            }
        );
    }
    any
}
