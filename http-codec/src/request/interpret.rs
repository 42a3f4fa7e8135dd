//! Pass 3 of [`parse_head`](super::parse_head): meaning. The body framing
//! (`Content-Length` / `Transfer-Encoding`), `Host`, `Connection` and
//! `Expect`, decided once httparse has accepted the syntax.

use super::target::{is_authority_char, split_target};
use super::{BodyKind, HttpError, Limits, RequestHead, Version, bad_request};
use crate::token::{list_elements, parse_digits, trim_ows};

pub(super) fn interpret(
    req: &httparse::Request<'_, '_>,
    limits: &Limits,
) -> Result<RequestHead, HttpError> {
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(bad_request("malformed request line"));
    };
    // gunicorn's rule: a method is an upper-case token of 3 to 20
    // characters (`get` and `-bl` are tokens, and refused all the same: a
    // server that upper-cased them would serve what a proxy passed as
    // something else).
    if method.bytes().any(|b| b.is_ascii_lowercase() || b == b'#')
        || !(3..=20).contains(&method.len())
    {
        return Err(bad_request("invalid request method"));
    }
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
    // Two Content-Types: the app would see both, joined ("a,b"), and pick
    // one, maybe not the one a proxy checked.
    if let Seen::Many = framing.content_types {
        return Err(bad_request("duplicate Content-Type"));
    }
    // The only expectation HTTP/1.1 defines is 100-continue; a server MUST
    // answer any other with 417 (RFC 9110 10.1.1).
    if framing.unknown_expectation {
        return Err(HttpError::new(417, "unsupported expectation"));
    }

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
    content_types: Seen<'a>,
    transfer_encodings: Vec<&'a [u8]>,
    hosts: Seen<'a>,
    connection_close: bool,
    connection_keep_alive: bool,
    expect_continue: bool,
    unknown_expectation: bool,
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
            } else if name.eq_ignore_ascii_case("content-type") {
                f.content_types.add(value);
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
            } else if name.eq_ignore_ascii_case("expect") {
                if trim_ows(value).eq_ignore_ascii_case(b"100-continue") {
                    f.expect_continue = true;
                } else {
                    f.unknown_expectation = true;
                }
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

// ANCHOR: transfer_coding
/// Interpret the combined Transfer-Encoding list (all headers, in order).
///
/// Only plain `chunked` is supported. RFC 9112 6.3: if `chunked` is not the
/// final coding the body length cannot be determined, so 400; `chunked`
/// twice would mean decoding twice, which no client does and which parsers
/// disagree about, so 400; so is a list with an empty element (`,chunked`,
/// an empty value), which is not a list of codings at all. A coding we do
/// not implement (gzip, identity, anything unknown) is 501 Not Implemented
/// (RFC 9112 6.1).
fn transfer_coding(values: &[&[u8]]) -> Result<BodyKind, HttpError> {
    let mut chunked = 0;
    let mut last_is_chunked = false;
    let mut other = false;
    for value in values {
        for coding in value.split(|&b| b == b',').map(trim_ows) {
            if coding.is_empty() {
                return Err(bad_request("malformed Transfer-Encoding"));
            }
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
