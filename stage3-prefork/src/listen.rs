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
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, UnixAddr, bind, listen,
    setsockopt, socket, sockopt,
};
use wsgi_bridge::boot;
use wsgi_bridge::embed::StartError;

pub enum Listeners {
    Shared(TcpListener),
    /// The master holds a socket bound to the address but not listening: it
    /// reserves the port (and learns it, for port 0) without ever receiving a
    /// connection, which only listening sockets do.
    ReusePort {
        addr: SocketAddr,
        _reserved: OwnedFd,
    },
    /// A unix socket, shared like a TCP one (stage 4: `--socket PATH`).
    /// The master removes the file when it stops.
    Unix {
        listener: UnixListener,
        path: PathBuf,
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
}

impl Listeners {
    pub fn bind(addr: SocketAddr, reuse_port: bool) -> Result<Listeners, StartError> {
        if !reuse_port {
            return boot::bind_tcp(addr).map(Listeners::Shared);
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

    /// Binds a unix socket at `path` with permissions `mode`. A socket file
    /// left by a server that died is replaced; one a live server listens on
    /// is not.
    pub fn bind_unix(path: &Path, mode: u32, backlog: i32) -> Result<Listeners, StartError> {
        let shown = path.display();
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(StartError::new(format!(
                    "{shown} exists and is not a socket: remove it or choose another --socket path"
                )));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(StartError::new(format!(
                    "another server is listening on {shown}: stop it or choose another --socket path"
                )));
            }
            std::fs::remove_file(path).map_err(|e| {
                StartError::new(format!("cannot remove the stale socket {shown}: {e}"))
            })?;
            log::info!("Removed a stale socket file: {shown}");
        }
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
        {
            return Err(StartError::new(format!(
                "cannot listen on unix:{shown}: the directory {} does not exist",
                dir.display()
            )));
        }
        let fail = |e: nix::Error| StartError::new(format!("cannot listen on unix:{shown}: {e}"));
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(fail)?;
        let addr = UnixAddr::new(path).map_err(fail)?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).map_err(fail)?;
        let backlog = Backlog::new(backlog).unwrap_or(Backlog::MAXCONN);
        listen(&fd, backlog).map_err(fail)?;
        // Who may connect: by default only this user (0600). nginx's workers
        // run as another user when nginx is started by root, and need 0666 or
        // a shared group (0660) — the 502 "Permission denied" of the book.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| StartError::new(format!("cannot chmod {shown}: {e}")))?;
        Ok(Listeners::Unix {
            listener: UnixListener::from(fd),
            path: path.to_path_buf(),
        })
    }

    /// The address in the banner's form: `http://127.0.0.1:8000`, `unix:/path`.
    pub fn describe(&self, scheme: &str) -> String {
        match self {
            Listeners::Unix { path, .. } => format!("unix:{}", path.display()),
            _ => format!("{scheme}://{}", self.tcp_addr().expect("a TCP socket")),
        }
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listeners::Shared(l) => l.local_addr().ok(),
            Listeners::ReusePort { addr, .. } => Some(*addr),
            Listeners::Unix { .. } => None,
        }
    }

    /// `SERVER_NAME` and `SERVER_PORT` for environ.
    pub fn server_name_port(&self) -> (String, String) {
        match self.tcp_addr() {
            Some(a) => (a.ip().to_string(), a.port().to_string()),
            None => ("localhost".to_string(), String::new()),
        }
    }

    /// Stops the shared socket for every process holding it (see
    /// `Arbiter::stop`): pending and new connections are refused.
    pub fn stop_listening(&self) {
        let fd = match self {
            Listeners::Shared(l) => l.as_fd(),
            Listeners::Unix { listener, .. } => listener.as_fd(),
            Listeners::ReusePort { .. } => return,
        };
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            nix::sys::socket::Shutdown::Read,
        );
    }

    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Listeners::Unix { path, .. } => Some(path),
            _ => None,
        }
    }

    // ANCHOR: for_worker
    /// The socket a worker accepts on (called in the worker, after fork).
    pub fn for_worker(&self) -> std::io::Result<WorkerListener> {
        match self {
            Listeners::Shared(l) => l.try_clone().map(WorkerListener::Tcp),
            Listeners::Unix { listener, .. } => listener.try_clone().map(WorkerListener::Unix),
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
