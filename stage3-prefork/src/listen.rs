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
use std::os::fd::OwnedFd;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};
use wsgi_bridge::boot;
use wsgi_bridge::embed::StartError;

pub enum Listeners {
    Shared(TcpListener),
    /// The master holds a socket bound to the address but not listening: it
    /// reserves the port (and learns it, for port 0) without ever receiving a
    /// connection, which only listening sockets do.
    ReusePort { addr: SocketAddr, _reserved: OwnedFd },
}

impl Listeners {
    pub fn bind(addr: SocketAddr, reuse_port: bool) -> Result<Listeners, StartError> {
        if !reuse_port {
            return boot::bind_tcp(addr).map(Listeners::Shared);
        }
        let reserved = reuse_port_socket(addr).map_err(|e| boot::bind_error(addr, e.into()))?;
        let local = nix::sys::socket::getsockname::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(&reserved))
            .ok()
            .and_then(|s| {
                s.as_sockaddr_in()
                    .map(|a| SocketAddr::from((a.ip(), a.port())))
                    .or_else(|| s.as_sockaddr_in6().map(|a| SocketAddr::from((a.ip(), a.port()))))
            })
            .unwrap_or(addr);
        Ok(Listeners::ReusePort {
            addr: local,
            _reserved: reserved,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Listeners::Shared(l) => l.local_addr().expect("a bound socket has an address"),
            Listeners::ReusePort { addr, .. } => *addr,
        }
    }

    /// The socket a worker accepts on (called in the worker, after fork).
    pub fn for_worker(&self) -> std::io::Result<TcpListener> {
        match self {
            Listeners::Shared(l) => l.try_clone(),
            Listeners::ReusePort { addr, .. } => {
                let fd = reuse_port_socket(*addr)?;
                listen(&fd, Backlog::MAXCONN)?;
                let listener = TcpListener::from(fd);
                boot::defer_accept(&listener);
                Ok(listener)
            }
        }
    }
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
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr))?;
    Ok(fd)
}
