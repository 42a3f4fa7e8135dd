//! Stage 6 on its own, over real sockets: the ASGI protocol (scope, streamed
//! bodies both ways, disconnects, lifespan, WebSocket) and the lessons of an
//! event loop (thousands of idle connections on one thread; a blocking call
//! stalls everyone, and the server says which request did it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::{Message, WebSocket};
use wsgi_course::client::{self, Conn};
use wsgi_course::server::{ServerProcess, workspace_bin};

const BIN: &str = "stage6-asgi";

fn start(args: &[&str]) -> ServerProcess {
    let mut all = vec!["apps.asgi_lab:app", "-b", "127.0.0.1:0"];
    all.extend_from_slice(args);
    ServerProcess::start(BIN, &all).expect("stage 6 starts")
}

fn get(addr: SocketAddr, path: &str) -> client::Response {
    client::get(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Polls `f` every 50 ms for up to `within`; true as soon as it is.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rss_high_water_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn no_arguments_serve_the_builtin_hello_app_from_any_directory() {
    let tmp = std::env::temp_dir();
    let server = ServerProcess::start_with(BIN, &["-b", "127.0.0.1:0"], &[], Some(&tmp))
        .expect("stage 6 starts with no app argument");
    let r = get(server.addr(), "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"Hello, World!\n");
    assert_eq!(r.header("server"), Some("stage6-asgi/0.1.0"));
    assert!(r.header("date").is_some());
    server.wait_for_stderr("Serving ", Duration::from_secs(5));
    let banner = server.stderr_text();
    assert!(
        banner.contains(&format!(
            "Listening at: http://{} ({})",
            server.addr(),
            server.pid()
        )),
        "{banner}"
    );
    assert!(
        banner.contains("Serving the built-in hello app with Python 3."),
        "{banner}"
    );
}

#[test]
fn the_scope_has_every_field_of_the_http_scope() {
    let server = start(&["--root-path", "/mnt"]);
    let r = client::request(
        server.addr(),
        b"POST /scope?q=%20a&b HTTP/1.1\r\nHost: h.test\r\nX_Under: u\r\nX-Tag: a\r\nx-tag: b\r\nContent-Length: 3\r\n\r\nabc",
    )
    .unwrap();
    let s: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(s["type"], "http");
    assert_eq!(s["asgi"]["version"], "3.0");
    assert!(s["asgi"]["spec_version"].is_string());
    assert_eq!(s["http_version"], "1.1");
    assert_eq!(s["method"], "POST");
    assert_eq!(s["scheme"], "http");
    assert_eq!(s["path"], "/scope");
    assert_eq!(s["raw_path"], "/scope");
    assert_eq!(s["query_string"], "q=%20a&b", "query_string stays encoded");
    assert_eq!(s["root_path"], "/mnt");
    assert_eq!(s["body"], "abc");
    // Headers: raw, lower-cased names, in order, repeats kept, names with
    // underscores passed as they are (no CGI mapping in ASGI).
    let headers: Vec<(String, String)> = s["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        headers,
        [
            ("host", "h.test"),
            ("x_under", "u"),
            ("x-tag", "a"),
            ("x-tag", "b"),
            ("content-length", "3")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(s["client"][0], "127.0.0.1");
    assert!(s["client"][1].as_u64().is_some_and(|p| p > 0));
    assert_eq!(s["server"][0], "127.0.0.1");
    assert_eq!(s["server"][1], server.addr().port());
    // The lifespan's state, copied into the request.
    assert_eq!(s["state"], serde_json::json!(["started_at"]));
}

#[test]
fn the_path_is_decoded_utf8_and_raw_path_is_as_sent() {
    let server = start(&[]);
    // The lab app answers 404 for unknown paths but /environ shows both.
    let r = client::request(
        server.addr(),
        b"GET /environ/caf%C3%A9 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let e: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(e["RAW_URI"], "/environ/caf%C3%A9");
    // PATH_INFO is built from raw_path by the adapter: latin-1 of the bytes.
    assert_eq!(e["PATH_INFO"], "/environ/caf\u{c3}\u{a9}");
}

#[test]
fn a_large_upload_is_streamed_through_in_pieces_with_back_pressure() {
    let server = start(&[]);
    let before = rss_high_water_kib(server.pid());
    // 64 MiB up, echoed back while it is still being sent: the server holds
    // a bounded window of it, never the whole.
    const TOTAL: usize = 64 << 20;
    let mut up = TcpStream::connect(server.addr()).unwrap();
    up.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut down = up.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        up.write_all(
            format!(
                "POST /echo/stream HTTP/1.1\r\nHost: t\r\nContent-Length: {TOTAL}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let block: Vec<u8> = (0..65536u32).map(|i| (i % 253) as u8).collect();
        for _ in 0..TOTAL / block.len() {
            up.write_all(&block).unwrap();
        }
    });
    let mut raw = Vec::new();
    down.read_to_end(&mut raw).unwrap();
    writer.join().unwrap();
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    // Decode the chunked body and compare.
    let mut body = Vec::with_capacity(TOTAL);
    let mut rest = &raw[head_end..];
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    assert_eq!(body.len(), TOTAL);
    assert!(
        body.iter()
            .enumerate()
            .all(|(i, &b)| b == ((i % 65536) % 253) as u8),
        "the echoed body differs"
    );
    let grown = rss_high_water_kib(server.pid()).saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "the server's peak memory grew by {grown} KiB for a 64 MiB upload: it buffered it"
    );
}

#[test]
fn a_slow_app_makes_the_upload_wait_instead_of_filling_memory() {
    let server = start(&[]);
    let before = rss_high_water_kib(server.pid());
    const TOTAL: usize = 64 << 20;
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut reader = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        s.write_all(
            format!("POST /upload?ms=1 HTTP/1.1\r\nHost: t\r\nContent-Length: {TOTAL}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let block = vec![7u8; 1 << 20];
        for _ in 0..TOTAL / block.len() {
            s.write_all(&block).unwrap();
        }
    });
    let mut response = String::new();
    reader.read_to_string(&mut response).unwrap();
    writer.join().unwrap();
    assert!(
        response.contains(&format!("{TOTAL} bytes in ")),
        "{response}"
    );
    let grown = rss_high_water_kib(server.pid()).saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "the server grew by {grown} KiB for an upload its app read slowly: it buffered it"
    );
}

#[test]
fn a_slow_client_makes_the_app_wait_instead_of_filling_memory() {
    let server = start(&[]);
    let before = rss_high_water_kib(server.pid());
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /download?mb=256 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Read a little, then stop reading for a while: an app without
    // back-pressure would queue the whole 256 MiB in the server meanwhile.
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    while total < (1 << 20) {
        total += s.read(&mut buf).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    let grown = rss_high_water_kib(server.pid()).saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "the server grew by {grown} KiB while its client did not read"
    );
    loop {
        match s.read(&mut buf).unwrap() {
            0 => break,
            n => total += n,
        }
    }
    // 256 MiB of body, plus the head and the chunk framing.
    assert!(total > 256 << 20, "{total} bytes");
}

#[test]
fn a_streamed_response_is_chunked_on_http11_and_close_delimited_on_http10() {
    let server = start(&[]);
    let r = get(server.addr(), "/stream?n=2000");
    assert!(r.chunked);
    assert_eq!(
        r.body.len(),
        (0..2000)
            .map(|i| format!("chunk {i}\n").len())
            .sum::<usize>()
    );
    let mut c = Conn::connect(server.addr()).unwrap();
    c.send(b"GET /stream?n=3 HTTP/1.0\r\n\r\n").unwrap();
    let raw = c.read_to_close().unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.ends_with("\r\n\r\nchunk 0\nchunk 1\nchunk 2\n"),
        "{text}"
    );
    // HEAD: the head only, with the length a GET would have.
    let mut c = Conn::connect(server.addr()).unwrap();
    c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = c.read_response(true).unwrap();
    assert_eq!(r.header("content-length"), Some("14"));
    assert!(r.body.is_empty());
}

#[test]
fn an_sse_stream_ends_when_its_client_leaves_and_the_app_sees_it() {
    let server = start(&[]);
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(b"GET /sse HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: event 2") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(get(server.addr(), "/sse/stats").text(), "0\n");
    drop(s);
    assert!(
        eventually(Duration::from_secs(5), || get(server.addr(), "/sse/stats")
            .text()
            == "1\n"),
        "the app did not see the client leave"
    );
    assert!(eventually(Duration::from_secs(5), || server
        .stdout_text()
        .contains("lab: /sse client left after")));
    // The app stopped because the client left: that is not an app error.
    std::thread::sleep(Duration::from_millis(200));
    let log = server.stderr_text();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn lifespan_starts_before_the_first_request_and_shuts_down_on_term() {
    let mut server = start(&[]);
    let r = get(server.addr(), "/lifespan");
    let l: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        l["startup"].is_f64(),
        "startup ran before the first request: {l}"
    );
    assert_eq!(l["requests"], 1);
    assert!(l["shutdown"].is_null());
    get(server.addr(), "/");
    server.signal(libc::SIGTERM);
    let status = server
        .wait_timeout(Duration::from_secs(10))
        .expect("stops on TERM");
    assert!(status.success(), "{status}");
    // The reader threads may still be collecting the last lines.
    eventually(Duration::from_secs(5), || {
        server.stdout_text().contains("lab: lifespan shutdown")
    });
    let out = server.stdout_text();
    let startup = out.find("lab: lifespan startup").expect("startup logged");
    let shutdown = out
        .find("lab: lifespan shutdown after 2 requests")
        .unwrap_or_else(|| panic!("shutdown after the requests: {out}"));
    assert!(startup < shutdown);
    assert!(
        server
            .stderr_text()
            .contains("Application shutdown complete.")
    );
}

#[test]
fn a_failed_startup_exits_non_zero_with_one_sentence() {
    let out = Command::new(workspace_bin(BIN))
        .args(["apps.asgi_lab:app", "-b", "127.0.0.1:0"])
        .current_dir(wsgi_course::server::repo_root())
        .env("ASGI_LAB_FAIL_STARTUP", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end().lines().last(),
        Some("error: the app's lifespan startup failed: ASGI_LAB_FAIL_STARTUP is set"),
        "{err}"
    );
}

#[test]
fn an_app_without_lifespan_support_is_served_anyway() {
    // The built-in hello app returns at once for a lifespan scope.
    let server = ServerProcess::start(BIN, &["-b", "127.0.0.1:0"]).unwrap();
    assert_eq!(get(server.addr(), "/").status, 200);
    assert!(
        server
            .wait_for_stderr(
                "lifespan' protocol appears unsupported",
                Duration::from_secs(2)
            )
            .is_some()
    );
}

#[test]
fn app_faults_give_500_or_a_closed_connection() {
    let server = start(&[]);
    let r = get(server.addr(), "/error");
    assert_eq!(r.status, 500);
    assert!(r.closes());
    assert!(
        server
            .wait_for_stderr(
                "Exception in ASGI application (GET /error)",
                Duration::from_secs(5)
            )
            .is_some()
    );
    assert_eq!(get(server.addr(), "/no-response").status, 500);
    let err = client::request(
        server.addr(),
        b"GET /error-late HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .expect_err("a response cut short must not look complete");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert_eq!(get(server.addr(), "/").status, 200);
}

#[test]
fn malformed_requests_get_4xx_and_the_server_lives_on() {
    let server = start(&[]);
    for (raw, status) in [
        (&b"GARBAGE\r\n\r\n"[..], 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
    ] {
        let r = client::request(server.addr(), raw).unwrap();
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(raw));
    }
    assert_eq!(get(server.addr(), "/").status, 200);
}

#[test]
fn a_blocked_loop_is_warned_about_naming_the_request() {
    let server = start(&[]);
    let r = get(server.addr(), "/block?ms=300");
    assert_eq!(r.status, 200);
    let line = server
        .wait_for_stderr("held the event loop for", Duration::from_secs(5))
        .expect("a warning about the blocked loop");
    assert!(line.contains("GET /block?ms=300"), "{line}");
    assert!(line.contains("WARNING"), "{line}");
    // A request that waits with asyncio.sleep does not block it.
    let n = server.stderr_line_count();
    get(server.addr(), "/io?ms=300");
    assert!(
        server
            .wait_for_stderr_from(n, "held the event loop", Duration::from_millis(500))
            .is_none()
    );
}

#[test]
fn a_blocking_call_moved_to_a_thread_leaves_the_loop_free() {
    // The fixes the book shows for the pitfall above: asyncio.to_thread and
    // loop.run_in_executor. The hello page answers while they sleep.
    let server = start(&[]);
    for route in ["/block/thread?ms=1500", "/block/executor?ms=1500"] {
        let addr = server.addr();
        let slow = std::thread::spawn(move || get(addr, route));
        std::thread::sleep(Duration::from_millis(200));
        let began = std::time::Instant::now();
        assert_eq!(get(server.addr(), "/").status, 200);
        assert!(
            began.elapsed() < Duration::from_millis(1000),
            "{route} held the loop: / took {:?}",
            began.elapsed()
        );
        assert_eq!(slow.join().unwrap().status, 200);
    }
    assert!(!server.stderr_text().contains("held the event loop"));
}

// ---------------------------------------------------------------------------
// WebSocket.

fn ws_connect(addr: SocketAddr, path: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}{path}"), stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake on {path}: {e}"));
    ws
}

#[test]
fn websocket_echo_text_binary_fragments_ping_and_close_codes() {
    let server = start(&[]);
    let stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/ws",
        server.addr()
    ))
    .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "lab.v2, lab.v1".parse().unwrap());
    let (mut ws, resp) = tungstenite::client(request, stream).unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "lab.v2");
    assert_eq!(resp.headers()["x-lab"], "websocket");

    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    // A 1 MiB message.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(big));

    // A text message in three fragments arrives whole.
    for (i, part) in ["frag", "men", "ted"].iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::from_payload(
            FrameHeader {
                is_final: i == 2,
                opcode,
                ..FrameHeader::default()
            },
            part.as_bytes().to_vec().into(),
        );
        ws.write(Message::Frame(frame)).unwrap();
    }
    ws.flush().unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("fragmented"));

    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::Pong(b"are you there".to_vec().into())
    );

    // The app closes with the code asked for.
    ws.send(Message::text("close:4001")).unwrap();
    match ws.read().unwrap() {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::from(4001));
            assert_eq!(frame.reason.as_str(), "asked");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }

    // The client closes with a code: the app gets websocket.disconnect with it.
    let mut ws = ws_connect(server.addr(), "/ws");
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: CloseCode::from(4002),
        reason: "bye".into(),
    }))
    .unwrap();
    while ws.read().is_ok() {}
    assert!(
        eventually(Duration::from_secs(5), || server
            .stdout_text()
            .contains("lab: websocket disconnect 4002")),
        "{}",
        server.stdout_text()
    );
}

#[test]
fn invalid_websocket_upgrades_are_refused() {
    let server = start(&[]);
    let up = "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let no_key = format!("{up}Sec-WebSocket-Version: 13\r\n\r\n");
    let r = client::request(server.addr(), no_key.as_bytes()).unwrap();
    assert_eq!(r.status, 400, "no Sec-WebSocket-Key");
    let old = format!(
        "{up}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
    );
    let r = client::request(server.addr(), old.as_bytes()).unwrap();
    assert_eq!(r.status, 426, "wrong version");
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    // The app refuses: 403.
    let refused = "GET /ws/reject HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let r = client::request(server.addr(), refused.as_bytes()).unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(get(server.addr(), "/").status, 200);
}

#[test]
fn one_worker_holds_a_thousand_websocket_clients_and_broadcasts_to_all() {
    let server = start(&[]);
    let mut clients: Vec<WebSocket<TcpStream>> = (0..1000)
        .map(|_| ws_connect(server.addr(), "/chat"))
        .collect();
    // Every client is registered once its handshake is done; one message
    // from the first reaches all thousand.
    clients[0].send(Message::text("hello, everyone")).unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        match c.read() {
            Ok(m) => assert_eq!(m, Message::text("hello, everyone"), "client {i}"),
            Err(e) => panic!("client {i}: {e}"),
        }
    }
    // The server still answers plain HTTP meanwhile.
    assert_eq!(get(server.addr(), "/").status, 200);
    for c in &mut clients {
        let _ = c.close(None);
    }
}

#[test]
fn a_fastapi_app_is_served_when_fastapi_is_installed() {
    let server = match ServerProcess::start(BIN, &["apps.fastapi_app:app", "-b", "127.0.0.1:0"]) {
        Ok(s) => s,
        Err(e)
            if e.contains("No module named 'fastapi'")
                || e.contains("No module named 'pydantic'") =>
        {
            eprintln!(
                "SKIPPED: FastAPI is not installed for the embedded Python (pip install fastapi)"
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let addr = server.addr();
    assert_eq!(get(addr, "/").body, b"Hello, World!\n");
    let r = get(addr, "/items/3?q=x");
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        serde_json::json!({"item_id": 3, "q": "x"})
    );
    // Validation by pydantic: a body without its price is a 422.
    let r = client::request(
        addr,
        b"POST /items HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"name\":\"pen\"}",
    )
    .unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    let r = client::request(
        addr,
        b"POST /items HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 26\r\n\r\n{\"name\":\"pen\",\"price\":2.0}",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap()["price_with_tax"],
        2.4
    );
    // A plain `def` route runs in anyio's thread pool: anyio needs a current
    // asyncio task from the first line, which the eager Task start gives.
    assert_eq!(get(addr, "/sync").status, 200);
    assert_eq!(get(addr, "/io?ms=20").status, 200);
    // Lifespan state reaches the request.
    assert!(
        get(addr, "/state")
            .text()
            .contains("hello from the lifespan")
    );
    let r = get(addr, "/stream?n=3");
    assert!(r.chunked);
    assert_eq!(r.body, b"chunk 0\nchunk 1\nchunk 2\n");
    let mut ws = ws_connect(addr, "/ws");
    ws.send(Message::text("hi")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("echo: hi"));
    ws.close(None).unwrap();
    assert!(
        !server.stderr_text().contains("Traceback"),
        "{}",
        server.stderr_text()
    );
}

fn task_report(addr: SocketAddr, path: &str) -> Value {
    let r = get(addr, path);
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

/// `--eager host` (the default) lends one standing Task to every request's
/// first step: the app must still see a current task from its first line,
/// the same one after a wait, a task of its own when requests wait at the
/// same time, and never a ContextVar an earlier request set.
#[test]
fn every_request_has_its_own_task_and_context_from_its_first_line() {
    for args in [
        vec![],
        vec!["--eager", "task"],
        vec!["--loop", "asyncio"],
        vec!["--loop", "asyncio", "--eager", "task"],
    ] {
        let server = start(&args);
        let addr = server.addr();
        for path in ["/task", "/task?ms=20", "/task", "/task?ms=1", "/task"] {
            let r = task_report(addr, path);
            assert!(r["before"].is_string(), "{args:?} {path}: {r}");
            assert_eq!(r["same"], true, "{args:?} {path}: {r}");
            assert_eq!(r["leftover"], Value::Null, "{args:?} {path}: {r}");
        }
        // Eight requests waiting at once: eight tasks.
        let waiting: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(move || task_report(addr, "/task?ms=300")))
            .collect();
        let mut names: Vec<String> = waiting
            .into_iter()
            .map(|t| t.join().unwrap()["after"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 8, "{args:?}: {names:?}");
        // And a request right after them still has a task and a clean context.
        let r = task_report(addr, "/task");
        assert!(r["before"].is_string(), "{args:?}: {r}");
        assert_eq!(r["leftover"], Value::Null, "{args:?}: {r}");
        assert!(
            !server.stderr_text().contains("Traceback")
                && !server.stderr_text().contains("destroyed but it is pending"),
            "{}",
            server.stderr_text()
        );
    }
    // `--eager bare`: no task until the first wait (the documented cost).
    let server = start(&["--eager", "bare"]);
    let r = task_report(server.addr(), "/task");
    assert_eq!(r["before"], Value::Null, "{r}");
    assert_eq!(r["leftover"], Value::Null, "{r}");
}

#[test]
fn both_loops_and_every_first_step_serve_the_same() {
    let has_uvloop = Command::new("python3")
        .args(["-c", "import uvloop"])
        .status()
        .is_ok_and(|s| s.success());
    // The default loop is uvloop where it is installed: asyncio's is named.
    let mut variants = vec![
        vec!["--loop", "asyncio"],
        vec!["--loop", "asyncio", "--eager", "bare"],
        vec!["--loop", "asyncio", "--eager", "task"],
    ];
    if has_uvloop {
        variants.push(vec!["--loop", "uvloop"]);
        variants.push(vec!["--loop", "uvloop", "--eager", "bare"]);
        variants.push(vec!["--loop", "uvloop", "--eager", "task"]);
    } else {
        eprintln!("SKIPPED (uvloop variants): uvloop is not installed (pip install uvloop)");
    }
    for args in variants {
        let server = start(&args);
        let addr = server.addr();
        assert_eq!(get(addr, "/").body, b"Hello, World!\n", "{args:?}");
        assert_eq!(get(addr, "/io?ms=5").body, b"io done\n", "{args:?}");
        let r = client::request(
            addr,
            b"POST /echo/stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde", "{args:?}");
        let mut ws = ws_connect(addr, "/ws");
        ws.send(Message::text("x")).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text("x"), "{args:?}");
        assert_eq!(get(addr, "/error").status, 500, "{args:?}");
    }
}

#[test]
fn a_stop_closes_websockets_with_1012_and_lets_requests_finish() {
    let mut server = start(&[]);
    let addr = server.addr();
    let mut ws = ws_connect(addr, "/ws");
    ws.send(Message::text("before")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("before"));
    let slow = std::thread::spawn(move || client::get(addr, "/io?ms=500"));
    std::thread::sleep(Duration::from_millis(150));
    server.signal(libc::SIGTERM);
    match ws.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Restart),
        other => panic!("expected a 1012 close, got {other:?}"),
    }
    let r = slow
        .join()
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(r.body, b"io done\n");
    let status = server.wait_timeout(Duration::from_secs(10)).expect("stops");
    assert!(status.success(), "{status}");
}
