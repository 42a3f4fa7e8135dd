//! `cluster up`: creates the hosts, starts stage 4 in each and nginx in
//! front, then stays in the foreground until Ctrl-C or `cluster down`,
//! and removes everything it made.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use supervise::restart::describe_exit;
use supervise::signals::SignalQueue;

use super::hosts::{self, AppSpec};
use super::{Host, net};
use crate::config::{self, NginxSettings};

/// How long stage 4 may take to import the app and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long nginx, then stage 4, get to stop gracefully.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What `up` runs.
pub struct Plan {
    pub hosts: Vec<Host>,
    pub app: AppSpec,
    pub nginx: PathBuf,
    pub nginx_version: String,
    pub settings: NginxSettings,
}

/// The header of the nginx.conf the lab writes.
pub const HEADER: &str = "\
# Written by `cluster up` for this run (stage 5's generator, with an
# upstream block over the cluster's hosts). nginx opens a new TCP connection
# to a host for every request: the uwsgi protocol ends a response by closing
# the connection, so there is no connection to keep (nginx's `keepalive`
# works only for upstreams that can mark a response's end: HTTP/1.1,
# FastCGI).
";

/// Why `up` stopped early.
enum Stop {
    Signal,
    Error(String),
}

struct Lab {
    signals: SignalQueue,
    /// Each host's stage 4 (the `ip netns exec` process, which becomes it).
    stage4: Vec<(Host, Option<Pid>)>,
    nginx: Option<Pid>,
    plan: Plan,
    /// Stopping: exits are expected, not news.
    stopping: bool,
}

/// Runs the whole life of the cluster; the exit status.
/// `signals` are installed before anything is created, so that a Ctrl-C
/// at any point ends here, in the clean-up.
pub fn run(plan: Plan, signals: SignalQueue) -> Result<i32, String> {
    // Stage 4's workers outlive a killed master for a moment: make them
    // ours to reap rather than init's.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut lab = Lab {
        signals,
        stage4: plan.hosts.iter().map(|h| (*h, None)).collect(),
        nginx: None,
        plan,
        stopping: false,
    };
    let outcome = lab.start().and_then(|()| {
        lab.announce();
        lab.supervise()
    });
    lab.stop();
    let (namespaces, links) = net::remove_all();
    let _ = std::fs::remove_dir_all(super::dir());
    log::info!(
        "Removed namespaces {}, links {} and {}",
        namespaces.join(" "),
        if links.is_empty() {
            "(gone with them)".to_string()
        } else {
            links.join(" ")
        },
        super::DIR
    );
    log::info!("Shutting down: cluster");
    match outcome {
        Ok(()) | Err(Stop::Signal) => Ok(0),
        Err(Stop::Error(e)) => Err(e),
    }
}

impl Lab {
    fn check_signals(&mut self) -> Result<(), Stop> {
        if self.signals.take().into_iter().any(is_stop) {
            return Err(Stop::Signal);
        }
        Ok(())
    }

    fn start(&mut self) -> Result<(), Stop> {
        log::info!(
            "Creating {} hosts: namespaces wcl-h1… on bridge {} ({}/24)",
            self.plan.hosts.len(),
            super::BRIDGE,
            super::GATEWAY
        );
        net::create(&self.plan.hosts).map_err(Stop::Error)?;
        self.check_signals()?;
        for i in 0..self.stage4.len() {
            self.spawn_stage4(i).map_err(Stop::Error)?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for host in self.plan.hosts.clone() {
            while !hosts::probe(host) {
                self.check_signals()?;
                if let Some(reason) = self.reap().into_iter().next() {
                    return Err(Stop::Error(format!(
                        "stage 4 exited before serving ({reason}): its error is above"
                    )));
                }
                if Instant::now() >= deadline {
                    return Err(Stop::Error(format!(
                        "{} did not serve within {} s",
                        host.name(),
                        START_TIMEOUT.as_secs()
                    )));
                }
                self.wait(Duration::from_millis(50));
            }
        }
        config::write_files(&self.plan.settings).map_err(Stop::Error)?;
        let nginx_cmd = config::nginx_command(&self.plan.nginx, &self.plan.settings);
        self.nginx = Some(spawn("nginx", &nginx_cmd).map_err(Stop::Error)?);
        let pid_file = self.plan.settings.pid_path();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let written = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if self.nginx.is_some_and(|p| written.trim() == p.to_string()) {
                return Ok(());
            }
            self.check_signals()?;
            self.reap();
            if self.nginx.is_none() {
                return Err(Stop::Error(
                    "nginx exited at start-up: its error is above".into(),
                ));
            }
            if Instant::now() >= deadline {
                return Err(Stop::Error("nginx did not start within 10 s".into()));
            }
            self.wait(Duration::from_millis(50));
        }
    }

    fn spawn_stage4(&mut self, i: usize) -> Result<(), String> {
        let host = self.stage4[i].0;
        let cmd = hosts::stage4_command(&self.plan.app, host)?;
        let pid = spawn(&host.name(), &cmd)?;
        self.stage4[i].1 = Some(pid);
        Ok(())
    }

    fn announce(&self) {
        for (host, pid) in &self.stage4 {
            log::info!(
                "{}: stage 4 (pid {}) at {}, stats at {}",
                host.name(),
                pid.map_or(0, Pid::as_raw),
                host.socket(),
                host.stats()
            );
        }
        let s = &self.plan.settings;
        log::info!(
            "nginx: {} ({}), pid {}, upstream: {}",
            self.plan.nginx.display(),
            self.plan.nginx_version,
            self.nginx.map_or(0, Pid::as_raw),
            describe_upstream(s)
        );
        log::info!("Files: {} (nginx.conf, access.log)", super::DIR);
        log::info!("Listening at: http://{} ({})", s.listen, std::process::id());
    }

    /// Until TERM or INT: reports hosts that die; HUP starts them again.
    fn supervise(&mut self) -> Result<(), Stop> {
        loop {
            self.wait(Duration::from_secs(1));
            for signal in self.signals.take() {
                match signal {
                    libc::SIGHUP => self.revive(),
                    s if is_stop(s) => {
                        log::info!("Handling signal: {}", signal_name(s));
                        return Ok(());
                    }
                    _ => {}
                }
            }
            self.reap();
            if self.nginx.is_none() {
                return Err(Stop::Error("nginx exited: stopping the cluster".into()));
            }
        }
    }

    /// HUP (`cluster restart HOST` on a host that is down): stage 4 again
    /// wherever it is not running.
    fn revive(&mut self) {
        for i in 0..self.stage4.len() {
            if self.stage4[i].1.is_none() {
                let host = self.stage4[i].0;
                log::info!("{}: starting stage 4 again", host.name());
                if let Err(e) = self.spawn_stage4(i) {
                    log::error!("{}: {e}", host.name());
                }
            }
        }
    }

    /// Reaps every child that exited; says which of ours did, and why.
    fn reap(&mut self) -> Vec<String> {
        let mut ours = Vec::new();
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return ours,
                Ok(status) => status,
            };
            let pid = status.pid();
            if self.nginx.is_some() && self.nginx == pid {
                self.nginx = None;
                if !self.stopping {
                    log::error!("nginx exited ({})", describe_exit(status));
                }
                ours.push(format!("nginx: {}", describe_exit(status)));
            }
            for (host, p) in &mut self.stage4 {
                if p.is_some() && *p == pid {
                    *p = None;
                    // While starting or stopping, the caller says what happened.
                    if self.stopping || self.nginx.is_none() {
                        continue;
                    }
                    log::warn!(
                        "{}: stage 4 exited ({}): the host is down until `cluster restart {}`",
                        host.name(),
                        describe_exit(status),
                        host.name()
                    );
                    ours.push(format!("{}: {}", host.name(), describe_exit(status)));
                }
            }
        }
    }

    /// Sleeps until a signal arrives or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let mut fds = [PollFd::new(self.signals.fd(), PollFlags::POLLIN)];
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX),
        );
    }

    /// nginx first (QUIT: it finishes the requests in flight), then every
    /// stage 4 (TERM); KILL to whatever is still there after the grace
    /// time, and to anything else left in the namespaces.
    fn stop(&mut self) {
        log::info!("Stopping nginx, then stage 4 on every host");
        self.stopping = true;
        if let Some(pid) = self.nginx {
            let _ = kill(pid, Signal::SIGQUIT);
        }
        self.wait_for(STOP_GRACE, |lab| lab.nginx.is_none());
        if let Some(pid) = self.nginx {
            let _ = killpg(pid, Signal::SIGKILL);
        }
        for (_, pid) in &self.stage4 {
            if let Some(pid) = pid {
                let _ = kill(*pid, Signal::SIGTERM);
            }
        }
        self.wait_for(STOP_GRACE, |lab| {
            lab.stage4.iter().all(|(_, p)| p.is_none())
        });
        for host in &self.plan.hosts {
            for pid in net::pids_in(&host.netns()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // Stage 4's workers exit with their master: reap them.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }

    fn wait_for(&mut self, timeout: Duration, done: impl Fn(&Lab) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) && Instant::now() < deadline {
            self.wait(Duration::from_millis(50));
            self.reap();
            // A second Ctrl-C: no more waiting.
            if self.signals.take().into_iter().any(is_stop) {
                break;
            }
        }
    }
}

/// `least_conn; 198.18.0.11:3031 weight=2, …`
fn describe_upstream(s: &NginxSettings) -> String {
    let method = s.upstream.method.directive().unwrap_or("round robin");
    let servers: Vec<String> = s
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let params = s.upstream.servers.get(i).map(|p| p.render());
            format!("{u}{}", params.unwrap_or_default())
        })
        .collect();
    format!("{method}; {}", servers.join(", "))
}

/// Starts a program in its own process group (Ctrl-C reaches only `up`,
/// which stops things in order), to die with `up` should it be killed.
fn spawn(name: &str, command: &[OsString]) -> Result<Pid, String> {
    let line: Vec<String> = command
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    log::info!("Starting {name}: {}", line.join(" "));
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .stdin(Stdio::null())
        .process_group(0);
    let parent = nix::unistd::getpid();
    // SAFETY: between fork and exec only async-signal-safe calls (prctl,
    // getppid).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("cluster up has exited"));
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", command[0].to_string_lossy()))?;
    Ok(Pid::from_raw(child.id() as i32))
}

fn is_stop(signal: libc::c_int) -> bool {
    matches!(signal, libc::SIGTERM | libc::SIGINT | libc::SIGQUIT)
}

fn signal_name(signal: libc::c_int) -> String {
    Signal::try_from(signal)
        .map_or("?", Signal::as_str)
        .trim_start_matches("SIG")
        .to_lowercase()
}

/// The address nginx listens on: port 0 becomes a free port now (nginx
/// cannot report back the one the kernel gave it).
pub fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let mut addr = text
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("--listen {text}: not an address such as 127.0.0.1:8080"))?;
    if addr.port() == 0 {
        let free = std::net::TcpListener::bind(addr)
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("--listen {text}: {e}"))?;
        addr.set_port(free.port());
    }
    std::net::TcpListener::bind(addr).map_err(|e| {
        format!("cannot listen on {addr}: {e} (is another server running there? choose another with --listen)")
    })?;
    Ok(addr)
}
