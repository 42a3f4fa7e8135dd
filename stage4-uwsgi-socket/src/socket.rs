//! Stage 4's unix socket: the file nginx connects to.
//!
//! A TCP port disappears with the process that held it; a unix socket is a
//! file, and outlives its server unless someone removes it. So binding one
//! means deciding about a file already there (a stale one from a server
//! that died is replaced, one a live server listens on is not), and who may
//! connect (the file's permissions), and removing it at the end.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
};
use stage3_prefork::{Listeners, WorkerListener};
use wsgi_bridge::embed::StartError;

/// Binds a unix socket at `path` with permissions `mode`. A socket file
/// left by a server that died is replaced; one a live server listens on
/// is not.
pub fn bind_unix(
    path: &Path,
    mode: u32,
    owner: Option<Owner>,
    backlog: i32,
) -> Result<Listeners, StartError> {
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
    warn_if_the_kernel_caps(backlog);
    let backlog = Backlog::new(backlog).unwrap_or(Backlog::MAXCONN);
    listen(&fd, backlog).map_err(fail)?;
    // Who may connect: by default only this user (0600). nginx's workers
    // run as another user when nginx is started by root, and need 0666 or
    // a shared group (0660) — the 502 "Permission denied" of the book.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| StartError::new(format!("cannot chmod {shown}: {e}")))?;
    if let Some(owner) = owner {
        std::os::unix::fs::chown(path, Some(owner.uid), owner.gid)
            .map_err(|e| StartError::new(format!("cannot chown {shown}: {e}")))?;
    }
    Ok(Listeners::Shared(WorkerListener::Unix(UnixListener::from(
        fd,
    ))))
}

/// Removes the socket file when the server stops: nginx then gets a clear
/// "No such file" instead of "Connection refused" from a dead socket, and
/// the next start finds no stale file.
pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Who owns the socket file (`--chown-socket USER[:GROUP]`).
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    uid: u32,
    gid: Option<u32>,
}

/// Reads `USER` or `USER:GROUP` (names or numbers).
pub fn owner(spec: &str) -> Result<Owner, StartError> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group).filter(|g| !g.is_empty())),
        None => (spec, None),
    };
    let uid = match user.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
            .ok_or_else(|| StartError::new(format!("--chown-socket: there is no user '{user}'")))?,
    };
    let gid = match group {
        None => None,
        Some(group) => Some(match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => nix::unistd::Group::from_name(group)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
                .ok_or_else(|| {
                    StartError::new(format!("--chown-socket: there is no group '{group}'"))
                })?,
        }),
    };
    Ok(Owner { uid, gid })
}

/// Linux silently shortens a listen queue to `net.core.somaxconn`: say so,
/// since a short queue turns load into nginx's 502s.
fn warn_if_the_kernel_caps(backlog: i32) {
    let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(cap) = cap.filter(|&cap| cap < backlog) {
        log::warn!(
            "--listen {backlog}: the kernel allows at most {cap} (net.core.somaxconn); \
             raise it with: sysctl -w net.core.somaxconn={backlog}"
        );
    }
}
