//! Parsing an HTTP/1.1 request head (RFC 9112): the request line and the
//! header fields, up to and including the empty line that ends them.
//!
//! A server reads bytes from a socket into a buffer and calls [`parse_head`]
//! after every read. The answer is one of three things:
//!
//! * "not yet" (`Ok(None)`): the empty line that ends the head has not
//!   arrived; read more and call again with the longer buffer;
//! * a [`RequestHead`] and how many bytes of the buffer it used: whatever
//!   follows is the body, or already the next (pipelined) request;
//! * an [`HttpError`]: the server answers with its status and closes the
//!   connection, because after a malformed head it can no longer know where
//!   the next request would start.
//!
//! The work is done in three passes, each with one job and a module of its
//! own; [`parse_head`], below, runs them in order:
//!
//! 1. **Limits** (`scan.rs`): walk the lines and enforce the size limits of
//!    [`Limits`], also on a head that is still incomplete, so that a client
//!    cannot make the server buffer an endless request line.
//! 2. **Syntax** (the `httparse` crate; `syntax.rs` turns its errors into
//!    reasons a human can act on): method token, request target
//!    characters, version, header names and values. httparse does not
//!    allocate and is the parser hyper uses.
//! 3. **Meaning** (`interpret.rs`): the body framing (`Content-Length` /
//!    `Transfer-Encoding`), `Host`, `Connection`, `Expect`; the request
//!    target's forms and its percent-decoding are in `target.rs`.
//!
//! The token grammar they share with the chunked decoder (`tchar`, digits,
//! lists) is in [`crate::token`].
//!
//! Most of the strictness in pass 3 is about *request smuggling*: when a
//! proxy and the server behind it disagree about where one request ends,
//! an attacker can hide a second request inside the body of the first. Every
//! rule that resolves such a disagreement here does it the safe way: reject
//! the request (400) and close the connection.
//!
//! Passes 1 and 2 are arranged so that feeding a request one byte at a time
//! gives exactly the same answer as feeding it all at once (see
//! [`parse_head`]): a server must not behave differently depending on how
//! the network happened to split the bytes.

mod interpret;
mod scan;
mod syntax;
mod target;
#[cfg(test)]
mod tests;

pub use target::percent_decode;

use std::fmt;
use std::mem::MaybeUninit;

use interpret::interpret;
use scan::{Outcome, scan};
use syntax::syntax_error;

// ANCHOR: limits
/// Size limits for a request, with gunicorn's defaults.
///
/// Servers expose them as gunicorn's `--limit-request-line`,
/// `--limit-request-fields`, `--limit-request-field_size` and
/// `--limit-request-body`. They exist because a server must buffer a whole
/// head before it can act on it: without a bound, one client sending an
/// endless header could exhaust the server's memory.
///
/// Unlike gunicorn, only `max_body` treats 0 as "unlimited"; a caller that
/// wants an unbounded line or field passes `usize::MAX` (all arithmetic on
/// the limits saturates).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest request line (`GET /path HTTP/1.1`), without its CRLF.
    /// Default 4094 bytes. Over it: 400 "request line too long".
    pub max_request_line: usize,
    /// Most header fields in one request. Default 100. Over it: 431.
    pub max_header_count: usize,
    /// Longest single header line (`Name: value`) *with* its CRLF, as
    /// gunicorn counts it: 8188 bytes of content at most by default (8190
    /// with the CRLF). Over it: 431.
    pub max_header_size: usize,
    /// Largest `Content-Length` accepted. Default 1 GiB; 0 means unlimited.
    /// Over it: 413. (A chunked body has no announced length: the server
    /// counts the decoded bytes itself and answers 413 when they exceed it.)
    pub max_body: u64,
}
// ANCHOR_END: limits

impl Default for Limits {
    /// gunicorn's defaults: 4094-byte request line, 100 fields of at most
    /// 8190 bytes each, and a 1 GiB body.
    fn default() -> Self {
        Limits {
            max_request_line: 4094,
            max_header_count: 100,
            max_header_size: 8190,
            max_body: 1 << 30,
        }
    }
}

impl Limits {
    /// The largest possible complete head: a request line, the maximum
    /// number of maximal header lines with their CRLFs, and the final CRLF
    /// (plus the request line's CRLF). Only leading empty lines can push a
    /// head past this, so it is the safety net against a client that sends
    /// nothing but CRLFs.
    pub(super) fn max_head_bytes(&self) -> usize {
        self.max_request_line
            .saturating_add(self.max_header_count.saturating_mul(self.max_header_size))
            .saturating_add(4)
    }
}

/// The HTTP version of a request. Only 1.0 and 1.1 exist on the wire for
/// HTTP/1.x; HTTP/2 and HTTP/3 are different protocols that never send a
/// request line like this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: connections close after each response unless the client
    /// asks for `Connection: keep-alive`; no chunked bodies.
    Http10,
    /// HTTP/1.1: persistent connections by default, `Host` required.
    Http11,
}

impl Version {
    /// The version as written on the wire and in `SERVER_PROTOCOL`:
    /// `"HTTP/1.0"` or `"HTTP/1.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the body that follows the head is delimited (RFC 9112 section 6).
///
/// Knowing where the body ends is what lets a connection carry more than one
/// request; getting it wrong is what request smuggling exploits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body: neither `Content-Length` nor `Transfer-Encoding` was sent
    /// (for every method: a request without framing has no body), or
    /// `Content-Length: 0`.
    Empty,
    /// Exactly this many bytes follow (`Content-Length`, never 0 here).
    Length(u64),
    /// `Transfer-Encoding: chunked`: decode with
    /// [`ChunkedDecoder`](crate::chunked::ChunkedDecoder).
    Chunked,
}

/// A request the server refuses: it answers with `status` and then closes
/// the connection (after a framing error it cannot tell where the next
/// request would begin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpError {
    /// The status code to answer with: 400, 413, 431 or 501.
    pub status: u16,
    /// A short English explanation, e.g. "invalid Content-Length"; servers
    /// may log it or put it in the response body.
    pub reason: &'static str,
}

impl HttpError {
    /// An error answered with `status`, explained by `reason`.
    pub const fn new(status: u16, reason: &'static str) -> Self {
        HttpError { status, reason }
    }
}

impl fmt::Display for HttpError {
    /// `"400 invalid Content-Length"`: status code, then the reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for HttpError {}

pub(super) const fn bad_request(reason: &'static str) -> HttpError {
    HttpError::new(400, reason)
}

pub(super) const fn too_large(reason: &'static str) -> HttpError {
    HttpError::new(431, reason)
}

/// A parsed request head: everything a server needs to build the WSGI
/// environ and to find the body.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// The method token exactly as sent (`GET`, `POST`, ...). Methods are
    /// case-sensitive, so `get` stays `get`.
    pub method: String,
    /// The raw request-target exactly as sent, fragment included
    /// (gunicorn's `RAW_URI`).
    pub target: String,
    /// The percent-decoded path as bytes: `PATH_INFO` before its latin-1
    /// decoding. `%2F` becomes `/` as in gunicorn; an invalid escape
    /// (`%zz`, a trailing `%`) is kept literally. For an absolute-form
    /// target only its path part (`/` if empty); for `*` just `*`.
    pub path: Vec<u8>,
    /// The raw query string after the first `?`, without a `#fragment`;
    /// `""` if there is none (`QUERY_STRING`, still percent-encoded).
    pub query: String,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Header fields in the order sent: names with their case preserved,
    /// values without surrounding whitespace. Names may repeat. With an
    /// absolute-form target, `Host` holds the target's host (RFC 9112
    /// 3.2.2), added if the request had none.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Where the body ends (see [`BodyKind`]).
    pub body: BodyKind,
    /// Whether the client wants the connection kept open after the
    /// response: on HTTP/1.1 unless a `Connection` header has the token
    /// `close`; on HTTP/1.0 only with the token `keep-alive` (and no
    /// `close`). The server may still decide to close.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1: the client waits for an interim
    /// `100 Continue` before sending the body, so the server must send one
    /// when the application starts reading `wsgi.input`.
    pub expect_continue: bool,
}

impl RequestHead {
    /// The value of the first header called `name`, compared
    /// case-insensitively (field names are case-insensitive, RFC 9110 5.1).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

// ANCHOR: parse_head
/// Parse a request head from the start of `buf`.
///
/// * `Ok(None)`: incomplete; read more bytes and call again with the longer
///   buffer (parsing restarts from the beginning: heads are small).
/// * `Ok(Some((head, n)))`: complete; the head used the first `n` bytes of
///   `buf`, including any empty lines before the request line (RFC 9112
///   2.2 lets a server skip them: some clients send a stray CRLF after a
///   POST body). The body, or a pipelined request, starts at `buf[n]`.
/// * `Err(e)`: malformed or over a limit; answer `e.status` and close.
///
/// The answer never depends on how the bytes were split between calls: if
/// some prefix of a request already gives `Ok(Some)` or `Err`, the whole
/// request gives the same. Limit errors are reported as soon as the limit
/// is crossed, even while the head is incomplete.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let scanned = scan(buf, limits);

    // Pass 2, syntax. httparse sees exactly the bytes the scan looked at.
    // For a limit violation that is everything *before* the byte that
    // crossed the limit: a syntax error earlier in the head wins, exactly as
    // it would have if the bytes had arrived one at a time.
    let upto = match scanned.outcome {
        Outcome::Incomplete => buf.len(),
        Outcome::Complete(len) => len,
        Outcome::Violation { at, .. } => at.saturating_sub(1),
    };
    let syntax_input = buf.get(..upto).unwrap_or(buf);
    // The scan counted the header lines, so this many slots always suffice.
    // They live on the stack for an ordinary request (no allocation), left
    // uninitialized: httparse fills them in.
    let mut on_stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut on_heap = Vec::new();
    let slots = if scanned.header_lines <= STACK_HEADERS {
        &mut on_stack[..scanned.header_lines]
    } else {
        on_heap.resize_with(scanned.header_lines, MaybeUninit::uninit);
        &mut on_heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    let status = req
        .parse_with_uninit_headers(syntax_input, slots)
        .map_err(|e| syntax_error(e, syntax_input))?;

    match (scanned.outcome, status) {
        (Outcome::Violation { error, .. }, _) => Err(error),
        (Outcome::Incomplete, httparse::Status::Partial) => Ok(None),
        (Outcome::Complete(len), httparse::Status::Complete(n)) if len == n => {
            interpret(&req, limits).map(|head| Some((head, n)))
        }
        // The scan and httparse disagree on where the head ends. They use
        // the same line rules, so this should not happen; if it does, refuse
        // rather than guess (guessing is how smuggling starts).
        _ => Err(bad_request("malformed request head")),
    }
}
// ANCHOR_END: parse_head

/// Header slots for httparse kept on the stack: more than any ordinary
/// request has. A request with more header lines (up to the limit) gets
/// them on the heap.
const STACK_HEADERS: usize = 32;
