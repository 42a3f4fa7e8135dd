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
//! The work is done in three passes, each with one job:
//!
//! 1. **Limits** (`scan`): walk the lines and enforce the size limits of
//!    [`Limits`], also on a head that is still incomplete, so that a client
//!    cannot make the server buffer an endless request line.
//! 2. **Syntax** (the `httparse` crate): method token, request target
//!    characters, version, header names and values. httparse does not
//!    allocate and is the parser hyper uses.
//! 3. **Meaning** (`interpret`): the request target forms, the body framing
//!    (`Content-Length` / `Transfer-Encoding`), `Host`, `Connection`, `Expect`.
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

use std::fmt;
use std::mem::MaybeUninit;

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
    /// Longest single header line (`Name: value`), without its CRLF.
    /// Default 8190 bytes. Over it: 431.
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
    fn max_head_bytes(&self) -> usize {
        self.max_request_line
            .saturating_add(
                self.max_header_count
                    .saturating_mul(self.max_header_size.saturating_add(2)),
            )
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
    /// [`ChunkedDecoder`](super::chunked::ChunkedDecoder).
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

const fn bad_request(reason: &'static str) -> HttpError {
    HttpError::new(400, reason)
}

const fn too_large(reason: &'static str) -> HttpError {
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

// ---------------------------------------------------------------------------
// Pass 1: limits.

/// What the limit scan found.
struct Scanned {
    outcome: Outcome,
    /// Header lines seen so far, including a partial last one.
    header_lines: usize,
}

enum Outcome {
    /// The head has not ended yet and no limit is crossed.
    Incomplete,
    /// The head ends after this many bytes (its final empty line included).
    Complete(usize),
    /// A limit is crossed; it became certain once `at` bytes had arrived
    /// (so the byte at index `at - 1` is the one that crossed it).
    Violation { at: usize, error: HttpError },
}

/// Walk the lines of `buf`, checking the limits, without interpreting
/// anything else.
///
/// Every decision is made from a prefix of the buffer and never revised by
/// later bytes: that is what makes byte-at-a-time parsing agree with
/// all-at-once parsing.
fn scan(buf: &[u8], limits: &Limits) -> Scanned {
    let max_head = limits.max_head_bytes();
    let head_too_large = Outcome::Violation {
        at: max_head.saturating_add(1),
        error: too_large("request head too large"),
    };
    // Bytes beyond the largest possible head cannot change the answer.
    let window = buf.get(..max_head.saturating_add(1)).unwrap_or(buf);
    let mut scanned = scan_lines(window, limits);
    match scanned.outcome {
        Outcome::Complete(len) if len > max_head => scanned.outcome = head_too_large,
        Outcome::Incomplete if buf.len() > max_head => scanned.outcome = head_too_large,
        _ => {}
    }
    scanned
}

fn scan_lines(buf: &[u8], limits: &Limits) -> Scanned {
    let incomplete = |header_lines| Scanned {
        outcome: Outcome::Incomplete,
        header_lines,
    };

    // Empty lines before the request line (RFC 9112 2.2). A CR followed by
    // anything but LF starts the "request line"; httparse then rejects it.
    let mut pos = 0;
    loop {
        match (buf.get(pos), buf.get(pos + 1)) {
            (Some(b'\n'), _) => pos += 1,
            (Some(b'\r'), Some(b'\n')) => pos += 2,
            (Some(b'\r'), None) | (None, _) => return incomplete(0),
            _ => break,
        }
    }

    match measure_line(buf, pos, limits.max_request_line) {
        Line::Incomplete => return incomplete(0),
        Line::TooLong { at } => {
            return Scanned {
                outcome: Outcome::Violation {
                    at,
                    error: bad_request("request line too long"),
                },
                header_lines: 0,
            };
        }
        Line::Ends { next } => pos = next,
    }

    let mut header_lines = 0;
    loop {
        let violation = |at, error, header_lines| Scanned {
            outcome: Outcome::Violation { at, error },
            header_lines,
        };
        match (buf.get(pos), buf.get(pos + 1)) {
            (None, _) | (Some(b'\r'), None) => return incomplete(header_lines),
            // The empty line: the head is complete.
            (Some(b'\n'), _) => {
                return Scanned {
                    outcome: Outcome::Complete(pos + 1),
                    header_lines,
                };
            }
            (Some(b'\r'), Some(b'\n')) => {
                return Scanned {
                    outcome: Outcome::Complete(pos + 2),
                    header_lines,
                };
            }
            // A line starting with whitespace continues the previous field
            // (obs-fold, RFC 9112 5.2) or, right after the request line, is
            // whitespace before the first field (RFC 9112 2.2). Both must be
            // rejected: proxies disagree on how to join folded lines, and a
            // header hidden behind leading whitespace is one some of them
            // see and others do not.
            (Some(b' ' | b'\t'), _) => {
                let reason = if header_lines == 0 {
                    "whitespace before the first header field"
                } else {
                    "obsolete line folding in header field"
                };
                return violation(pos + 1, bad_request(reason), header_lines);
            }
            _ => {}
        }
        header_lines += 1;
        if header_lines > limits.max_header_count {
            return violation(pos + 1, too_large("too many header fields"), header_lines);
        }
        match measure_line(buf, pos, limits.max_header_size) {
            Line::Incomplete => return incomplete(header_lines),
            Line::TooLong { at } => {
                return violation(at, too_large("header field line too long"), header_lines);
            }
            Line::Ends { next } => pos = next,
        }
    }
}

enum Line {
    /// The line ends with LF (or CRLF); the next line starts at `next`.
    Ends { next: usize },
    /// No line end yet, and the line is not (yet) too long.
    Incomplete,
    /// The line's content is longer than the limit; certain after `at` bytes.
    TooLong { at: usize },
}

/// Measure the line starting at `start` against `max` bytes of content
/// (the content excludes the LF or CRLF that ends it).
///
/// Only the first `max + 2` bytes of the line are looked at, so even a
/// gigabyte without a newline costs nothing. A CR is counted as content as
/// soon as the byte after it is known not to be LF.
fn measure_line(buf: &[u8], start: usize, max: usize) -> Line {
    let end = start.saturating_add(max).saturating_add(2).min(buf.len());
    let window = buf.get(start..end).unwrap_or(&[]);
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            // Content is `lf` bytes, or `lf - 1` if a CR precedes the LF.
            // Only lf == max + 1 without that CR is over the limit.
            if lf > max && window.get(max) != Some(&b'\r') {
                Line::TooLong {
                    at: start + max + 1,
                }
            } else {
                Line::Ends {
                    next: start + lf + 1,
                }
            }
        }
        None if window.len() > max => {
            if window.get(max) != Some(&b'\r') {
                // max + 1 bytes of content already.
                Line::TooLong {
                    at: start + max + 1,
                }
            } else if window.len() > max + 1 {
                // The CR at index max is not followed by LF: content.
                Line::TooLong {
                    at: start + max + 2,
                }
            } else {
                // Exactly max bytes and a CR: the LF may still come.
                Line::Incomplete
            }
        }
        None => Line::Incomplete,
    }
}

// ---------------------------------------------------------------------------
// Pass 2: syntax errors from httparse, with a reason a human can act on.

fn syntax_error(error: httparse::Error, input: &[u8]) -> HttpError {
    match error {
        // httparse says Token for both the method and the target; look at
        // the method ourselves to tell which.
        httparse::Error::Token => {
            let (line, ended) = request_line(input);
            if !method_is_valid(line) {
                return bad_request("invalid method token");
            }
            // httparse stopped at the first byte after the method's space
            // that cannot be in a target: if that is the line end, the
            // target was fine and the version is missing ("GET /\r\n").
            let after_method = line.splitn(2, |&b| b == b' ').nth(1).unwrap_or(&[]);
            let is_uri_byte = |b: &u8| (0x21..=0x7e).contains(b) || *b >= 0x80;
            if ended && !after_method.is_empty() && after_method.iter().all(is_uri_byte) {
                bad_request("missing HTTP version")
            } else {
                bad_request("invalid request target")
            }
        }
        httparse::Error::Version => {
            // "GET /a b HTTP/1.1" reaches the version check at "b". Only the
            // first byte of the version field is sure to be in `input` (the
            // error may be found right there), so decide on that alone.
            let (line, _) = request_line(input);
            let version = line.splitn(3, |&b| b == b' ').nth(2).unwrap_or(&[]);
            if matches!(version.first(), Some(b'H' | b'h')) {
                bad_request("unsupported HTTP version")
            } else {
                bad_request("malformed request line (space in target?)")
            }
        }
        httparse::Error::NewLine => bad_request("malformed line ending"),
        httparse::Error::HeaderName => bad_request("invalid header name"),
        httparse::Error::HeaderValue => bad_request("invalid character in header value"),
        httparse::Error::TooManyHeaders => too_large("too many header fields"),
        httparse::Error::Status => bad_request("malformed request line"),
    }
}

/// The (possibly partial) request line of `input`, after empty lines, and
/// whether a line end follows it.
fn request_line(input: &[u8]) -> (&[u8], bool) {
    let start = input
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(input.len());
    let rest = input.get(start..).unwrap_or(&[]);
    match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(end) => (rest.get(..end).unwrap_or(rest), true),
        None => (rest, false),
    }
}

fn method_is_valid(line: &[u8]) -> bool {
    let method = line.split(|&b| b == b' ').next().unwrap_or(&[]);
    !method.is_empty() && method.iter().all(|&b| is_tchar(b))
}

/// RFC 9110 5.6.2 `tchar`: the characters of a token (method, field name,
/// transfer coding).
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// A table with `true` for the ASCII letters and digits and for `extra`:
/// one load per byte instead of a search through `extra` (these checks run
/// on every byte of every header name and Host value).
const fn byte_class(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

const TCHAR: [bool; 256] = byte_class(b"!#$%&'*+-.^_`|~");
const AUTHORITY_CHAR: [bool; 256] = byte_class(b"-._~!$&'()*+,;=%:[]");

// ---------------------------------------------------------------------------
// Pass 3: meaning.

fn interpret(req: &httparse::Request<'_, '_>, limits: &Limits) -> Result<RequestHead, HttpError> {
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(bad_request("malformed request line"));
    };
    let version = match minor {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(bad_request("unsupported HTTP version")),
    };

    let (path, query, authority) = split_target(method, target)?;

    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        // httparse already rejects NUL; a NUL reaching a C string in Python
        // or a log would truncate the value, so check it here too.
        if h.value.contains(&0) {
            return Err(bad_request("NUL in header value"));
        }
        headers.push((h.name.to_owned(), h.value.to_vec()));
    }

    let framing = Framing::collect(&headers);
    let body = framing.body_kind(version, limits)?;

    // RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without
    // Host and to any request with more than one Host or an invalid one.
    // Two Host values are another way to make a proxy (which routes on one)
    // and the application (which reads the other) disagree.
    match framing.hosts {
        Seen::None if version == Version::Http11 => return Err(bad_request("missing Host header")),
        Seen::None => {}
        Seen::One(host) => {
            if !host.iter().all(|&b| is_authority_char(b)) {
                return Err(bad_request("invalid Host header"));
            }
        }
        Seen::Many => return Err(bad_request("more than one Host header")),
    }

    let keep_alive = match version {
        Version::Http11 => !framing.connection_close,
        Version::Http10 => framing.connection_keep_alive && !framing.connection_close,
    };
    let expect_continue = version == Version::Http11 && framing.expect_continue;

    // RFC 9112 3.2.2: with an absolute-form target the server MUST ignore
    // the Host header and use the target's host instead, so that what the
    // app sees (HTTP_HOST) is what the request is for.
    if let Some(authority) = authority {
        let host = headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case("host"));
        match host {
            Some((_, value)) => *value = authority.as_bytes().to_vec(),
            None => headers.push(("Host".to_owned(), authority.as_bytes().to_vec())),
        }
    }

    Ok(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        path,
        query: query.to_owned(),
        version,
        headers,
        body,
        keep_alive,
        expect_continue,
    })
}

/// The header fields that decide framing and connection handling, gathered
/// in one pass over the headers.
#[derive(Default)]
struct Framing<'a> {
    content_lengths: Seen<'a>,
    transfer_encodings: Vec<&'a [u8]>,
    hosts: Seen<'a>,
    connection_close: bool,
    connection_keep_alive: bool,
    expect_continue: bool,
}

/// The values of a header that may appear only once: a second one is an
/// error whatever it says, so only the first needs keeping (and nothing is
/// allocated for the usual single value).
#[derive(Clone, Copy, Default)]
enum Seen<'a> {
    #[default]
    None,
    One(&'a [u8]),
    Many,
}

impl<'a> Seen<'a> {
    fn add(&mut self, value: &'a [u8]) {
        *self = match self {
            Seen::None => Seen::One(value),
            Seen::One(_) | Seen::Many => Seen::Many,
        };
    }
}

impl<'a> Framing<'a> {
    fn collect(headers: &'a [(String, Vec<u8>)]) -> Self {
        let mut f = Framing::default();
        for (name, value) in headers {
            let value = value.as_slice();
            if name.eq_ignore_ascii_case("content-length") {
                f.content_lengths.add(value);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                f.transfer_encodings.push(value);
            } else if name.eq_ignore_ascii_case("host") {
                f.hosts.add(value);
            } else if name.eq_ignore_ascii_case("connection") {
                // A list of tokens, possibly spread over several headers.
                for token in list_elements(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        f.connection_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        f.connection_keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case("expect")
                && value.eq_ignore_ascii_case(b"100-continue")
            {
                f.expect_continue = true;
            }
        }
        f
    }

    // ANCHOR: body_kind
    /// Decide where the body ends (RFC 9112 6.3), refusing every ambiguous
    /// combination.
    fn body_kind(&self, version: Version, limits: &Limits) -> Result<BodyKind, HttpError> {
        // Two Content-Length headers are how a request-smuggling attack
        // makes a proxy and a server disagree on where a request ends (one
        // uses the first, the other the last). Even equal values are
        // refused: that is simpler and no real client sends them.
        let content_length = match self.content_lengths {
            Seen::None => None,
            Seen::One(value) => Some(parse_content_length(value)?),
            Seen::Many => return Err(bad_request("duplicate Content-Length")),
        };

        if !self.transfer_encodings.is_empty() {
            // With both, RFC 9112 6.3 lets Transfer-Encoding win, but a
            // proxy that used Content-Length would see a different request
            // boundary: the classic CL.TE / TE.CL smuggling attack.
            if content_length.is_some() {
                return Err(bad_request("both Transfer-Encoding and Content-Length"));
            }
            // HTTP/1.0 has no transfer codings; an old proxy would ignore
            // the header and read the body some other way (RFC 9112 6.1).
            if version == Version::Http10 {
                return Err(bad_request("Transfer-Encoding in an HTTP/1.0 request"));
            }
            return transfer_coding(&self.transfer_encodings);
        }

        match content_length {
            None | Some(0) => Ok(BodyKind::Empty),
            Some(n) if limits.max_body != 0 && n > limits.max_body => {
                Err(HttpError::new(413, "request body too large"))
            }
            Some(n) => Ok(BodyKind::Length(n)),
        }
    }
    // ANCHOR_END: body_kind
}

/// `Content-Length = 1*DIGIT` (RFC 9110 8.6), fitting in a u64.
///
/// No sign, no spaces, no commas, no hex: lenient parsers that accept
/// `+5`, `5 5` or `5,5` are exactly the ones an attacker looks for, because
/// the proxy in front may read those differently.
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    parse_digits(value).ok_or(bad_request("invalid Content-Length"))
}

/// `1*DIGIT` as a u64: `None` if empty, if anything but a digit is in it,
/// or if it does not fit.
pub fn parse_digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

// ANCHOR: transfer_coding
/// Interpret the combined Transfer-Encoding list (all headers, in order).
///
/// Only plain `chunked` is supported. RFC 9112 6.3: if `chunked` is not the
/// final coding the body length cannot be determined, so 400; `chunked`
/// twice would mean decoding twice, which no client does and which parsers
/// disagree about, so 400. A coding we do not implement (gzip, identity,
/// an empty element, anything unknown) is 501 Not Implemented (RFC 9112 6.1).
fn transfer_coding(values: &[&[u8]]) -> Result<BodyKind, HttpError> {
    let mut chunked = 0;
    let mut last_is_chunked = false;
    let mut other = false;
    for value in values {
        for coding in value.split(|&b| b == b',').map(trim_ows) {
            last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if last_is_chunked {
                chunked += 1;
            } else {
                other = true;
            }
        }
    }
    if chunked > 1 {
        return Err(bad_request("chunked applied more than once"));
    }
    if chunked == 1 && !last_is_chunked {
        return Err(bad_request("chunked is not the final transfer coding"));
    }
    if other {
        return Err(HttpError::new(501, "unsupported Transfer-Encoding"));
    }
    Ok(BodyKind::Chunked)
}
// ANCHOR_END: transfer_coding

/// The non-empty elements of a comma-separated list, without surrounding
/// whitespace (RFC 9110 5.6.1).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or(&[])
}

/// Characters that may appear in `host[:port]` (RFC 3986 reg-name,
/// IP-literal, port). Anything else in a Host header (spaces, `/`, `@`,
/// quotes, non-ASCII) is a malformed or malicious value.
fn is_authority_char(b: u8) -> bool {
    AUTHORITY_CHAR[usize::from(b)]
}

/// The decoded path, the raw query string, and the host of an
/// absolute-form target.
type TargetParts<'t> = (Vec<u8>, &'t str, Option<&'t str>);

/// Split a request-target (RFC 9112 3.2) into the decoded path, the raw
/// query string and, for an absolute-form target, its authority.
fn split_target<'t>(method: &str, target: &'t str) -> Result<TargetParts<'t>, HttpError> {
    // asterisk-form: only "OPTIONS *" means "the server as a whole".
    if target == "*" {
        return if method == "OPTIONS" {
            Ok((b"*".to_vec(), "", None))
        } else {
            Err(bad_request(
                "asterisk-form target is only allowed with OPTIONS",
            ))
        };
    }

    let mut authority_part = None;
    let path_and_query = if target.starts_with('/') {
        // origin-form: what every client sends to a server.
        target
    } else if let Some(rest) = strip_http_scheme(target) {
        // absolute-form: what clients send to a proxy, and what a server
        // must accept too (RFC 9112 3.2.2). Keep only path and query.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(authority_end);
        // userinfo ("user:pass@host") is deprecated and a classic way to
        // disguise the real host (RFC 9110 4.2.4): refuse it.
        if authority.is_empty() || !authority.bytes().all(is_authority_char) {
            return Err(bad_request("invalid authority in request target"));
        }
        authority_part = Some(authority);
        path_and_query
    } else {
        // authority-form (CONNECT) and anything else.
        return Err(bad_request("invalid request target"));
    };

    // A fragment is never sent by well-behaved clients; drop it.
    let without_fragment = path_and_query
        .split_once('#')
        .map_or(path_and_query, |(before, _)| before);
    let (raw_path, query) = without_fragment
        .split_once('?')
        .unwrap_or((without_fragment, ""));
    let raw_path = if raw_path.is_empty() { "/" } else { raw_path };
    Ok((percent_decode(raw_path.as_bytes())?, query, authority_part))
}

/// `http://` or `https://`, case-insensitive; returns what follows.
fn strip_http_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        if head.eq_ignore_ascii_case(scheme) {
            target.get(scheme.len()..)
        } else {
            None
        }
    })
}

/// Decode `%XX` escapes into bytes, as gunicorn does for `PATH_INFO`.
///
/// An invalid escape (`%zz`, `%4`, a trailing `%`) is kept as it is rather
/// than refused: real clients send such paths and nothing is ambiguous
/// about them. A decoded NUL (`%00`) is refused: C code (the OS, a
/// database driver) would see the path end there, while Python would not.
pub fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, HttpError> {
    if !raw.contains(&b'%') {
        // Most paths have no escape at all: one copy.
        return Ok(raw.to_vec());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'%' {
            let hi = raw.get(i + 1).and_then(|&h| hex_value(h));
            let lo = raw.get(i + 2).and_then(|&l| hex_value(l));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                let decoded = hi << 4 | lo;
                if decoded == 0 {
                    return Err(bad_request("NUL in request path"));
                }
                out.push(decoded);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = Result<Option<(RequestHead, usize)>, HttpError>;

    fn parse(buf: &[u8]) -> Parsed {
        parse_head(buf, &Limits::default())
    }

    fn ok(buf: &[u8]) -> (RequestHead, usize) {
        match parse(buf) {
            Ok(Some(done)) => done,
            other => panic!(
                "expected a complete head for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn err(buf: &[u8]) -> HttpError {
        err_with(buf, &Limits::default())
    }

    fn err_with(buf: &[u8], limits: &Limits) -> HttpError {
        match parse_head(buf, limits) {
            Err(e) => e,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    /// What a server sees when the bytes arrive one at a time: the first
    /// answer that is not "incomplete".
    fn bytewise(buf: &[u8], limits: &Limits) -> Parsed {
        for k in 0..=buf.len() {
            match parse_head(&buf[..k], limits) {
                Ok(None) => continue,
                answer => return answer,
            }
        }
        Ok(None)
    }

    /// Compare two answers field by field (RequestHead has no PartialEq on
    /// purpose: servers never compare heads).
    fn same(a: &Parsed, b: &Parsed) -> bool {
        match (a, b) {
            (Ok(None), Ok(None)) => true,
            (Err(x), Err(y)) => x == y,
            (Ok(Some((x, n))), Ok(Some((y, m)))) => n == m && format!("{x:?}") == format!("{y:?}"),
            _ => false,
        }
    }

    fn assert_incremental(buf: &[u8], limits: &Limits) {
        let whole = parse_head(buf, limits);
        let pieces = bytewise(buf, limits);
        assert!(
            same(&whole, &pieces),
            "{:?}: whole {whole:?} vs bytewise {pieces:?}",
            String::from_utf8_lossy(buf)
        );
    }

    fn small_limits() -> Limits {
        Limits {
            max_request_line: 32,
            max_header_count: 4,
            max_header_size: 24,
            max_body: 1000,
        }
    }

    // --- the basics -------------------------------------------------------

    #[test]
    fn simple_get() {
        let buf = b"GET /index.html?a=1&b=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n";
        let (head, n) = ok(buf);
        assert_eq!(n, buf.len());
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/index.html?a=1&b=2");
        assert_eq!(head.path, b"/index.html");
        assert_eq!(head.query, "a=1&b=2");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(
            head.headers,
            vec![
                ("Host".to_owned(), b"example.com".to_vec()),
                ("User-Agent".to_owned(), b"t".to_vec())
            ]
        );
        assert_eq!(head.body, BodyKind::Empty);
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
    }

    #[test]
    fn version_strings() {
        assert_eq!(Version::Http10.as_str(), "HTTP/1.0");
        assert_eq!(Version::Http11.as_str(), "HTTP/1.1");
        let (head, _) = ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(head.version, Version::Http10);
    }

    #[test]
    fn default_limits_are_gunicorns() {
        let l = Limits::default();
        assert_eq!(l.max_request_line, 4094);
        assert_eq!(l.max_header_count, 100);
        assert_eq!(l.max_header_size, 8190);
        assert_eq!(l.max_body, 1 << 30);
    }

    #[test]
    fn error_display() {
        let e = HttpError::new(400, "invalid Content-Length");
        assert_eq!(e.to_string(), "400 invalid Content-Length");
        let _: &dyn std::error::Error = &e;
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_first_wins() {
        let (head, _) = ok(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        assert_eq!(head.header("x-A"), Some(&b"1"[..]));
        assert_eq!(head.header("HOST"), Some(&b"h"[..]));
        assert_eq!(head.header("missing"), None);
    }

    #[test]
    fn header_names_keep_case_and_values_are_trimmed() {
        let (head, _) =
            ok(b"GET / HTTP/1.1\r\nhOsT: h\r\nX-Pad: \t v a l \t \r\nX-Empty:\r\nX-Sp:   \r\n\r\n");
        assert_eq!(head.headers[0].0, "hOsT");
        assert_eq!(head.header("x-pad"), Some(&b"v a l"[..]));
        assert_eq!(head.header("x-empty"), Some(&b""[..]));
        assert_eq!(head.header("x-sp"), Some(&b""[..]));
    }

    #[test]
    fn obs_text_in_values_is_kept() {
        let (head, _) = ok(b"GET / HTTP/1.1\r\nHost: h\r\nX-L: caf\xe9\r\n\r\n");
        assert_eq!(head.header("x-l"), Some(&b"caf\xe9"[..]));
    }

    #[test]
    fn lowercase_method_is_kept() {
        let (head, _) = ok(b"get / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(head.method, "get");
    }

    // --- incompleteness, leading empty lines, pipelining -----------------

    #[test]
    fn every_proper_prefix_is_incomplete() {
        let buf = b"\r\nPOST /upload?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
        for k in 0..buf.len() {
            assert!(matches!(parse(&buf[..k]), Ok(None)), "prefix {k}");
        }
        assert_eq!(ok(buf).1, buf.len());
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_counted() {
        let buf = b"\r\n\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let (head, n) = ok(buf);
        assert_eq!(n, buf.len());
        assert_eq!(head.method, "GET");
        assert!(matches!(parse(b"\r\n\r\n"), Ok(None)));
        assert!(matches!(parse(b"\r"), Ok(None)));
    }

    #[test]
    fn bare_cr_before_request_line_is_rejected() {
        assert_eq!(err(b"\rGET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 400);
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        let buf = b"GET / HTTP/1.1\nHost: h\nX: y\n\nrest";
        let (head, n) = ok(buf);
        assert_eq!(n, buf.len() - 4);
        assert_eq!(head.header("x"), Some(&b"y"[..]));
    }

    #[test]
    fn pipelined_requests_stop_exactly_at_the_head_end() {
        let first = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
        let second = b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut buf = first.to_vec();
        buf.extend_from_slice(b"abc");
        buf.extend_from_slice(second);
        let (head, n) = ok(&buf);
        assert_eq!(n, first.len());
        assert_eq!(head.body, BodyKind::Length(3));
        assert_eq!(&buf[n..n + 3], b"abc");
        let (head2, n2) = ok(&buf[n + 3..]);
        assert_eq!(head2.path, b"/b");
        assert_eq!(n2, second.len());
        // Two bodiless requests back to back.
        let mut two = second.to_vec();
        two.extend_from_slice(second);
        assert_eq!(ok(&two).1, second.len());
    }

    // --- limits -----------------------------------------------------------

    fn request_line_of(len: usize) -> Vec<u8> {
        // "GET /aaa... HTTP/1.1" with exactly `len` bytes.
        let fixed = "GET / HTTP/1.1".len();
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', len - fixed));
        line.extend_from_slice(b" HTTP/1.1");
        assert_eq!(line.len(), len);
        line
    }

    #[test]
    fn request_line_limit_boundary() {
        let limits = Limits::default();
        let mut at_limit = request_line_of(4094);
        at_limit.extend_from_slice(b"\r\nHost: h\r\n\r\n");
        assert!(matches!(parse_head(&at_limit, &limits), Ok(Some(_))));
        assert_incremental(&at_limit, &limits);

        let mut over = request_line_of(4095);
        over.extend_from_slice(b"\r\nHost: h\r\n\r\n");
        let e = err_with(&over, &limits);
        assert_eq!(e, HttpError::new(400, "request line too long"));
        assert_incremental(&over, &limits);
    }

    #[test]
    fn request_line_limit_detected_while_incomplete() {
        let limits = small_limits(); // 32
        let line = request_line_of(40);
        // 32 bytes of line, no newline: could still be fine.
        assert!(matches!(parse_head(&line[..32], &limits), Ok(None)));
        // The 33rd byte settles it.
        assert_eq!(
            err_with(&line[..33], &limits).reason,
            "request line too long"
        );
        // 32 bytes then CR: still possibly a 32-byte line.
        let mut cr = request_line_of(32);
        cr.push(b'\r');
        assert!(matches!(parse_head(&cr, &limits), Ok(None)));
        cr.push(b'\n');
        cr.extend_from_slice(b"Host: h\r\n\r\n");
        assert!(matches!(parse_head(&cr, &limits), Ok(Some(_))));
        // 32 bytes, CR, then not LF: the CR is content, so the line is too long
        // (and a bare CR would be rejected anyway).
        let mut bad = request_line_of(32);
        bad.extend_from_slice(b"\rX");
        assert_eq!(err_with(&bad, &limits).status, 400);
        // A bare-LF-terminated line of exactly the limit is fine.
        let mut lf = request_line_of(32);
        lf.extend_from_slice(b"\nHost: h\n\n");
        assert!(matches!(parse_head(&lf, &limits), Ok(Some(_))));
        // An endless line costs nothing: a megabyte without LF is refused.
        let huge = vec![b'A'; 1 << 20];
        assert_eq!(err(&huge).status, 400);
    }

    #[test]
    fn header_line_limit_boundary() {
        let limits = Limits::default();
        let make = |len: usize| {
            let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
            buf.extend(std::iter::repeat_n(b'v', len - 3));
            buf.extend_from_slice(b"\r\n\r\n");
            buf
        };
        let at_limit = make(8190);
        let (head, _) = ok(&at_limit);
        assert_eq!(head.header("x").map(<[u8]>::len), Some(8187));
        let over = make(8191);
        assert_eq!(
            err(&over),
            HttpError::new(431, "header field line too long")
        );
        assert_incremental(&over, &limits);
        assert_incremental(&at_limit, &limits);

        // Detected while incomplete.
        let partial = &over[..over.len() - 4];
        assert_eq!(err(partial).status, 431);
        let limits = small_limits(); // 24
        let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        let field_start = buf.len();
        buf.extend_from_slice(b"X: 0123456789abcdefghijklmnop"); // 29 bytes
        assert!(matches!(
            parse_head(&buf[..field_start + 24], &limits),
            Ok(None)
        ));
        assert_eq!(err_with(&buf[..field_start + 25], &limits).status, 431);
    }

    #[test]
    fn header_count_boundary() {
        let make = |count: usize| {
            let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
            for i in 1..count {
                buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            buf.extend_from_slice(b"\r\n");
            buf
        };
        let (head, _) = ok(&make(100));
        assert_eq!(head.headers.len(), 100);
        let over = make(101);
        assert_eq!(err(&over), HttpError::new(431, "too many header fields"));
        let limits = Limits::default();
        assert_incremental(&make(100), &limits);
        assert_incremental(&over, &limits);

        // Detected as soon as the 101st line starts.
        let hundred = make(100);
        let mut partial = hundred[..hundred.len() - 2].to_vec();
        assert!(matches!(parse(&partial), Ok(None)));
        partial.push(b'X');
        assert_eq!(err(&partial).status, 431);

        let small = small_limits();
        assert_eq!(err_with(&make(5), &small).status, 431);
        assert!(matches!(parse_head(&make(4), &small), Ok(Some(_))));
    }

    #[test]
    fn head_size_limit_catches_endless_empty_lines() {
        let limits = small_limits();
        let max = limits.max_head_bytes(); // 32 + 4 * 26 + 4 = 140
        assert_eq!(max, 140);
        let blank = vec![b'\n'; max];
        assert!(matches!(parse_head(&blank, &limits), Ok(None)));
        let blank = vec![b'\n'; max + 1];
        assert_eq!(
            err_with(&blank, &limits),
            HttpError::new(431, "request head too large")
        );
        // A real request preceded by too many empty lines.
        let mut buf = vec![b'\n'; 130];
        buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(err_with(&buf, &limits).status, 431);
        assert_incremental(&buf, &limits);
        // The largest possible head with default limits still fits.
        let mut big = request_line_of(4094);
        big.extend_from_slice(b"\r\nHost: h\r\n");
        for i in 1..100 {
            let mut line = format!("X-{i:03}: ").into_bytes();
            line.resize(8190, b'v');
            big.extend_from_slice(&line);
            big.extend_from_slice(b"\r\n");
        }
        big.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&big), Ok(Some(_))));
    }

    #[test]
    fn huge_limits_do_not_overflow() {
        let limits = Limits {
            max_request_line: usize::MAX,
            max_header_count: usize::MAX,
            max_header_size: usize::MAX,
            max_body: 0,
        };
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n";
        let (head, _) = parse_head(buf, &limits).unwrap().unwrap();
        assert_eq!(head.body, BodyKind::Length(u64::MAX));
        assert!(matches!(parse_head(&buf[..20], &limits), Ok(None)));
    }

    #[test]
    fn zero_limits_refuse_everything_cleanly() {
        let limits = Limits {
            max_request_line: 0,
            max_header_count: 0,
            max_header_size: 0,
            max_body: 0,
        };
        assert_eq!(err_with(b"GET / HTTP/1.1\r\n\r\n", &limits).status, 400);
        let limits = Limits {
            max_header_count: 0,
            ..Limits::default()
        };
        assert_eq!(
            err_with(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", &limits).status,
            431
        );
        // No headers at all is still fine.
        assert!(matches!(
            parse_head(b"GET / HTTP/1.0\r\n\r\n", &limits),
            Ok(Some(_))
        ));
    }

    // --- syntax (httparse) ------------------------------------------------

    #[test]
    fn syntax_errors_have_useful_reasons() {
        let cases: &[(&[u8], &str)] = &[
            (b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n", "invalid method token"),
            (
                b"GET\x01 / HTTP/1.1\r\nHost: h\r\n\r\n",
                "invalid method token",
            ),
            (
                b" GET / HTTP/1.1\r\nHost: h\r\n\r\n",
                "invalid method token",
            ),
            (
                b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
                "invalid request target",
            ),
            (
                b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n",
                "invalid request target",
            ),
            (
                b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
                "invalid request target",
            ),
            (
                b"GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n",
                "invalid request target",
            ),
            (
                b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
                "malformed request line (space in target?)",
            ),
            (
                b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
                "unsupported HTTP version",
            ),
            (
                b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
                "unsupported HTTP version",
            ),
            (b"GET / HTTP/0.9\r\n\r\n", "unsupported HTTP version"),
            (
                b"GET / http/1.1\r\nHost: h\r\n\r\n",
                "unsupported HTTP version",
            ),
            (b"GET /\r\n\r\n", "missing HTTP version"),
            (
                b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
                "malformed line ending",
            ),
            (b"GET / HTTP/1.1\rHost: h\r\n\r\n", "malformed line ending"),
            (b"GET / HTTP/1.1\r\nHost: h\r\n\rX", "malformed line ending"),
            (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", "invalid header name"),
            (
                b"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n",
                "invalid header name",
            ),
            (
                b"GET / HTTP/1.1\r\n: h\r\nHost: h\r\n\r\n",
                "invalid header name",
            ),
            (b"GET / HTTP/1.1\r\nHo(st: h\r\n\r\n", "invalid header name"),
            (b"GET / HTTP/1.1\r\nHost h\r\n\r\n", "invalid header name"),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n",
                "invalid character in header value",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
                "invalid character in header value",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n",
                "invalid character in header value",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n",
                "invalid character in header value",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n",
                "obsolete line folding in header field",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tfolded\r\n\r\n",
                "obsolete line folding in header field",
            ),
            (
                b"GET / HTTP/1.1\r\n Host: h\r\n\r\n",
                "whitespace before the first header field",
            ),
        ];
        for (buf, reason) in cases {
            let e = err(buf);
            assert_eq!(
                (e.status, e.reason),
                (400, *reason),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
            assert_incremental(buf, &Limits::default());
        }
    }

    #[test]
    fn nul_in_a_long_header_value_is_rejected() {
        // Long enough for httparse's SIMD paths.
        let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        buf.extend(std::iter::repeat_n(b'a', 70));
        buf.push(0);
        buf.extend(std::iter::repeat_n(b'a', 70));
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(err(&buf).status, 400);
    }

    #[test]
    fn earlier_syntax_error_wins_over_a_later_limit() {
        // A bad method on a too-long line: the method is what a byte-at-a-time
        // reader notices first.
        let limits = small_limits();
        let mut buf = b"G@T /".to_vec();
        buf.extend(std::iter::repeat_n(b'a', 60));
        buf.extend_from_slice(b" HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(err_with(&buf, &limits).reason, "invalid method token");
        assert_incremental(&buf, &limits);
        // A bad header name before a too-long header line.
        let mut buf = b"GET / HTTP/1.1\r\nHo st: h\r\nX: ".to_vec();
        buf.extend(std::iter::repeat_n(b'a', 60));
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(err_with(&buf, &limits).reason, "invalid header name");
        assert_incremental(&buf, &limits);
    }

    // --- request targets --------------------------------------------------

    fn target(t: &str) -> (Vec<u8>, String) {
        target_with_method("GET", t)
    }

    #[test]
    fn absolute_form_host_wins_over_the_host_header() {
        let (head, _) =
            ok(b"GET http://a.example:8080/x HTTP/1.1\r\nX: 1\r\nhOsT: b.example\r\n\r\n");
        assert_eq!(head.header("host"), Some(&b"a.example:8080"[..]));
        // Name and position as sent; still one Host.
        assert_eq!(head.headers[1].0, "hOsT");
        assert_eq!(
            head.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
                .count(),
            1
        );
        // HTTP/1.0 may send no Host: the target's host becomes it.
        let (head, _) = ok(b"GET http://a.example/x HTTP/1.0\r\n\r\n");
        assert_eq!(head.header("host"), Some(&b"a.example"[..]));
        // The Host header is still checked: missing, twice or invalid is 400.
        assert_eq!(err(b"GET http://a/ HTTP/1.1\r\n\r\n").status, 400);
        assert_eq!(
            err(b"GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n").status,
            400
        );
        assert_eq!(
            err(b"GET http://a/ HTTP/1.1\r\nHost: a b\r\n\r\n").status,
            400
        );
        // Origin-form leaves Host alone.
        let (head, _) = ok(b"GET /x HTTP/1.1\r\nHost: b.example\r\n\r\n");
        assert_eq!(head.header("host"), Some(&b"b.example"[..]));
    }

    fn target_with_method(method: &str, t: &str) -> (Vec<u8>, String) {
        let buf = format!("{method} {t} HTTP/1.1\r\nHost: h\r\n\r\n");
        let (head, _) = ok(buf.as_bytes());
        assert_eq!(head.target, t);
        (head.path, head.query)
    }

    fn target_err(t: &str) -> HttpError {
        err(format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
    }

    #[test]
    fn origin_form() {
        assert_eq!(target("/"), (b"/".to_vec(), String::new()));
        assert_eq!(target("/a/b/"), (b"/a/b/".to_vec(), String::new()));
        assert_eq!(target("//double"), (b"//double".to_vec(), String::new()));
        assert_eq!(target("/p?"), (b"/p".to_vec(), String::new()));
        assert_eq!(target("/p?a=1?b=2"), (b"/p".to_vec(), "a=1?b=2".to_owned()));
        assert_eq!(target("/p?q#frag"), (b"/p".to_vec(), "q".to_owned()));
        assert_eq!(target("/p#frag?notquery"), (b"/p".to_vec(), String::new()));
        assert_eq!(target("/?x=%20"), (b"/".to_vec(), "x=%20".to_owned()));
    }

    #[test]
    fn absolute_form() {
        assert_eq!(
            target("http://example.com/a?b"),
            (b"/a".to_vec(), "b".to_owned())
        );
        assert_eq!(
            target("HTTPS://example.com:8443/a%20b"),
            (b"/a b".to_vec(), String::new())
        );
        assert_eq!(target("http://example.com"), (b"/".to_vec(), String::new()));
        assert_eq!(
            target("http://example.com?q=1"),
            (b"/".to_vec(), "q=1".to_owned())
        );
        assert_eq!(
            target("http://[::1]:8000/x"),
            (b"/x".to_vec(), String::new())
        );
        assert_eq!(target("http://h#f"), (b"/".to_vec(), String::new()));
        assert_eq!(
            target_err("http:///path").reason,
            "invalid authority in request target"
        );
        assert_eq!(
            target_err("http://user:pw@evil/").reason,
            "invalid authority in request target"
        );
        assert_eq!(
            target_err("ftp://example.com/").reason,
            "invalid request target"
        );
        assert_eq!(
            target_err("http:/example.com/").reason,
            "invalid request target"
        );
    }

    #[test]
    fn asterisk_form_only_for_options() {
        assert_eq!(
            target_with_method("OPTIONS", "*"),
            (b"*".to_vec(), String::new())
        );
        assert_eq!(target_err("*").status, 400);
        assert_eq!(target_err("*x").status, 400);
    }

    #[test]
    fn other_target_forms_are_rejected() {
        assert_eq!(
            target_err("example.com:443").reason,
            "invalid request target"
        );
        assert_eq!(target_err("index.html").reason, "invalid request target");
        assert_eq!(target_err("?q").reason, "invalid request target");
        let e = err(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
        assert_eq!(e.status, 400);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(target("/a%2Fb").0, b"/a/b");
        assert_eq!(target("/%41%62%6a%6A").0, b"/Abjj");
        assert_eq!(target("/caf%C3%A9").0, "/café".as_bytes());
        assert_eq!(target("/%zz").0, b"/%zz");
        assert_eq!(target("/%4").0, b"/%4");
        assert_eq!(target("/%").0, b"/%");
        assert_eq!(target("/%%41").0, b"/%A");
        assert_eq!(target("/%ff").0, b"/\xff");
        assert_eq!(target("/%0D%0A").0, b"/\r\n");
        assert_eq!(target("/a+b").0, b"/a+b");
        // The query is not decoded.
        assert_eq!(target("/?a=%41").1, "a=%41");
        // Raw UTF-8 in the target is passed through as bytes.
        assert_eq!(target("/é").0, "/é".as_bytes());
    }

    #[test]
    fn decoded_nul_is_rejected() {
        assert_eq!(
            target_err("/a%00b"),
            HttpError::new(400, "NUL in request path")
        );
        assert_eq!(target_err("http://h/%00").status, 400);
        // In the query it is the application's business.
        assert_eq!(target("/?a=%00").1, "a=%00");
    }

    // --- Content-Length ---------------------------------------------------

    fn with_headers(headers: &str) -> Parsed {
        parse(format!("POST / HTTP/1.1\r\nHost: h\r\n{headers}\r\n").as_bytes())
    }

    fn body_of(headers: &str) -> BodyKind {
        match with_headers(headers) {
            Ok(Some((head, _))) => head.body,
            other => panic!("{headers:?}: {other:?}"),
        }
    }

    fn error_of(headers: &str) -> HttpError {
        match with_headers(headers) {
            Err(e) => e,
            other => panic!("{headers:?}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn content_length_valid() {
        assert_eq!(body_of("Content-Length: 5\r\n"), BodyKind::Length(5));
        assert_eq!(body_of("content-length: 0005\r\n"), BodyKind::Length(5));
        assert_eq!(body_of("CONTENT-LENGTH:\t7 \r\n"), BodyKind::Length(7));
        assert_eq!(body_of("Content-Length: 0\r\n"), BodyKind::Empty);
        assert_eq!(body_of("Content-Length: 000\r\n"), BodyKind::Empty);
        assert_eq!(body_of(""), BodyKind::Empty);
    }

    #[test]
    fn content_length_invalid() {
        for bad in [
            "+5",
            "-5",
            "5 5",
            "5,5",
            "5, 5",
            "0x5",
            "5a",
            "",
            "1e3",
            "5.0",
            "\u{663}",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            let e = error_of(&format!("Content-Length: {bad}\r\n"));
            assert_eq!(e, HttpError::new(400, "invalid Content-Length"), "{bad:?}");
        }
    }

    #[test]
    fn duplicate_content_length() {
        let dup = HttpError::new(400, "duplicate Content-Length");
        assert_eq!(error_of("Content-Length: 5\r\nContent-Length: 5\r\n"), dup);
        assert_eq!(error_of("Content-Length: 5\r\ncontent-length: 6\r\n"), dup);
        assert_eq!(
            error_of("Content-Length: 0\r\nX: y\r\nContent-Length: 0\r\n"),
            dup
        );
    }

    #[test]
    fn content_length_against_max_body() {
        let limits = Limits {
            max_body: 100,
            ..Limits::default()
        };
        let req = |n: u64| format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {n}\r\n\r\n");
        let (head, _) = parse_head(req(100).as_bytes(), &limits).unwrap().unwrap();
        assert_eq!(head.body, BodyKind::Length(100));
        assert_eq!(
            err_with(req(101).as_bytes(), &limits),
            HttpError::new(413, "request body too large")
        );
        let unlimited = Limits {
            max_body: 0,
            ..Limits::default()
        };
        let (head, _) = parse_head(req(1 << 40).as_bytes(), &unlimited)
            .unwrap()
            .unwrap();
        assert_eq!(head.body, BodyKind::Length(1 << 40));
        // Default: 1 GiB.
        assert_eq!(
            body_of("Content-Length: 1073741824\r\n"),
            BodyKind::Length(1 << 30)
        );
        assert_eq!(error_of("Content-Length: 1073741825\r\n").status, 413);
    }

    // --- Transfer-Encoding ------------------------------------------------

    #[test]
    fn chunked_is_recognised() {
        assert_eq!(body_of("Transfer-Encoding: chunked\r\n"), BodyKind::Chunked);
        assert_eq!(body_of("transfer-encoding: ChUnKeD\r\n"), BodyKind::Chunked);
        assert_eq!(
            body_of("Transfer-Encoding: \t chunked \t\r\n"),
            BodyKind::Chunked
        );
    }

    #[test]
    fn transfer_encoding_misuse_is_400() {
        for headers in [
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked, identity\r\n",
            // An empty list element is not ignored here (RFC 9110 would):
            // a proxy that does not ignore it sees a non-chunked body.
            "Transfer-Encoding: chunked,\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding:\r\n",
        ] {
            assert_eq!(
                error_of(headers),
                HttpError::new(400, "chunked is not the final transfer coding"),
                "{headers:?}"
            );
        }
        for headers in [
            "Transfer-Encoding: chunked, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: gzip, chunked, chunked\r\n",
        ] {
            assert_eq!(
                error_of(headers),
                HttpError::new(400, "chunked applied more than once"),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn unsupported_codings_are_501() {
        for headers in [
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: identity\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: xchunked\r\n",
            "Transfer-Encoding: chunked;q=1\r\n",
            "Transfer-Encoding: \"chunked\"\r\n",
            "Transfer-Encoding:\r\n",
            "Transfer-Encoding: ,chunked\r\n",
        ] {
            assert_eq!(
                error_of(headers),
                HttpError::new(501, "unsupported Transfer-Encoding"),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn transfer_encoding_with_content_length_is_400() {
        let e = HttpError::new(400, "both Transfer-Encoding and Content-Length");
        assert_eq!(
            error_of("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
            e
        );
        assert_eq!(
            error_of("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            e
        );
        assert_eq!(
            error_of("Content-Length: 0\r\nTransfer-Encoding: gzip\r\n"),
            e
        );
    }

    #[test]
    fn transfer_encoding_on_http10_is_400() {
        let e = err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            e,
            HttpError::new(400, "Transfer-Encoding in an HTTP/1.0 request")
        );
    }

    // --- Host ---------------------------------------------------------------

    #[test]
    fn host_rules() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\n\r\n"),
            HttpError::new(400, "missing Host header")
        );
        assert!(matches!(parse(b"GET / HTTP/1.0\r\n\r\n"), Ok(Some(_))));
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            HttpError::new(400, "more than one Host header")
        );
        assert_eq!(
            err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n").status,
            400
        );
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
            Ok(Some(_))
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n"),
            Ok(Some(_))
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: my_host.local:80\r\n\r\n"),
            Ok(Some(_))
        ));
        for bad in ["a b", "a/b", "user@h", "h\"", "caf\u{e9}"] {
            let buf = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
            assert_eq!(
                err(buf.as_bytes()),
                HttpError::new(400, "invalid Host header"),
                "{bad:?}"
            );
        }
    }

    // --- Connection and Expect ------------------------------------------------

    fn keep_alive(buf: &[u8]) -> bool {
        ok(buf).0.keep_alive
    }

    #[test]
    fn connection_tokens() {
        assert!(keep_alive(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(!keep_alive(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        ));
        assert!(!keep_alive(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n"
        ));
        assert!(!keep_alive(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nconnection: close\r\n\r\n"
        ));
        assert!(keep_alive(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n"
        ));
        assert!(keep_alive(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert!(!keep_alive(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(keep_alive(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert!(keep_alive(
            b"GET / HTTP/1.0\r\nConnection: foo ,\tKeep-Alive\r\n\r\n"
        ));
        assert!(!keep_alive(
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
        ));
        assert!(!keep_alive(
            b"GET / HTTP/1.0\r\nConnection: keep-alive-ish\r\n\r\n"
        ));
    }

    #[test]
    fn expect_continue() {
        let expect = |buf: &[u8]| ok(buf).0.expect_continue;
        assert!(expect(
            b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(expect(
            b"POST / HTTP/1.1\r\nHost: h\r\nexpect:  100-Continue \r\n\r\n"
        ));
        assert!(!expect(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"));
        assert!(!expect(
            b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n"
        ));
        assert!(!expect(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n"));
    }

    // --- incremental feeding over a corpus -------------------------------------

    #[test]
    fn bytewise_equals_whole_for_every_case() {
        let corpus: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"\r\n\nGET /a%2Fb?c#d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nextra",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /%00 HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\nHost: h\n\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX : a\r\n\r\n",
            b"GET / HTTP/3.0\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ];
        for limits in [Limits::default(), small_limits()] {
            for buf in corpus {
                assert_incremental(buf, &limits);
            }
        }
    }

    /// A small deterministic generator, so the robustness tests need no crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn mutated_requests_never_panic_and_stay_incremental() {
        let seeds: &[&[u8]] = &[
            b"POST /a%2Fb?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
            b"GET http://h:80/p?q HTTP/1.0\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
            b"\r\nOPTIONS * HTTP/1.1\nHost: h\nX: \t y \n\n",
        ];
        let alphabet = b"\r\n \t:;,%0aZ\x00\x7f\xff/?#*-";
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let limits = small_limits();
        for round in 0..3000 {
            let mut buf = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(buf.len());
                match rng.below(3) {
                    0 => buf[i] = alphabet[rng.below(alphabet.len())],
                    1 => buf.insert(i, alphabet[rng.below(alphabet.len())]),
                    _ => {
                        buf.remove(i);
                    }
                }
            }
            assert_incremental(&buf, &Limits::default());
            assert_incremental(&buf, &limits);
        }
        // Pure noise.
        for _ in 0..500 {
            let len = rng.below(200);
            let buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert_incremental(&buf, &limits);
        }
    }
}
