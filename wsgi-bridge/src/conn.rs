//! A client connection: the socket (TCP or unix) and the bytes read from it
//! that nobody has used yet.
//!
//! The socket is shared (`Arc<Stream>`) between the request-body reader that
//! `wsgi.input` wraps and the response writer that `start_response` wraps:
//! both are used by one thread at a time, and `&TcpStream` implements both
//! `Read` and `Write`, so no lock is needed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use crate::wsgi::environ::Peer;

/// A listening socket of either family: what `-b HOST:PORT` and
/// `-b unix:PATH` give a worker to accept on.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Takes a waiting connection: its socket and who is on the other end.
    /// A unix socket's client has no address and no port: `REMOTE_ADDR`
    /// is then empty and `REMOTE_PORT` absent, as in gunicorn.
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => l
                .accept()
                .map(|(s, addr)| (Stream::Tcp(s), Peer::from(addr))),
            Listener::Unix(l) => l.accept().map(|(s, _)| (Stream::Unix(s), Peer::default())),
        }
    }

    /// Another handle on the same socket.
    pub fn try_clone(&self) -> io::Result<Listener> {
        match self {
            Listener::Tcp(l) => l.try_clone().map(Listener::Tcp),
            Listener::Unix(l) => l.try_clone().map(Listener::Unix),
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(on),
            Listener::Unix(l) => l.set_nonblocking(on),
        }
    }

    /// The TCP address it listens on; `None` for a unix socket.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }

    /// `SERVER_NAME` and `SERVER_PORT` as gunicorn fills them: the
    /// listening address; for a unix socket its path and no port (the
    /// request's `Host` header then says more: see `ServerInfo`).
    pub fn server_name_port(&self) -> (String, String) {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => (a.ip().to_string(), a.port().to_string()),
                Err(_) => (String::new(), String::new()),
            },
            Listener::Unix(l) => {
                let path = l.local_addr().ok();
                let path = path.as_ref().and_then(|a| a.as_pathname());
                let name = path.map(|p| p.display().to_string()).unwrap_or_default();
                (name, String::new())
            }
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

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

    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        match self {
            Stream::Tcp(s) => s.read_timeout(),
            Stream::Unix(s) => s.read_timeout(),
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

/// Reads from a blocking socket without waiting: `recv(2)` with
/// `MSG_DONTWAIT`, which returns `WouldBlock` when nothing is there. How an
/// event loop reads a socket that threads read with blocking calls.
pub struct WithoutWaiting<'a>(pub &'a Stream);

impl Read for WithoutWaiting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: recv(2) into a valid, writable buffer of `buf.len()` bytes.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
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
///
/// `buf[start..end]` holds them. The bytes past `end` are initialised memory
/// kept for the next read: a `read(2)` needs an initialised `&mut [u8]`, and
/// zeroing 16 KiB before every read (what `Vec::resize` would do) cost more
/// than parsing the request it receives.
///
/// A worker that closes every connection (stages 1, 3 and 4) would still
/// allocate and zero 16 KiB per request, one `ReadBuf` per connection: a
/// dropped buffer is kept instead, one per thread, and the next `new` takes
/// it back, memory already initialised.
#[derive(Debug, Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// How much one `read(2)` asks for. Large enough for a typical request head
/// and a small body in one system call.
const READ_CHUNK: usize = 16 * 1024;

/// The largest buffer kept for the next connection: one that grew for a
/// big request is freed rather than held for the life of the thread.
const KEEP_AT_MOST: usize = 4 * READ_CHUNK;

thread_local! {
    /// The buffer of this thread's last finished connection, for the next.
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl ReadBuf {
    pub fn new() -> ReadBuf {
        ReadBuf {
            buf: SPARE.take(),
            start: 0,
            end: 0,
        }
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Drops the first `n` unconsumed bytes.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            // Everything used: start over at the front, keeping the memory.
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for at least `n` more bytes after `end`.
    fn reserve(&mut self, n: usize) {
        if self.start > 0 && self.start * 2 >= self.end {
            // Move the leftover to the front so the buffer does not grow
            // without bound on a long keep-alive connection.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < self.end + n {
            // Zeroes only the new part, once: later reads reuse it.
            self.buf.resize(self.end + n, 0);
        }
    }

    /// Appends bytes that came from elsewhere (a router that already read them).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Reads once from `stream`, appending to the buffer. Returns the number
    /// of bytes read; 0 means the peer closed its side.
    pub fn fill_from(&mut self, mut stream: impl Read) -> io::Result<usize> {
        self.reserve(READ_CHUNK);
        loop {
            match stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        // An empty one (what `mem::take` leaves behind) must not replace a
        // real one already kept.
        if self.buf.capacity() > 0 && self.buf.len() <= KEEP_AT_MOST {
            let buf = std::mem::take(&mut self.buf);
            // At thread exit the slot may be gone already: then it is freed.
            let _ = SPARE.try_with(|spare| spare.set(buf));
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

    #[test]
    fn leftovers_move_to_the_front_and_extend_appends() {
        let mut rb = ReadBuf::new();
        rb.extend(&[b'a'; READ_CHUNK]);
        rb.consume(READ_CHUNK - 2);
        rb.extend(b"bc");
        rb.fill_from(&b"de"[..]).unwrap();
        assert_eq!(rb.data(), b"aabcde");
        assert!(rb.buf.len() < 3 * READ_CHUNK);
    }

    #[test]
    fn a_finished_connections_buffer_serves_the_next_one() {
        let mut first = ReadBuf::new();
        first
            .fill_from(&b"GET /secret HTTP/1.1\r\n\r\n"[..])
            .unwrap();
        let memory = first.buf.as_ptr();
        drop(first);
        let mut second = ReadBuf::new();
        assert_eq!(
            second.buf.as_ptr(),
            memory,
            "the same memory, not a new 16 KiB"
        );
        assert!(second.is_empty(), "nothing of the last request shows");
        second.fill_from(&b"GET / HTTP/1.1\r\n"[..]).unwrap();
        assert_eq!(second.data(), b"GET / HTTP/1.1\r\n");
        // What `mem::take` leaves behind does not push the kept buffer out.
        let taken = std::mem::take(&mut second);
        drop(second);
        drop(taken);
        assert_eq!(ReadBuf::new().buf.as_ptr(), memory);
    }
}
