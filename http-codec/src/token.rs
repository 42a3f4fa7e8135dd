//! The small pieces of HTTP grammar (RFC 9110 5.6) that more than one part
//! of the codec needs: tokens, digits, hex digits, optional whitespace and
//! comma-separated lists.
//!
//! The request parser, the chunked decoder and the bridge's response writer
//! (which checks the header names an application passes to
//! `start_response`) all use these, so each rule is written once.

/// RFC 9110 5.6.2 `tchar`: the characters of a token (method, field name,
/// transfer coding).
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// A table with `true` for the ASCII letters and digits and for `extra`:
/// one load per byte instead of a search through `extra` (these checks run
/// on every byte of every header name and Host value).
pub(crate) const fn byte_class(extra: &[u8]) -> [bool; 256] {
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

/// The value of one hex digit (`0-9`, `a-f`, `A-F`), or `None`.
pub fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The non-empty elements of a comma-separated list, without surrounding
/// whitespace (RFC 9110 5.6.1).
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// `s` without the optional whitespace (spaces and tabs, RFC 9110 5.6.3)
/// around it.
pub fn trim_ows(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or(&[])
}
