//! Pass 2 of [`parse_head`](super::parse_head): syntax. The `httparse`
//! crate checks it; this module turns httparse's errors into reasons a
//! human can act on.

use super::{HttpError, bad_request, too_large};
use crate::token::is_tchar;

pub(super) fn syntax_error(error: httparse::Error, input: &[u8]) -> HttpError {
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
