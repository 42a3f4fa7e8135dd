//! `uwsgi-dump`: see what nginx actually sends to an app server.
//!
//! ```text
//! cargo run -p stage4-uwsgi-socket --bin uwsgi-dump -- --socket /tmp/dump.sock
//!     # point nginx's uwsgi_pass at unix:/tmp/dump.sock, make a request:
//!     # each packet is printed as a hexdump with its fields named, and the
//!     # client gets the same dump as the response body.
//! cargo run -p stage4-uwsgi-socket --bin uwsgi-dump -- --build 'GET /hello?x=1' -H 'Host: example.test'
//!     # builds the packet nginx would send for that request, and prints it.
//! ```

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use clap::Parser;
use stage4_uwsgi_socket::uwsgi::{describe_packet, encode_packet, parse_packet};

/// Print uwsgi packets as a hexdump with their fields named.
#[derive(Parser, Debug)]
#[command(name = "uwsgi-dump", version)]
struct Args {
    /// Listen on this unix socket and print every packet received.
    #[arg(long, value_name = "PATH", conflicts_with = "build")]
    socket: Option<PathBuf>,

    /// Stop after this many packets (with --socket).
    #[arg(long, value_name = "N")]
    count: Option<u64>,

    /// Build the packet for a request line such as 'GET /path?query' and print it.
    #[arg(long, value_name = "REQUEST")]
    build: Option<String>,

    /// A header for --build, as 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,

    /// A body for --build.
    #[arg(long, value_name = "TEXT", default_value = "")]
    body: String,
}

fn main() {
    let args = Args::parse();
    let result = match (&args.socket, &args.build) {
        (Some(path), _) => listen(path, args.count),
        (None, Some(request)) => build(request, &args.headers, &args.body),
        (None, None) => {
            Err("give --socket PATH to capture packets, or --build 'GET /path' to build one".into())
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn build(request: &str, headers: &[String], body: &str) -> Result<(), String> {
    let (method, uri) = request
        .split_once(' ')
        .ok_or_else(|| format!("'{request}' is not a request line such as 'GET /path?query'"))?;
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let length = body.len().to_string();
    let mut vars: Vec<(String, Vec<u8>)> = vec![
        ("QUERY_STRING".into(), query.into()),
        ("REQUEST_METHOD".into(), method.into()),
        ("CONTENT_TYPE".into(), Vec::new()),
        (
            "CONTENT_LENGTH".into(),
            if body.is_empty() {
                Vec::new()
            } else {
                length.into()
            },
        ),
        ("REQUEST_URI".into(), uri.into()),
        ("PATH_INFO".into(), path.into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
        ("SERVER_NAME".into(), "localhost".into()),
        ("SERVER_PORT".into(), "80".into()),
    ];
    for header in headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("'{header}' is not a header such as 'Host: example.test'"))?;
        let key = format!(
            "HTTP_{}",
            name.trim().to_ascii_uppercase().replace('-', "_")
        );
        vars.push((key, value.trim().into()));
    }
    let refs: Vec<(&str, &[u8])> = vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let mut packet = encode_packet(&refs).map_err(|e| e.to_string())?;
    packet.extend_from_slice(body.as_bytes());
    print!("{}", describe_packet(&packet));
    Ok(())
}

fn listen(path: &PathBuf, count: Option<u64>) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    eprintln!(
        "Listening at: unix:{} (point nginx's uwsgi_pass here)",
        path.display()
    );
    let mut seen = 0;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        // Read the header and vars, then the body CONTENT_LENGTH announces.
        let dump = loop {
            match parse_packet(&buf, usize::from(u16::MAX)) {
                Ok(Some((request, used))) => {
                    let body = match request.body {
                        wsgi_bridge::http::request::BodyKind::Length(n) => n as usize,
                        _ => 0,
                    };
                    while buf.len() < used + body {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    break describe_packet(&buf);
                }
                Ok(None) => match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break describe_packet(&buf),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
                Err(e) => break format!("{e}\n{}", describe_packet(&buf)),
            }
        };
        print!("{dump}");
        println!();
        let _ = std::io::stdout().flush();
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{dump}",
            dump.len()
        );
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}
