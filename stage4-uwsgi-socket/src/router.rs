//! `--http ADDR`: a small HTTP router that turns HTTP requests into uwsgi
//! packets for the workers, so stage 4 can be tried with curl alone.
//!
//! Like uWSGI's own `--http` router, it is for trying things out and
//! debugging, not for production: it buffers each request whole, answers
//! one request per connection, and does none of what nginx does for slow
//! clients and static files. Stage 5 puts nginx here.
//!
//! It runs in its own process (forked by the master, which restarts it if it
//! dies), on a tokio runtime: many clients, one thread, no Python.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use wsgi_bridge::http::chunked::ChunkedDecoder;
use wsgi_bridge::http::request::{BodyKind, HttpError, Limits, RequestHead, parse_head};
use wsgi_bridge::http::response::{CONTINUE, error_response};

use crate::uwsgi::encode_packet;

/// Where the workers listen.
#[derive(Clone, Debug)]
pub enum Upstream {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

const SERVER: &str = "stage4-uwsgi-socket router";

/// Runs the router until the process is killed. Returns an exit status.
pub fn run(listen: std::net::TcpListener, upstream: Upstream, limits: Limits) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("the HTTP router cannot start: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let _ = listen.set_nonblocking(true);
        let listener = match TcpListener::from_std(listen) {
            Ok(l) => l,
            Err(e) => {
                log::error!("the HTTP router cannot listen: {e}");
                return 1;
            }
        };
        loop {
            let Ok((client, peer)) = listener.accept().await else {
                continue;
            };
            let upstream = upstream.clone();
            let limits = limits.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(client, peer, &upstream, &limits).await {
                    log::info!("router: {peer}: {e}");
                }
            });
        }
    })
}

/// One client connection: one request, forwarded, answered, closed.
async fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    upstream: &Upstream,
    limits: &Limits,
) -> std::io::Result<()> {
    let local = client.local_addr()?;
    let mut buf = Vec::with_capacity(4096);
    let (head, used) = loop {
        match parse_head(&buf, limits) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(e) => return reject(&mut client, &e).await,
        }
        if client.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    };
    buf.drain(..used);
    if head.expect_continue && head.body != BodyKind::Empty {
        client.write_all(CONTINUE).await?;
    }
    let body = match read_body(&mut client, &mut buf, &head, limits).await? {
        Ok(body) => body,
        Err(e) => return reject(&mut client, &e).await,
    };
    let packet = match encode_packet(
        &vars(&head, &body, peer, local)
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect::<Vec<_>>(),
    ) {
        Ok(p) => p,
        Err(_) => {
            let e = HttpError {
                status: 431,
                reason: "request headers too large for a uwsgi packet",
            };
            return reject(&mut client, &e).await;
        }
    };
    let response = match forward(upstream, &packet, &body).await {
        Ok(r) => r,
        Err(e) => {
            log::error!("router: cannot reach the workers at {upstream:?}: {e}");
            let e = HttpError {
                status: 502,
                reason: "the uwsgi workers did not answer",
            };
            return reject(&mut client, &e).await;
        }
    };
    // The router closes after each response; say so after the status line.
    match response.windows(2).position(|w| w == b"\r\n") {
        Some(i) => {
            client.write_all(&response[..i + 2]).await?;
            client.write_all(b"Connection: close\r\n").await?;
            client.write_all(&response[i + 2..]).await?;
        }
        None => client.write_all(&response).await?,
    }
    client.shutdown().await
}

async fn reject(client: &mut TcpStream, e: &HttpError) -> std::io::Result<()> {
    client
        .write_all(&error_response(e.status, e.reason, SERVER))
        .await?;
    client.shutdown().await
}

/// Reads the whole body (the router buffers, as nginx does by default).
async fn read_body(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    limits: &Limits,
) -> std::io::Result<Result<Vec<u8>, HttpError>> {
    let too_large = HttpError {
        status: 413,
        reason: "request body larger than the server's limit",
    };
    match head.body {
        BodyKind::Empty => Ok(Ok(Vec::new())),
        BodyKind::Length(n) => {
            while (buf.len() as u64) < n {
                if client.read_buf(buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            buf.truncate(n as usize);
            Ok(Ok(std::mem::take(buf)))
        }
        BodyKind::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut body = Vec::new();
            loop {
                let progress = match decoder.decode(buf, &mut body, usize::MAX) {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(e)),
                };
                buf.drain(..progress.consumed);
                if limits.max_body > 0 && body.len() as u64 > limits.max_body {
                    return Ok(Err(too_large));
                }
                if progress.done {
                    return Ok(Ok(body));
                }
                if client.read_buf(buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }
}

/// The CGI variables nginx's `uwsgi_params` would send.
fn vars(
    head: &RequestHead,
    body: &[u8],
    peer: SocketAddr,
    local: SocketAddr,
) -> Vec<(String, Vec<u8>)> {
    let mut vars: Vec<(String, Vec<u8>)> = vec![
        ("REQUEST_METHOD".into(), head.method.clone().into_bytes()),
        ("REQUEST_URI".into(), head.target.clone().into_bytes()),
        ("PATH_INFO".into(), head.path.clone()),
        ("QUERY_STRING".into(), head.query.clone().into_bytes()),
        (
            "SERVER_PROTOCOL".into(),
            head.version.as_str().as_bytes().to_vec(),
        ),
        ("REQUEST_SCHEME".into(), b"http".to_vec()),
        ("REMOTE_ADDR".into(), peer.ip().to_string().into_bytes()),
        ("REMOTE_PORT".into(), peer.port().to_string().into_bytes()),
        ("SERVER_NAME".into(), local.ip().to_string().into_bytes()),
        ("SERVER_PORT".into(), local.port().to_string().into_bytes()),
        (
            "CONTENT_LENGTH".into(),
            if body.is_empty() {
                Vec::new()
            } else {
                body.len().to_string().into_bytes()
            },
        ),
        (
            "CONTENT_TYPE".into(),
            head.header("content-type").unwrap_or_default().to_vec(),
        ),
    ];
    for (name, value) in &head.headers {
        if name.contains('_')
            || name.eq_ignore_ascii_case("content-type")
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        match vars.iter_mut().find(|(k, _)| *k == key) {
            Some((_, joined)) => {
                joined.extend_from_slice(if key == "HTTP_COOKIE" { b"; " } else { b"," });
                joined.extend_from_slice(value);
            }
            None => vars.push((key, value.clone())),
        }
    }
    vars
}

// ANCHOR: forward
/// Sends the packet and the body to a worker and reads its whole answer.
async fn forward(upstream: &Upstream, packet: &[u8], body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut response = Vec::new();
    match upstream {
        Upstream::Unix(path) => {
            let mut s = UnixStream::connect(path).await?;
            s.write_all(packet).await?;
            s.write_all(body).await?;
            s.read_to_end(&mut response).await?;
        }
        Upstream::Tcp(addr) => {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(packet).await?;
            s.write_all(body).await?;
            s.read_to_end(&mut response).await?;
        }
    }
    Ok(response)
}
// ANCHOR_END: forward
