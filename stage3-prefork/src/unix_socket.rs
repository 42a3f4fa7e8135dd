//! A unix socket file to listen on: `-b unix:PATH` in stage 3, `--socket
//! PATH` in stage 4 (which uses this file too).
//!
//! A TCP port disappears with the process that held it; a unix socket is a
//! file, and outlives its server unless someone removes it. So binding one
//! means deciding about a file already there (a stale one from a server
//! that died is replaced, one a live server listens on is not), and who may
//! connect (the file's permissions), and removing it at the end (the
//! master does, see `Listeners`; not when a new master took it over with
//! USR2).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
};
use wsgi_bridge::embed::StartError;

/// Who owns the socket file: a user id, and a group id if one was given.
pub type Owner = (u32, Option<u32>);

/// Binds a unix socket at `path` with permissions `mode` (and `owner`),
/// listening with `backlog`. A socket file left by a server that died is
/// replaced; one a live server listens on is not. `flag` is the option the
/// user gave the path with, for the sentences: `-b`, `--socket`.
pub fn bind_unix(
    path: &Path,
    mode: u32,
    owner: Option<Owner>,
    backlog: i32,
    flag: &str,
) -> Result<UnixListener, StartError> {
    let shown = path.display();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(StartError::new(format!(
                "{shown} exists and is not a socket: remove it or choose another {flag} path"
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(StartError::new(format!(
                "another server is listening on {shown}: stop it or choose another {flag} path"
            )));
        }
        // Nobody answers: the file of a server that died without removing
        // it (kill -9). Binding fails while it exists, so it goes.
        std::fs::remove_file(path)
            .map_err(|e| StartError::new(format!("cannot remove the stale socket {shown}: {e}")))?;
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
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| StartError::new(format!("cannot chmod {shown}: {e}")))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), gid)
            .map_err(|e| StartError::new(format!("cannot chown {shown}: {e}")))?;
    }
    Ok(UnixListener::from(fd))
}
