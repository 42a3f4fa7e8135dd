//! Building the scope dict of each request from the parsed head.

use std::cell::RefCell;

use http_codec::request::Version;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::PyCtx;
use crate::shared::{Kind, Start};

/// The keys every request sets, in this order (the templates hold them).
pub(super) const PER_REQUEST: &[&str] = &[
    "http_version",
    "method",
    "path",
    "raw_path",
    "query_string",
    "headers",
    "client",
    "state",
];

pub(super) fn build_scope<'py>(
    py: Python<'py>,
    ctx: &PyCtx,
    start: &Start,
) -> PyResult<Bound<'py, PyDict>> {
    let head = &start.head;
    let template = match start.kind {
        Kind::Http => ctx.http_templates[start.peer.listener].bind(py),
        Kind::WebSocket => ctx.ws_templates[start.peer.listener].bind(py),
    };
    let scope = template.copy()?;
    let version = match head.version {
        Version::Http11 => intern!(py, "1.1"),
        Version::Http10 => intern!(py, "1.0"),
    };
    scope.set_item(intern!(py, "http_version"), version)?;
    if start.kind == Kind::Http {
        let method = match head.method.as_str() {
            "GET" => intern!(py, "GET").clone(),
            "POST" => intern!(py, "POST").clone(),
            "HEAD" => intern!(py, "HEAD").clone(),
            other => PyString::new(py, other),
        };
        scope.set_item(intern!(py, "method"), method)?;
    }
    let path = String::from_utf8_lossy(&head.path);
    scope.set_item(intern!(py, "path"), path.as_ref())?;
    scope.set_item(
        intern!(py, "raw_path"),
        PyBytes::new(py, raw_path(&head.target)),
    )?;
    scope.set_item(
        intern!(py, "query_string"),
        PyBytes::new(py, head.query.as_bytes()),
    )?;
    let headers = PyList::empty(py);
    let mut lower = Vec::with_capacity(32);
    for (name, value) in &head.headers {
        lower.clear();
        lower.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        let pair = PyTuple::new(py, [PyBytes::new(py, &lower), PyBytes::new(py, value)])?;
        headers.append(pair)?;
    }
    scope.set_item(intern!(py, "headers"), headers)?;
    match start.peer.client {
        Some(client) => {
            let client = (client_host(py, client.ip()), client.port());
            scope.set_item(intern!(py, "client"), client)?;
        }
        // A unix socket's client has no address.
        None => scope.set_item(intern!(py, "client"), py.None())?,
    }
    scope.set_item(intern!(py, "state"), ctx.state.bind(py).copy()?)?;
    if start.kind == Kind::WebSocket {
        let protocols = PyList::empty(py);
        for (name, value) in &head.headers {
            if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                for p in String::from_utf8_lossy(value).split(',') {
                    let p = p.trim();
                    if !p.is_empty() {
                        protocols.append(p)?;
                    }
                }
            }
        }
        scope.set_item(intern!(py, "subprotocols"), protocols)?;
    }
    Ok(scope)
}

/// The client's address as a Python str; the last one is kept (most
/// requests come from the same few addresses: a proxy, a load generator).
pub(super) fn client_host(py: Python<'_>, ip: std::net::IpAddr) -> Bound<'_, PyString> {
    thread_local! {
        static LAST: RefCell<Option<(std::net::IpAddr, Py<PyString>)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((cached, s)) = last.as_ref()
            && *cached == ip
        {
            return s.bind(py).clone();
        }
        let s = PyString::new(py, &ip.to_string());
        *last = Some((ip, s.clone().unbind()));
        s
    })
}

/// The path part of a request target, still percent-encoded: `raw_path`.
/// For an absolute-form target (`http://host/p?q`), its path (`/` if empty).
pub fn raw_path(target: &str) -> &[u8] {
    let mut t = target;
    if !t.starts_with('/')
        && t != "*"
        && let Some(i) = t.find("://")
    {
        let rest = &t[i + 3..];
        t = rest.find('/').map_or("/", |j| &rest[j..]);
        if t == "/" && !rest.contains('/') {
            return b"/";
        }
    }
    let end = t.find(['?', '#']).unwrap_or(t.len());
    let p = &t[..end];
    if p.is_empty() { b"/" } else { p.as_bytes() }
}
