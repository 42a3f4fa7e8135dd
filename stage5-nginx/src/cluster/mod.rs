//! The cluster lab: several app hosts on one machine, nginx in front.
//!
//! ```text
//!   client ──► nginx (root namespace, --listen) ── upstream app ──┐
//!                                                                  │ 198.18.0.1
//!                                  bridge wcl-br ◄─────────────────┘
//!                   ┌──────────────────┼──────────────────┐
//!             veth wcl-h1        veth wcl-h2        veth wcl-h3
//!                   │                  │                  │
//!   namespace wcl-h1 (eth0)   wcl-h2 (eth0)      wcl-h3 (eth0)
//!   198.18.0.11:3031          198.18.0.12:3031   198.18.0.13:3031
//!   stage 4 (+ --stats :9191) stage 4            stage 4
//! ```
//!
//! A network namespace is a host as the network sees it: its own
//! interfaces, addresses, routes and ports. Everything the lab creates is
//! named `wcl-…` (namespaces, links) or lives in [`DIR`], so `down`, and
//! the next `up` after a crash, can find it all and remove it.

pub mod faults;
pub mod hosts;
pub mod net;
pub mod status;
pub mod up;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use nix::sys::signal::kill;
use nix::unistd::Pid;

/// What every name the lab gives starts with.
pub const PREFIX: &str = "wcl-";
/// The bridge the hosts' links are plugged into (the "switch").
pub const BRIDGE: &str = "wcl-br";
/// Where the lab keeps its files: nginx's run directory, pid files.
pub const DIR: &str = "/tmp/wcl-cluster";
/// The root namespace's address on the bridge: nginx's side.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Where stage 4 listens in each host, and its `--stats`.
pub const APP_PORT: u16 = 3031;
pub const STATS_PORT: u16 = 9191;
/// Addresses .11 to .30 of 198.18.0.0/24.
pub const MAX_HOSTS: usize = 20;

/// One app host: `h1`, `h2`, …
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Host(pub usize);

impl Host {
    pub fn all(n: usize) -> Vec<Host> {
        (1..=n).map(Host).collect()
    }

    /// `h2`, or `2`.
    pub fn parse(text: &str) -> Result<Host, String> {
        let n = text.strip_prefix('h').unwrap_or(text);
        match n.parse::<usize>() {
            Ok(n) if (1..=MAX_HOSTS).contains(&n) => Ok(Host(n)),
            _ => Err(format!(
                "'{text}' is not a host: they are named h1, h2, … (cluster status lists them)"
            )),
        }
    }

    pub fn name(self) -> String {
        format!("h{}", self.0)
    }

    /// Its network namespace; also the name of its link's root end.
    pub fn netns(self) -> String {
        format!("{PREFIX}h{}", self.0)
    }

    pub fn ip(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 10 + self.0 as u8)
    }

    pub fn socket(self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip(), APP_PORT))
    }

    pub fn stats(self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip(), STATS_PORT))
    }

    /// Stage 4's `--pidfile`.
    pub fn pid_file(self) -> PathBuf {
        dir().join(format!("{}.pid", self.name()))
    }
}

pub fn dir() -> PathBuf {
    PathBuf::from(DIR)
}

/// The `up` process's pid file.
pub fn up_pid_file() -> PathBuf {
    dir().join("up.pid")
}

/// The pid in `path`, if that process is alive.
pub fn live_pid(path: &Path) -> Option<Pid> {
    let pid = std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<i32>()
        .ok()?;
    let pid = Pid::from_raw(pid);
    (pid.as_raw() > 0 && alive(pid)).then_some(pid)
}

/// Whether `pid` runs: it exists and is not a zombie (exited, waiting for
/// its parent to collect its status).
pub fn alive(pid: Pid) -> bool {
    kill(pid, None).is_ok()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            // `pid (comm) S …`: the state follows the last parenthesis.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X']))
        })
}

/// The running `up`, if any.
pub fn running_up() -> Option<Pid> {
    live_pid(&up_pid_file()).filter(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            String::from_utf8_lossy(&c)
                .split('\0')
                .any(|w| w == "up" || w.ends_with("cluster"))
        })
    })
}

/// The hosts that exist now (their namespaces), in order.
pub fn present_hosts() -> Vec<Host> {
    let mut hosts: Vec<Host> = net::namespaces()
        .iter()
        .filter_map(|ns| ns.strip_prefix(PREFIX))
        .filter_map(|h| Host::parse(h).ok())
        .collect();
    hosts.sort();
    hosts
}

/// Namespaces and links need CAP_NET_ADMIN, and `ip netns add` mounts
/// (CAP_SYS_ADMIN): both are root's. One sentence when missing.
pub fn check_privileges() -> Result<(), String> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_NET_ADMIN) && has(CAP_SYS_ADMIN) {
        Ok(())
    } else {
        Err("the cluster lab creates network namespaces and links, which needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): run it with sudo".to_string())
    }
}
