//! Unit tests of the request-head parser, through [`parse_head`] and the
//! public types, pass by pass.

use super::*;

type Parsed = Result<Option<(RequestHead, usize)>, HttpError>;

fn parse(buf: &[u8]) -> Parsed {
    parse_head(buf, &Limits::default())
}

fn ok(buf: &[u8]) -> (RequestHead, usize) {
    match parse(buf) {
        Ok(Some(done)) => done,
        other => panic!(
            "expected a complete head for {:?}, got {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

fn err(buf: &[u8]) -> HttpError {
    err_with(buf, &Limits::default())
}

fn err_with(buf: &[u8], limits: &Limits) -> HttpError {
    match parse_head(buf, limits) {
        Err(e) => e,
        other => panic!(
            "expected an error for {:?}, got {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

/// What a server sees when the bytes arrive one at a time: the first
/// answer that is not "incomplete".
fn bytewise(buf: &[u8], limits: &Limits) -> Parsed {
    for k in 0..=buf.len() {
        match parse_head(&buf[..k], limits) {
            Ok(None) => continue,
            answer => return answer,
        }
    }
    Ok(None)
}

/// Compare two answers field by field (RequestHead has no PartialEq on
/// purpose: servers never compare heads).
fn same(a: &Parsed, b: &Parsed) -> bool {
    match (a, b) {
        (Ok(None), Ok(None)) => true,
        (Err(x), Err(y)) => x == y,
        (Ok(Some((x, n))), Ok(Some((y, m)))) => n == m && format!("{x:?}") == format!("{y:?}"),
        _ => false,
    }
}

fn assert_incremental(buf: &[u8], limits: &Limits) {
    let whole = parse_head(buf, limits);
    let pieces = bytewise(buf, limits);
    assert!(
        same(&whole, &pieces),
        "{:?}: whole {whole:?} vs bytewise {pieces:?}",
        String::from_utf8_lossy(buf)
    );
}

fn small_limits() -> Limits {
    Limits {
        max_request_line: 32,
        max_header_count: 4,
        max_header_size: 24,
        max_body: 1000,
    }
}

// --- the basics -------------------------------------------------------

#[test]
fn simple_get() {
    let buf = b"GET /index.html?a=1&b=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n";
    let (head, n) = ok(buf);
    assert_eq!(n, buf.len());
    assert_eq!(head.method, "GET");
    assert_eq!(head.target, "/index.html?a=1&b=2");
    assert_eq!(head.path, b"/index.html");
    assert_eq!(head.query, "a=1&b=2");
    assert_eq!(head.version, Version::Http11);
    assert_eq!(
        head.headers,
        vec![
            ("Host".to_owned(), b"example.com".to_vec()),
            ("User-Agent".to_owned(), b"t".to_vec())
        ]
    );
    assert_eq!(head.body, BodyKind::Empty);
    assert!(head.keep_alive);
    assert!(!head.expect_continue);
}

#[test]
fn version_strings() {
    assert_eq!(Version::Http10.as_str(), "HTTP/1.0");
    assert_eq!(Version::Http11.as_str(), "HTTP/1.1");
    let (head, _) = ok(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(head.version, Version::Http10);
}

#[test]
fn default_limits_are_gunicorns() {
    let l = Limits::default();
    assert_eq!(l.max_request_line, 4094);
    assert_eq!(l.max_header_count, 100);
    assert_eq!(l.max_header_size, 8190);
    assert_eq!(l.max_body, 1 << 30);
}

#[test]
fn error_display() {
    let e = HttpError::new(400, "invalid Content-Length");
    assert_eq!(e.to_string(), "400 invalid Content-Length");
    let _: &dyn std::error::Error = &e;
}

#[test]
fn header_lookup_is_case_insensitive_and_first_wins() {
    let (head, _) = ok(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
    assert_eq!(head.header("x-A"), Some(&b"1"[..]));
    assert_eq!(head.header("HOST"), Some(&b"h"[..]));
    assert_eq!(head.header("missing"), None);
}

#[test]
fn header_names_keep_case_and_values_are_trimmed() {
    let (head, _) =
        ok(b"GET / HTTP/1.1\r\nhOsT: h\r\nX-Pad: \t v a l \t \r\nX-Empty:\r\nX-Sp:   \r\n\r\n");
    assert_eq!(head.headers[0].0, "hOsT");
    assert_eq!(head.header("x-pad"), Some(&b"v a l"[..]));
    assert_eq!(head.header("x-empty"), Some(&b""[..]));
    assert_eq!(head.header("x-sp"), Some(&b""[..]));
}

#[test]
fn obs_text_in_values_is_kept() {
    let (head, _) = ok(b"GET / HTTP/1.1\r\nHost: h\r\nX-L: caf\xe9\r\n\r\n");
    assert_eq!(head.header("x-l"), Some(&b"caf\xe9"[..]));
}

#[test]
fn methods_are_upper_case_tokens_of_3_to_20_characters() {
    // gunicorn's rule: `get` and `-bl` are tokens, and refused.
    for method in ["get", "-bl", "Get", "PO#T", "GE", &"X".repeat(21)] {
        let request = format!("{method} / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            err(request.as_bytes()),
            HttpError::new(400, "invalid request method"),
            "{method}"
        );
    }
    for method in ["GET", "PUT", "M-SEARCH", &"X".repeat(20)] {
        let request = format!("{method} / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(ok(request.as_bytes()).0.method, method);
    }
}

#[test]
fn a_second_content_type_is_400() {
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Type: text/html\r\n\r\n"),
        HttpError::new(400, "duplicate Content-Type")
    );
}

// --- incompleteness, leading empty lines, pipelining -----------------

#[test]
fn every_proper_prefix_is_incomplete() {
    let buf = b"\r\nPOST /upload?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
    for k in 0..buf.len() {
        assert!(matches!(parse(&buf[..k]), Ok(None)), "prefix {k}");
    }
    assert_eq!(ok(buf).1, buf.len());
}

#[test]
fn leading_empty_lines_are_skipped_and_counted() {
    let buf = b"\r\n\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    let (head, n) = ok(buf);
    assert_eq!(n, buf.len());
    assert_eq!(head.method, "GET");
    assert!(matches!(parse(b"\r\n\r\n"), Ok(None)));
    assert!(matches!(parse(b"\r"), Ok(None)));
}

#[test]
fn bare_cr_before_request_line_is_rejected() {
    assert_eq!(err(b"\rGET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 400);
}

#[test]
fn bare_lf_line_endings_are_accepted() {
    let buf = b"GET / HTTP/1.1\nHost: h\nX: y\n\nrest";
    let (head, n) = ok(buf);
    assert_eq!(n, buf.len() - 4);
    assert_eq!(head.header("x"), Some(&b"y"[..]));
}

#[test]
fn pipelined_requests_stop_exactly_at_the_head_end() {
    let first = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
    let second = b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut buf = first.to_vec();
    buf.extend_from_slice(b"abc");
    buf.extend_from_slice(second);
    let (head, n) = ok(&buf);
    assert_eq!(n, first.len());
    assert_eq!(head.body, BodyKind::Length(3));
    assert_eq!(&buf[n..n + 3], b"abc");
    let (head2, n2) = ok(&buf[n + 3..]);
    assert_eq!(head2.path, b"/b");
    assert_eq!(n2, second.len());
    // Two bodiless requests back to back.
    let mut two = second.to_vec();
    two.extend_from_slice(second);
    assert_eq!(ok(&two).1, second.len());
}

// --- limits -----------------------------------------------------------

fn request_line_of(len: usize) -> Vec<u8> {
    // "GET /aaa... HTTP/1.1" with exactly `len` bytes.
    let fixed = "GET / HTTP/1.1".len();
    let mut line = b"GET /".to_vec();
    line.extend(std::iter::repeat_n(b'a', len - fixed));
    line.extend_from_slice(b" HTTP/1.1");
    assert_eq!(line.len(), len);
    line
}

#[test]
fn request_line_limit_boundary() {
    let limits = Limits::default();
    let mut at_limit = request_line_of(4094);
    at_limit.extend_from_slice(b"\r\nHost: h\r\n\r\n");
    assert!(matches!(parse_head(&at_limit, &limits), Ok(Some(_))));
    assert_incremental(&at_limit, &limits);

    let mut over = request_line_of(4095);
    over.extend_from_slice(b"\r\nHost: h\r\n\r\n");
    let e = err_with(&over, &limits);
    assert_eq!(e, HttpError::new(400, "request line too long"));
    assert_incremental(&over, &limits);
}

#[test]
fn request_line_limit_detected_while_incomplete() {
    let limits = small_limits(); // 32
    let line = request_line_of(40);
    // 32 bytes of line, no newline: could still be fine.
    assert!(matches!(parse_head(&line[..32], &limits), Ok(None)));
    // The 33rd byte settles it.
    assert_eq!(
        err_with(&line[..33], &limits).reason,
        "request line too long"
    );
    // 32 bytes then CR: still possibly a 32-byte line.
    let mut cr = request_line_of(32);
    cr.push(b'\r');
    assert!(matches!(parse_head(&cr, &limits), Ok(None)));
    cr.push(b'\n');
    cr.extend_from_slice(b"Host: h\r\n\r\n");
    assert!(matches!(parse_head(&cr, &limits), Ok(Some(_))));
    // 32 bytes, CR, then not LF: the CR is content, so the line is too long
    // (and a bare CR would be rejected anyway).
    let mut bad = request_line_of(32);
    bad.extend_from_slice(b"\rX");
    assert_eq!(err_with(&bad, &limits).status, 400);
    // A bare-LF-terminated line of exactly the limit is fine.
    let mut lf = request_line_of(32);
    lf.extend_from_slice(b"\nHost: h\n\n");
    assert!(matches!(parse_head(&lf, &limits), Ok(Some(_))));
    // An endless line costs nothing: a megabyte without LF is refused.
    let huge = vec![b'A'; 1 << 20];
    assert_eq!(err(&huge).status, 400);
}

#[test]
fn header_line_limit_boundary() {
    let limits = Limits::default();
    let make = |len: usize| {
        let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        buf.extend(std::iter::repeat_n(b'v', len - 3));
        buf.extend_from_slice(b"\r\n\r\n");
        buf
    };
    // gunicorn counts the line with its CRLF: 8188 + 2 = 8190 fits, one
    // byte more is refused.
    let at_limit = make(8188);
    let (head, _) = ok(&at_limit);
    assert_eq!(head.header("x").map(<[u8]>::len), Some(8185));
    let over = make(8189);
    assert_eq!(
        err(&over),
        HttpError::new(431, "header field line too long")
    );
    assert_incremental(&over, &limits);
    assert_incremental(&at_limit, &limits);

    // Detected while incomplete.
    let partial = &over[..over.len() - 4];
    assert_eq!(err(partial).status, 431);
    let limits = small_limits(); // 24
    let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
    let field_start = buf.len();
    buf.extend_from_slice(b"X: 0123456789abcdefghijklmnop"); // 29 bytes
    // 22 bytes and a CRLF may still come; a 23rd byte is one too many.
    assert!(matches!(
        parse_head(&buf[..field_start + 22], &limits),
        Ok(None)
    ));
    assert_eq!(err_with(&buf[..field_start + 23], &limits).status, 431);
}

#[test]
fn header_count_boundary() {
    let make = |count: usize| {
        let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 1..count {
            buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        buf
    };
    let (head, _) = ok(&make(100));
    assert_eq!(head.headers.len(), 100);
    let over = make(101);
    assert_eq!(err(&over), HttpError::new(431, "too many header fields"));
    let limits = Limits::default();
    assert_incremental(&make(100), &limits);
    assert_incremental(&over, &limits);

    // Detected as soon as the 101st line starts.
    let hundred = make(100);
    let mut partial = hundred[..hundred.len() - 2].to_vec();
    assert!(matches!(parse(&partial), Ok(None)));
    partial.push(b'X');
    assert_eq!(err(&partial).status, 431);

    let small = small_limits();
    assert_eq!(err_with(&make(5), &small).status, 431);
    assert!(matches!(parse_head(&make(4), &small), Ok(Some(_))));
}

#[test]
fn head_size_limit_catches_endless_empty_lines() {
    let limits = small_limits();
    let max = limits.max_head_bytes(); // 32 + 4 * 24 + 4 = 132
    assert_eq!(max, 132);
    let blank = vec![b'\n'; max];
    assert!(matches!(parse_head(&blank, &limits), Ok(None)));
    let blank = vec![b'\n'; max + 1];
    assert_eq!(
        err_with(&blank, &limits),
        HttpError::new(431, "request head too large")
    );
    // A real request preceded by too many empty lines.
    let mut buf = vec![b'\n'; 130];
    buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(err_with(&buf, &limits).status, 431);
    assert_incremental(&buf, &limits);
    // The largest possible head with default limits still fits.
    let mut big = request_line_of(4094);
    big.extend_from_slice(b"\r\nHost: h\r\n");
    for i in 1..100 {
        let mut line = format!("X-{i:03}: ").into_bytes();
        line.resize(8188, b'v');
        big.extend_from_slice(&line);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"\r\n");
    assert!(matches!(parse(&big), Ok(Some(_))));
}

#[test]
fn huge_limits_do_not_overflow() {
    let limits = Limits {
        max_request_line: usize::MAX,
        max_header_count: usize::MAX,
        max_header_size: usize::MAX,
        max_body: 0,
    };
    let buf = b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n";
    let (head, _) = parse_head(buf, &limits).unwrap().unwrap();
    assert_eq!(head.body, BodyKind::Length(u64::MAX));
    assert!(matches!(parse_head(&buf[..20], &limits), Ok(None)));
}

#[test]
fn zero_limits_refuse_everything_cleanly() {
    let limits = Limits {
        max_request_line: 0,
        max_header_count: 0,
        max_header_size: 0,
        max_body: 0,
    };
    assert_eq!(err_with(b"GET / HTTP/1.1\r\n\r\n", &limits).status, 400);
    let limits = Limits {
        max_header_count: 0,
        ..Limits::default()
    };
    assert_eq!(
        err_with(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", &limits).status,
        431
    );
    // No headers at all is still fine.
    assert!(matches!(
        parse_head(b"GET / HTTP/1.0\r\n\r\n", &limits),
        Ok(Some(_))
    ));
}

// --- syntax (httparse) ------------------------------------------------

#[test]
fn syntax_errors_have_useful_reasons() {
    let cases: &[(&[u8], &str)] = &[
        (b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n", "invalid method token"),
        (
            b"GET\x01 / HTTP/1.1\r\nHost: h\r\n\r\n",
            "invalid method token",
        ),
        (
            b" GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            "invalid method token",
        ),
        (
            b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n",
            "invalid request target",
        ),
        (
            b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n",
            "invalid request target",
        ),
        (
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            "invalid request target",
        ),
        (
            b"GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n",
            "invalid request target",
        ),
        (
            b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
            "malformed request line (space in target?)",
        ),
        (
            b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            "unsupported HTTP version",
        ),
        (
            b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
            "unsupported HTTP version",
        ),
        (b"GET / HTTP/0.9\r\n\r\n", "unsupported HTTP version"),
        (
            b"GET / http/1.1\r\nHost: h\r\n\r\n",
            "unsupported HTTP version",
        ),
        (b"GET /\r\n\r\n", "missing HTTP version"),
        (
            b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
            "malformed line ending",
        ),
        (b"GET / HTTP/1.1\rHost: h\r\n\r\n", "malformed line ending"),
        (b"GET / HTTP/1.1\r\nHost: h\r\n\rX", "malformed line ending"),
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", "invalid header name"),
        (
            b"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n",
            "invalid header name",
        ),
        (
            b"GET / HTTP/1.1\r\n: h\r\nHost: h\r\n\r\n",
            "invalid header name",
        ),
        (b"GET / HTTP/1.1\r\nHo(st: h\r\n\r\n", "invalid header name"),
        (b"GET / HTTP/1.1\r\nHost h\r\n\r\n", "invalid header name"),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n",
            "invalid character in header value",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
            "invalid character in header value",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n",
            "invalid character in header value",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n",
            "invalid character in header value",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n",
            "obsolete line folding in header field",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tfolded\r\n\r\n",
            "obsolete line folding in header field",
        ),
        (
            b"GET / HTTP/1.1\r\n Host: h\r\n\r\n",
            "whitespace before the first header field",
        ),
    ];
    for (buf, reason) in cases {
        let e = err(buf);
        assert_eq!(
            (e.status, e.reason),
            (400, *reason),
            "{:?}",
            String::from_utf8_lossy(buf)
        );
        assert_incremental(buf, &Limits::default());
    }
}

#[test]
fn nul_in_a_long_header_value_is_rejected() {
    // Long enough for httparse's SIMD paths.
    let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    buf.extend(std::iter::repeat_n(b'a', 70));
    buf.push(0);
    buf.extend(std::iter::repeat_n(b'a', 70));
    buf.extend_from_slice(b"\r\n\r\n");
    assert_eq!(err(&buf).status, 400);
}

#[test]
fn earlier_syntax_error_wins_over_a_later_limit() {
    // A bad method on a too-long line: the method is what a byte-at-a-time
    // reader notices first.
    let limits = small_limits();
    let mut buf = b"G@T /".to_vec();
    buf.extend(std::iter::repeat_n(b'a', 60));
    buf.extend_from_slice(b" HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(err_with(&buf, &limits).reason, "invalid method token");
    assert_incremental(&buf, &limits);
    // A bad header name before a too-long header line.
    let mut buf = b"GET / HTTP/1.1\r\nHo st: h\r\nX: ".to_vec();
    buf.extend(std::iter::repeat_n(b'a', 60));
    buf.extend_from_slice(b"\r\n\r\n");
    assert_eq!(err_with(&buf, &limits).reason, "invalid header name");
    assert_incremental(&buf, &limits);
}

// --- request targets --------------------------------------------------

fn target(t: &str) -> (Vec<u8>, String) {
    target_with_method("GET", t)
}

#[test]
fn absolute_form_host_wins_over_the_host_header() {
    let (head, _) = ok(b"GET http://a.example:8080/x HTTP/1.1\r\nX: 1\r\nhOsT: b.example\r\n\r\n");
    assert_eq!(head.header("host"), Some(&b"a.example:8080"[..]));
    // Name and position as sent; still one Host.
    assert_eq!(head.headers[1].0, "hOsT");
    assert_eq!(
        head.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
            .count(),
        1
    );
    // HTTP/1.0 may send no Host: the target's host becomes it.
    let (head, _) = ok(b"GET http://a.example/x HTTP/1.0\r\n\r\n");
    assert_eq!(head.header("host"), Some(&b"a.example"[..]));
    // The Host header is still checked: missing, twice or invalid is 400.
    assert_eq!(err(b"GET http://a/ HTTP/1.1\r\n\r\n").status, 400);
    assert_eq!(
        err(b"GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n").status,
        400
    );
    assert_eq!(
        err(b"GET http://a/ HTTP/1.1\r\nHost: a b\r\n\r\n").status,
        400
    );
    // Origin-form leaves Host alone.
    let (head, _) = ok(b"GET /x HTTP/1.1\r\nHost: b.example\r\n\r\n");
    assert_eq!(head.header("host"), Some(&b"b.example"[..]));
}

fn target_with_method(method: &str, t: &str) -> (Vec<u8>, String) {
    let buf = format!("{method} {t} HTTP/1.1\r\nHost: h\r\n\r\n");
    let (head, _) = ok(buf.as_bytes());
    assert_eq!(head.target, t);
    (head.path, head.query)
}

fn target_err(t: &str) -> HttpError {
    err(format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
}

#[test]
fn origin_form() {
    assert_eq!(target("/"), (b"/".to_vec(), String::new()));
    assert_eq!(target("/a/b/"), (b"/a/b/".to_vec(), String::new()));
    assert_eq!(target("//double"), (b"//double".to_vec(), String::new()));
    assert_eq!(target("/p?"), (b"/p".to_vec(), String::new()));
    assert_eq!(target("/p?a=1?b=2"), (b"/p".to_vec(), "a=1?b=2".to_owned()));
    assert_eq!(target("/p?q#frag"), (b"/p".to_vec(), "q".to_owned()));
    assert_eq!(target("/p#frag?notquery"), (b"/p".to_vec(), String::new()));
    assert_eq!(target("/?x=%20"), (b"/".to_vec(), "x=%20".to_owned()));
}

#[test]
fn absolute_form() {
    assert_eq!(
        target("http://example.com/a?b"),
        (b"/a".to_vec(), "b".to_owned())
    );
    assert_eq!(
        target("HTTPS://example.com:8443/a%20b"),
        (b"/a b".to_vec(), String::new())
    );
    assert_eq!(target("http://example.com"), (b"/".to_vec(), String::new()));
    assert_eq!(
        target("http://example.com?q=1"),
        (b"/".to_vec(), "q=1".to_owned())
    );
    assert_eq!(
        target("http://[::1]:8000/x"),
        (b"/x".to_vec(), String::new())
    );
    assert_eq!(target("http://h#f"), (b"/".to_vec(), String::new()));
    assert_eq!(
        target_err("http:///path").reason,
        "invalid authority in request target"
    );
    assert_eq!(
        target_err("http://user:pw@evil/").reason,
        "invalid authority in request target"
    );
    assert_eq!(
        target_err("ftp://example.com/").reason,
        "invalid request target"
    );
    assert_eq!(
        target_err("http:/example.com/").reason,
        "invalid request target"
    );
}

#[test]
fn asterisk_form_only_for_options() {
    assert_eq!(
        target_with_method("OPTIONS", "*"),
        (b"*".to_vec(), String::new())
    );
    assert_eq!(target_err("*").status, 400);
    assert_eq!(target_err("*x").status, 400);
}

#[test]
fn other_target_forms_are_rejected() {
    assert_eq!(
        target_err("example.com:443").reason,
        "invalid request target"
    );
    assert_eq!(target_err("index.html").reason, "invalid request target");
    assert_eq!(target_err("?q").reason, "invalid request target");
    let e = err(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert_eq!(e.status, 400);
}

#[test]
fn percent_decoding() {
    assert_eq!(target("/a%2Fb").0, b"/a/b");
    assert_eq!(target("/%41%62%6a%6A").0, b"/Abjj");
    assert_eq!(target("/caf%C3%A9").0, "/café".as_bytes());
    assert_eq!(target("/%zz").0, b"/%zz");
    assert_eq!(target("/%4").0, b"/%4");
    assert_eq!(target("/%").0, b"/%");
    assert_eq!(target("/%%41").0, b"/%A");
    assert_eq!(target("/%ff").0, b"/\xff");
    assert_eq!(target("/%0D%0A").0, b"/\r\n");
    assert_eq!(target("/a+b").0, b"/a+b");
    // The query is not decoded.
    assert_eq!(target("/?a=%41").1, "a=%41");
    // Raw UTF-8 in the target is passed through as bytes.
    assert_eq!(target("/é").0, "/é".as_bytes());
}

#[test]
fn decoded_nul_is_rejected() {
    assert_eq!(
        target_err("/a%00b"),
        HttpError::new(400, "NUL in request path")
    );
    assert_eq!(target_err("http://h/%00").status, 400);
    // In the query it is the application's business.
    assert_eq!(target("/?a=%00").1, "a=%00");
}

// --- Content-Length ---------------------------------------------------

fn with_headers(headers: &str) -> Parsed {
    parse(format!("POST / HTTP/1.1\r\nHost: h\r\n{headers}\r\n").as_bytes())
}

fn body_of(headers: &str) -> BodyKind {
    match with_headers(headers) {
        Ok(Some((head, _))) => head.body,
        other => panic!("{headers:?}: {other:?}"),
    }
}

fn error_of(headers: &str) -> HttpError {
    match with_headers(headers) {
        Err(e) => e,
        other => panic!("{headers:?}: expected an error, got {other:?}"),
    }
}

#[test]
fn content_length_valid() {
    assert_eq!(body_of("Content-Length: 5\r\n"), BodyKind::Length(5));
    assert_eq!(body_of("content-length: 0005\r\n"), BodyKind::Length(5));
    assert_eq!(body_of("CONTENT-LENGTH:\t7 \r\n"), BodyKind::Length(7));
    assert_eq!(body_of("Content-Length: 0\r\n"), BodyKind::Empty);
    assert_eq!(body_of("Content-Length: 000\r\n"), BodyKind::Empty);
    assert_eq!(body_of(""), BodyKind::Empty);
}

#[test]
fn content_length_invalid() {
    for bad in [
        "+5",
        "-5",
        "5 5",
        "5,5",
        "5, 5",
        "0x5",
        "5a",
        "",
        "1e3",
        "5.0",
        "\u{663}",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        let e = error_of(&format!("Content-Length: {bad}\r\n"));
        assert_eq!(e, HttpError::new(400, "invalid Content-Length"), "{bad:?}");
    }
}

#[test]
fn duplicate_content_length() {
    let dup = HttpError::new(400, "duplicate Content-Length");
    assert_eq!(error_of("Content-Length: 5\r\nContent-Length: 5\r\n"), dup);
    assert_eq!(error_of("Content-Length: 5\r\ncontent-length: 6\r\n"), dup);
    assert_eq!(
        error_of("Content-Length: 0\r\nX: y\r\nContent-Length: 0\r\n"),
        dup
    );
}

#[test]
fn content_length_against_max_body() {
    let limits = Limits {
        max_body: 100,
        ..Limits::default()
    };
    let req = |n: u64| format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {n}\r\n\r\n");
    let (head, _) = parse_head(req(100).as_bytes(), &limits).unwrap().unwrap();
    assert_eq!(head.body, BodyKind::Length(100));
    assert_eq!(
        err_with(req(101).as_bytes(), &limits),
        HttpError::new(413, "request body too large")
    );
    let unlimited = Limits {
        max_body: 0,
        ..Limits::default()
    };
    let (head, _) = parse_head(req(1 << 40).as_bytes(), &unlimited)
        .unwrap()
        .unwrap();
    assert_eq!(head.body, BodyKind::Length(1 << 40));
    // Default: 1 GiB.
    assert_eq!(
        body_of("Content-Length: 1073741824\r\n"),
        BodyKind::Length(1 << 30)
    );
    assert_eq!(error_of("Content-Length: 1073741825\r\n").status, 413);
}

// --- Transfer-Encoding ------------------------------------------------

#[test]
fn chunked_is_recognised() {
    assert_eq!(body_of("Transfer-Encoding: chunked\r\n"), BodyKind::Chunked);
    assert_eq!(body_of("transfer-encoding: ChUnKeD\r\n"), BodyKind::Chunked);
    assert_eq!(
        body_of("Transfer-Encoding: \t chunked \t\r\n"),
        BodyKind::Chunked
    );
}

#[test]
fn transfer_encoding_misuse_is_400() {
    for headers in [
        "Transfer-Encoding: chunked, gzip\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
    ] {
        assert_eq!(
            error_of(headers),
            HttpError::new(400, "chunked is not the final transfer coding"),
            "{headers:?}"
        );
    }
    // An empty list element is not ignored here (RFC 9110 would): a proxy
    // that does not ignore it sees a non-chunked body. Not a coding at all,
    // it is malformed (400), not unsupported (501).
    for headers in [
        "Transfer-Encoding: chunked,\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding:\r\n",
        "Transfer-Encoding:\r\n",
        "Transfer-Encoding: ,\r\n",
        "Transfer-Encoding: ,chunked\r\n",
    ] {
        assert_eq!(
            error_of(headers),
            HttpError::new(400, "malformed Transfer-Encoding"),
            "{headers:?}"
        );
    }
    for headers in [
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip, chunked, chunked\r\n",
    ] {
        assert_eq!(
            error_of(headers),
            HttpError::new(400, "chunked applied more than once"),
            "{headers:?}"
        );
    }
}

#[test]
fn unsupported_codings_are_501() {
    for headers in [
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: xchunked\r\n",
        "Transfer-Encoding: chunked;q=1\r\n",
        "Transfer-Encoding: \"chunked\"\r\n",
    ] {
        assert_eq!(
            error_of(headers),
            HttpError::new(501, "unsupported Transfer-Encoding"),
            "{headers:?}"
        );
    }
}

#[test]
fn transfer_encoding_with_content_length_is_400() {
    let e = HttpError::new(400, "both Transfer-Encoding and Content-Length");
    assert_eq!(
        error_of("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
        e
    );
    assert_eq!(
        error_of("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
        e
    );
    assert_eq!(
        error_of("Content-Length: 0\r\nTransfer-Encoding: gzip\r\n"),
        e
    );
}

#[test]
fn transfer_encoding_on_http10_is_400() {
    let e = err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(
        e,
        HttpError::new(400, "Transfer-Encoding in an HTTP/1.0 request")
    );
}

// --- Host ---------------------------------------------------------------

#[test]
fn host_rules() {
    assert_eq!(
        err(b"GET / HTTP/1.1\r\n\r\n"),
        HttpError::new(400, "missing Host header")
    );
    assert!(matches!(parse(b"GET / HTTP/1.0\r\n\r\n"), Ok(Some(_))));
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
        HttpError::new(400, "more than one Host header")
    );
    assert_eq!(
        err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n").status,
        400
    );
    assert!(matches!(
        parse(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
        Ok(Some(_))
    ));
    assert!(matches!(
        parse(b"GET / HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n"),
        Ok(Some(_))
    ));
    assert!(matches!(
        parse(b"GET / HTTP/1.1\r\nHost: my_host.local:80\r\n\r\n"),
        Ok(Some(_))
    ));
    for bad in ["a b", "a/b", "user@h", "h\"", "caf\u{e9}"] {
        let buf = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        assert_eq!(
            err(buf.as_bytes()),
            HttpError::new(400, "invalid Host header"),
            "{bad:?}"
        );
    }
}

// --- Connection and Expect ------------------------------------------------

fn keep_alive(buf: &[u8]) -> bool {
    ok(buf).0.keep_alive
}

#[test]
fn connection_tokens() {
    assert!(keep_alive(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert!(!keep_alive(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    ));
    assert!(!keep_alive(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n"
    ));
    assert!(!keep_alive(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nconnection: close\r\n\r\n"
    ));
    assert!(keep_alive(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n"
    ));
    assert!(keep_alive(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"
    ));
    assert!(!keep_alive(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(keep_alive(
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    ));
    assert!(keep_alive(
        b"GET / HTTP/1.0\r\nConnection: foo ,\tKeep-Alive\r\n\r\n"
    ));
    assert!(!keep_alive(
        b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
    ));
    assert!(!keep_alive(
        b"GET / HTTP/1.0\r\nConnection: keep-alive-ish\r\n\r\n"
    ));
}

#[test]
fn expect_continue() {
    let expect = |buf: &[u8]| ok(buf).0.expect_continue;
    assert!(expect(
        b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    ));
    assert!(expect(
        b"POST / HTTP/1.1\r\nHost: h\r\nexpect:  100-Continue \r\n\r\n"
    ));
    assert!(!expect(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"));
    assert!(!expect(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n"));
    // Any other expectation: 417 (RFC 9110 10.1.1).
    for value in ["200-ok", "999-junk", ""] {
        let request = format!("POST / HTTP/1.1\r\nHost: h\r\nExpect: {value}\r\n\r\n");
        assert_eq!(err(request.as_bytes()).status, 417, "{value:?}");
    }
}

// --- incremental feeding over a corpus -------------------------------------

#[test]
fn bytewise_equals_whole_for_every_case() {
    let corpus: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"\r\n\nGET /a%2Fb?c#d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nextra",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /%00 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX : a\r\n\r\n",
        b"GET / HTTP/3.0\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    for limits in [Limits::default(), small_limits()] {
        for buf in corpus {
            assert_incremental(buf, &limits);
        }
    }
}

/// A small deterministic generator, so the robustness tests need no crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_requests_never_panic_and_stay_incremental() {
    let seeds: &[&[u8]] = &[
        b"POST /a%2Fb?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
        b"GET http://h:80/p?q HTTP/1.0\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        b"\r\nOPTIONS * HTTP/1.1\nHost: h\nX: \t y \n\n",
    ];
    let alphabet = b"\r\n \t:;,%0aZ\x00\x7f\xff/?#*-";
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let limits = small_limits();
    for round in 0..3000 {
        let mut buf = seeds[round % seeds.len()].to_vec();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(buf.len());
            match rng.below(3) {
                0 => buf[i] = alphabet[rng.below(alphabet.len())],
                1 => buf.insert(i, alphabet[rng.below(alphabet.len())]),
                _ => {
                    buf.remove(i);
                }
            }
        }
        assert_incremental(&buf, &Limits::default());
        assert_incremental(&buf, &limits);
    }
    // Pure noise.
    for _ in 0..500 {
        let len = rng.below(200);
        let buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert_incremental(&buf, &limits);
    }
}
