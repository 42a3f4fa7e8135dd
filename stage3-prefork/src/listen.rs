//! Where workers accept connections: one socket shared by all, or one each.
//!
//! Shared (the default, as gunicorn): the master binds one socket before
//! forking, and every worker inherits it. All idle workers wait on it; when a
//! connection arrives the kernel wakes them all, one wins `accept`, the rest
//! go back to sleep having done nothing: the *thundering herd*.
//!
//! `--reuse-port`: each worker binds its own socket to the same address with
//! `SO_REUSEPORT`, and the kernel spreads connections across them; no worker
//! is woken for another's connection.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};
use wsgi_bridge::boot;
use wsgi_bridge::embed::StartError;

pub enum Listeners {
    /// One socket bound before the fork, shared by every worker: stage 3's
    /// TCP socket, or whatever socket the caller bound (stage 4's unix
    /// socket).
    Shared(WorkerListener),
    /// The master holds a socket bound to the address but not listening: it
    /// reserves the port (and learns it, for port 0) without ever receiving a
    /// connection, which only listening sockets do.
    ReusePort {
        addr: SocketAddr,
        _reserved: OwnedFd,
    },
}

/// The socket one worker accepts on.
pub enum WorkerListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl WorkerListener {
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            WorkerListener::Tcp(l) => l.as_fd(),
            WorkerListener::Unix(l) => l.as_fd(),
        }
    }

    /// Another handle on the same socket.
    pub fn try_clone(&self) -> std::io::Result<WorkerListener> {
        match self {
            WorkerListener::Tcp(l) => l.try_clone().map(WorkerListener::Tcp),
            WorkerListener::Unix(l) => l.try_clone().map(WorkerListener::Unix),
        }
    }
}

impl Listeners {
    pub fn bind(addr: SocketAddr, reuse_port: bool) -> Result<Listeners, StartError> {
        // Started by an old master's USR2: its socket, not a new one (the
        // address is taken, by that very socket).
        if let Some(inherited) = crate::upgrade::inherited_socket() {
            let listener = inherited.map_err(|e| {
                StartError::new(format!("cannot use the socket the old master passed: {e}"))
            })?;
            log::info!("Using the listening socket of the master that started this one");
            return Ok(Listeners::Shared(WorkerListener::Tcp(listener)));
        }
        if !reuse_port {
            return boot::bind_tcp(addr).map(|l| Listeners::Shared(WorkerListener::Tcp(l)));
        }
        let reserved = reuse_port_socket(addr).map_err(|e| boot::bind_error(addr, e.into()))?;
        let local = nix::sys::socket::getsockname::<SockaddrStorage>(
            std::os::fd::AsRawFd::as_raw_fd(&reserved),
        )
        .ok()
        .and_then(|s| {
            s.as_sockaddr_in()
                .map(|a| SocketAddr::from((a.ip(), a.port())))
                .or_else(|| {
                    s.as_sockaddr_in6()
                        .map(|a| SocketAddr::from((a.ip(), a.port())))
                })
        })
        .unwrap_or(addr);
        Ok(Listeners::ReusePort {
            addr: local,
            _reserved: reserved,
        })
    }

    /// The address in the banner's form: `http://127.0.0.1:8000`,
    /// `uwsgi://127.0.0.1:3031`, `unix:/path`.
    pub fn describe(&self, protocol: &str) -> String {
        match (self, self.tcp_addr()) {
            (_, Some(addr)) => format!("{protocol}://{addr}"),
            (Listeners::Shared(WorkerListener::Unix(l)), None) => {
                let path = l.local_addr().ok();
                let path = path.as_ref().and_then(|a| a.as_pathname());
                format!("unix:{}", path.unwrap_or(Path::new("?")).display())
            }
            _ => "?".to_string(),
        }
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listeners::Shared(WorkerListener::Tcp(l)) => l.local_addr().ok(),
            Listeners::Shared(WorkerListener::Unix(_)) => None,
            Listeners::ReusePort { addr, .. } => Some(*addr),
        }
    }

    /// `SERVER_NAME` and `SERVER_PORT` for environ.
    pub fn server_name_port(&self) -> (String, String) {
        match self.tcp_addr() {
            Some(a) => (a.ip().to_string(), a.port().to_string()),
            None => ("localhost".to_string(), String::new()),
        }
    }

    /// Where `bind` says: a TCP address (see [`Listeners::bind`]), or a
    /// socket this process inherited (`fd://N`).
    pub fn open(bind: crate::config::Bind, reuse_port: bool) -> Result<Listeners, StartError> {
        match bind {
            crate::config::Bind::Tcp(addr) => Listeners::bind(addr, reuse_port),
            crate::config::Bind::Fd(fd) => {
                let listener = crate::upgrade::adopt_fd(fd)
                    .map_err(|e| StartError::new(format!("--bind fd://{fd}: {e}")))?;
                Ok(Listeners::Shared(WorkerListener::Tcp(listener)))
            }
        }
    }

    /// The shared socket, if there is one (with `--reuse-port` each worker
    /// has its own).
    pub fn shared_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Listeners::Shared(l) => Some(l.as_fd()),
            Listeners::ReusePort { .. } => None,
        }
    }

    /// Stops the shared socket for every process holding it (see
    /// `Arbiter::stop`): pending and new connections are refused.
    pub fn stop_listening(&self) {
        let fd = match self {
            Listeners::Shared(l) => l.as_fd(),
            Listeners::ReusePort { .. } => return,
        };
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            nix::sys::socket::Shutdown::Read,
        );
    }

    // ANCHOR: for_worker
    /// The socket a worker accepts on (called in the worker, after fork).
    pub fn for_worker(&self) -> std::io::Result<WorkerListener> {
        match self {
            Listeners::Shared(l) => l.try_clone(),
            Listeners::ReusePort { addr, .. } => {
                let fd = reuse_port_socket(*addr)?;
                listen(&fd, Backlog::MAXCONN)?;
                let listener = TcpListener::from(fd);
                boot::defer_accept(&listener);
                Ok(WorkerListener::Tcp(listener))
            }
        }
    }
    // ANCHOR_END: for_worker
}

fn reuse_port_socket(addr: SocketAddr) -> nix::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    Ok(fd)
}
