//! Serving one uwsgi connection: read a packet, call the app, answer, close.
//! Stage 4's workers run this where stages 1 to 3 run `serve::HttpConnection`.

use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::Arc;

use pyo3::Python;

use crate::conn::{ReadBuf, Stream};
use crate::http::response::error_response;
use crate::uwsgi::{PacketError, UwsgiRequest, parse_packet};
use crate::worker::WorkerHooks;
use crate::wsgi::call::{Exchange, Request, WsgiApp, call_app};

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
    pub fn serve(
        mut self,
        app: &WsgiApp,
        buffer_size: usize,
        max_body: u64,
        hooks: &dyn WorkerHooks,
    ) {
        let request = match self.read_packet(buffer_size) {
            Ok(request) => request,
            Err(ReadError::Closed) => return,
            Err(ReadError::Io(e)) => {
                log::info!("reading a uwsgi packet failed: {e}");
                return;
            }
            Err(ReadError::Packet(e)) => {
                log::error!("{e}");
                if e == PacketError::PlainHttp {
                    let message = "This is a uwsgi socket, not an HTTP server: nginx talks to it with uwsgi_pass. \
                                   Use nginx (stage 5), the --http router, or the harness' uwsgi client.";
                    let _ = (&*self.stream).write_all(&error_response(
                        400,
                        message,
                        &app.server_software,
                    ));
                    let _ = self.stream.shutdown(Shutdown::Write);
                }
                return;
            }
        };
        hooks.request_started();
        let exchange = Exchange {
            request: Request::Uwsgi(&request),
            stream: &self.stream,
            rbuf: std::mem::take(&mut self.rbuf),
            keep_alive_allowed: false,
            max_body,
        };
        let outcome = Python::attach(|py| call_app(py, app, exchange));
        hooks.request_finished();
        // ANCHOR_END: serve_packet
        if let Some(log) = crate::logging::access_log() {
            let request_line = format!(
                "{} {} {}",
                request.method(),
                request.uri(),
                String::from_utf8_lossy(request.var("SERVER_PROTOCOL").unwrap_or(b"HTTP/1.1"))
            );
            let var = |name: &str| request.var(name).and_then(|v| std::str::from_utf8(v).ok());
            log.write(&crate::logging::AccessEntry {
                remote_addr: var("REMOTE_ADDR").unwrap_or("-"),
                request_line: &request_line,
                status: outcome.status,
                body_bytes: outcome.body_bytes,
                referer: var("HTTP_REFERER"),
                user_agent: var("HTTP_USER_AGENT"),
            });
        }
    }
}
