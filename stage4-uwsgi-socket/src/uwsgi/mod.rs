//! The uwsgi protocol: what nginx's `uwsgi_pass` sends to an app server.
//!
//! Not HTTP: nginx has already parsed the HTTP request, and sends its result
//! as a binary packet of CGI variables, then the body:
//!
//! ```text
//!  0          1          2          3          4
//! +----------+----------+----------+----------+------------------------------+
//! | modifier1| datasize (u16, little-endian)  | modifier2| vars (datasize bytes) ...
//! +----------+----------+----------+----------+------------------------------+
//! vars = repeated: key length (u16 LE), key, value length (u16 LE), value
//! then the request body: CONTENT_LENGTH bytes (nginx has de-chunked it)
//! ```
//!
//! modifier1 0 means "a WSGI/Python request". The app server answers in
//! plain HTTP (a status line, headers, the body) and closes the connection:
//! nginx keeps no connection open to a uwsgi upstream.
//!
//! `packet.rs` reads and writes packets and `describe.rs` prints them: plain
//! Rust, no Python. `request.rs` is where the protocol meets the bridge: it
//! answers the bridge's `Request` questions (the response rules, `environ`
//! from the variables), so a packet goes through the same request path as
//! an HTTP request.

mod checks;
mod describe;
mod packet;
mod request;

pub use checks::check;
pub use describe::describe_packet;
pub use packet::{
    DEFAULT_BUFFER_SIZE, HEADER_LEN, PacketError, UwsgiRequest, encode_packet, parse_packet,
};
pub use request::{RESPONSE, build_environ};
