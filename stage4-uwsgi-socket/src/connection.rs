//! Serving one uwsgi connection: read a packet, call the app, answer, close.
//! Stage 4's workers run this where stages 1 to 3 run the bridge's
//! `serve::HttpConnection`; both hand the request to the same `call_app`.

use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::Arc;

use wsgi_bridge::conn::{ReadBuf, Stream};
use wsgi_bridge::hooks::WorkerHooks;
use wsgi_bridge::http::response::error_response;
use wsgi_bridge::logging::{AccessEntry, access_log};
use wsgi_bridge::wsgi::call::{Exchange, Outcome, WsgiApp, call_app};
use wsgi_bridge::wsgi::request::Request;

use crate::UwsgiConfig;
use crate::uwsgi::{self, PacketError, UwsgiRequest, parse_packet};

/// What went wrong before the app could be called.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed before sending a whole packet (or sent nothing).
    Closed,
    Io(io::Error),
    Packet(PacketError),
}

/// A connection from nginx (or any uwsgi client).
pub struct UwsgiConnection {
    stream: Arc<Stream>,
    rbuf: ReadBuf,
}

impl UwsgiConnection {
    pub fn new(stream: Stream) -> UwsgiConnection {
        UwsgiConnection {
            stream: Arc::new(stream),
            rbuf: ReadBuf::new(),
        }
    }

    /// Reads one packet's header and vars; the body stays in the buffer.
    pub fn read_packet(&mut self, buffer_size: usize) -> Result<UwsgiRequest, ReadError> {
        loop {
            match parse_packet(self.rbuf.data(), buffer_size) {
                Ok(Some((request, used))) => {
                    self.rbuf.consume(used);
                    return Ok(request);
                }
                Ok(None) => {}
                Err(e) => return Err(ReadError::Packet(e)),
            }
            match self.rbuf.fill_from(&*self.stream) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    // ANCHOR: serve_packet
    /// Serves the one request of this connection. A bad packet is logged
    /// (and, for a browser talking to the socket, answered in HTTP with the
    /// reason), never raised: the worker goes on with the next connection.
    pub fn serve(mut self, app: &WsgiApp, config: &UwsgiConfig, hooks: &dyn WorkerHooks) {
        let request = match self.read_packet(config.buffer_size) {
            Ok(request) => request,
            Err(e) => return self.refuse(e, &app.server_software),
        };
        if let Err(e) = uwsgi::check(&request, &config.limits) {
            log::info!(
                "request {} {} from {}: {} ({})",
                request.method(),
                request.uri(),
                request.client(),
                e.reason,
                e.status
            );
            let _ = (&*self.stream).write_all(&error_response(
                e.status,
                e.reason,
                &app.server_software,
            ));
            return;
        }
        if self.peer_gave_up() {
            // nginx gave up waiting (a 504 for its client, or the client
            // left) while the request sat in the socket's queue: running
            // the app now would compute an answer nobody reads.
            log::info!(
                "request {} {} from {}: nginx gave up before a worker took it; not calling the app",
                request.method(),
                request.uri(),
                request.client()
            );
            return;
        }
        hooks.request_started();
        let exchange = Exchange {
            request: &request,
            stream: &self.stream,
            rbuf: std::mem::take(&mut self.rbuf),
            keep_alive_allowed: false,
            max_body: config.limits.max_body,
        };
        let outcome = call_app(app, exchange);
        hooks.request_finished();
        log_access(&request, &outcome);
    }
    // ANCHOR_END: serve_packet

    /// Whether the peer has closed its side already: POLLRDHUP is set once
    /// its FIN arrived, even with unread bytes (the body) still buffered.
    /// nginx never half-closes a uwsgi connection while it waits for the
    /// answer, so this means it is gone.
    fn peer_gave_up(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: poll(2) on one valid pollfd, without waiting.
        let ready = unsafe { libc::poll(&mut fd, 1, 0) };
        ready == 1 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
    }

    /// Says why a packet could not be served: in the log, and to a browser
    /// that sent HTTP to the socket, in an HTTP response it can show.
    fn refuse(self, e: ReadError, server: &str) {
        match e {
            ReadError::Closed => {}
            ReadError::Io(e) => log::info!("reading a uwsgi packet failed: {e}"),
            ReadError::Packet(e) => {
                log::error!("{e}");
                if e == PacketError::PlainHttp {
                    let message = "This is a uwsgi socket, not an HTTP server: nginx talks to it with uwsgi_pass. \
                                   Use nginx (stage 5), the --http router, or the harness' uwsgi client.";
                    let _ = (&*self.stream).write_all(&error_response(400, message, server));
                    let _ = self.stream.shutdown(Shutdown::Write);
                }
            }
        }
    }
}

/// The access log line, from the variables nginx sent.
fn log_access(request: &UwsgiRequest, outcome: &Outcome) {
    let Some(log) = access_log() else {
        return;
    };
    let request_line = format!(
        "{} {} {}",
        request.method(),
        request.uri(),
        String::from_utf8_lossy(request.var("SERVER_PROTOCOL").unwrap_or(b"HTTP/1.1"))
    );
    let var = |name: &str| request.var(name).and_then(|v| std::str::from_utf8(v).ok());
    log.write(&AccessEntry {
        remote_addr: var("REMOTE_ADDR").unwrap_or("-"),
        request_line: &request_line,
        status: outcome.status,
        body_bytes: outcome.body_bytes,
        referer: var("HTTP_REFERER"),
        user_agent: var("HTTP_USER_AGENT"),
    });
}
