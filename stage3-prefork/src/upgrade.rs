//! Upgrading on the fly (USR2), as gunicorn does: the master starts a new
//! master from the binary on disk, handing it the listening sockets (all
//! of them, TCP and unix, as a comma-separated list of fds like gunicorn's
//! `GUNICORN_FD`), and both serve side by side until the old one is told
//! to stop.
//!
//! ```text
//! kill -USR2 <old>   old: starts new (same arguments, sockets as fds N,M)
//!                    new: boots its workers, accepts on the same sockets
//! kill -TERM <old>   old: its workers finish their requests, it exits
//! ```
//!
//! No connection is refused at any moment: the socket (and its queue of
//! waiting connections) never closes, it only gains a second owner. A new
//! master that fails to start changes nothing: the old one still serves.
//! This is how a deployment replaces the server's own code (a new build of
//! the binary) without a gap; HUP only replaces the workers.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::Pid;

use crate::listen::WorkerListener;

/// The environment variable that names the inherited sockets' fds, in
/// the order of the addresses, separated by commas (gunicorn's is
/// `GUNICORN_FD`).
pub const LISTEN_FD_ENV: &str = "STAGE3_LISTEN_FD";

/// How to start this same server again: what the process was started
/// with, captured before the master changes directory.
pub(crate) struct Relaunch {
    exe: PathBuf,
    args: Vec<OsString>,
    cwd: PathBuf,
}

impl Relaunch {
    pub fn capture() -> Option<Relaunch> {
        Some(Relaunch {
            // The path as it is now: a new build at the same path is what
            // USR2 will start.
            exe: std::env::current_exe().ok()?,
            args: std::env::args_os().skip(1).collect(),
            cwd: std::env::current_dir().ok()?,
        })
    }

    /// Starts the new master with `sockets` as inherited fds.
    pub fn start(&self, sockets: &[BorrowedFd<'_>]) -> std::io::Result<Pid> {
        // Duplicates have no close-on-exec flag: they are the fds that
        // survive the exec (closed here once the child has them).
        let inheritable = sockets
            .iter()
            .map(|s| dup_inheritable(*s))
            .collect::<std::io::Result<Vec<_>>>()?;
        let fds: Vec<String> = inheritable
            .iter()
            .map(|fd| fd.as_raw_fd().to_string())
            .collect();
        let child = Command::new(&self.exe)
            .args(&self.args)
            .current_dir(&self.cwd)
            .env(LISTEN_FD_ENV, fds.join(","))
            .spawn()?;
        Ok(Pid::from_raw(child.id() as i32))
    }
}

/// `dup(2)`: another fd for the same socket, without close-on-exec.
fn dup_inheritable(fd: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    // SAFETY: dup(2) of a valid fd; the result is a new fd we own.
    let dup = unsafe { libc::dup(fd.as_raw_fd()) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `dup` was just returned by dup(2) and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// The sockets an old master handed to this one, if it did: taken from the
/// environment (and removed from it, so that workers and the app do not
/// see it), each checked to be a listening socket.
pub(crate) fn inherited_sockets() -> Option<std::io::Result<Vec<WorkerListener>>> {
    let value = std::env::var(LISTEN_FD_ENV).ok()?;
    // SAFETY: the master is single-threaded at start-up: nothing reads the
    // environment concurrently.
    unsafe { std::env::remove_var(LISTEN_FD_ENV) };
    Some(value.split(',').map(adopt).collect())
}

fn adopt(value: &str) -> std::io::Result<WorkerListener> {
    let fd: i32 = value
        .trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("{LISTEN_FD_ENV}={value} is not an fd")))?;
    adopt_fd(fd)
}

/// Takes an inherited fd as this process's listening socket, after checking
/// that it is one: TCP or unix, as its address family says.
pub(crate) fn adopt_fd(fd: i32) -> std::io::Result<WorkerListener> {
    // SAFETY: fstat on an fd number, which fails cleanly if it is not open.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 || stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(std::io::Error::other(format!(
            "fd {fd} is not an open socket"
        )));
    }
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a c_int of the right size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || listening == 0 {
        return Err(std::io::Error::other(format!(
            "fd {fd} is a socket, but not a listening one"
        )));
    }
    use nix::sys::socket::SockaddrLike;
    let family = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd)
        .ok()
        .and_then(|a| a.family());
    // Not to be passed on to whatever this process starts.
    // SAFETY: fcntl on an fd this process inherited.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY (both): the fd is an open listening socket this process
    // inherited, and nothing else in it owns.
    match family {
        Some(nix::sys::socket::AddressFamily::Unix) => Ok(WorkerListener::Unix(unsafe {
            std::os::unix::net::UnixListener::from_raw_fd(fd)
        })),
        Some(nix::sys::socket::AddressFamily::Inet | nix::sys::socket::AddressFamily::Inet6) => {
            Ok(WorkerListener::Tcp(unsafe {
                std::net::TcpListener::from_raw_fd(fd)
            }))
        }
        _ => Err(std::io::Error::other(format!(
            "fd {fd} is a listening socket, but neither TCP nor unix"
        ))),
    }
}

/// The old master's pid file, once a new master has taken the name
/// (gunicorn's convention: `<pid file>.oldbin`).
pub(crate) fn oldbin(pid_file: &Path) -> PathBuf {
    let mut name = pid_file.as_os_str().to_owned();
    name.push(".oldbin");
    PathBuf::from(name)
}
