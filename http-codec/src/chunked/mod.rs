//! Decoding a chunked request body (RFC 9112 section 7.1).
//!
//! With `Transfer-Encoding: chunked` the client does not announce the body
//! length; it sends the body as a series of chunks, each preceded by its size
//! in hexadecimal, and ends with a chunk of size zero:
//!
//! ```text
//! 5\r\n            chunk-size (hex), optional ";extensions", CRLF
//! hello\r\n        chunk-data, CRLF
//! 0\r\n            last-chunk
//! X-Sum: 1\r\n     trailer fields (usually none)
//! \r\n             end of the body
//! ```
//!
//! [`ChunkedDecoder`] is a byte-at-a-time state machine: it can be fed any
//! split of the input (one byte, a whole socket read) and always reaches the
//! same result, consuming every byte it has looked at, so the caller never
//! has to keep a partial line around. It never consumes a byte after the
//! final CRLF: on a keep-alive connection the next request starts there.
//!
//! The framing is checked strictly. Chunked framing is the favourite hiding
//! place of request-smuggling attacks: if the proxy in front of the server
//! accepts a bare LF, a `0x` prefix or a size with a space in it and the
//! server reads it differently, the two disagree on where the body ends and
//! the rest becomes a "second request" only the server sees. Anything
//! outside the RFC grammar is therefore a 400, never a guess.

use crate::request::HttpError;
use crate::token::{hex_value, is_tchar, trim_ows};

#[cfg(test)]
mod tests;

/// At most this many hex digits in a chunk size: 16 digits fill a u64, so a
/// size can never overflow (leading zeros count as digits).
const MAX_SIZE_DIGITS: usize = 16;
/// Longest chunk-extension part of one chunk-size line (everything between
/// the size and the CRLF). Extensions are ignored, so they are only a way to
/// make the server read without making progress; 4 KiB is plenty.
const MAX_EXTENSION_LEN: usize = 4096;
/// Largest trailer section, in bytes (CRLFs included); gunicorn's field size.
const MAX_TRAILER_BYTES: usize = 8190;
/// Most trailer fields; gunicorn's field count.
const MAX_TRAILER_FIELDS: usize = 100;

const fn bad(reason: &'static str) -> HttpError {
    HttpError::new(400, reason)
}

/// Where the decoder is in the grammar. The names follow RFC 9112:
///
/// ```text
/// chunk      = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// chunk-ext  = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
/// ext-val    = token / quoted-string
/// last-chunk = 1*("0") [ chunk-ext ] CRLF
/// trailer-section = *( field-line CRLF ) CRLF
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size,
    /// Whitespace after the size: only more whitespace or `;` may follow.
    SizeBws,
    /// After `;` (and optional whitespace): an extension name must follow.
    ExtNameStart,
    /// Inside an extension name.
    ExtName,
    /// Whitespace after an extension name: `=` or `;` must follow.
    ExtNameBws,
    /// After `=` (and optional whitespace): a token or quoted string.
    ExtValueStart,
    /// Inside a token extension value.
    ExtToken,
    /// Inside a quoted-string extension value.
    ExtQuoted,
    /// After a backslash inside a quoted string.
    ExtQuotedEscape,
    /// Right after the closing quote of a value.
    ExtAfterQuoted,
    /// Whitespace after an extension value: only `;` may follow.
    ExtValueBws,
    /// The CR of the chunk-size line was read; LF must follow.
    SizeLf,
    /// Inside chunk data; this many bytes remain (never 0).
    Data(u64),
    /// After chunk data: CR must follow.
    DataCr,
    /// After chunk data and CR: LF must follow.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// A trailer field line's CR was read; LF must follow.
    TrailerLineLf,
    /// The final empty line's CR was read; LF must follow.
    TrailerEndLf,
    /// The body is complete.
    Done,
    /// A framing error occurred; every later call reports it again.
    Failed(HttpError),
}

/// What one call to [`ChunkedDecoder::decode`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes used; the caller drops them from the front of its buffer.
    pub consumed: usize,
    /// Body bytes appended to `out`.
    pub produced: usize,
    /// The last chunk and the trailer section have been read: the body is
    /// over, and any further input belongs to the next request.
    pub done: bool,
}

/// A streaming decoder for one chunked request body.
///
/// Create one per request, call [`decode`](Self::decode) with whatever bytes
/// have arrived, drop `consumed` bytes from the buffer, repeat until `done`.
/// The decoder does not enforce a body size limit: the caller counts the
/// produced bytes against `Limits::max_body` (a chunked body has no
/// announced length to check up front).
///
/// Errors (all `HttpError`s; the server answers and closes the connection):
/// 400 for any framing error (bad size, bad extension, missing or bare-LF
/// line endings, malformed trailer line), 431 when the trailer section is
/// over 8190 bytes or 100 fields, and (with
/// [`with_max_body`](Self::with_max_body)) 413 as soon as the chunk sizes
/// announce more than the limit.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// The size of the chunk being announced.
    size: u64,
    /// Hex digits read for `size`.
    digits: usize,
    /// Bytes of the current chunk-size line after the size.
    ext_len: usize,
    /// The trailer line being read.
    line: Vec<u8>,
    /// Bytes of the trailer section read so far.
    trailer_bytes: usize,
    trailers: Vec<(String, Vec<u8>)>,
    /// Most body bytes the chunk sizes may announce in total; 0: no limit.
    max_body: u64,
    /// Body bytes announced by the chunk sizes read so far.
    announced: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder positioned before the first chunk-size line.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            digits: 0,
            ext_len: 0,
            line: Vec::new(),
            trailer_bytes: 0,
            trailers: Vec::new(),
            max_body: 0,
            announced: 0,
        }
    }

    /// A decoder that refuses a body larger than `max_body` bytes (0: no
    /// limit) with 413, as soon as a chunk-size line announces more than
    /// the limit allows, before any of that chunk's data is read.
    ///
    /// Without it a client can announce a 4 GiB chunk and then trickle the
    /// data: the server holds the connection (a whole worker, in stage 1 and
    /// stage 3's sync workers) until the bytes that finally cross the limit
    /// arrive, only to refuse them.
    pub fn with_max_body(max_body: u64) -> Self {
        ChunkedDecoder {
            max_body,
            ..Self::new()
        }
    }

    /// Decode from `input`, appending at most `max_out` body bytes to `out`.
    ///
    /// Returns how many input bytes were consumed (the caller drops them
    /// from its buffer), how many body bytes were appended, and whether the
    /// final chunk and trailers have been read. Incomplete input is normal:
    /// everything that can be consumed is consumed, and the next call
    /// continues where this one stopped.
    ///
    /// `max_out` lets the caller read a body in bounded pieces (a
    /// `wsgi.input.read(8192)`): a chunk bigger than `max_out` is delivered
    /// over several calls. Framing bytes are consumed even when no body
    /// bytes may be produced, so a call with `max_out == 0` can still
    /// reach `done` after the last data byte.
    ///
    /// After an error every later call returns the same error; after `done`
    /// every later call consumes nothing.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> Result<Progress, HttpError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let mut consumed = 0;
        let mut produced = 0;
        while let Some(&byte) = input.get(consumed) {
            match self.state {
                State::Done => break,
                State::Data(remaining) => {
                    // Copy as much data as is available, remains, and fits.
                    let room = max_out - produced;
                    if room == 0 {
                        break;
                    }
                    let rest = input.get(consumed..).unwrap_or(&[]);
                    let limit = rest.len().min(room);
                    let take = usize::try_from(remaining).map_or(limit, |r| r.min(limit));
                    out.extend_from_slice(rest.get(..take).unwrap_or(rest));
                    consumed += take;
                    produced += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                }
                _ => {
                    consumed += 1;
                    if let Err(e) = self.step(byte) {
                        self.state = State::Failed(e.clone());
                        return Err(e);
                    }
                }
            }
        }
        Ok(Progress {
            consumed,
            produced,
            done: self.is_done(),
        })
    }

    /// Whether the whole body, trailers included, has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The trailer fields received after the last chunk, names as sent.
    ///
    /// Kept for completeness: WSGI has no place for trailers, so servers
    /// ignore them. (A trailer must never be merged into the headers: a
    /// `Content-Length` or `Host` smuggled in a trailer would override what
    /// the proxy checked.)
    pub fn trailers(&self) -> &[(String, Vec<u8>)] {
        &self.trailers
    }

    /// Advance the state machine by one framing byte (anything but data).
    fn step(&mut self, b: u8) -> Result<(), HttpError> {
        use State::*;
        let is_ws = b == b' ' || b == b'\t';

        // Inside the chunk-size line.
        if matches!(
            self.state,
            Size | SizeBws
                | ExtNameStart
                | ExtName
                | ExtNameBws
                | ExtValueStart
                | ExtToken
                | ExtQuoted
                | ExtQuotedEscape
                | ExtAfterQuoted
                | ExtValueBws
        ) {
            if b == b'\n' {
                // The known smuggling vector: some parsers end the line
                // here, others keep reading.
                return Err(bad("bare LF in chunk size line"));
            }
            if self.state != Size && b != b'\r' {
                self.ext_len += 1;
                if self.ext_len > MAX_EXTENSION_LEN {
                    return Err(bad("chunk extension too long"));
                }
            }
        }

        self.state = match (&self.state, b) {
            // chunk-size = 1*HEXDIG
            (Size, _) if hex_value(b).is_some() => {
                if self.digits == MAX_SIZE_DIGITS {
                    return Err(bad("chunk size too large"));
                }
                self.size = self.size << 4 | u64::from(hex_value(b).unwrap_or(0));
                self.digits += 1;
                Size
            }
            (Size, b'\r') if self.digits == 0 => return Err(bad("missing chunk size")),
            // "+5", "-5", " 5", ";x" and the like.
            (Size, _) if self.digits == 0 => return Err(bad("invalid chunk size")),
            (Size, b'\r') => SizeLf,
            (Size, b';') => {
                self.ext_len = 1;
                ExtNameStart
            }
            (Size, _) if is_ws => {
                self.ext_len = 1;
                SizeBws
            }
            // "0x5", "5g", ...
            (Size, _) => return Err(bad("invalid chunk size")),

            // BWS before ';' is allowed; a space *inside* the size ("1 0")
            // or before the CRLF is not.
            (SizeBws, _) if is_ws => SizeBws,
            (SizeBws, b';') => ExtNameStart,
            (SizeBws, _) => return Err(bad("invalid chunk size")),

            (ExtNameStart, _) if is_ws => ExtNameStart,
            (ExtNameStart, _) if is_tchar(b) => ExtName,
            (ExtName, _) if is_tchar(b) => ExtName,
            (ExtName, b'=') | (ExtNameBws, b'=') => ExtValueStart,
            (ExtName, b';') | (ExtNameBws, b';') => ExtNameStart,
            (ExtName, b'\r') => SizeLf,
            (ExtName, _) if is_ws => ExtNameBws,
            (ExtNameBws, _) if is_ws => ExtNameBws,

            (ExtValueStart, _) if is_ws => ExtValueStart,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtValueStart, _) if is_tchar(b) => ExtToken,
            (ExtToken, _) if is_tchar(b) => ExtToken,
            (ExtToken, b';') | (ExtAfterQuoted, b';') | (ExtValueBws, b';') => ExtNameStart,
            (ExtToken, b'\r') | (ExtAfterQuoted, b'\r') => SizeLf,
            (ExtToken, _) | (ExtAfterQuoted, _) | (ExtValueBws, _) if is_ws => ExtValueBws,

            // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
            (ExtQuoted, b'"') => ExtAfterQuoted,
            (ExtQuoted, b'\\') => ExtQuotedEscape,
            (ExtQuoted, _) if is_qdtext(b) => ExtQuoted,
            (ExtQuotedEscape, _) if is_ws || is_vchar_or_obs_text(b) => ExtQuoted,

            (
                ExtNameStart | ExtName | ExtNameBws | ExtValueStart | ExtToken | ExtQuoted
                | ExtQuotedEscape | ExtAfterQuoted | ExtValueBws,
                _,
            ) => return Err(bad("invalid chunk extension")),

            (SizeLf, b'\n') => {
                let size = self.size;
                self.size = 0;
                self.digits = 0;
                self.ext_len = 0;
                self.announced = self.announced.saturating_add(size);
                if self.max_body != 0 && self.announced > self.max_body {
                    return Err(HttpError::new(413, "request body too large"));
                }
                if size == 0 { TrailerStart } else { Data(size) }
            }
            (SizeLf, _) => return Err(bad("bare CR in chunk size line")),

            // Chunk data must be followed by exactly CRLF. Anything else means
            // the size did not match the data, and guessing is not allowed.
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size,
            (DataCr | DataLf, _) => return Err(bad("bad chunk terminator")),

            (TrailerStart | TrailerLine | TrailerLineLf | TrailerEndLf, _) => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(HttpError::new(431, "trailer section too large"));
                }
                self.trailer_step(b)?
            }

            // decode() never steps in these states.
            (Data(_) | Done | Failed(_), _) => return Err(bad("chunked decoder misuse")),
        };
        Ok(())
    }

    /// One byte of the trailer section.
    fn trailer_step(&mut self, b: u8) -> Result<State, HttpError> {
        use State::*;
        Ok(match (&self.state, b) {
            (TrailerStart, b'\r') => TrailerEndLf,
            (TrailerStart | TrailerLine, b'\n') => return Err(bad("bare LF in trailer section")),
            // Folded trailer lines are as dangerous as folded headers.
            (TrailerStart, b' ' | b'\t') => {
                return Err(bad("obsolete line folding in trailer field"));
            }
            (TrailerLine, b'\r') => TrailerLineLf,
            (TrailerStart | TrailerLine, _) => {
                self.line.push(b);
                TrailerLine
            }
            (TrailerLineLf, b'\n') => {
                if self.trailers.len() == MAX_TRAILER_FIELDS {
                    return Err(HttpError::new(431, "too many trailer fields"));
                }
                let field = parse_field_line(&self.line)?;
                // Fields that frame or route the request have no place
                // after the body: a server that merged them into the
                // headers (or a proxy that did) would read another request
                // than this one. gunicorn refuses them; so does this.
                if ["content-length", "transfer-encoding", "host"]
                    .iter()
                    .any(|n| field.0.eq_ignore_ascii_case(n))
                {
                    return Err(bad(
                        "a framing field (Content-Length, Transfer-Encoding, Host) in the trailers",
                    ));
                }
                self.trailers.push(field);
                self.line.clear();
                TrailerStart
            }
            (TrailerEndLf, b'\n') => Done,
            (TrailerLineLf | TrailerEndLf, _) => return Err(bad("bare CR in trailer section")),
            _ => return Err(bad("chunked decoder misuse")),
        })
    }
}

/// `field-line = field-name ":" OWS field-value OWS` (RFC 9112 5), with the
/// same strictness as the request parser: a token name directly followed by
/// the colon, and no control characters but HTAB in the value.
fn parse_field_line(line: &[u8]) -> Result<(String, Vec<u8>), HttpError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(bad("malformed trailer field"))?;
    let (name, rest) = line.split_at(colon);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(bad("invalid trailer field name"));
    }
    let value = trim_ows(rest.get(1..).unwrap_or(&[]));
    if !value
        .iter()
        .all(|&b| b == b'\t' || b == b' ' || is_vchar_or_obs_text(b))
    {
        return Err(bad("invalid trailer field value"));
    }
    let name = String::from_utf8(name.to_vec()).map_err(|_| bad("invalid trailer field name"))?;
    Ok((name, value.to_vec()))
}

/// VCHAR (visible ASCII) or obs-text (0x80-0xFF).
fn is_vchar_or_obs_text(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// `qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text`
fn is_qdtext(b: u8) -> bool {
    b == b'\t' || b == b' ' || (is_vchar_or_obs_text(b) && b != b'"' && b != b'\\')
}
