//! The network: a bridge in the root namespace, one namespace per host,
//! joined to the bridge by a veth pair (a virtual cable: what goes in one
//! end comes out of the other). All with iproute2's `ip` and `tc`, the
//! commands a student can type to look at it (`ip netns`, `ip link`,
//! `tc qdisc show`).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{BRIDGE, GATEWAY, Host, PREFIX};

/// `ip` or `tc`: on PATH, else in the sbin directories (not on every
/// user's PATH).
pub fn tool(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "the cluster lab needs iproute2's {name}: install it (apt-get install iproute2)"
            )
        })
}

/// Runs `tool args`; its stdout, or its error in one line.
fn run(name: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(tool(name)?)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {name}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{name} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

pub fn tc(args: &[&str]) -> Result<String, String> {
    run("tc", args)
}

/// The bridge, then each host: its namespace, its cable, its address.
pub fn create(hosts: &[Host]) -> Result<(), String> {
    let gateway = format!("{GATEWAY}/24");
    ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["addr", "add", &gateway, "dev", BRIDGE])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    for host in hosts {
        add_host(*host)?;
    }
    Ok(())
}

// ANCHOR: add_host
/// `wcl-h1` in the root namespace, plugged into the bridge; its other end
/// is `eth0` in namespace `wcl-h1`, with the host's address.
fn add_host(host: Host) -> Result<(), String> {
    let (ns, link) = (host.netns(), host.netns());
    let peer = format!("{link}p");
    let addr = format!("{}/24", host.ip());
    ip(&["netns", "add", &ns])?;
    ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer])?;
    ip(&["link", "set", &peer, "netns", &ns])?;
    ip(&["-n", &ns, "link", "set", &peer, "name", "eth0"])?;
    ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    ip(&["link", "set", &link, "master", BRIDGE])?;
    ip(&["link", "set", &link, "up"])?;
    Ok(())
}
// ANCHOR_END: add_host

/// The lab's namespaces (`ip netns list`).
pub fn namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(String::from)
        .collect()
}

/// The lab's links in the root namespace (`ip -o link show`: `3: wcl-h1@if2: <…`).
pub fn links() -> Vec<String> {
    ip(&["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name))
        .filter(|n| n.starts_with(PREFIX))
        .map(String::from)
        .collect()
}

/// Processes running in a namespace (`ip netns pids`).
pub fn pids_in(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Deletes every namespace and link of the lab; what it removed. (A
/// namespace's end of a veth pair goes with the namespace, and the pair
/// with it.)
pub fn remove_all() -> (Vec<String>, Vec<String>) {
    let namespaces = namespaces();
    for ns in &namespaces {
        let _ = ip(&["netns", "del", ns]);
    }
    let links = links();
    for link in &links {
        let _ = ip(&["link", "del", link]);
    }
    (namespaces, links)
}

/// How a link is slowed: netem's delay, loss and rate, or tbf's rate.
#[derive(Clone, Debug, Default)]
pub struct Slowdown {
    pub delay: Option<String>,
    pub loss: Option<String>,
    pub rate: Option<String>,
}

/// Slows the packets nginx sends to the host (that direction only: the
/// round trip grows by the delay once). netem (`tc qdisc replace … netem
/// delay 50ms loss 1%`) when the kernel has it; a rate alone falls back to
/// tbf, the token bucket every kernel with traffic control has. Returns
/// the qdisc as tc shows it.
pub fn slow(host: Host, how: &Slowdown) -> Result<String, String> {
    let link = host.netns();
    let mut netem = vec!["qdisc", "replace", "dev", &link, "root", "netem"];
    let delay = match (&how.delay, &how.rate) {
        (Some(d), _) => Some(d.as_str()),
        (None, None) => Some("50ms"),
        (None, Some(_)) => None,
    };
    if let Some(d) = delay {
        netem.extend(["delay", d]);
    }
    if let Some(l) = &how.loss {
        netem.extend(["loss", l]);
    }
    if let Some(r) = &how.rate {
        netem.extend(["rate", r]);
    }
    match tc(&netem) {
        Ok(_) => {}
        Err(e) if e.contains("kind is unknown") => {
            match (&how.rate, how.delay.is_none() && how.loss.is_none()) {
                (Some(rate), true) => {
                    tc(&[
                        "qdisc", "replace", "dev", &link, "root", "tbf", "rate", rate, "burst",
                        "4kb", "latency", "1s",
                    ])?;
                }
                _ => {
                    return Err("this kernel has no netem (CONFIG_NET_SCH_NETEM; try modprobe sch_netem), which delay and loss need: --rate alone works without it (tbf)".to_string());
                }
            }
        }
        Err(e) => return Err(e),
    }
    Ok(shaping(host).unwrap_or_default())
}

/// The cable pulled out: the host's link down on the bridge's side.
pub fn cut(host: Host) -> Result<(), String> {
    ip(&["link", "set", &host.netns(), "down"]).map(drop)
}

/// Undoes `slow` and `cut`.
pub fn heal(host: Host) -> Result<(), String> {
    let link = host.netns();
    if shaping(host).is_some() {
        tc(&["qdisc", "del", "dev", &link, "root"])?;
    }
    ip(&["link", "set", &link, "up"]).map(drop)
}

/// The qdisc slowing the host's link, as `tc qdisc show` says it
/// (`netem delay 50ms loss 1%`, `tbf rate 100Kbit`), if any.
pub fn shaping(host: Host) -> Option<String> {
    let out = tc(&["qdisc", "show", "dev", &host.netns()]).ok()?;
    out.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let kind = *words.get(1)?;
        if !matches!(kind, "netem" | "tbf") {
            return None;
        }
        // `qdisc netem 8001: root refcnt 2 limit 1000 delay 50ms`: the
        // settings after the refcount, without the queue's limit.
        let at = words.iter().position(|w| *w == "refcnt")? + 2;
        let mut settings: Vec<&str> = words.get(at..)?.to_vec();
        if settings.first() == Some(&"limit") {
            settings.drain(..2.min(settings.len()));
        }
        // tbf: its rate; the bucket's size and queue are ours, not news.
        if let Some(burst) = settings.iter().position(|w| *w == "burst") {
            settings.truncate(burst);
        }
        Some(format!("{kind} {}", settings.join(" ")))
    })
}

/// Whether the host's link is up on the bridge's side.
pub fn link_up(host: Host) -> bool {
    ip(&["-o", "link", "show", "dev", &host.netns()]).is_ok_and(|l| {
        l.split('>')
            .next()
            .is_some_and(|flags| flags.contains(",UP"))
    })
}

/// A TCP connection to a host, through the lab's bridge and nowhere else.
///
/// The socket is bound to the bridge (`SO_BINDTODEVICE`): should the lab's
/// network be gone, the connection fails here, instead of leaving the
/// machine by the default route towards whatever answers for 198.18.0.0/15
/// out there.
pub fn connect(
    addr: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> std::io::Result<std::net::TcpStream> {
    use nix::errno::Errno;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, getsockopt, setsockopt, socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let std::net::SocketAddr::V4(v4) = addr else {
        return Err(std::io::Error::other("the lab's hosts have IPv4 addresses"));
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(BRIDGE),
    )?;
    match nix::sys::socket::connect(fd.as_raw_fd(), &SockaddrIn::from(v4)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => {
            let mut fds = [PollFd::new(
                std::os::fd::AsFd::as_fd(&fd),
                PollFlags::POLLOUT,
            )];
            let ready = poll(
                &mut fds,
                PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX),
            )?;
            if ready == 0 {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            let err = getsockopt(&fd, sockopt::SocketError)?;
            if err != 0 {
                return Err(std::io::Error::from_raw_os_error(err));
            }
        }
        Err(e) => return Err(e.into()),
    }
    let stream = std::net::TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}
