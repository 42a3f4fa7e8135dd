//! Stage 4's unix socket: the file nginx connects to.
//!
//! A TCP port disappears with the process that held it; a unix socket is a
//! file, and outlives its server unless someone removes it. So binding one
//! means deciding about a file already there (a stale one from a server
//! that died is replaced, one a live server listens on is not), and who may
//! connect (the file's permissions), and removing it at the end.

use std::path::Path;

use stage3_prefork::Listeners;
use wsgi_bridge::embed::StartError;

/// Binds a unix socket at `path` with permissions `mode`, with stage 3's
/// [`stage3_prefork::unix_socket::bind_unix`] (a stale file is replaced, a
/// live one refused). The master removes the file when it stops: nginx then
/// gets a clear "No such file" instead of "Connection refused" from a dead
/// socket, and the next start finds no stale file.
pub fn bind_unix(
    path: &Path,
    mode: u32,
    owner: Option<Owner>,
    backlog: i32,
) -> Result<Listeners, StartError> {
    warn_if_the_kernel_caps(backlog);
    // Who may connect: by default only this user (0600). nginx's workers
    // run as another user when nginx is started by root, and need 0666 or
    // a shared group (0660) — the 502 "Permission denied" of the book.
    let listener = stage3_prefork::unix_socket::bind_unix(
        path,
        mode,
        owner.map(|o| (o.uid, o.gid)),
        backlog,
        "--socket",
    )?;
    Ok(Listeners::unix(listener, path))
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
