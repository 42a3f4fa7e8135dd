//! Serving HTTP/1.1 on one connection: read a request head, call the app,
//! repeat while the connection can be reused. Every stage runs this; what
//! differs between stages is only who calls it, and how many at a time.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::sync::PyOnceLock;

use crate::conn::{ReadBuf, Stream, WithoutWaiting};
use crate::hooks::WorkerHooks;
use crate::http::request::{HttpError, Limits, RequestHead, parse_head};
use crate::http::response::error_response;
use crate::logging::{AccessEntry, access_log};
use crate::wsgi::call::{Exchange, Outcome, WsgiApp, call_app};
use crate::wsgi::environ::{Peer, PeerStrings};
use crate::wsgi::request::HttpRequest;

/// What happens to the connection after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// It may carry another request.
    KeepAlive,
    /// It is done (the client asked, or the response or an error requires it).
    Close,
}

/// The result of waiting for a request head.
pub enum HeadRead {
    Request(RequestHead),
    /// The client closed the connection, or sent nothing before the timeout.
    Closed,
    /// The bytes are not a valid request: answer with this status and close.
    Invalid(HttpError),
}

/// A client connection speaking HTTP/1.1.
pub struct HttpConnection {
    stream: Arc<Stream>,
    rbuf: ReadBuf,
    peer: Peer,
    /// `peer` as Python strings, made at the first request.
    peer_strings: PyOnceLock<PeerStrings>,
    /// How long a whole request head may take to arrive, once it has begun.
    head_time: Option<Duration>,
}

/// What a read without waiting found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrived {
    /// A whole request head is buffered (or bytes that can never become
    /// one: the reader will answer them with an error).
    Head,
    /// Part of a head: more must come.
    Part,
    /// The client closed the connection (or it failed).
    Closed,
}

impl HttpConnection {
    pub fn new(stream: Stream, peer: Peer) -> HttpConnection {
        HttpConnection {
            stream: Arc::new(stream),
            rbuf: ReadBuf::new(),
            peer,
            peer_strings: PyOnceLock::new(),
            head_time: None,
        }
    }

    /// Gives every request head on this connection at most `limit` to
    /// arrive whole, once its first bytes are in. Without it the socket's
    /// read timeout applies to each read, and a client that sends one byte
    /// just before each timeout holds the connection (and in a one-thread
    /// server, the server) for ever: the slow-client attack.
    pub fn limit_head_time(&mut self, limit: Duration) {
        self.head_time = Some(limit);
    }

    // ANCHOR: read_without_waiting
    /// Reads what the client has sent so far, without waiting for more, and
    /// says whether a whole request head is there. An event loop (stage 2's
    /// poller) calls this when the socket is readable, and hands the
    /// connection to a thread only once the head is complete: a client that
    /// sends its head one byte at a time then holds no thread.
    pub fn read_without_waiting(&mut self, limits: &Limits) -> Arrived {
        loop {
            match self.rbuf.fill_from(WithoutWaiting(&self.stream)) {
                Ok(0) => return Arrived::Closed,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Arrived::Closed,
            }
        }
        match parse_head(self.rbuf.data(), limits) {
            Ok(None) => Arrived::Part,
            Ok(Some(_)) | Err(_) => Arrived::Head,
        }
    }
    // ANCHOR_END: read_without_waiting

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Bytes of a next (pipelined) request are already buffered: the server
    /// must not wait for the socket to become readable before serving it.
    pub fn has_buffered_bytes(&self) -> bool {
        !self.rbuf.is_empty()
    }

    // ANCHOR: read_head
    /// Reads until a complete request head is buffered.
    pub fn read_head(&mut self, limits: &Limits) -> HeadRead {
        let mut deadline = HeadDeadline::new(self.head_time);
        let read = self.read_head_until(limits, &mut deadline);
        deadline.restore(&self.stream);
        read
    }

    fn read_head_until(&mut self, limits: &Limits, deadline: &mut HeadDeadline) -> HeadRead {
        loop {
            if !self.rbuf.is_empty() {
                let t = crate::trace::start();
                match parse_head(self.rbuf.data(), limits) {
                    Ok(Some((head, used))) => {
                        crate::trace::end(t, "parse");
                        self.rbuf.consume(used);
                        return HeadRead::Request(head);
                    }
                    Ok(None) => {}
                    Err(e) => return HeadRead::Invalid(e),
                }
                // Part of a head: the rest has what is left of the time.
                if !deadline.shorten(&self.stream) {
                    log::info!(
                        "client {}:{} took too long to send its request head: closing",
                        self.peer.addr,
                        self.peer.port
                    );
                    return HeadRead::Closed;
                }
            }
            match self.rbuf.fill_from(&*self.stream) {
                Ok(0) => return HeadRead::Closed,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if !self.rbuf.is_empty() {
                        log::debug!(
                            "client {}:{} sent an incomplete request head ({e})",
                            self.peer.addr,
                            self.peer.port
                        );
                    }
                    return HeadRead::Closed;
                }
            }
        }
    }
    // ANCHOR_END: read_head

    // ANCHOR: serve_one
    /// Serves one request: reads its head, calls the app, writes the response.
    /// `keep_alive` is the server's policy: whether it wants to reuse
    /// connections at all (the client and the response have their say too).
    /// `hooks` hear when a request starts and ends (not when the client
    /// merely closed an idle connection).
    pub fn serve_one(
        &mut self,
        app: &WsgiApp,
        limits: &Limits,
        keep_alive: bool,
        hooks: &dyn WorkerHooks,
    ) -> Next {
        let head = match self.read_head(limits) {
            HeadRead::Request(head) => head,
            HeadRead::Closed => return Next::Close,
            HeadRead::Invalid(e) => {
                self.reject(&e, &app.server_software);
                return Next::Close;
            }
        };
        hooks.request_started();
        let next = self.serve_request(app, &head, limits, keep_alive);
        hooks.request_finished();
        next
    }

    /// Calls the app for a request whose head was read.
    fn serve_request(
        &mut self,
        app: &WsgiApp,
        head: &RequestHead,
        limits: &Limits,
        keep_alive: bool,
    ) -> Next {
        // A trusted proxy's headers, read before the app is called: two
        // that contradict each other are a 400, not a guess.
        let said = match app.forwarded().map(|f| f.read(&self.peer.addr, head)) {
            Some(Err(e)) => {
                self.reject(&e, &app.server_software);
                return Next::Close;
            }
            Some(Ok(said)) => said,
            None => None,
        };
        let request = HttpRequest {
            head,
            peer: &self.peer,
            peer_strings: &self.peer_strings,
            forwarded: said.as_ref(),
        };
        let exchange = Exchange {
            request: &request,
            stream: &self.stream,
            rbuf: std::mem::take(&mut self.rbuf),
            keep_alive_allowed: keep_alive,
            max_body: limits.max_body,
        };
        let t = crate::trace::start();
        crate::trace::begin(t, || format!("{} {}", head.method, head.target));
        let outcome = call_app(app, exchange);
        crate::trace::request(t, || format!("{} {}", head.method, head.target));
        self.log_access(head, &outcome);
        self.rbuf = outcome.rbuf;
        if outcome.keep_alive {
            Next::KeepAlive
        } else {
            if !outcome.client_gone && !self.rbuf.is_empty() {
                self.linger();
            }
            Next::Close
        }
    }
    // ANCHOR_END: serve_one

    /// The access log line, if one is kept.
    fn log_access(&self, head: &RequestHead, outcome: &Outcome) {
        let Some(log) = access_log() else {
            return;
        };
        let header = |name| head.header(name).and_then(|v| std::str::from_utf8(v).ok());
        log.write(&AccessEntry {
            remote_addr: &self.peer.addr,
            request_line: &format!("{} {} {}", head.method, head.target, head.version.as_str()),
            status: outcome.status,
            body_bytes: outcome.body_bytes,
            referer: header("referer"),
            user_agent: header("user-agent"),
        });
    }

    /// Answers a request that never reached the app, then closes.
    pub fn reject(&mut self, e: &HttpError, server: &str) {
        log::info!(
            "bad request from {}:{}: {} ({})",
            self.peer.addr,
            self.peer.port,
            e.reason,
            e.status
        );
        let _ = (&*self.stream).write_all(&error_response(e.status, e.reason, server));
        if let Some(log) = access_log() {
            log.write(&AccessEntry {
                remote_addr: &self.peer.addr,
                request_line: "-",
                status: e.status,
                body_bytes: 0,
                referer: None,
                user_agent: None,
            });
        }
        self.linger();
    }

    // ANCHOR: linger
    /// Closes gently when the client may still be sending: stop writing, then
    /// read and drop what arrives for a moment. Closing a socket with unread
    /// bytes makes the kernel send a reset, and a reset can destroy the error
    /// response in flight before the client reads it (nginx's
    /// "lingering close" exists for the same reason).
    fn linger(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + Duration::from_millis(500);
        let _ = self
            .stream
            .set_read_timeout(Some(Duration::from_millis(100)));
        let mut scratch = [0u8; 16 * 1024];
        let mut total = 0usize;
        while Instant::now() < deadline && total < 1024 * 1024 {
            match (&*self.stream).read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }
    // ANCHOR_END: linger
}

/// The time a request head has left to arrive whole: each read gets what
/// remains of it as its timeout, and the socket's own timeout is put back
/// afterwards.
struct HeadDeadline {
    limit: Option<(Instant, Duration)>,
    /// The socket's read timeout before it was shortened, to restore.
    saved: Option<Option<Duration>>,
}

impl HeadDeadline {
    fn new(limit: Option<Duration>) -> HeadDeadline {
        HeadDeadline {
            limit: limit.map(|l| (Instant::now(), l)),
            saved: None,
        }
    }

    /// Sets the socket's read timeout to the time left; `false` when none is.
    fn shorten(&mut self, stream: &Stream) -> bool {
        let Some((started, limit)) = self.limit else {
            return true;
        };
        let Some(left) = limit
            .checked_sub(started.elapsed())
            .filter(|l| !l.is_zero())
        else {
            return false;
        };
        if self.saved.is_none() {
            self.saved = Some(stream.read_timeout().ok().flatten());
        }
        let _ = stream.set_read_timeout(Some(left));
        true
    }

    fn restore(self, stream: &Stream) {
        if let Some(saved) = self.saved {
            let _ = stream.set_read_timeout(saved);
        }
    }
}
