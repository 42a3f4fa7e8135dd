//! A connection's socket, TCP or unix (`-b unix:PATH` in stage 3's
//! `-k asgi`): one type the connection code reads and writes, whichever
//! listener it came from.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// A listening socket in tokio's care.
pub(super) enum Acceptor {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Acceptor {
    pub(super) fn from_std(listener: wsgi_bridge::conn::Listener) -> io::Result<Acceptor> {
        listener.set_nonblocking(true)?;
        Ok(match listener {
            wsgi_bridge::conn::Listener::Tcp(l) => Acceptor::Tcp(TcpListener::from_std(l)?),
            wsgi_bridge::conn::Listener::Unix(l) => Acceptor::Unix(UnixListener::from_std(l)?),
        })
    }

    /// The next connection, and the client's address (`None` on a unix
    /// socket, whose clients have none).
    pub(super) async fn accept(&self) -> io::Result<(Socket, Option<SocketAddr>)> {
        match self {
            Acceptor::Tcp(l) => l.accept().await.map(|(s, a)| (Socket::Tcp(s), Some(a))),
            Acceptor::Unix(l) => l.accept().await.map(|(s, _)| (Socket::Unix(s), None)),
        }
    }
}

pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    /// Small responses go out at once (no Nagle delay); a unix socket has
    /// none to turn off.
    pub(super) fn set_nodelay(&self) {
        if let Socket::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }

    pub(super) async fn readable(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.readable().await,
            Socket::Unix(s) => s.readable().await,
        }
    }

    /// Looks at the next bytes without taking them: 0 once the client has
    /// closed its side.
    pub(super) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.peek(buf).await,
            Socket::Unix(s) => loop {
                s.readable().await?;
                let peeked = s.try_io(Interest::READABLE, || {
                    // SAFETY: recv(2) into a valid, writable buffer.
                    let n = unsafe {
                        libc::recv(
                            s.as_raw_fd(),
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            libc::MSG_PEEK,
                        )
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                });
                match peeked {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            },
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
