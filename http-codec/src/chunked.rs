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

use super::request::{HttpError, is_tchar};

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

fn trim_ows(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or(&[])
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// VCHAR (visible ASCII) or obs-text (0x80-0xFF).
fn is_vchar_or_obs_text(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// `qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text`
fn is_qdtext(b: u8) -> bool {
    b == b'\t' || b == b' ' || (is_vchar_or_obs_text(b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` the way a server does: bytes arrive `feed` at a time
    /// into a buffer, the decoder is called with `max_out`, and consumed
    /// bytes are dropped. Returns the body, the number of input bytes used,
    /// and the decoder; or the first error.
    fn run(
        input: &[u8],
        feed: usize,
        max_out: usize,
    ) -> Result<(Vec<u8>, usize, ChunkedDecoder), HttpError> {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut buffer: Vec<u8> = Vec::new();
        let mut sent = 0;
        let mut used = 0;
        loop {
            let p = decoder.decode(&buffer, &mut body, max_out)?;
            assert!(p.produced <= max_out);
            assert!(p.consumed <= buffer.len());
            buffer.drain(..p.consumed);
            used += p.consumed;
            if p.done {
                return Ok((body, used, decoder));
            }
            if p.consumed == 0 && p.produced == 0 {
                if sent == input.len() {
                    // Out of input and stuck: report as "incomplete".
                    return Err(HttpError::new(0, "incomplete"));
                }
                let next = (sent + feed).min(input.len());
                buffer.extend_from_slice(&input[sent..next]);
                sent = next;
            }
        }
    }

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, ChunkedDecoder), HttpError> {
        run(input, usize::MAX / 2, usize::MAX)
    }

    fn body(input: &[u8]) -> Vec<u8> {
        match decode_all(input) {
            Ok((b, _, _)) => b,
            Err(e) => panic!("{:?}: {e}", String::from_utf8_lossy(input)),
        }
    }

    fn error(input: &[u8]) -> HttpError {
        match decode_all(input) {
            Err(e) => e,
            Ok(_) => panic!("{:?}: expected an error", String::from_utf8_lossy(input)),
        }
    }

    /// The same input fed in every way gives the same result.
    fn assert_split_invariant(input: &[u8]) {
        let whole = decode_all(input).map(|(b, n, d)| (b, n, d.trailers().to_vec()));
        for feed in [1, 2, 3, 7] {
            for max_out in [1, 2, 5, usize::MAX] {
                let split =
                    run(input, feed, max_out).map(|(b, n, d)| (b, n, d.trailers().to_vec()));
                assert_eq!(
                    whole,
                    split,
                    "{:?} feed {feed} max_out {max_out}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn single_chunk() {
        let input = b"5\r\nhello\r\n0\r\n\r\n";
        let (b, n, d) = decode_all(input).unwrap();
        assert_eq!(b, b"hello");
        assert_eq!(n, input.len());
        assert!(d.is_done());
        assert!(d.trailers().is_empty());
    }

    #[test]
    fn one_call_reports_everything() {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let input = b"5\r\nhello\r\n0\r\n\r\n";
        let p = d.decode(input, &mut out, 100).unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: input.len(),
                produced: 5,
                done: true
            }
        );
        // After done nothing more is consumed.
        let p = d.decode(b"GET", &mut out, 100).unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: 0,
                produced: 0,
                done: true
            }
        );
    }

    #[test]
    fn several_chunks_and_hex_sizes() {
        let input = b"3\r\nabc\r\na\r\n0123456789\r\nA\r\nABCDEFGHIJ\r\n1f\r\n0123456789012345678901234567890\r\n0\r\n\r\n";
        let expected = b"abc0123456789ABCDEFGHIJ0123456789012345678901234567890";
        assert_eq!(body(input), expected);
        assert_split_invariant(input);
        assert_eq!(body(b"0\r\n\r\n"), b"");
        assert_eq!(body(b"000\r\n\r\n"), b"");
        assert_eq!(body(b"0005\r\nhello\r\n0\r\n\r\n"), b"hello");
    }

    #[test]
    fn chunk_data_may_contain_crlf_and_anything() {
        let input = b"6\r\n\r\n0\r\n\r\r\n0\r\n\r\n";
        assert_eq!(body(input), b"\r\n0\r\n\r");
        let input = b"4\r\n\0\xff\n\r\r\n0\r\n\r\n";
        assert_eq!(body(input), b"\0\xff\n\r");
        assert_split_invariant(input);
    }

    #[test]
    fn never_consumes_past_the_body() {
        let chunked = b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
        let mut input = chunked.to_vec();
        input.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let p = d.decode(&input, &mut out, usize::MAX).unwrap();
        assert_eq!(p.consumed, chunked.len());
        assert!(p.done);
        assert_eq!(out, b"hello");
        // Also when fed in pieces.
        let (_, used, _) = run(&input, 1, 3).unwrap();
        assert_eq!(used, chunked.len());
    }

    #[test]
    fn max_out_splits_a_big_chunk() {
        let input = b"a\r\n0123456789\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut pieces = Vec::new();
        let mut pos = 0;
        loop {
            let p = d.decode(&input[pos..], &mut out, 3).unwrap();
            pos += p.consumed;
            pieces.push(p.produced);
            if p.done {
                break;
            }
        }
        assert_eq!(pieces, vec![3, 3, 3, 1]);
        assert_eq!(out, b"0123456789");
        assert_eq!(pos, input.len());
    }

    #[test]
    fn max_out_zero_still_consumes_framing() {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let p = d.decode(b"3\r\nabc", &mut out, 0).unwrap();
        assert_eq!((p.consumed, p.produced, p.done), (3, 0, false));
        let p = d.decode(b"abc\r\n0\r\n\r\n", &mut out, 3).unwrap();
        assert_eq!((p.consumed, p.produced, p.done), (10, 3, true));
        // The final framing is consumed even with no room for body bytes.
        let mut d = ChunkedDecoder::new();
        let p = d.decode(b"0\r\n\r\n", &mut out, 0).unwrap();
        assert!(p.done);
    }

    #[test]
    fn empty_input_is_fine() {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let p = d.decode(b"", &mut out, 10).unwrap();
        assert_eq!((p.consumed, p.produced, p.done), (0, 0, false));
        assert!(!d.is_done());
    }

    #[test]
    fn extensions_are_accepted_and_ignored() {
        for line in [
            "5;foo",
            "5;foo=bar",
            "5 ;foo=bar",
            "5\t; foo = bar ;baz",
            "5;a=1;b=2;c",
            "5;name=\"quoted value; with = specials\"",
            "5;q=\"esc\\\"aped\\\\\"",
            "5;q=\"\"",
            "5;q=\"x\" ;r",
            "5;q=\"caf\u{e9}\"",
        ] {
            let input = format!("{line}\r\nhello\r\n0;last=1\r\n\r\n");
            assert_eq!(body(input.as_bytes()), b"hello", "{line:?}");
            assert_split_invariant(input.as_bytes());
        }
    }

    #[test]
    fn malformed_extensions_are_400() {
        for line in [
            "5;",
            "5; ",
            "5;=x",
            "5;a=",
            "5;a= ",
            "5;a b",
            "5;a=b c",
            "5;a=\"unterminated",
            "5;a=\"x\"y",
            "5;a@=b",
            "5;a=b@",
            "5;a ",
            "5;a=b ",
            "5;a=\"x\" ",
            "5;a=\"\x01\"",
            "5;;a",
        ] {
            let input = format!("{line}\r\nhello\r\n0\r\n\r\n");
            assert_eq!(error(input.as_bytes()).status, 400, "{line:?}");
            assert_split_invariant(input.as_bytes());
        }
        // A bare CR inside a quoted value.
        assert_eq!(error(b"5;a=\"x\ry\"\r\nhello\r\n0\r\n\r\n").status, 400);
    }

    #[test]
    fn extension_length_boundary() {
        // ext_len counts everything after the size up to the CR.
        let make = |len: usize| {
            let mut line = b"5;a=".to_vec();
            line.extend(std::iter::repeat_n(b'x', len - 3));
            line.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
            line
        };
        assert_eq!(body(&make(MAX_EXTENSION_LEN)), b"hello");
        assert_eq!(
            error(&make(MAX_EXTENSION_LEN + 1)),
            bad("chunk extension too long")
        );
        // The limit counts per line, not per body.
        let mut input = Vec::new();
        for _ in 0..3 {
            let mut line = b"1;a=".to_vec();
            line.extend(std::iter::repeat_n(b'x', MAX_EXTENSION_LEN - 3));
            input.extend_from_slice(&line);
            input.extend_from_slice(b"\r\nz\r\n");
        }
        input.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(body(&input), b"zzz");
    }

    #[test]
    fn invalid_sizes_are_400() {
        let cases: &[(&[u8], &str)] = &[
            (b"+5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            (b"-5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            (b"0x5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            (b" 5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            (
                b"1 0\r\n0123456789abcdef\r\n0\r\n\r\n",
                "invalid chunk size",
            ),
            (b"5 \r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            (b"g\r\n", "invalid chunk size"),
            (b"5g\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            (b";ext\r\n", "invalid chunk size"),
            (b"\r\n\r\n", "missing chunk size"),
            (b"5\r\nhello\r\n\r\n", "missing chunk size"),
            (b"5.0\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            (b"5\x00\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        ];
        for (input, reason) in cases {
            assert_eq!(
                error(input),
                bad(reason),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_split_invariant(input);
        }
    }

    #[test]
    fn size_digit_limit() {
        // 16 digits are fine (and fill a u64 exactly).
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let p = d
            .decode(b"FFFFFFFFFFFFFFFF\r\nabc", &mut out, usize::MAX)
            .unwrap();
        assert_eq!(p.produced, 3);
        assert!(!p.done);
        assert_eq!(d.state, State::Data(u64::MAX - 3));
        assert_eq!(
            body(b"000000000000000A\r\n0123456789\r\n0\r\n\r\n"),
            b"0123456789"
        );
        // 17 digits are not, whatever their value.
        assert_eq!(error(b"10000000000000000\r\n"), bad("chunk size too large"));
        assert_eq!(
            error(b"00000000000000005\r\nhello\r\n0\r\n\r\n"),
            bad("chunk size too large")
        );
        assert_split_invariant(b"10000000000000000\r\n");
    }

    #[test]
    fn bare_lf_and_bare_cr_in_framing_are_400() {
        let cases: &[(&[u8], &str)] = &[
            (b"5\nhello\r\n0\r\n\r\n", "bare LF in chunk size line"),
            (b"5;a=b\nhello\r\n0\r\n\r\n", "bare LF in chunk size line"),
            (b"5;a=\"b\nhello\r\n0\r\n\r\n", "bare LF in chunk size line"),
            (b"5\rhello\r\n0\r\n\r\n", "bare CR in chunk size line"),
            (b"5\r\nhello\n0\r\n\r\n", "bad chunk terminator"),
            (b"5\r\nhello\r0\r\n\r\n", "bad chunk terminator"),
            (b"5\r\nhello0\r\n\r\n", "bad chunk terminator"),
            (b"5\r\nhelloXY\r\n0\r\n\r\n", "bad chunk terminator"),
            (b"0\n\r\n", "bare LF in chunk size line"),
            (b"0\r\n\n", "bare LF in trailer section"),
            (b"0\r\n\rX", "bare CR in trailer section"),
            (b"0\r\nX: y\n\r\n", "bare LF in trailer section"),
            (b"0\r\nX: y\rZ\r\n\r\n", "bare CR in trailer section"),
        ];
        for (input, reason) in cases {
            assert_eq!(
                error(input),
                bad(reason),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_split_invariant(input);
        }
    }

    #[test]
    fn data_shorter_than_announced_is_caught_at_the_terminator() {
        // Size says 10, only 5 bytes then the next chunk line: the decoder
        // reads 10 bytes of data ("hello\r\n0\r\n") and then finds "X".
        assert_eq!(
            error(b"a\r\nhello\r\n0\r\nX\r\n"),
            bad("bad chunk terminator")
        );
    }

    #[test]
    fn trailers_are_parsed() {
        let input = b"3\r\nabc\r\n0\r\nX-Checksum: \t abc \t\r\nExpires: never\r\nEmpty:\r\n\r\n";
        let (b, n, d) = decode_all(input).unwrap();
        assert_eq!(b, b"abc");
        assert_eq!(n, input.len());
        assert_eq!(
            d.trailers(),
            &[
                ("X-Checksum".to_owned(), b"abc".to_vec()),
                ("Expires".to_owned(), b"never".to_vec()),
                ("Empty".to_owned(), b"".to_vec()),
            ]
        );
        assert_split_invariant(input);
    }

    #[test]
    fn malformed_trailers_are_400() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"0\r\nX: a\r\n folded\r\n\r\n",
                "obsolete line folding in trailer field",
            ),
            (
                b"0\r\n\tX: a\r\n\r\n",
                "obsolete line folding in trailer field",
            ),
            (b"0\r\nNo colon here\r\n\r\n", "malformed trailer field"),
            (b"0\r\nX : a\r\n\r\n", "invalid trailer field name"),
            (b"0\r\n: a\r\n\r\n", "invalid trailer field name"),
            (b"0\r\nX(: a\r\n\r\n", "invalid trailer field name"),
            (b"0\r\nX: a\0b\r\n\r\n", "invalid trailer field value"),
            (b"0\r\nX: a\x7fb\r\n\r\n", "invalid trailer field value"),
        ];
        for (input, reason) in cases {
            assert_eq!(
                error(input),
                bad(reason),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_split_invariant(input);
        }
    }

    #[test]
    fn trailer_limits() {
        let with_fields = |n: usize| {
            let mut input = b"0\r\n".to_vec();
            for i in 0..n {
                input.extend_from_slice(format!("T{i}: v\r\n").as_bytes());
            }
            input.extend_from_slice(b"\r\n");
            input
        };
        let (_, _, d) = decode_all(&with_fields(MAX_TRAILER_FIELDS)).unwrap();
        assert_eq!(d.trailers().len(), MAX_TRAILER_FIELDS);
        assert_eq!(
            error(&with_fields(MAX_TRAILER_FIELDS + 1)),
            HttpError::new(431, "too many trailer fields")
        );

        // Section size: everything after "0\r\n", CRLFs included.
        let with_bytes = |total: usize| {
            let mut input = b"0\r\nX: ".to_vec();
            input.extend(std::iter::repeat_n(b'v', total - 3 - 2 - 2));
            input.extend_from_slice(b"\r\n\r\n");
            input
        };
        assert!(decode_all(&with_bytes(MAX_TRAILER_BYTES)).is_ok());
        assert_eq!(
            error(&with_bytes(MAX_TRAILER_BYTES + 1)),
            HttpError::new(431, "trailer section too large")
        );
        // An endless trailer line is cut off at the limit, not buffered.
        let mut endless = b"0\r\nX: ".to_vec();
        endless.extend(std::iter::repeat_n(b'v', 1 << 20));
        assert_eq!(error(&endless).status, 431);
    }

    #[test]
    fn announced_sizes_are_checked_against_max_body() {
        let decode = |max: u64, input: &[u8]| {
            let mut d = ChunkedDecoder::with_max_body(max);
            let mut out = Vec::new();
            d.decode(input, &mut out, usize::MAX).map(|p| (p, out))
        };
        // Exactly the limit, over several chunks: fine.
        let (p, out) = decode(10, b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n").unwrap();
        assert!(p.done);
        assert_eq!(out, b"helloworld");
        // One byte more: refused at the size line that crosses it, before
        // its data (none is sent here).
        let too_large = HttpError::new(413, "request body too large");
        assert_eq!(decode(10, b"5\r\nhello\r\n6\r\n").unwrap_err(), too_large);
        // A huge announced chunk with a trickle of data.
        assert_eq!(decode(2 << 20, b"300000\r\nabc").unwrap_err(), too_large);
        assert_eq!(
            decode(2 << 20, b"FFFFFFFFFFFFFFFF\r\n").unwrap_err(),
            too_large
        );
        // 0 means no limit, as in Limits::max_body; new() has none.
        assert!(decode(0, b"FFFFFFFF\r\nabc").is_ok());
        let mut d = ChunkedDecoder::new();
        assert!(d.decode(b"FFFFFFFF\r\nabc", &mut Vec::new(), 10).is_ok());
        // Byte by byte, the same answer.
        let input = b"5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::with_max_body(10);
        let mut out = Vec::new();
        let mut answer = Ok(());
        for b in input {
            if let Err(e) = d.decode(&[*b], &mut out, usize::MAX) {
                answer = Err(e);
                break;
            }
        }
        assert_eq!(answer, Err(too_large));
        assert_eq!(out, b"hello");
    }

    #[test]
    fn errors_are_sticky() {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let e = d.decode(b"5\nhello", &mut out, 100).unwrap_err();
        assert_eq!(d.decode(b"0\r\n\r\n", &mut out, 100), Err(e));
        assert!(!d.is_done());
    }

    #[test]
    fn incomplete_input_makes_progress() {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        // A partial size line is consumed; the state remembers it.
        let p = d.decode(b"1", &mut out, 100).unwrap();
        assert_eq!(p.consumed, 1);
        let p = d.decode(b"0\r", &mut out, 100).unwrap();
        assert_eq!(p.consumed, 2);
        let p = d.decode(b"\n0123456789abc", &mut out, 100).unwrap();
        assert_eq!((p.consumed, p.produced), (14, 13));
        let p = d.decode(b"def\r\n0\r\n\r", &mut out, 100).unwrap();
        assert!(!p.done);
        let p = d.decode(b"\n", &mut out, 100).unwrap();
        assert!(p.done);
        assert_eq!(out, b"0123456789abcdef");
    }

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
    fn mutated_bodies_never_panic_and_are_split_invariant() {
        let seed: &[u8] =
            b"5;a=\"b\"\r\nhello\r\n1A\r\n0123456789abcdefghijklmnop\r\n0\r\nT: v\r\n\r\nNEXT";
        let alphabet = b"\r\n \t;=\"\\0aFx:\x00\xff";
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..2000 {
            let mut input = seed.to_vec();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(input.len());
                match rng.below(3) {
                    0 => input[i] = alphabet[rng.below(alphabet.len())],
                    1 => input.insert(i, alphabet[rng.below(alphabet.len())]),
                    _ => {
                        input.remove(i);
                    }
                }
            }
            let whole = decode_all(&input).map(|(b, n, _)| (b, n));
            if let Ok((_, used)) = &whole {
                assert!(*used <= input.len());
            }
            for (feed, max_out) in [(1, 1), (3, 4), (5, usize::MAX)] {
                let split = run(&input, feed, max_out).map(|(b, n, _)| (b, n));
                assert_eq!(whole, split);
            }
        }
        for _ in 0..500 {
            let len = rng.below(100);
            let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = decode_all(&input);
        }
    }
}
