//! The HTTP/1.1 codec every stage of the course speaks (RFC 9112).
//!
//! It knows bytes and nothing else: no sockets, no Python, no PEP 3333. A
//! server reads bytes, asks [`request::parse_head`] what they mean, decodes a
//! chunked body with [`chunked::ChunkedDecoder`] and frames its answer with
//! [`response`]; the few grammar rules these share (tokens, digits, lists)
//! are in [`token`]. The WSGI stages use the codec through `wsgi-bridge`;
//! the ASGI stage uses it directly, which is why it is a crate of its own:
//! the compiler keeps WSGI out of it.

pub mod chunked;
pub mod request;
pub mod response;
pub mod token;
