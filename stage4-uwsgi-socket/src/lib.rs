//! Stage 4: the shape of `uwsgi --socket app.sock --master --processes 4`.
//!
//! The master is stage 3's, unchanged. What changes is what a worker reads:
//! not HTTP from a browser, but uwsgi packets from nginx, on a unix socket.
//! nginx has already parsed the HTTP request (and dealt with slow clients,
//! chunked uploads, keep-alive); the worker gets the CGI variables in binary
//! form, calls the app, answers in plain HTTP and closes.
//!
//! - [`uwsgi`]: the protocol: packets, their variables, `environ` from them,
//!   and how the response is framed for nginx;
//! - [`connection`]: one connection, one packet, one response;
//! - [`router`]: the `--http` router, to try the workers without nginx;
//! - [`ini`]: uWSGI's ini files (stage 5 reads them too).

pub mod connection;
pub mod ini;
pub mod router;
pub mod uwsgi;

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use stage3_prefork::listen::WorkerListener;
use wsgi_bridge::conn::Stream;
use wsgi_bridge::hooks::WorkerHooks;
use wsgi_bridge::http::request::Limits;
use wsgi_bridge::wsgi::call::WsgiApp;

use crate::connection::UwsgiConnection;

/// How a worker treats its connections.
#[derive(Clone, Debug)]
pub struct UwsgiConfig {
    /// The largest vars block accepted (uWSGI's `--buffer-size`).
    pub buffer_size: usize,
    /// The HTTP parser's limits, applied to what nginx forwards (the body
    /// limit, and the request line and header field limits: see
    /// `uwsgi::check`).
    pub limits: Limits,
    /// How long the peer may take to send its packet or take the answer.
    pub timeout: Duration,
    /// Threads per worker process (uWSGI's `--threads`), each taking
    /// packets from the socket in turn.
    pub threads: usize,
}

/// A worker with `--threads N`: N threads, each running the one-connection
/// loop below on the same socket, as uWSGI's threads each `accept` in turn.
/// Python runs in one of them at a time (the GIL); a thread waiting on the
/// network or in `time.sleep` lets another run.
pub fn serve_forever_threads(
    listener: &WorkerListener,
    app: &WsgiApp,
    config: &UwsgiConfig,
    stop: BorrowedFd<'_>,
    hooks: &dyn WorkerHooks,
) -> io::Result<()> {
    if config.threads <= 1 {
        return serve_forever(listener, app, config, stop, hooks);
    }
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..config.threads)
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("uwsgi-{i}"))
                    .spawn_scoped(scope, || serve_forever(listener, app, config, stop, hooks))
            })
            .collect::<io::Result<_>>()?;
        threads.into_iter().try_for_each(|t| {
            t.join()
                .unwrap_or_else(|_| Err(io::Error::other("a thread panicked")))
        })
    })
}

// ANCHOR: serve_forever
/// The uwsgi worker: stage 1's accept loop, with uwsgi connections.
pub fn serve_forever(
    listener: &WorkerListener,
    app: &WsgiApp,
    config: &UwsgiConfig,
    stop: BorrowedFd<'_>,
    hooks: &dyn WorkerHooks,
) -> io::Result<()> {
    let accept = || -> io::Result<Stream> {
        match listener {
            WorkerListener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            WorkerListener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
        }
    };
    stage1_single::accept_loop(
        &[listener.as_fd()],
        stop,
        hooks,
        |_| accept(),
        |stream| {
            // Blocking, whatever the listener is: on Linux, `accept` gives a
            // blocking socket already; elsewhere it may inherit the listener's
            // non-blocking mode. Unlike TCP (stage 1), a unix socket from
            // `accept` does not inherit timeouts: they are set on each.
            #[cfg(not(target_os = "linux"))]
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(config.timeout));
            let _ = stream.set_write_timeout(Some(config.timeout));
            // One packet, one response, close: nginx opens a connection per request.
            UwsgiConnection::new(stream).serve(app, config, hooks);
            !hooks.should_stop()
        },
    )
}
// ANCHOR_END: serve_forever
