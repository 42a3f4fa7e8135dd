//! `wsgi-bridge`: everything the course's servers share.
//!
//! A stage decides *how many* requests run at once and *where* (one thread,
//! a pool, forked processes). This crate does what every stage must do for
//! each request, the same way:
//!
//! - [`http`]: the HTTP/1.1 codec (request heads, chunked bodies, response
//!   heads), the `http-codec` crate re-exported: it knows nothing of WSGI;
//! - [`wsgi`]: PEP 3333: `environ`, `start_response`, `wsgi.input`, calling
//!   the app: one request path, for any protocol that implements
//!   [`wsgi::request::Request`] (HTTP here; uwsgi in stage 4);
//! - [`serve`]: one HTTP connection, request after request;
//! - [`embed`]: starting CPython inside the server and importing the app;
//! - [`cli`] and [`logging`]: the flags and log lines every stage shares.

pub mod boot;
pub mod cli;
pub mod conn;
pub mod embed;
pub mod hooks;
pub mod logging;
pub mod serve;
pub mod trace;
pub mod wsgi;

pub use http_codec as http;
