//! A uwsgi client: what nginx's `uwsgi_pass` does, for tests and benchmarks.
//!
//! Its packet encoder is written here, independently of the server's codec
//! (`stage4_uwsgi_socket::uwsgi`): if both shared one, a mistake in it (say,
//! a big-endian length) would go unnoticed by every test. (It also keeps
//! the harness free of a dependency on stage 4, and so on pyo3.)

use std::io::{self, Write};
use std::path::Path;

use crate::client::{Conn, Response};

/// Encodes a uwsgi packet: the 4-byte header (modifier1 0, the vars block's
/// size as a little-endian u16, modifier2 0), then each var as a
/// little-endian u16 length and bytes, key then value.
pub fn packet(vars: &[(&str, &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (key, value) in vars {
        block.extend_from_slice(&(key.len() as u16).to_le_bytes());
        block.extend_from_slice(key.as_bytes());
        block.extend_from_slice(&(value.len() as u16).to_le_bytes());
        block.extend_from_slice(value);
    }
    let mut out = vec![0u8];
    out.extend_from_slice(&(block.len() as u16).to_le_bytes());
    out.push(0);
    out.extend_from_slice(&block);
    out
}

/// The variables nginx's stock `uwsgi_params` sends for a request.
pub fn nginx_vars(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body_len: usize,
) -> Vec<(String, Vec<u8>)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut vars: Vec<(String, Vec<u8>)> = vec![
        ("QUERY_STRING".into(), query.into()),
        ("REQUEST_METHOD".into(), method.into()),
        ("CONTENT_TYPE".into(), Vec::new()),
        (
            "CONTENT_LENGTH".into(),
            if body_len > 0 {
                body_len.to_string().into()
            } else {
                Vec::new()
            },
        ),
        ("REQUEST_URI".into(), uri.into()),
        ("PATH_INFO".into(), percent_decode(path)),
        ("DOCUMENT_ROOT".into(), "/usr/share/nginx/html".into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("REQUEST_SCHEME".into(), "http".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
        ("REMOTE_PORT".into(), "54321".into()),
        ("SERVER_PORT".into(), "80".into()),
        ("SERVER_NAME".into(), "localhost".into()),
    ];
    for (name, value) in headers {
        let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        if name.eq_ignore_ascii_case("content-type") {
            vars[2].1 = value.as_bytes().to_vec();
        }
        vars.push((key, value.as_bytes().to_vec()));
    }
    vars
}

/// `%XX` escapes decoded, as nginx decodes `$document_uri`.
fn percent_decode(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Sends one request over a unix socket, as nginx would, and reads the
/// HTTP answer (which ends when the server closes the connection).
pub fn request(
    socket: &Path,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let vars = nginx_vars(method, uri, headers, body.len());
    let refs: Vec<(&str, &[u8])> = vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let mut bytes = packet(&refs);
    bytes.extend_from_slice(body);
    let mut conn = Conn::connect_unix(socket)?;
    conn.send(&bytes)?;
    conn.read_response(method == "HEAD")
}

/// Sends raw bytes and returns everything the server sent before closing.
pub fn send_raw(socket: &Path, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    stream.write_all(bytes)?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    match io::Read::read_to_end(&mut stream, &mut out) {
        Ok(_) => Ok(out),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(out),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_counts_the_vars_block_little_endian() {
        let p = packet(&[("A", b"xyz")]);
        // 2 + 1 + 2 + 3 = 8 bytes of vars.
        assert_eq!(&p[..4], &[0, 8, 0, 0]);
        assert_eq!(&p[4..], &[1, 0, b'A', 3, 0, b'x', b'y', b'z']);
    }
}
