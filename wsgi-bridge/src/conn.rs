//! A client connection: the socket (TCP or unix) and the bytes read from it
//! that nobody has used yet.
//!
//! The socket is shared (`Arc<Stream>`) between the request-body reader that
//! `wsgi.input` wraps and the response writer that `start_response` wraps:
//! both are used by one thread at a time, and `&TcpStream` implements both
//! `Read` and `Write`, so no lock is needed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A connected socket of either family.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write_vectored(bufs),
            Stream::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// Bytes read from a socket and not consumed yet: the rest of a request head,
/// a body, or the next pipelined request.
#[derive(Debug, Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
}

/// How much one `read(2)` asks for. Large enough for a typical request head
/// and a small body in one system call.
const READ_CHUNK: usize = 16 * 1024;

impl ReadBuf {
    pub fn new() -> ReadBuf {
        ReadBuf {
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
        }
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Drops the first `n` unconsumed bytes.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            // Everything used: start over at the front, keeping the allocation.
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Appends bytes that came from elsewhere (a router that already read them).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Reads once from `stream`, appending to the buffer. Returns the number
    /// of bytes read; 0 means the peer closed its side.
    pub fn fill_from(&mut self, mut stream: impl Read) -> io::Result<usize> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            // Move the leftover to the front so the buffer does not grow
            // without bound on a long keep-alive connection.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old_len = self.buf.len();
        self.buf.resize(old_len + READ_CHUNK, 0);
        loop {
            match stream.read(&mut self.buf[old_len..]) {
                Ok(n) => {
                    self.buf.truncate(old_len + n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old_len);
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_and_refill_keep_the_order_of_bytes() {
        let mut rb = ReadBuf::new();
        rb.fill_from(&b"GET / HTTP/1.1\r\n"[..]).unwrap();
        rb.consume(4);
        assert_eq!(rb.data(), b"/ HTTP/1.1\r\n");
        rb.fill_from(&b"Host: x\r\n"[..]).unwrap();
        assert_eq!(rb.data(), b"/ HTTP/1.1\r\nHost: x\r\n");
        rb.consume(rb.len());
        assert!(rb.is_empty());
        assert_eq!(rb.fill_from(&b""[..]).unwrap(), 0);
    }
}
