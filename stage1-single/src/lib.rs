//! Stage 1: the simplest real server. One thread takes one connection,
//! serves it to the end, and only then accepts the next.
//!
//! Everything PEP 3333 asks of a server is in `wsgi-bridge`; what is here is
//! only the *concurrency model*: none. Stage 3 runs this same loop in each
//! of its worker processes (gunicorn's `sync` worker).

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use wsgi_bridge::conn::{Listener, Stream};
use wsgi_bridge::hooks::WorkerHooks;
use wsgi_bridge::http::request::Limits;
use wsgi_bridge::serve::{HttpConnection, Next};
use wsgi_bridge::wsgi::call::WsgiApp;
use wsgi_bridge::wsgi::environ::Peer;

/// How the loop treats connections.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    pub limits: Limits,
    /// How long a kept-alive connection may sit idle waiting for its next
    /// request. `None`: close after every response.
    pub keep_alive: Option<Duration>,
    /// How long a client may take to send its request or to take the response.
    pub timeout: Duration,
}

// ANCHOR: serve_forever
/// Accepts and serves connections, one at a time, until `stop` becomes
/// readable (a signal arrived: see `main.rs`) or `hooks` asks to stop.
pub fn serve_forever(
    listener: &TcpListener,
    app: &WsgiApp,
    config: &SyncConfig,
    stop: BorrowedFd<'_>,
    hooks: &dyn WorkerHooks,
) -> io::Result<()> {
    let listener = Listener::Tcp(listener.try_clone()?);
    serve_all(
        std::slice::from_ref(&listener),
        std::slice::from_ref(app),
        config,
        stop,
        hooks,
    )
}

/// [`serve_forever`] on several listening sockets at once (stage 3 with
/// `-b` given more than once, or `-b unix:PATH`), each with the app as seen
/// through it (`apps[i]` has listener `i`'s `SERVER_NAME` and `SERVER_PORT`).
pub fn serve_all(
    listeners: &[Listener],
    apps: &[WsgiApp],
    config: &SyncConfig,
    stop: BorrowedFd<'_>,
    hooks: &dyn WorkerHooks,
) -> io::Result<()> {
    let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(AsFd::as_fd).collect();
    accept_loop(
        &fds,
        stop,
        hooks,
        |i| listeners[i].accept().map(|connection| (i, connection)),
        // While this connection is served, nobody else is: the lesson of stage 1.
        |(i, (stream, peer))| serve_connection(stream, peer, &apps[i], config, stop, hooks),
    )
}

/// The loop of a worker that serves one connection at a time, whatever the
/// protocol: take a waiting connection with `accept(i)` (from listener
/// `i`) and `serve` it to the end; when none is waiting, sleep until one
/// arrives on any listener (or `stop` is readable), as gunicorn's sync
/// worker waits on all of them with `select`. `serve` returns `false` to
/// stop. Stage 4 runs it with uwsgi connections on a unix socket.
pub fn accept_loop<C>(
    listeners: &[BorrowedFd<'_>],
    stop: BorrowedFd<'_>,
    hooks: &dyn WorkerHooks,
    mut accept: impl FnMut(usize) -> io::Result<C>,
    mut serve: impl FnMut(C) -> bool,
) -> io::Result<()> {
    // Non-blocking, so that `accept` with nobody waiting (or a wake-up for a
    // connection another process took first, in stage 3) returns instead
    // of blocking.
    for fd in listeners {
        set_nonblocking(*fd)?;
    }
    // Whether `poll` just said a connection was waiting on each listener.
    let mut woken = vec![false; listeners.len()];
    // The listener asked first on the next turn: they take turns, so a busy
    // one cannot keep another's clients waiting.
    let mut first = 0;
    loop {
        hooks.heartbeat();
        // Accept first, as gunicorn's sync worker does: under load the next
        // client is already queued, and asking `poll` first would cost a
        // system call per request to learn what `accept` tells anyway.
        let mut again = false;
        for turn in 0..listeners.len() {
            let i = (first + turn) % listeners.len();
            match accept(i) {
                Ok(connection) => {
                    woken.fill(false);
                    first = (i + 1) % listeners.len();
                    // Busy, the loop does not poll the stop pipe: the signal
                    // handler's flag tells, without a system call.
                    if !serve(connection) || wsgi_bridge::boot::stop_requested() {
                        return Ok(());
                    }
                    again = true;
                    break;
                }
                // Nobody waiting. After a wake-up, another process was faster.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if woken[i] {
                        hooks.accept_missed();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    again = true;
                    break;
                }
                // The listening socket was shut down: stage 3's master does
                // that when it stops, so that new clients are refused at once.
                // This worker can take no more connections; its TERM is on
                // the way.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(()),
                // Out of file descriptors, or a connection reset before we
                // took it: not a reason to stop serving.
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        if again {
            continue;
        }
        // Sleep until a client connects or we are told to stop; wake up
        // every second anyway to send the heartbeat.
        let mut fds: Vec<PollFd<'_>> = listeners
            .iter()
            .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(stop, PollFlags::POLLIN));
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if is_readable(&fds[listeners.len()]) {
            return Ok(());
        }
        for (i, fd) in fds[..listeners.len()].iter().enumerate() {
            woken[i] = is_readable(fd);
        }
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
// ANCHOR_END: serve_forever

// ANCHOR: serve_connection
/// Serves every request of one connection. Returns `false` when the hooks
/// asked the worker to stop.
pub fn serve_connection(
    stream: Stream,
    peer: Peer,
    app: &WsgiApp,
    config: &SyncConfig,
    stop: BorrowedFd<'_>,
    hooks: &dyn WorkerHooks,
) -> bool {
    // Small responses go out at once instead of waiting (Nagle's algorithm)
    // for more data that will never come (TCP only: a unix socket has no
    // such delay). These are set on each accepted socket, not once on the
    // listener (which Linux would copy into every accepted TCP socket): a
    // connection accepted by the kernel before the listener had them would
    // have no timeout, and could hold the one thread for ever.
    if let Stream::Tcp(tcp) = &stream {
        let _ = tcp.set_nodelay(true);
    }
    let _ = stream.set_read_timeout(Some(config.timeout));
    let _ = stream.set_write_timeout(Some(config.timeout));
    let mut conn = HttpConnection::new(stream, peer);
    // A request head gets --timeout in all, not per read: a client that
    // sends a byte now and then would otherwise hold the only thread.
    conn.limit_head_time(config.timeout);
    let keep_alive = config.keep_alive.is_some();
    loop {
        let next = conn.serve_one(app, &config.limits, keep_alive, hooks);
        if hooks.should_stop() {
            return false;
        }
        if next == Next::Close {
            return true;
        }
        // Keep-alive: wait for the next request, but not forever, and not
        // when the server is stopping. Bytes already buffered (a pipelined
        // request) need no waiting.
        hooks.heartbeat();
        if !conn.has_buffered_bytes() {
            let idle = config.keep_alive.unwrap_or_default();
            if !wait_for_request(&conn, idle, stop) {
                return true;
            }
        }
    }
}
// ANCHOR_END: serve_connection

/// Waits until the client sends something. False on timeout or stop.
fn wait_for_request(conn: &HttpConnection, idle: Duration, stop: BorrowedFd<'_>) -> bool {
    let timeout = PollTimeout::try_from(idle).unwrap_or(PollTimeout::MAX);
    let mut fds = [
        PollFd::new(conn.stream().as_fd(), PollFlags::POLLIN),
        PollFd::new(stop, PollFlags::POLLIN),
    ];
    loop {
        match poll(&mut fds, timeout) {
            Ok(0) => return false,
            Ok(_) => return !is_readable(&fds[1]) && is_readable(&fds[0]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

fn is_readable(fd: &PollFd<'_>) -> bool {
    fd.revents()
        .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR))
}
