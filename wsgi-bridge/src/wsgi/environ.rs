//! Building `environ`, the dict that *is* the request for a WSGI app.
//!
//! The keys that never change for a server (`wsgi.version`, `SERVER_NAME`,
//! ...) are put once in a template; each request starts from a copy of it,
//! which is much cheaper than setting a dozen keys again.

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::http::request::RequestHead;

/// What the server knows about itself, constant for its lifetime.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// `SERVER_NAME` and `SERVER_PORT`: the listening address. A unix
    /// socket has no port: its path and an empty port say so, and then, as
    /// in gunicorn, a request's `Host` header gives both instead (the WSGI
    /// spec has no word for a unix socket).
    pub server_name: String,
    pub server_port: String,
    /// `SCRIPT_NAME`: where the app is mounted (`--script-name`), "" for the root.
    pub script_name: String,
    pub url_scheme: &'static str,
    /// `wsgi.multithread`: another thread may call the app at the same time.
    pub multithread: bool,
    /// `wsgi.multiprocess`: another process may call the app at the same time.
    pub multiprocess: bool,
}

/// The client's address, for `REMOTE_ADDR` and `REMOTE_PORT`. The
/// default, both empty, is a client on a unix socket.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pub addr: String,
    pub port: String,
}

impl From<std::net::SocketAddr> for Peer {
    fn from(addr: std::net::SocketAddr) -> Peer {
        Peer {
            addr: addr.ip().to_string(),
            port: addr.port().to_string(),
        }
    }
}

// ANCHOR: template
/// Builds the template dict: the keys every request shares.
pub fn template<'py>(
    py: Python<'py>,
    info: &ServerInfo,
    file_wrapper: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
    d.set_item("wsgi.url_scheme", info.url_scheme)?;
    d.set_item("wsgi.errors", py.import("sys")?.getattr("stderr")?)?;
    d.set_item("wsgi.multithread", info.multithread)?;
    d.set_item("wsgi.multiprocess", info.multiprocess)?;
    d.set_item("wsgi.run_once", false)?;
    // The body reader always stops at the end of the body, chunked or not,
    // so an app may read until b"" (the extension gunicorn and uWSGI set too).
    d.set_item("wsgi.input_terminated", true)?;
    d.set_item("wsgi.file_wrapper", file_wrapper)?;
    d.set_item("SERVER_NAME", &info.server_name)?;
    d.set_item("SERVER_PORT", &info.server_port)?;
    d.set_item("SCRIPT_NAME", &info.script_name)?;
    Ok(d)
}
// ANCHOR_END: template

/// The CGI variables [`build`] sets on every HTTP request, in its order.
const REQUEST_KEYS: [&str; 9] = [
    "REQUEST_METHOD",
    "PATH_INFO",
    "QUERY_STRING",
    "RAW_URI",
    "REQUEST_URI",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "wsgi.input",
];

/// The template for HTTP requests: [`template`] plus the keys [`build`]
/// always sets, holding `None` until it does. In the copy, setting each of
/// them then replaces a value where it lies instead of adding an entry to
/// the dict. The app sees the same keys in the same order.
pub fn http_template<'py>(
    py: Python<'py>,
    info: &ServerInfo,
    file_wrapper: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = template(py, info, file_wrapper)?;
    for key in REQUEST_KEYS {
        d.set_item(PyString::intern(py, key), py.None())?;
    }
    Ok(d)
}

// ANCHOR: latin1_str
/// A "native string" from bytes, as PEP 3333 wants request data: each byte
/// is one character (latin-1), so no byte is lost whatever its encoding was.
pub fn latin1_str<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    // CPython's latin-1 decoder does exactly that in one step: ASCII is
    // copied as it is, and a one-character string (a path of "/") comes
    // from its cache of them instead of being allocated.
    let len = ffi::Py_ssize_t::try_from(bytes.len()).expect("a request fits in memory");
    // SAFETY: `bytes` is valid for `len` bytes; a null result (out of
    // memory) makes `from_owned_ptr` panic, as `PyString::new` does.
    unsafe {
        let s = ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null());
        Bound::from_owned_ptr(py, s).cast_into_unchecked()
    }
}
// ANCHOR_END: latin1_str

/// `User-Agent` → `HTTP_USER_AGENT`.
fn cgi_name(name: &str) -> String {
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    key.extend(name.chars().map(|c| {
        if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        }
    }));
    key
}

/// The environ key for a header: `Content-Type` and `Content-Length`
/// without the `HTTP_` prefix, the others through [`cgi_name`]. The keys of
/// the headers most requests carry are interned: made and hashed once per
/// process, instead of a new string (and its hash) per header per request.
fn header_key<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyString> {
    macro_rules! interned {
        ($($header:literal => $key:literal),* $(,)?) => {
            $(if name.eq_ignore_ascii_case($header) {
                return intern!(py, $key).clone();
            })*
        };
    }
    interned! {
        "host" => "HTTP_HOST",
        "user-agent" => "HTTP_USER_AGENT",
        "accept" => "HTTP_ACCEPT",
        "accept-encoding" => "HTTP_ACCEPT_ENCODING",
        "accept-language" => "HTTP_ACCEPT_LANGUAGE",
        "connection" => "HTTP_CONNECTION",
        "cookie" => "HTTP_COOKIE",
        "content-type" => "CONTENT_TYPE",
        "content-length" => "CONTENT_LENGTH",
        "referer" => "HTTP_REFERER",
        "authorization" => "HTTP_AUTHORIZATION",
        "cache-control" => "HTTP_CACHE_CONTROL",
        "origin" => "HTTP_ORIGIN",
        "if-none-match" => "HTTP_IF_NONE_MATCH",
        "if-modified-since" => "HTTP_IF_MODIFIED_SINCE",
        "x-forwarded-for" => "HTTP_X_FORWARDED_FOR",
        "x-forwarded-proto" => "HTTP_X_FORWARDED_PROTO",
        "x-real-ip" => "HTTP_X_REAL_IP",
        "x-requested-with" => "HTTP_X_REQUESTED_WITH",
        "upgrade-insecure-requests" => "HTTP_UPGRADE_INSECURE_REQUESTS",
        "sec-fetch-dest" => "HTTP_SEC_FETCH_DEST",
        "sec-fetch-mode" => "HTTP_SEC_FETCH_MODE",
        "sec-fetch-site" => "HTTP_SEC_FETCH_SITE",
    }
    PyString::new(py, &cgi_name(name))
}

/// A `str` for a value most requests share (`GET`, `HTTP/1.1`, an empty
/// query string): interned, so it is made and hashed once per process, not
/// once per request.
pub fn common_str<'py>(py: Python<'py>, s: &str) -> Bound<'py, PyString> {
    let interned = match s {
        "" => intern!(py, ""),
        "GET" => intern!(py, "GET"),
        "POST" => intern!(py, "POST"),
        "HEAD" => intern!(py, "HEAD"),
        "HTTP/1.1" => intern!(py, "HTTP/1.1"),
        "HTTP/1.0" => intern!(py, "HTTP/1.0"),
        _ => return PyString::new(py, s),
    };
    interned.clone()
}

/// The client's address as the `str` objects environ holds (`REMOTE_ADDR`,
/// `REMOTE_PORT`): a connection makes them once, for all its requests.
pub struct PeerStrings {
    addr: Py<PyString>,
    port: Py<PyString>,
}

impl PeerStrings {
    pub fn new(py: Python<'_>, peer: &Peer) -> PeerStrings {
        PeerStrings {
            addr: PyString::new(py, &peer.addr).unbind(),
            port: PyString::new(py, &peer.port).unbind(),
        }
    }
}

/// [`build_for`] a client whose [`PeerStrings`] nobody kept.
pub fn build<'py>(
    py: Python<'py>,
    template: &Bound<'py, PyDict>,
    head: &RequestHead,
    peer: &Peer,
    script_name: &str,
    input: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let peer = PeerStrings::new(py, peer);
    build_for(py, template, head, &peer, script_name, input)
}

// ANCHOR: environ_cgi
/// The CGI variables of one request, added to a copy of the template
/// (best [`http_template`], though any template works).
pub fn build_for<'py>(
    py: Python<'py>,
    template: &Bound<'py, PyDict>,
    head: &RequestHead,
    peer: &PeerStrings,
    script_name: &str,
    input: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let env = template.copy()?;
    env.set_item(intern!(py, "REQUEST_METHOD"), common_str(py, &head.method))?;
    // PATH_INFO is the path below the app's mount point.
    let below_mount = if script_name.is_empty() {
        None
    } else {
        head.path
            .strip_prefix(script_name.as_bytes())
            .filter(|rest| rest.is_empty() || rest[0] == b'/')
    };
    let path = below_mount.unwrap_or(&head.path);
    env.set_item(intern!(py, "PATH_INFO"), latin1_str(py, path))?;
    // PEP 3333's one rule for every string: the raw bytes, as latin-1
    // (a query or target with raw UTF-8 bytes is not decoded as UTF-8).
    let query = if head.query.is_ascii() {
        common_str(py, &head.query)
    } else {
        latin1_str(py, head.query.as_bytes())
    };
    env.set_item(intern!(py, "QUERY_STRING"), query)?;
    let target = latin1_str(py, head.target.as_bytes());
    env.set_item(intern!(py, "RAW_URI"), &target)?;
    env.set_item(intern!(py, "REQUEST_URI"), target)?;
    env.set_item(
        intern!(py, "SERVER_PROTOCOL"),
        common_str(py, head.version.as_str()),
    )?;
    env.set_item(intern!(py, "REMOTE_ADDR"), peer.addr.bind(py))?;
    env.set_item(intern!(py, "REMOTE_PORT"), peer.port.bind(py))?;
    env.set_item(intern!(py, "wsgi.input"), input)?;
    // ANCHOR_END: environ_cgi

    // ANCHOR: environ_headers
    // Repeated headers become one variable, values joined with "," (RFC 9110
    // 5.3), except Cookie, whose pairs are joined with "; " (RFC 6265 5.4).
    // (Values are borrowed from the request, copied only to join repeats.)
    for (i, (name, value)) in head.headers.iter().enumerate() {
        if name.contains('_') {
            // HTTP_X_USER and X-User would collide; a proxy may strip
            // "X-User" but pass "X_User", letting a client spoof it. Drop
            // them, as gunicorn and nginx do.
            continue;
        }
        // Without "_", two names give the same key exactly when they are
        // the same name in another case.
        let same_name = |other: &String| other.eq_ignore_ascii_case(name);
        if head.headers[..i].iter().any(|(other, _)| same_name(other)) {
            continue; // joined when its first occurrence came by
        }
        let mut repeats = head.headers[i + 1..]
            .iter()
            .filter(|(other, _)| same_name(other))
            .peekable();
        let value = if repeats.peek().is_none() {
            latin1_str(py, value)
        } else {
            let sep: &[u8] = if name.eq_ignore_ascii_case("cookie") {
                b"; "
            } else {
                b","
            };
            let mut joined = value.clone();
            for (_, more) in repeats {
                joined.extend_from_slice(sep);
                joined.extend_from_slice(more);
            }
            latin1_str(py, &joined)
        };
        env.set_item(header_key(py, name), value)?;
    }
    Ok(env)
}
// ANCHOR_END: environ_headers

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_become_cgi_names() {
        assert_eq!(cgi_name("User-Agent"), "HTTP_USER_AGENT");
        assert_eq!(cgi_name("x-forwarded-for"), "HTTP_X_FORWARDED_FOR");
    }

    #[test]
    fn interned_header_keys_are_the_cgi_names() {
        Python::initialize();
        Python::attach(|py| {
            for name in [
                "Host",
                "user-agent",
                "ACCEPT",
                "Accept-Encoding",
                "Accept-Language",
                "Connection",
                "Cookie",
                "Referer",
                "Authorization",
                "Cache-Control",
                "Origin",
                "If-None-Match",
                "If-Modified-Since",
                "X-Forwarded-For",
                "X-Forwarded-Proto",
                "X-Real-IP",
                "X-Requested-With",
                "Upgrade-Insecure-Requests",
                "Sec-Fetch-Dest",
                "Sec-Fetch-Mode",
                "Sec-Fetch-Site",
                "X-Not-Common",
            ] {
                assert_eq!(header_key(py, name).to_str().unwrap(), cgi_name(name));
            }
            assert_eq!(
                header_key(py, "content-TYPE").to_str().unwrap(),
                "CONTENT_TYPE"
            );
            assert_eq!(
                header_key(py, "Content-Length").to_str().unwrap(),
                "CONTENT_LENGTH"
            );
        });
    }

    #[test]
    fn latin1_strings_have_one_character_per_byte() {
        Python::initialize();
        Python::attach(|py| {
            let all: Vec<u8> = (0..=255).collect();
            let s = latin1_str(py, &all);
            let chars: Vec<u32> = s.to_str().unwrap().chars().map(u32::from).collect();
            assert_eq!(chars, (0..=255).collect::<Vec<u32>>());
            assert_eq!(latin1_str(py, b"/").to_str().unwrap(), "/");
            assert_eq!(latin1_str(py, b"").to_str().unwrap(), "");
            assert_eq!(latin1_str(py, b"caf\xe9").to_str().unwrap(), "caf\u{e9}");
        });
    }
}
