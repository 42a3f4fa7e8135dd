//! The HTTP/1.1 codec (owned by the codec work in progress).
pub mod chunked;
pub mod request;
pub mod response;
