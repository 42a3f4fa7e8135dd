//! A uwsgi request on the bridge's request path: the answers to the
//! bridge's [`Request`] questions, and `environ` built from the variables.
//!
//! Everything else (calling the app, `start_response`, `wsgi.input`, the
//! response writer) is the bridge's, the same code HTTP goes through.

use std::borrow::Cow;

use wsgi_bridge::http::token::trim_ows;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use wsgi_bridge::http::request::{BodyKind, Version, percent_decode};
use wsgi_bridge::wsgi::call::WsgiApp;
use wsgi_bridge::wsgi::environ::{common_str, latin1_str};
use wsgi_bridge::wsgi::request::{Request, ResponseRules};

use super::UwsgiRequest;

// ANCHOR: uwsgi_rules
/// The answer to a uwsgi packet: a plain HTTP status line and headers,
/// Content-Length when known, otherwise the body until the connection
/// closes; never chunked, always closed. nginx adds `Server`, `Date` and
/// the framing its own client needs.
pub const RESPONSE: ResponseRules = ResponseRules {
    server_and_date: false,
    chunked: false,
    connection_header: false,
    reset_on_abort: true,
};

impl Request for UwsgiRequest {
    const RESPONSE: ResponseRules = RESPONSE;

    fn method(&self) -> &str {
        UwsgiRequest::method(self)
    }

    fn target(&self) -> Cow<'_, str> {
        Cow::Owned(self.uri())
    }

    fn client(&self) -> String {
        let addr = self.var("REMOTE_ADDR").map(String::from_utf8_lossy);
        format!("{} (through the uwsgi socket)", addr.unwrap_or_default())
    }

    fn version(&self) -> Version {
        match self.var("SERVER_PROTOCOL") {
            Some(b"HTTP/1.0") => Version::Http10,
            _ => Version::Http11,
        }
    }

    fn body(&self) -> BodyKind {
        self.body
    }

    fn expect_continue(&self) -> bool {
        // nginx answers `Expect: 100-continue` itself, before it forwards.
        false
    }

    fn keep_alive(&self) -> bool {
        // nginx opens a connection per request to a uwsgi upstream.
        false
    }

    fn environ<'py>(
        &self,
        py: Python<'py>,
        app: &WsgiApp,
        input: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        build_environ(py, app.template(py), self, input)
    }
}
// ANCHOR_END: uwsgi_rules

/// The environ key for a uwsgi variable: the names nginx's stock
/// `uwsgi_params` sends with every request, and the headers most requests
/// carry, are interned (made and hashed once per process, as the bridge
/// does for HTTP's header names).
fn var_key<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyString> {
    macro_rules! interned {
        ($($key:literal),* $(,)?) => {
            match name {
                $($key => intern!(py, $key).clone(),)*
                _ => PyString::new(py, name),
            }
        };
    }
    interned! {
        "QUERY_STRING", "REQUEST_METHOD", "CONTENT_TYPE", "CONTENT_LENGTH",
        "REQUEST_URI", "PATH_INFO", "DOCUMENT_ROOT", "SERVER_PROTOCOL",
        "REQUEST_SCHEME", "HTTPS", "REMOTE_ADDR", "REMOTE_PORT", "SERVER_PORT",
        "SERVER_NAME", "HTTP_HOST", "HTTP_USER_AGENT", "HTTP_ACCEPT",
        "HTTP_ACCEPT_ENCODING", "HTTP_ACCEPT_LANGUAGE", "HTTP_CONNECTION",
        "HTTP_COOKIE", "HTTP_REFERER", "HTTP_AUTHORIZATION", "HTTP_CACHE_CONTROL",
        "HTTP_ORIGIN", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
        "HTTP_X_REAL_IP",
    }
}

// ANCHOR: build_environ
/// The environ of a uwsgi request: nginx sent the CGI variables ready-made
/// (its `uwsgi_params` file names them), so they are copied as they are, and
/// what the stock file leaves out is filled in.
pub fn build_environ<'py>(
    py: Python<'py>,
    template: &Bound<'py, PyDict>,
    request: &UwsgiRequest,
    input: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let env = template.copy()?;
    for (key, value) in &joined_vars(request) {
        // A short ASCII value may be one most requests share ("GET", "").
        // (Only ASCII: other bytes are latin-1, whatever UTF-8 would say.)
        let value = match std::str::from_utf8(value) {
            Ok(ascii) if ascii.len() <= 8 && ascii.is_ascii() => common_str(py, ascii),
            _ => latin1_str(py, value),
        };
        env.set_item(var_key(py, key), value)?;
    }
    fill_in_missing(py, &env, request)?;
    env.set_item(intern!(py, "wsgi.input"), input)?;
    Ok(env)
}
// ANCHOR_END: build_environ

/// The variables, each name once. nginx sends a header that came twice as
/// two variables of the same name: they are joined as the HTTP path does
/// ("," and "; " for cookies), and header values are trimmed as the HTTP
/// parser trims them. Values are borrowed from the packet; only a joined
/// one is copied.
fn joined_vars(request: &UwsgiRequest) -> Vec<(&str, Cow<'_, [u8]>)> {
    let mut joined: Vec<(&str, Cow<'_, [u8]>)> = Vec::with_capacity(request.vars.len());
    for (key, value) in &request.vars {
        // A header's value without the spaces and tabs around it (RFC 9110
        // 5.5), as the HTTP path gives it: nginx 1.22 trims spaces only.
        let value = if key.starts_with("HTTP_") {
            trim_ows(value)
        } else {
            value.as_slice()
        };
        if key == "HTTP_CONTENT_TYPE" || key == "HTTP_CONTENT_LENGTH" {
            // nginx passes every header as HTTP_*, these two included; CGI
            // (and PEP 3333) has them only as CONTENT_TYPE and CONTENT_LENGTH.
            continue;
        }
        match joined.iter_mut().find(|(k, _)| *k == key.as_str()) {
            Some((k, v)) if k.starts_with("HTTP_") => {
                let v = v.to_mut();
                v.extend_from_slice(if *k == "HTTP_COOKIE" { b"; " } else { b"," });
                v.extend_from_slice(value);
            }
            Some((_, v)) => *v = Cow::Borrowed(value),
            None => joined.push((key, Cow::Borrowed(value))),
        }
    }
    joined
}

/// What nginx's stock `uwsgi_params` leaves out, and PEP 3333 (or apps
/// written for gunicorn) expect: filled in from what it did send.
fn fill_in_missing<'py>(
    py: Python<'py>,
    env: &Bound<'py, PyDict>,
    request: &UwsgiRequest,
) -> PyResult<()> {
    let missing = |key: &Bound<'py, PyString>| !env.contains(key).unwrap_or(true);
    for (key, default) in [
        (intern!(py, "REQUEST_METHOD"), "GET"),
        (intern!(py, "QUERY_STRING"), ""),
        (intern!(py, "SERVER_PROTOCOL"), "HTTP/1.1"),
        (intern!(py, "REMOTE_ADDR"), ""),
    ] {
        if missing(key) {
            env.set_item(key, common_str(py, default))?;
        }
    }
    if missing(intern!(py, "RAW_URI")) {
        // gunicorn's name for the target as sent; nginx calls it REQUEST_URI.
        if let Some(uri) = request.var("REQUEST_URI") {
            env.set_item("RAW_URI", latin1_str(py, uri))?;
        }
    }
    if missing(intern!(py, "PATH_INFO")) {
        // PATH_INFO is the decoded path of REQUEST_URI.
        let uri = request.var("REQUEST_URI").unwrap_or(b"/");
        let path = uri.split(|&b| b == b'?').next().unwrap_or(b"/");
        let decoded = percent_decode(path).unwrap_or_else(|_| path.to_vec());
        env.set_item("PATH_INFO", latin1_str(py, &decoded))?;
    }
    if missing(intern!(py, "HTTP_HOST"))
        && let Some(host) = host_from_server_vars(request)
    {
        // HTTP/1.0 clients may send no Host; URL reconstruction (PEP 3333)
        // then uses SERVER_NAME and SERVER_PORT.
        env.set_item("HTTP_HOST", host)?;
    }
    let https = request
        .var("HTTPS")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"on"));
    if https || request.var("REQUEST_SCHEME") == Some(b"https") {
        env.set_item("wsgi.url_scheme", "https")?;
    }
    Ok(())
}

/// `SERVER_NAME`, with `:SERVER_PORT` unless the port is a default one.
fn host_from_server_vars(request: &UwsgiRequest) -> Option<String> {
    let name = String::from_utf8_lossy(request.var("SERVER_NAME")?).to_string();
    let port = request
        .var("SERVER_PORT")
        .map(|v| String::from_utf8_lossy(v).to_string());
    Some(match port.as_deref() {
        None | Some("80") | Some("443") | Some("") => name,
        Some(port) => format!("{name}:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uwsgi::{encode_packet, parse_packet};
    use wsgi_bridge::wsgi::environ::{ServerInfo, template};

    fn request(vars: &[(&str, &[u8])]) -> UwsgiRequest {
        let packet = encode_packet(vars).unwrap();
        parse_packet(&packet, 4096).unwrap().unwrap().0
    }

    #[test]
    fn the_answers_come_from_the_variables() {
        let r = request(&[
            ("REQUEST_METHOD", b"HEAD"),
            ("REQUEST_URI", b"/a?b=1"),
            ("SERVER_PROTOCOL", b"HTTP/1.0"),
            ("REMOTE_ADDR", b"10.0.0.7"),
        ]);
        assert_eq!(Request::method(&r), "HEAD");
        assert_eq!(r.target(), "/a?b=1");
        assert_eq!(r.version(), Version::Http10);
        assert_eq!(r.client(), "10.0.0.7 (through the uwsgi socket)");
        assert!(!r.expect_continue() && !r.keep_alive());
        assert_eq!(<UwsgiRequest as Request>::RESPONSE, RESPONSE);
    }

    #[test]
    fn repeated_headers_are_joined_and_http_content_type_dropped() {
        let r = request(&[
            ("HTTP_ACCEPT", b"a"),
            ("HTTP_COOKIE", b"x=1"),
            ("HTTP_ACCEPT", b"b"),
            ("HTTP_COOKIE", b"y=2"),
            ("HTTP_CONTENT_TYPE", b"text/plain"),
            ("CONTENT_TYPE", b"text/plain"),
        ]);
        let joined = joined_vars(&r);
        let find = |k: &str| joined.iter().find(|(n, _)| *n == k).map(|(_, v)| &v[..]);
        assert_eq!(find("HTTP_ACCEPT"), Some(&b"a,b"[..]));
        assert_eq!(find("HTTP_COOKIE"), Some(&b"x=1; y=2"[..]));
        assert_eq!(find("HTTP_CONTENT_TYPE"), None);
        assert_eq!(find("CONTENT_TYPE"), Some(&b"text/plain"[..]));
    }

    #[test]
    fn what_nginx_leaves_out_is_filled_in() {
        Python::initialize();
        Python::attach(|py| {
            let info = ServerInfo {
                server_name: "127.0.0.1".into(),
                server_port: "8000".into(),
                script_name: String::new(),
                url_scheme: "http",
                multithread: false,
                multiprocess: true,
            };
            let none = py.None().into_bound(py);
            let template = template(py, &info, &none).unwrap();
            let r = request(&[
                ("REQUEST_URI", b"/caf%C3%A9?q=1"),
                ("SERVER_NAME", b"example.test"),
                ("SERVER_PORT", b"8080"),
                ("HTTPS", b"on"),
            ]);
            let env = build_environ(py, &template, &r, &none).unwrap();
            let get = |k: &str| {
                env.get_item(k)
                    .unwrap()
                    .unwrap()
                    .extract::<String>()
                    .unwrap()
            };
            assert_eq!(get("REQUEST_METHOD"), "GET");
            assert_eq!(get("RAW_URI"), "/caf%C3%A9?q=1");
            assert_eq!(get("PATH_INFO"), "/caf\u{c3}\u{a9}");
            assert_eq!(get("HTTP_HOST"), "example.test:8080");
            assert_eq!(get("wsgi.url_scheme"), "https");
            assert_eq!(get("SERVER_PROTOCOL"), "HTTP/1.1");
        });
    }
}
