//! Where workers accept connections: one socket per `-b` address, shared
//! by all the workers, or (TCP, with `--reuse-port`) one each.
//!
//! Shared (the default, as gunicorn): the master binds the sockets before
//! forking, and every worker inherits them. All idle workers wait on them;
//! when a connection arrives the kernel wakes them all, one wins `accept`,
//! the rest go back to sleep having done nothing: the *thundering herd*.
//!
//! `--reuse-port`: each worker binds its own socket to each TCP address with
//! `SO_REUSEPORT`, and the kernel spreads connections across them; no worker
//! is woken for another's connection. A unix socket or an inherited one
//! (`fd://N`) stays shared: `SO_REUSEPORT` is a TCP (and UDP) option.
//!
//! Given several addresses (`-b 127.0.0.1:8000 -b unix:/run/app.sock`),
//! every worker accepts on all of them, as gunicorn's do.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};
use wsgi_bridge::boot;
use wsgi_bridge::embed::StartError;

use crate::config::Bind;

/// The socket one worker accepts on: TCP or unix.
pub use wsgi_bridge::conn::Listener as WorkerListener;

/// The permissions of a socket file stage 3 creates: anyone may connect, as
/// with gunicorn (whose `--umask` is 0 by default). Put the file in a
/// directory only the right users can enter to restrict it.
pub const UNIX_SOCKET_MODE: u32 = 0o777;
/// gunicorn's `--backlog` default: connections the kernel queues for the
/// workers.
const UNIX_BACKLOG: i32 = 2048;

/// Every socket the workers accept on, in the order the addresses were
/// given, and the socket files to remove when the server stops.
pub struct Listeners {
    sockets: Vec<Socket>,
    /// Unix socket files this server made (or took over from the master it
    /// replaced), removed when `Listeners` is dropped in the process that
    /// created it, unless a new master took them over ([`Listeners::hand_over`]).
    files: Vec<PathBuf>,
    owner: u32,
}

enum Socket {
    /// Bound before the fork, shared by every worker: stage 3's TCP or unix
    /// socket, or whatever socket the caller bound (stage 4's).
    Shared(WorkerListener),
    /// The master holds a socket bound to the address but not listening: it
    /// reserves the port (and learns it, for port 0) without ever receiving a
    /// connection, which only listening sockets do.
    ReusePort {
        addr: SocketAddr,
        _reserved: OwnedFd,
    },
}

impl Drop for Listeners {
    fn drop(&mut self) {
        // Only the master that made the files: a forked worker never drops
        // these (it exits without unwinding), but better sure.
        if std::process::id() == self.owner {
            for file in &self.files {
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

impl Listeners {
    fn new(sockets: Vec<Socket>, files: Vec<PathBuf>) -> Listeners {
        Listeners {
            sockets,
            files,
            owner: std::process::id(),
        }
    }

    /// One socket the caller bound, shared by every worker (stage 4's TCP
    /// `--socket`).
    pub fn shared(listener: WorkerListener) -> Listeners {
        Listeners::new(vec![Socket::Shared(listener)], Vec::new())
    }

    /// A unix socket bound at `path` (by [`crate::unix_socket::bind_unix`]),
    /// its file removed when the server stops (stage 4's `--socket PATH`).
    pub fn unix(listener: UnixListener, path: &Path) -> Listeners {
        Listeners::new(
            vec![Socket::Shared(WorkerListener::Unix(listener))],
            vec![path.to_path_buf()],
        )
    }

    /// Where `binds` say, in their order: TCP addresses (shared, or one
    /// socket per worker with `reuse_port`), unix socket files, sockets this
    /// process inherited (`fd://N`). Started by an old master's USR2, the
    /// sockets it passed instead.
    pub fn open(binds: Vec<Bind>, reuse_port: bool) -> Result<Listeners, StartError> {
        // Started by an old master's USR2: its sockets, not new ones (the
        // addresses are taken, by those very sockets).
        if let Some(inherited) = Listeners::inherited() {
            return inherited;
        }
        // Filled as addresses are bound: if one fails, dropping it removes
        // the socket files already made.
        let mut listeners = Listeners::new(Vec::new(), Vec::new());
        for bind in binds {
            let socket = match bind {
                Bind::Tcp(addr) if reuse_port => reserve(addr)?,
                Bind::Tcp(addr) => Socket::Shared(WorkerListener::Tcp(boot::bind_tcp(addr)?)),
                Bind::Unix(path) => {
                    let listener = crate::unix_socket::bind_unix(
                        &path,
                        UNIX_SOCKET_MODE,
                        None,
                        UNIX_BACKLOG,
                        "-b unix:",
                    )?;
                    listeners.files.push(path);
                    Socket::Shared(WorkerListener::Unix(listener))
                }
                Bind::Fd(fd) => {
                    let listener = crate::upgrade::adopt_fd(fd)
                        .map_err(|e| StartError::new(format!("--bind fd://{fd}: {e}")))?;
                    Socket::Shared(listener)
                }
            };
            listeners.sockets.push(socket);
        }
        Ok(listeners)
    }

    /// The sockets an old master handed over with USR2, if this master was
    /// started that way; `None` otherwise. (Stage 4 asks before it binds
    /// its `--socket`.)
    pub fn inherited() -> Option<Result<Listeners, StartError>> {
        let inherited = crate::upgrade::inherited_sockets()?;
        let sockets = match inherited {
            Ok(sockets) => sockets,
            Err(e) => {
                return Some(Err(StartError::new(format!(
                    "cannot use the sockets the old master passed: {e}"
                ))));
            }
        };
        log::info!(
            "Using the listening {} of the master that started this one",
            if sockets.len() == 1 {
                "socket"
            } else {
                "sockets"
            }
        );
        // The socket files are this server's to remove now.
        let files = sockets.iter().filter_map(unix_path).collect();
        let sockets = sockets.into_iter().map(Socket::Shared).collect();
        Some(Ok(Listeners::new(sockets, files)))
    }

    /// The addresses in the banner's form, one per socket:
    /// `http://127.0.0.1:8000`, `uwsgi://127.0.0.1:3031`, `unix:/path`.
    pub fn describe(&self, protocol: &str) -> Vec<String> {
        self.sockets
            .iter()
            .map(|socket| match socket {
                Socket::ReusePort { addr, .. } => format!("{protocol}://{addr}"),
                Socket::Shared(l) => match l.tcp_addr() {
                    Some(addr) => format!("{protocol}://{addr}"),
                    None => {
                        let path = unix_path(l);
                        let path = path.as_deref().unwrap_or(Path::new("?"));
                        format!("unix:{}", path.display())
                    }
                },
            })
            .collect()
    }

    /// How many addresses.
    pub fn count(&self) -> usize {
        self.sockets.len()
    }

    /// Whether any TCP address has a socket per worker (`--reuse-port`).
    pub fn reuse_port(&self) -> bool {
        self.sockets
            .iter()
            .any(|s| matches!(s, Socket::ReusePort { .. }))
    }

    /// The shared sockets, to hand to a new master (USR2); `None` if some
    /// address has a socket per worker (`--reuse-port`): there is none to
    /// hand over.
    pub fn shared_fds(&self) -> Option<Vec<BorrowedFd<'_>>> {
        self.sockets
            .iter()
            .map(|socket| match socket {
                Socket::Shared(l) => Some(l.as_fd()),
                Socket::ReusePort { .. } => None,
            })
            .collect()
    }

    /// A new master serves on these sockets now: their files are its to
    /// remove, not this master's.
    pub fn hand_over(&mut self) {
        self.files.clear();
    }

    /// Stops the shared TCP sockets for every process holding them (see
    /// `Arbiter::stop`): pending and new connections are refused. A unix
    /// socket is left alone: its file is removed when `Listeners` is
    /// dropped, and from then on nobody can connect to it. (Shut down, a
    /// unix listener stays "readable" while `accept` has nothing to give,
    /// which sets event loops spinning: tokio's accept never returned.)
    pub fn stop_listening(&self) {
        for socket in &self.sockets {
            if let Socket::Shared(l @ WorkerListener::Tcp(_)) = socket {
                let _ = nix::sys::socket::shutdown(
                    std::os::fd::AsRawFd::as_raw_fd(&l.as_fd()),
                    nix::sys::socket::Shutdown::Read,
                );
            }
        }
    }

    // ANCHOR: for_worker
    /// The sockets a worker accepts on (called in the worker, after fork):
    /// the shared ones, and with `--reuse-port` one of its own per TCP
    /// address.
    pub fn for_worker(&self) -> std::io::Result<Vec<WorkerListener>> {
        self.sockets
            .iter()
            .map(|socket| match socket {
                Socket::Shared(l) => l.try_clone(),
                Socket::ReusePort { addr, .. } => {
                    let fd = reuse_port_socket(*addr)?;
                    listen(&fd, Backlog::MAXCONN)?;
                    let listener = TcpListener::from(fd);
                    boot::defer_accept(&listener);
                    Ok(WorkerListener::Tcp(listener))
                }
            })
            .collect()
    }
    // ANCHOR_END: for_worker
}

/// The path of a unix socket, if `l` is one bound to a path.
fn unix_path(l: &WorkerListener) -> Option<PathBuf> {
    match l {
        WorkerListener::Unix(u) => u
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf)),
        WorkerListener::Tcp(_) => None,
    }
}

/// `--reuse-port`: reserve the address in the master (see
/// [`Socket::ReusePort`]).
fn reserve(addr: SocketAddr) -> Result<Socket, StartError> {
    let reserved = reuse_port_socket(addr).map_err(|e| boot::bind_error(addr, e.into()))?;
    let local = nix::sys::socket::getsockname::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(
        &reserved,
    ))
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
    Ok(Socket::ReusePort {
        addr: local,
        _reserved: reserved,
    })
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
