//! The packet: its 4-byte header, its block of variables, and the encoder
//! the `--http` router and `uwsgi-dump` use to play nginx.

use std::fmt;

use wsgi_bridge::http::request::BodyKind;

/// The 4-byte packet header.
pub const HEADER_LEN: usize = 4;

/// uWSGI's default `--buffer-size`: the largest vars block accepted.
pub const DEFAULT_BUFFER_SIZE: usize = 4096;

/// A request as nginx sends it: its CGI variables and the body's length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UwsgiRequest {
    pub modifier1: u8,
    pub modifier2: u8,
    /// The variables in the order they came (keys are ASCII by convention).
    pub vars: Vec<(String, Vec<u8>)>,
    pub body: BodyKind,
}

impl UwsgiRequest {
    /// The value of a variable (the last one, if repeated).
    pub fn var(&self, name: &str) -> Option<&[u8]> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    fn var_str(&self, name: &str) -> Option<&str> {
        self.var(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn method(&self) -> &str {
        self.var_str("REQUEST_METHOD").unwrap_or("GET")
    }

    /// The request target as the client sent it (for logs).
    pub fn uri(&self) -> String {
        match self.var_str("REQUEST_URI") {
            Some(uri) => uri.to_string(),
            None => {
                let path = self.var_str("PATH_INFO").unwrap_or("/");
                match self.var_str("QUERY_STRING").filter(|q| !q.is_empty()) {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_string(),
                }
            }
        }
    }
}

/// Why a packet was refused. The connection is closed after any of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// The bytes are an HTTP request: a browser or curl is talking to the
    /// uwsgi socket directly.
    PlainHttp,
    /// The vars block is larger than `--buffer-size`.
    TooLarge { size: usize, max: usize },
    /// A modifier1 other than 0 (WSGI): another language's request.
    UnsupportedModifier(u8),
    /// The vars block does not hold together.
    Malformed(&'static str),
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketError::PlainHttp => write!(
                f,
                "this looks like plain HTTP, not a uwsgi packet: a browser or curl is talking to the uwsgi socket (put nginx with uwsgi_pass in front, or use --http)"
            ),
            PacketError::TooLarge { size, max } => write!(
                f,
                "invalid request block size: {size} (max {max}): the request's headers are larger than --buffer-size; raise it (up to 65535)"
            ),
            PacketError::UnsupportedModifier(m) => {
                write!(f, "unsupported modifier1 {m}: only 0 (WSGI) is served here")
            }
            PacketError::Malformed(why) => write!(f, "malformed uwsgi packet: {why}"),
        }
    }
}

impl std::error::Error for PacketError {}

// ANCHOR: parse_packet
/// The methods whose first four bytes give a plain HTTP request away.
const HTTP_STARTS: [&[u8; 4]; 9] = [
    b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC",
];

/// Parses a packet from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more and call again. `Ok(Some((req, n)))`:
/// the header and vars took `n` bytes; the body follows.
pub fn parse_packet(
    buf: &[u8],
    max_vars: usize,
) -> Result<Option<(UwsgiRequest, usize)>, PacketError> {
    if buf.len() < HEADER_LEN {
        // Even a partial header can be recognised as HTTP early.
        return Ok(None);
    }
    let header: &[u8; 4] = buf[..4].try_into().expect("four bytes");
    if HTTP_STARTS.contains(&header) {
        return Err(PacketError::PlainHttp);
    }
    let modifier1 = buf[0];
    let size = u16::from_le_bytes([buf[1], buf[2]]) as usize;
    let modifier2 = buf[3];
    if size > max_vars {
        return Err(PacketError::TooLarge {
            size,
            max: max_vars,
        });
    }
    if modifier1 != 0 {
        return Err(PacketError::UnsupportedModifier(modifier1));
    }
    if buf.len() < HEADER_LEN + size {
        return Ok(None);
    }
    let vars = parse_vars(&buf[HEADER_LEN..HEADER_LEN + size])?;
    let mut request = UwsgiRequest {
        modifier1,
        modifier2,
        vars,
        body: BodyKind::Empty,
    };
    request.body = match request.var("CONTENT_LENGTH") {
        None | Some(b"") => BodyKind::Empty,
        Some(v) if v.iter().all(u8::is_ascii_digit) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(|n| {
                if n == 0 {
                    BodyKind::Empty
                } else {
                    BodyKind::Length(n)
                }
            })
            .ok_or(PacketError::Malformed("CONTENT_LENGTH is too large"))?,
        Some(_) => return Err(PacketError::Malformed("CONTENT_LENGTH is not a number")),
    };
    Ok(Some((request, HEADER_LEN + size)))
}
// ANCHOR_END: parse_packet

// ANCHOR: parse_vars
fn parse_vars(mut block: &[u8]) -> Result<Vec<(String, Vec<u8>)>, PacketError> {
    fn take<'a>(block: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], PacketError> {
        if block.len() < 2 {
            return Err(PacketError::Malformed(what));
        }
        let len = u16::from_le_bytes([block[0], block[1]]) as usize;
        if block.len() < 2 + len {
            return Err(PacketError::Malformed(what));
        }
        let (value, rest) = block[2..].split_at(len);
        *block = rest;
        Ok(value)
    }
    let mut vars = Vec::new();
    while !block.is_empty() {
        let key = take(&mut block, "a key runs past the end of the vars block")?;
        let value = take(&mut block, "a value runs past the end of the vars block")?;
        if key.is_empty() {
            return Err(PacketError::Malformed("an empty key"));
        }
        // Keys are ASCII in practice (a copy); other bytes read as latin-1.
        let key: String = match std::str::from_utf8(key) {
            Ok(ascii) if ascii.is_ascii() => ascii.to_owned(),
            _ => key.iter().map(|&b| char::from(b)).collect(),
        };
        vars.push((key, value.to_vec()));
    }
    Ok(vars)
}
// ANCHOR_END: parse_vars

/// Builds a packet: what nginx does, for the `--http` router, the test
/// client and the lab's packet dump.
pub fn encode_packet(vars: &[(&str, &[u8])]) -> Result<Vec<u8>, PacketError> {
    let mut block = Vec::new();
    for (key, value) in vars {
        for part in [key.as_bytes(), value] {
            let len = u16::try_from(part.len())
                .map_err(|_| PacketError::Malformed("a key or value longer than 65535 bytes"))?;
            block.extend_from_slice(&len.to_le_bytes());
            block.extend_from_slice(part);
        }
    }
    let size = u16::try_from(block.len()).map_err(|_| PacketError::TooLarge {
        size: block.len(),
        max: u16::MAX as usize,
    })?;
    let mut packet = Vec::with_capacity(HEADER_LEN + block.len());
    packet.push(0);
    packet.extend_from_slice(&size.to_le_bytes());
    packet.push(0);
    packet.extend_from_slice(&block);
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode_packet(&[
            ("REQUEST_METHOD", b"POST"),
            ("PATH_INFO", b"/echo"),
            ("CONTENT_LENGTH", b"5"),
            ("HTTP_HOST", b"example.test"),
        ])
        .unwrap()
    }

    #[test]
    fn a_packet_round_trips() {
        let mut packet = sample();
        packet.extend_from_slice(b"hello");
        let (req, used) = parse_packet(&packet, DEFAULT_BUFFER_SIZE).unwrap().unwrap();
        assert_eq!(&packet[used..], b"hello");
        assert_eq!(req.method(), "POST");
        assert_eq!(req.var("PATH_INFO"), Some(&b"/echo"[..]));
        assert_eq!(req.body, BodyKind::Length(5));
        assert_eq!(req.uri(), "/echo");
    }

    #[test]
    fn the_header_is_little_endian() {
        let packet = sample();
        let size = packet.len() - HEADER_LEN;
        assert_eq!(packet[1], (size & 0xff) as u8);
        assert_eq!(packet[2], (size >> 8) as u8);
    }

    #[test]
    fn every_prefix_is_incomplete_not_an_error() {
        let packet = sample();
        for n in 0..packet.len() {
            assert_eq!(
                parse_packet(&packet[..n], DEFAULT_BUFFER_SIZE),
                Ok(None),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn plain_http_is_recognised() {
        assert_eq!(
            parse_packet(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", DEFAULT_BUFFER_SIZE),
            Err(PacketError::PlainHttp)
        );
        assert!(PacketError::PlainHttp.to_string().contains("browser"));
    }

    #[test]
    fn limits_and_malformed_blocks_are_refused() {
        let packet = sample();
        let size = packet.len() - HEADER_LEN;
        assert_eq!(
            parse_packet(&packet, size - 1),
            Err(PacketError::TooLarge {
                size,
                max: size - 1
            })
        );
        let mut other = packet.clone();
        other[0] = 5;
        assert_eq!(
            parse_packet(&other, 4096),
            Err(PacketError::UnsupportedModifier(5))
        );
        // A key length that runs past the block.
        let bad = [0u8, 4, 0, 0, 9, 0, b'A', b'B'];
        assert!(matches!(
            parse_packet(&bad, 4096),
            Err(PacketError::Malformed(_))
        ));
        let mut cl = encode_packet(&[("CONTENT_LENGTH", b"12x")]).unwrap();
        cl.push(0);
        assert!(matches!(
            parse_packet(&cl, 4096),
            Err(PacketError::Malformed(_))
        ));
    }

    #[test]
    fn an_empty_content_length_means_no_body() {
        let packet = encode_packet(&[("CONTENT_LENGTH", b""), ("REQUEST_METHOD", b"GET")]).unwrap();
        let (req, _) = parse_packet(&packet, 4096).unwrap().unwrap();
        assert_eq!(req.body, BodyKind::Empty);
    }
}
