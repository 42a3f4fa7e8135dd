//! What the request path needs to know of a request, whatever protocol
//! brought it.
//!
//! There is one request path ([`call_app`](super::call::call_app)) and two
//! protocols that feed it: HTTP/1.1, parsed by this server ([`HttpRequest`],
//! below), and uwsgi, parsed by nginx and sent as CGI variables (stage 4's
//! `UwsgiRequest`). Each answers the same questions: what to put in the logs,
//! where the body ends, how the response must be framed, and how `environ`
//! is built. The path is generic over the answer (`R: Request`), so each
//! protocol gets its own compiled copy of it: no dynamic dispatch per request.

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use super::call::WsgiApp;
use super::environ::{self, Peer, PeerStrings};
use super::forwarded::Said;
use crate::http::request::{BodyKind, RequestHead, Version};

// ANCHOR: request_trait
/// A request as its protocol delivered it.
pub trait Request {
    /// How the response is framed on this protocol.
    const RESPONSE: ResponseRules;

    /// The method, e.g. `GET` (`HEAD` responses get no body).
    fn method(&self) -> &str;
    /// The target as the client sent it, for logs.
    fn target(&self) -> Cow<'_, str>;
    /// Who sent it, for logs.
    fn client(&self) -> String;
    /// The client's HTTP version: it decides what the response may use.
    fn version(&self) -> Version;
    /// Where the body ends.
    fn body(&self) -> BodyKind;
    /// The client waits for `100 Continue` before it sends the body.
    fn expect_continue(&self) -> bool;
    /// The client lets the connection carry another request after this one.
    fn keep_alive(&self) -> bool;
    /// The `environ` dict of this request, with `input` as `wsgi.input`.
    fn environ<'py>(
        &self,
        py: Python<'py>,
        app: &WsgiApp,
        input: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>>;
}

/// What differs between answering a client directly (HTTP) and answering
/// a front server that frames the response for its own client (uwsgi).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseRules {
    /// The head carries the server's `Server` and `Date`, and the app's
    /// own are dropped, as gunicorn drops them. Without (uwsgi: nginx adds
    /// its own), the app's pass, as uWSGI passes them.
    pub server_and_date: bool,
    /// A body of unknown length may go chunked to an HTTP/1.1 client
    /// (nginx's uwsgi module does not decode chunked upstream bodies).
    pub chunked: bool,
    /// The head says `Connection: close` (or `keep-alive` to HTTP/1.0)
    /// where the default would be wrong. Without it, the peer knows the
    /// connection closes after each response.
    pub connection_header: bool,
    /// A response cut short by an app error resets the connection instead
    /// of closing it, where a close would look like the end of the body.
    pub reset_on_abort: bool,
}
// ANCHOR_END: request_trait

impl ResponseRules {
    /// HTTP/1.1 straight to the client: `Server` and `Date`, keep-alive,
    /// chunked bodies.
    pub const HTTP: ResponseRules = ResponseRules {
        server_and_date: true,
        chunked: true,
        connection_header: true,
        reset_on_abort: false,
    };
}

/// A request parsed from HTTP/1.1 by this server (stages 1 to 3).
pub struct HttpRequest<'a> {
    pub head: &'a RequestHead,
    pub peer: &'a Peer,
    /// The same address as Python strings: the connection makes them at its
    /// first request and keeps them for the others.
    pub peer_strings: &'a PyOnceLock<PeerStrings>,
    /// What a trusted proxy in front said of the request (its scheme, the
    /// client's address), if anything (`--forwarded-allow-ips`).
    pub forwarded: Option<&'a Said>,
}

impl Request for HttpRequest<'_> {
    const RESPONSE: ResponseRules = ResponseRules::HTTP;

    fn method(&self) -> &str {
        &self.head.method
    }

    fn target(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.head.target)
    }

    fn client(&self) -> String {
        if self.peer.port.is_empty() {
            // A unix socket's client: no address to show.
            return "unix socket".to_string();
        }
        format!("{}:{}", self.peer.addr, self.peer.port)
    }

    fn version(&self) -> Version {
        self.head.version
    }

    fn body(&self) -> BodyKind {
        self.head.body
    }

    fn expect_continue(&self) -> bool {
        self.head.expect_continue
    }

    fn keep_alive(&self) -> bool {
        self.head.keep_alive
    }

    fn environ<'py>(
        &self,
        py: Python<'py>,
        app: &WsgiApp,
        input: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let peer = self
            .peer_strings
            .get_or_init(py, || PeerStrings::new(py, self.peer));
        let script_name = &app.info.script_name;
        let env = environ::build_for(
            py,
            app.http_template(py),
            self.head,
            peer,
            script_name,
            input,
        )?;
        if self.peer.port.is_empty() {
            // A client on a unix socket has no port (gunicorn sets no
            // REMOTE_PORT then).
            env.del_item(pyo3::intern!(py, "REMOTE_PORT"))?;
        }
        if app.info.server_port.is_empty() {
            unix_socket_server(py, &env, self.head, &self.forwarded)?;
        }
        if let Some(said) = self.forwarded {
            if said.https {
                env.set_item(
                    pyo3::intern!(py, "wsgi.url_scheme"),
                    pyo3::intern!(py, "https"),
                )?;
            }
            if let Some(client) = &said.client {
                env.set_item(pyo3::intern!(py, "REMOTE_ADDR"), client)?;
            }
        }
        Ok(env)
    }
}

/// `SERVER_NAME` and `SERVER_PORT` of a request that came through a unix
/// socket, which has no host or port of its own: gunicorn takes them from
/// the `Host` header (`example.com:8080`; the scheme's port when it names
/// none), and without one leaves the socket's path and an empty port,
/// which the template already holds.
fn unix_socket_server(
    py: Python<'_>,
    env: &Bound<'_, PyDict>,
    head: &RequestHead,
    forwarded: &Option<&Said>,
) -> PyResult<()> {
    let Some((_, host)) = head
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("host"))
    else {
        return Ok(());
    };
    let https = forwarded.is_some_and(|said| said.https);
    let host = String::from_utf8_lossy(host);
    let (name, port) = host_and_port(&host, https);
    env.set_item(pyo3::intern!(py, "SERVER_NAME"), name)?;
    env.set_item(pyo3::intern!(py, "SERVER_PORT"), port)?;
    Ok(())
}

/// A `Host` header's name and port; the scheme's port when it names none.
fn host_and_port(host: &str, https: bool) -> (&str, &str) {
    // The port follows the last ':', unless that ':' is inside an IPv6
    // literal (`[::1]`).
    match host
        .rsplit_once(':')
        .filter(|(name, _)| !name.starts_with('[') || name.ends_with(']'))
    {
        Some((name, port)) => (name, port),
        None => (host, if https { "443" } else { "80" }),
    }
}

#[cfg(test)]
mod tests {
    use super::host_and_port;

    #[test]
    fn host_header_forms() {
        assert_eq!(
            host_and_port("example.com:8080", false),
            ("example.com", "8080")
        );
        assert_eq!(host_and_port("example.com", false), ("example.com", "80"));
        assert_eq!(host_and_port("example.com", true), ("example.com", "443"));
        assert_eq!(host_and_port("[::1]:8000", false), ("[::1]", "8000"));
        assert_eq!(host_and_port("[::1]", false), ("[::1]", "80"));
        assert_eq!(
            host_and_port("[2001:db8::1:5]", false),
            ("[2001:db8::1:5]", "80")
        );
    }
}
