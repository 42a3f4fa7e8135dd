//! `send()` in an HTTP scope: the response head and body, framed into the
//! bytes the I/O thread writes.

use http_codec::request::Version;
use http_codec::response::{
    LAST_CHUNK, is_hop_by_hop, push_chunk_size, push_decimal, push_http_date, status_forbids_body,
};
use http_codec::token::is_tchar;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::shared::SEND_HIGH_WATER;

use super::AsgiCall;
use super::call::{Framing, field, get_type};

impl AsgiCall {
    /// `send(message)` for an HTTP call. Returns whether to wait for room.
    pub(super) fn send_http(&mut self, message: &Bound<'_, PyAny>, server: &str) -> PyResult<bool> {
        let py = message.py();
        let kind = get_type(message)?;
        let kind = kind.to_str()?;
        match kind {
            "http.response.start" => {
                if self.resp.started {
                    return Err(PyRuntimeError::new_err(
                        "http.response.start sent twice in one response",
                    ));
                }
                let status: u16 = field(message, intern!(py, "status"))
                    .map_err(|_| PyValueError::new_err("http.response.start needs a 'status'"))?
                    .extract()
                    .map_err(|_| {
                        PyValueError::new_err("the status must be an int between 100 and 999")
                    })?;
                if !(100..=999).contains(&status) {
                    return Err(PyValueError::new_err(format!(
                        "{status} is not an HTTP status code"
                    )));
                }
                self.resp.status = status;
                if let Ok(headers) = field(message, intern!(py, "headers")) {
                    self.set_headers(&headers)?;
                }
                self.resp.started = true;
                Ok(false)
            }
            "http.response.body" => {
                if !self.resp.started {
                    return Err(PyRuntimeError::new_err(
                        "http.response.body sent before http.response.start",
                    ));
                }
                if self.resp.complete {
                    return Err(PyRuntimeError::new_err(
                        "http.response.body sent after the response was complete",
                    ));
                }
                let body_obj = field(message, intern!(py, "body")).ok();
                let body: &[u8] = match &body_obj {
                    Some(b) if !b.is_none() => b
                        .cast::<PyBytes>()
                        .map_err(|_| PyTypeError::new_err("the body must be bytes"))?
                        .as_bytes(),
                    _ => b"",
                };
                let more = match field(message, intern!(py, "more_body")) {
                    Ok(m) => m.is_truthy()?,
                    Err(_) => false,
                };
                Ok(self.write_body(py, body, more, server))
            }
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message '{other}' in an http scope"
            ))),
        }
    }

    fn set_headers(&mut self, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut lines = Vec::with_capacity(128);
        for item in headers.try_iter()? {
            let item = item?;
            let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
                item.extract().map_err(|_| {
                    PyTypeError::new_err("each header must be a pair [name, value] of bytes")
                })?;
            let name = as_bytes(&name)?;
            let value = as_bytes(&value)?;
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                return Err(PyValueError::new_err(format!(
                    "invalid header name {:?}",
                    String::from_utf8_lossy(name)
                )));
            }
            if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(PyValueError::new_err(format!(
                    "invalid header value for {:?}: it contains CR, LF or NUL",
                    String::from_utf8_lossy(name)
                )));
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| PyValueError::new_err("invalid Content-Length"))?;
                let status = self.resp.status;
                if status == 204 || status < 200 {
                    // RFC 9110 8.6: never on a 1xx or a 204 (which has no body).
                    continue;
                }
                self.resp.content_length = Some(n);
            }
            if is_hop_by_hop(name) {
                if name.eq_ignore_ascii_case(b"connection")
                    && value
                        .split(|&b| b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                {
                    self.resp.app_close = true;
                }
                continue;
            }
            lines.extend_from_slice(name);
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(value);
            lines.extend_from_slice(b"\r\n");
        }
        self.resp.header_lines = lines;
        Ok(())
    }

    /// Frames a body piece (and the head, the first time); returns whether
    /// the app should wait for the client to take what is queued.
    fn write_body(&mut self, py: Python<'_>, body: &[u8], more: bool, server: &str) -> bool {
        let x = self.x.clone();
        let mut s = x.lock();
        if s.disconnected || s.io_done {
            self.resp.head_sent = true;
            if !more {
                self.resp.complete = true;
            }
            return false;
        }
        let start_len = s.out.len();
        if !self.resp.head_sent {
            self.resp.head_sent = true;
            let status = self.resp.status;
            let no_body = status_forbids_body(status);
            let mut cl_header = None;
            let mut chunked_header = false;
            self.resp.framing = if no_body {
                Framing::NoBody
            } else if let Some(n) = self.resp.content_length {
                self.resp.remaining = n;
                Framing::Length
            } else if !more {
                cl_header = Some(body.len() as u64);
                self.resp.remaining = body.len() as u64;
                Framing::Length
            } else if x.head_request {
                Framing::NoBody
            } else if x.version == Version::Http11 {
                chunked_header = true;
                Framing::Chunked
            } else {
                Framing::UntilClose
            };
            let keep =
                self.keep_alive && !self.resp.app_close && self.resp.framing != Framing::UntilClose;
            s.close_after |= !keep;
            s.status = status;
            let out = &mut s.out;
            // One allocation at most (none when the connection's buffer
            // from its last response is big enough), not one per doubling.
            out.reserve(128 + server.len() + self.resp.header_lines.len() + body.len());
            out.extend_from_slice(b"HTTP/1.1 ");
            push_decimal(out, u64::from(status));
            out.push(b' ');
            out.extend_from_slice(reason(status).as_bytes());
            out.extend_from_slice(b"\r\nserver: ");
            out.extend_from_slice(server.as_bytes());
            out.extend_from_slice(b"\r\ndate: ");
            push_http_date(out);
            out.extend_from_slice(b"\r\n");
            if !keep {
                out.extend_from_slice(b"connection: close\r\n");
            } else if x.version == Version::Http10 {
                out.extend_from_slice(b"connection: keep-alive\r\n");
            }
            out.extend_from_slice(&self.resp.header_lines);
            if let Some(n) = cl_header {
                out.extend_from_slice(b"content-length: ");
                push_decimal(out, n);
                out.extend_from_slice(b"\r\n");
            }
            if chunked_header {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
            out.extend_from_slice(b"\r\n");
            if x.head_request {
                self.resp.framing = Framing::NoBody;
            }
        }
        s.body_bytes += body.len() as u64;
        match self.resp.framing {
            Framing::NoBody => {}
            Framing::Length => {
                let n = (body.len() as u64).min(self.resp.remaining) as usize;
                if n < body.len() {
                    log::warn!(
                        "{}: the app sent more than its Content-Length; the rest is dropped and the connection closed",
                        self.label()
                    );
                    s.close_after = true;
                }
                self.resp.remaining -= n as u64;
                s.out.extend_from_slice(&body[..n]);
            }
            Framing::Chunked => {
                if !body.is_empty() {
                    push_chunk_size(&mut s.out, body.len());
                    s.out.extend_from_slice(body);
                    s.out.extend_from_slice(b"\r\n");
                }
                if !more {
                    s.out.extend_from_slice(LAST_CHUNK);
                }
            }
            Framing::UntilClose => s.out.extend_from_slice(body),
        }
        if !more {
            self.resp.complete = true;
            if self.resp.framing == Framing::Length && self.resp.remaining > 0 {
                log::warn!(
                    "{}: the app sent {} bytes fewer than its Content-Length; closing the connection",
                    self.label(),
                    self.resp.remaining
                );
                s.close_after = true;
            }
            s.out_done = true;
        }
        let added = s.out.len() - start_len;
        s.unsent += added;
        let wait = more && s.unsent >= SEND_HIGH_WATER;
        drop(s);
        if added > 0 || !more {
            super::wake_io(py, &x);
        }
        wait
    }
}

pub(super) fn as_bytes<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    obj.cast::<PyBytes>()
        .map(|b| b.as_bytes())
        .map_err(|_| PyTypeError::new_err("header names and values must be bytes"))
}

/// The reason phrase of a status line.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}
