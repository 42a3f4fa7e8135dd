//! Writing HTTP/1.1 response heads: the status line, the headers every
//! response carries (`Server`, `Date`, `Connection`), and the framing that
//! tells the client where the body ends.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the client will know where the body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n`: exactly n bytes follow; the connection can be reused.
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 only): each piece is sent with its
    /// size, and a zero-size chunk ends the body. Used when the app streams a
    /// body of unknown length.
    Chunked,
    /// No length at all: the body ends when the server closes the connection.
    /// The only choice for an HTTP/1.0 client and a body of unknown length.
    UntilClose,
    /// No body may follow (HEAD, 1xx, 204, 304).
    NoBody,
}

/// Headers that describe one connection, not the resource (RFC 9110 7.6.1).
/// PEP 3333 forbids apps to set them: framing and persistence are the
/// server's business. The server drops them and honours `Connection: close`.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP_BY_HOP: [&[u8]; 8] = [
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    ];
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// A status with no body by definition (RFC 9110 6.4.1).
pub fn status_forbids_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Appends the current time as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
/// Formatting a date costs more than the rest of a small response head, so
/// each thread keeps the text for the current second.
pub fn push_http_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != second {
            *cache = (second, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(cache.1.as_bytes());
    });
}

/// The reason phrase for the statuses the server itself sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Appends the common part of a response head: status line, `Server`, `Date`.
/// `status_line` is the WSGI status as given to `start_response`, e.g. `200 OK`.
pub fn push_status_and_common_headers(out: &mut Vec<u8>, status_line: &[u8], server: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status_line);
    out.extend_from_slice(b"\r\nServer: ");
    out.extend_from_slice(server.as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    push_http_date(out);
    out.extend_from_slice(b"\r\n");
}

/// A complete response the server sends on its own, for a request it could
/// not pass to the app (malformed, too large, ...). The connection is closed
/// after it: after a framing error nobody knows where the next request starts.
pub fn error_response(status: u16, message: &str, server: &str) -> Vec<u8> {
    let body = format!("{message}\n");
    let mut out = Vec::with_capacity(160 + body.len());
    let status_line = format!("{status} {}", reason_phrase(status));
    push_status_and_common_headers(&mut out, status_line.as_bytes(), server);
    out.extend_from_slice(b"Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\n");
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

/// The interim response that tells a client sending `Expect: 100-continue`
/// to go ahead with its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends the size line of one chunk of a chunked body.
pub fn push_chunk_size(out: &mut Vec<u8>, len: usize) {
    use std::io::Write;
    let _ = write!(out, "{len:x}\r\n");
}

/// Appends `n` in decimal (a `Content-Length` value), without the
/// formatting machinery: this runs for nearly every response.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// The last chunk: a zero size and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A UTC calendar date and time, for log lines and reports (no time-zone
/// database needed: servers log in UTC, as gunicorn's `+0000` says). The
/// `Date` header has its own format (`httpdate`); this is the one place that
/// turns seconds into a calendar date.
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

pub fn civil(t: SystemTime) -> Civil {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_are_complete_and_close() {
        let text = String::from_utf8(error_response(431, "too many headers", "test")).unwrap();
        assert!(
            text.starts_with(
                "HTTP/1.1 431 Request Header Fields Too Large\r\nServer: test\r\nDate: "
            )
        );
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("Content-Length: 17\r\n\r\ntoo many headers\n"));
    }

    #[test]
    fn dates_are_http_dates() {
        let mut out = Vec::new();
        push_http_date(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with(" GMT") && text.len() == 29, "{text}");
        assert!(httpdate::parse_http_date(&text).is_ok());
    }

    #[test]
    fn hop_by_hop_names_are_case_insensitive() {
        assert!(is_hop_by_hop(b"Connection"));
        assert!(is_hop_by_hop(b"TRANSFER-ENCODING"));
        assert!(!is_hop_by_hop(b"Content-Length"));
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 14, 999, 1 << 40, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut out = Vec::new();
        push_chunk_size(&mut out, 65536);
        assert_eq!(out, b"10000\r\n");
    }
}
