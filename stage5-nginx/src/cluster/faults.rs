//! Faults on purpose, from another terminal while `up` runs: a host's
//! stage 4 killed, its link slowed or cut; and the way back (`heal`,
//! `restart`).

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

use super::hosts;
use super::{Host, net};

/// How long one host may take to serve again after HUP or a start.
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);

/// The hosts of the running cluster; an error when none is up.
pub fn cluster_hosts() -> Result<Vec<Host>, String> {
    let hosts = super::present_hosts();
    if hosts.is_empty() || super::running_up().is_none() {
        return Err("no cluster is up: start one with `cluster up`".to_string());
    }
    Ok(hosts)
}

fn existing(host: Host) -> Result<Host, String> {
    if cluster_hosts()?.contains(&host) {
        Ok(host)
    } else {
        Err(format!(
            "there is no host {} in this cluster (cluster status lists them)",
            host.name()
        ))
    }
}

/// `kill -9` the host's stage 4 master: a crash, not a stop. Its workers
/// get TERM from the kernel (their parent-death signal), finish the
/// request they have, and exit; the port closes with them.
pub fn kill_host(host: Host) -> Result<(), String> {
    let host = existing(host)?;
    let pid = hosts::master(host).ok_or_else(|| {
        format!(
            "{}'s stage 4 is not running (cluster restart {} starts it)",
            host.name(),
            host.name()
        )
    })?;
    kill(pid, Signal::SIGKILL).map_err(|e| format!("cannot kill {pid}: {e}"))?;
    println!(
        "{}: killed stage 4's master (pid {pid}) with SIGKILL",
        host.name()
    );
    Ok(())
}

pub fn slow(host: Host, how: &net::Slowdown) -> Result<(), String> {
    let host = existing(host)?;
    let qdisc = net::slow(host, how)?;
    println!(
        "{}: packets to it go through `{qdisc}` on link {}",
        host.name(),
        host.netns()
    );
    Ok(())
}

pub fn cut(host: Host) -> Result<(), String> {
    let host = existing(host)?;
    net::cut(host)?;
    println!(
        "{}: link {} is down: packets to {} go nowhere",
        host.name(),
        host.netns(),
        host.ip()
    );
    Ok(())
}

pub fn heal(host: Host) -> Result<(), String> {
    let host = existing(host)?;
    net::heal(host)?;
    println!(
        "{}: link {} is up, without delay or loss",
        host.name(),
        host.netns()
    );
    Ok(())
}

/// `restart HOST`: HUP to its stage 4 (new workers, the socket kept), or,
/// when it is down, `up` starts it again; returns once it serves.
/// `restart --rolling`: every host in turn, each serving again before the
/// next one starts.
pub fn restart(host: Option<Host>) -> Result<(), String> {
    let targets = match host {
        Some(h) => vec![existing(h)?],
        None => cluster_hosts()?,
    };
    for host in targets {
        let started = Instant::now();
        match hosts::master(host) {
            Some(pid) => reload(host, pid)?,
            None => start_again(host)?,
        }
        println!(
            "{}: serving again after {:.2} s",
            host.name(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// HUP, then waits until every worker is of the new generation and the
/// host answers a request.
fn reload(host: Host, pid: nix::unistd::Pid) -> Result<(), String> {
    let before = hosts::stats(host)
        .map(|s| hosts::summary(&s).2)
        .unwrap_or(0);
    kill(pid, Signal::SIGHUP).map_err(|e| format!("cannot signal {pid}: {e}"))?;
    println!("{}: HUP to stage 4 (pid {pid})", host.name());
    let deadline = Instant::now() + SERVE_TIMEOUT;
    loop {
        let done = hosts::stats(host).is_ok_and(|s| {
            let (running, _, generation, all_new) = hosts::summary(&s);
            generation > before && all_new && running > 0
        });
        if done && hosts::probe(host) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not serve with new workers within {} s",
                host.name(),
                SERVE_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks `up` (HUP) to start the host's stage 4 again, and waits for it.
fn start_again(host: Host) -> Result<(), String> {
    let up = super::running_up().ok_or("no cluster is up: start one with `cluster up`")?;
    kill(up, Signal::SIGHUP).map_err(|e| format!("cannot signal cluster up ({up}): {e}"))?;
    println!(
        "{}: stage 4 is down: asked cluster up (pid {up}) to start it",
        host.name()
    );
    if hosts::wait_serving(host, SERVE_TIMEOUT) {
        Ok(())
    } else {
        Err(format!(
            "{} did not serve within {} s: see cluster up's output",
            host.name(),
            SERVE_TIMEOUT.as_secs()
        ))
    }
}
