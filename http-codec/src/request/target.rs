//! The request target (RFC 9112 3.2): its forms (origin, absolute,
//! asterisk), the query string, and the percent-decoding of the path.

use super::{HttpError, bad_request};
use crate::token::{byte_class, hex_value};

/// Characters that may appear in `host[:port]` (RFC 3986 reg-name,
/// IP-literal, port). Anything else in a Host header (spaces, `/`, `@`,
/// quotes, non-ASCII) is a malformed or malicious value.
pub(super) fn is_authority_char(b: u8) -> bool {
    AUTHORITY_CHAR[usize::from(b)]
}

const AUTHORITY_CHAR: [bool; 256] = byte_class(b"-._~!$&'()*+,;=%:[]");

/// The decoded path, the raw query string, and the host of an
/// absolute-form target.
type TargetParts<'t> = (Vec<u8>, &'t str, Option<&'t str>);

/// Split a request-target (RFC 9112 3.2) into the decoded path, the raw
/// query string and, for an absolute-form target, its authority.
pub(super) fn split_target<'t>(
    method: &str,
    target: &'t str,
) -> Result<TargetParts<'t>, HttpError> {
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
