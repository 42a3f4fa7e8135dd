//! The objects PEP 3333 hands to the app: `environ` (with `wsgi.input` and
//! `wsgi.file_wrapper` in it) and `start_response`, and the loop that calls
//! the app and sends what it returns, for a request of any protocol.

pub mod call;
pub mod environ;
pub mod file_wrapper;
pub mod forwarded;
pub mod input;
pub mod request;
pub mod response_head;
pub mod start_response;
