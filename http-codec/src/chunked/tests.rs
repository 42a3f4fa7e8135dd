//! Unit tests of the chunked decoder: every split of the input, the
//! strict framing, the limits.

use super::*;

/// Decode `input` the way a server does: bytes arrive `feed` at a time
/// into a buffer, the decoder is called with `max_out`, and consumed
/// bytes are dropped. Returns the body, the number of input bytes used,
/// and the decoder; or the first error.
fn run(
    input: &[u8],
    feed: usize,
    max_out: usize,
) -> Result<(Vec<u8>, usize, ChunkedDecoder), HttpError> {
    let mut decoder = ChunkedDecoder::new();
    let mut body = Vec::new();
    let mut buffer: Vec<u8> = Vec::new();
    let mut sent = 0;
    let mut used = 0;
    loop {
        let p = decoder.decode(&buffer, &mut body, max_out)?;
        assert!(p.produced <= max_out);
        assert!(p.consumed <= buffer.len());
        buffer.drain(..p.consumed);
        used += p.consumed;
        if p.done {
            return Ok((body, used, decoder));
        }
        if p.consumed == 0 && p.produced == 0 {
            if sent == input.len() {
                // Out of input and stuck: report as "incomplete".
                return Err(HttpError::new(0, "incomplete"));
            }
            let next = (sent + feed).min(input.len());
            buffer.extend_from_slice(&input[sent..next]);
            sent = next;
        }
    }
}

fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, ChunkedDecoder), HttpError> {
    run(input, usize::MAX / 2, usize::MAX)
}

fn body(input: &[u8]) -> Vec<u8> {
    match decode_all(input) {
        Ok((b, _, _)) => b,
        Err(e) => panic!("{:?}: {e}", String::from_utf8_lossy(input)),
    }
}

fn error(input: &[u8]) -> HttpError {
    match decode_all(input) {
        Err(e) => e,
        Ok(_) => panic!("{:?}: expected an error", String::from_utf8_lossy(input)),
    }
}

/// The same input fed in every way gives the same result.
fn assert_split_invariant(input: &[u8]) {
    let whole = decode_all(input).map(|(b, n, d)| (b, n, d.trailers().to_vec()));
    for feed in [1, 2, 3, 7] {
        for max_out in [1, 2, 5, usize::MAX] {
            let split = run(input, feed, max_out).map(|(b, n, d)| (b, n, d.trailers().to_vec()));
            assert_eq!(
                whole,
                split,
                "{:?} feed {feed} max_out {max_out}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

#[test]
fn single_chunk() {
    let input = b"5\r\nhello\r\n0\r\n\r\n";
    let (b, n, d) = decode_all(input).unwrap();
    assert_eq!(b, b"hello");
    assert_eq!(n, input.len());
    assert!(d.is_done());
    assert!(d.trailers().is_empty());
}

#[test]
fn one_call_reports_everything() {
    let mut d = ChunkedDecoder::default();
    let mut out = Vec::new();
    let input = b"5\r\nhello\r\n0\r\n\r\n";
    let p = d.decode(input, &mut out, 100).unwrap();
    assert_eq!(
        p,
        Progress {
            consumed: input.len(),
            produced: 5,
            done: true
        }
    );
    // After done nothing more is consumed.
    let p = d.decode(b"GET", &mut out, 100).unwrap();
    assert_eq!(
        p,
        Progress {
            consumed: 0,
            produced: 0,
            done: true
        }
    );
}

#[test]
fn several_chunks_and_hex_sizes() {
    let input = b"3\r\nabc\r\na\r\n0123456789\r\nA\r\nABCDEFGHIJ\r\n1f\r\n0123456789012345678901234567890\r\n0\r\n\r\n";
    let expected = b"abc0123456789ABCDEFGHIJ0123456789012345678901234567890";
    assert_eq!(body(input), expected);
    assert_split_invariant(input);
    assert_eq!(body(b"0\r\n\r\n"), b"");
    assert_eq!(body(b"000\r\n\r\n"), b"");
    assert_eq!(body(b"0005\r\nhello\r\n0\r\n\r\n"), b"hello");
}

#[test]
fn chunk_data_may_contain_crlf_and_anything() {
    let input = b"6\r\n\r\n0\r\n\r\r\n0\r\n\r\n";
    assert_eq!(body(input), b"\r\n0\r\n\r");
    let input = b"4\r\n\0\xff\n\r\r\n0\r\n\r\n";
    assert_eq!(body(input), b"\0\xff\n\r");
    assert_split_invariant(input);
}

#[test]
fn never_consumes_past_the_body() {
    let chunked = b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
    let mut input = chunked.to_vec();
    input.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let p = d.decode(&input, &mut out, usize::MAX).unwrap();
    assert_eq!(p.consumed, chunked.len());
    assert!(p.done);
    assert_eq!(out, b"hello");
    // Also when fed in pieces.
    let (_, used, _) = run(&input, 1, 3).unwrap();
    assert_eq!(used, chunked.len());
}

#[test]
fn max_out_splits_a_big_chunk() {
    let input = b"a\r\n0123456789\r\n0\r\n\r\n";
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut pieces = Vec::new();
    let mut pos = 0;
    loop {
        let p = d.decode(&input[pos..], &mut out, 3).unwrap();
        pos += p.consumed;
        pieces.push(p.produced);
        if p.done {
            break;
        }
    }
    assert_eq!(pieces, vec![3, 3, 3, 1]);
    assert_eq!(out, b"0123456789");
    assert_eq!(pos, input.len());
}

#[test]
fn max_out_zero_still_consumes_framing() {
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let p = d.decode(b"3\r\nabc", &mut out, 0).unwrap();
    assert_eq!((p.consumed, p.produced, p.done), (3, 0, false));
    let p = d.decode(b"abc\r\n0\r\n\r\n", &mut out, 3).unwrap();
    assert_eq!((p.consumed, p.produced, p.done), (10, 3, true));
    // The final framing is consumed even with no room for body bytes.
    let mut d = ChunkedDecoder::new();
    let p = d.decode(b"0\r\n\r\n", &mut out, 0).unwrap();
    assert!(p.done);
}

#[test]
fn empty_input_is_fine() {
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let p = d.decode(b"", &mut out, 10).unwrap();
    assert_eq!((p.consumed, p.produced, p.done), (0, 0, false));
    assert!(!d.is_done());
}

#[test]
fn extensions_are_accepted_and_ignored() {
    for line in [
        "5;foo",
        "5;foo=bar",
        "5 ;foo=bar",
        "5\t; foo = bar ;baz",
        "5;a=1;b=2;c",
        "5;name=\"quoted value; with = specials\"",
        "5;q=\"esc\\\"aped\\\\\"",
        "5;q=\"\"",
        "5;q=\"x\" ;r",
        "5;q=\"caf\u{e9}\"",
    ] {
        let input = format!("{line}\r\nhello\r\n0;last=1\r\n\r\n");
        assert_eq!(body(input.as_bytes()), b"hello", "{line:?}");
        assert_split_invariant(input.as_bytes());
    }
}

#[test]
fn malformed_extensions_are_400() {
    for line in [
        "5;",
        "5; ",
        "5;=x",
        "5;a=",
        "5;a= ",
        "5;a b",
        "5;a=b c",
        "5;a=\"unterminated",
        "5;a=\"x\"y",
        "5;a@=b",
        "5;a=b@",
        "5;a ",
        "5;a=b ",
        "5;a=\"x\" ",
        "5;a=\"\x01\"",
        "5;;a",
    ] {
        let input = format!("{line}\r\nhello\r\n0\r\n\r\n");
        assert_eq!(error(input.as_bytes()).status, 400, "{line:?}");
        assert_split_invariant(input.as_bytes());
    }
    // A bare CR inside a quoted value.
    assert_eq!(error(b"5;a=\"x\ry\"\r\nhello\r\n0\r\n\r\n").status, 400);
}

#[test]
fn extension_length_boundary() {
    // ext_len counts everything after the size up to the CR.
    let make = |len: usize| {
        let mut line = b"5;a=".to_vec();
        line.extend(std::iter::repeat_n(b'x', len - 3));
        line.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        line
    };
    assert_eq!(body(&make(MAX_EXTENSION_LEN)), b"hello");
    assert_eq!(
        error(&make(MAX_EXTENSION_LEN + 1)),
        bad("chunk extension too long")
    );
    // The limit counts per line, not per body.
    let mut input = Vec::new();
    for _ in 0..3 {
        let mut line = b"1;a=".to_vec();
        line.extend(std::iter::repeat_n(b'x', MAX_EXTENSION_LEN - 3));
        input.extend_from_slice(&line);
        input.extend_from_slice(b"\r\nz\r\n");
    }
    input.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(body(&input), b"zzz");
}

#[test]
fn invalid_sizes_are_400() {
    let cases: &[(&[u8], &str)] = &[
        (b"+5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        (b"-5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        (b"0x5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        (b" 5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        (
            b"1 0\r\n0123456789abcdef\r\n0\r\n\r\n",
            "invalid chunk size",
        ),
        (b"5 \r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        (b"g\r\n", "invalid chunk size"),
        (b"5g\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        (b";ext\r\n", "invalid chunk size"),
        (b"\r\n\r\n", "missing chunk size"),
        (b"5\r\nhello\r\n\r\n", "missing chunk size"),
        (b"5.0\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        (b"5\x00\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
    ];
    for (input, reason) in cases {
        assert_eq!(
            error(input),
            bad(reason),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_split_invariant(input);
    }
}

#[test]
fn size_digit_limit() {
    // 16 digits are fine (and fill a u64 exactly).
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let p = d
        .decode(b"FFFFFFFFFFFFFFFF\r\nabc", &mut out, usize::MAX)
        .unwrap();
    assert_eq!(p.produced, 3);
    assert!(!p.done);
    assert_eq!(d.state, State::Data(u64::MAX - 3));
    assert_eq!(
        body(b"000000000000000A\r\n0123456789\r\n0\r\n\r\n"),
        b"0123456789"
    );
    // 17 digits are not, whatever their value.
    assert_eq!(error(b"10000000000000000\r\n"), bad("chunk size too large"));
    assert_eq!(
        error(b"00000000000000005\r\nhello\r\n0\r\n\r\n"),
        bad("chunk size too large")
    );
    assert_split_invariant(b"10000000000000000\r\n");
}

#[test]
fn bare_lf_and_bare_cr_in_framing_are_400() {
    let cases: &[(&[u8], &str)] = &[
        (b"5\nhello\r\n0\r\n\r\n", "bare LF in chunk size line"),
        (b"5;a=b\nhello\r\n0\r\n\r\n", "bare LF in chunk size line"),
        (b"5;a=\"b\nhello\r\n0\r\n\r\n", "bare LF in chunk size line"),
        (b"5\rhello\r\n0\r\n\r\n", "bare CR in chunk size line"),
        (b"5\r\nhello\n0\r\n\r\n", "bad chunk terminator"),
        (b"5\r\nhello\r0\r\n\r\n", "bad chunk terminator"),
        (b"5\r\nhello0\r\n\r\n", "bad chunk terminator"),
        (b"5\r\nhelloXY\r\n0\r\n\r\n", "bad chunk terminator"),
        (b"0\n\r\n", "bare LF in chunk size line"),
        (b"0\r\n\n", "bare LF in trailer section"),
        (b"0\r\n\rX", "bare CR in trailer section"),
        (b"0\r\nX: y\n\r\n", "bare LF in trailer section"),
        (b"0\r\nX: y\rZ\r\n\r\n", "bare CR in trailer section"),
    ];
    for (input, reason) in cases {
        assert_eq!(
            error(input),
            bad(reason),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_split_invariant(input);
    }
}

#[test]
fn data_shorter_than_announced_is_caught_at_the_terminator() {
    // Size says 10, only 5 bytes then the next chunk line: the decoder
    // reads 10 bytes of data ("hello\r\n0\r\n") and then finds "X".
    assert_eq!(
        error(b"a\r\nhello\r\n0\r\nX\r\n"),
        bad("bad chunk terminator")
    );
}

#[test]
fn trailers_are_parsed() {
    let input = b"3\r\nabc\r\n0\r\nX-Checksum: \t abc \t\r\nExpires: never\r\nEmpty:\r\n\r\n";
    let (b, n, d) = decode_all(input).unwrap();
    assert_eq!(b, b"abc");
    assert_eq!(n, input.len());
    assert_eq!(
        d.trailers(),
        &[
            ("X-Checksum".to_owned(), b"abc".to_vec()),
            ("Expires".to_owned(), b"never".to_vec()),
            ("Empty".to_owned(), b"".to_vec()),
        ]
    );
    assert_split_invariant(input);
}

#[test]
fn malformed_trailers_are_400() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"0\r\nX: a\r\n folded\r\n\r\n",
            "obsolete line folding in trailer field",
        ),
        (
            b"0\r\n\tX: a\r\n\r\n",
            "obsolete line folding in trailer field",
        ),
        (b"0\r\nNo colon here\r\n\r\n", "malformed trailer field"),
        (b"0\r\nX : a\r\n\r\n", "invalid trailer field name"),
        (b"0\r\n: a\r\n\r\n", "invalid trailer field name"),
        (b"0\r\nX(: a\r\n\r\n", "invalid trailer field name"),
        (b"0\r\nX: a\0b\r\n\r\n", "invalid trailer field value"),
        (b"0\r\nX: a\x7fb\r\n\r\n", "invalid trailer field value"),
        (
            b"0\r\nContent-Length: 5\r\n\r\n",
            "a framing field (Content-Length, Transfer-Encoding, Host) in the trailers",
        ),
        (
            b"0\r\nhost: evil\r\n\r\n",
            "a framing field (Content-Length, Transfer-Encoding, Host) in the trailers",
        ),
        (
            b"0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "a framing field (Content-Length, Transfer-Encoding, Host) in the trailers",
        ),
    ];
    for (input, reason) in cases {
        assert_eq!(
            error(input),
            bad(reason),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_split_invariant(input);
    }
}

#[test]
fn trailer_limits() {
    let with_fields = |n: usize| {
        let mut input = b"0\r\n".to_vec();
        for i in 0..n {
            input.extend_from_slice(format!("T{i}: v\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        input
    };
    let (_, _, d) = decode_all(&with_fields(MAX_TRAILER_FIELDS)).unwrap();
    assert_eq!(d.trailers().len(), MAX_TRAILER_FIELDS);
    assert_eq!(
        error(&with_fields(MAX_TRAILER_FIELDS + 1)),
        HttpError::new(431, "too many trailer fields")
    );

    // Section size: everything after "0\r\n", CRLFs included.
    let with_bytes = |total: usize| {
        let mut input = b"0\r\nX: ".to_vec();
        input.extend(std::iter::repeat_n(b'v', total - 3 - 2 - 2));
        input.extend_from_slice(b"\r\n\r\n");
        input
    };
    assert!(decode_all(&with_bytes(MAX_TRAILER_BYTES)).is_ok());
    assert_eq!(
        error(&with_bytes(MAX_TRAILER_BYTES + 1)),
        HttpError::new(431, "trailer section too large")
    );
    // An endless trailer line is cut off at the limit, not buffered.
    let mut endless = b"0\r\nX: ".to_vec();
    endless.extend(std::iter::repeat_n(b'v', 1 << 20));
    assert_eq!(error(&endless).status, 431);
}

#[test]
fn announced_sizes_are_checked_against_max_body() {
    let decode = |max: u64, input: &[u8]| {
        let mut d = ChunkedDecoder::with_max_body(max);
        let mut out = Vec::new();
        d.decode(input, &mut out, usize::MAX).map(|p| (p, out))
    };
    // Exactly the limit, over several chunks: fine.
    let (p, out) = decode(10, b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n").unwrap();
    assert!(p.done);
    assert_eq!(out, b"helloworld");
    // One byte more: refused at the size line that crosses it, before
    // its data (none is sent here).
    let too_large = HttpError::new(413, "request body too large");
    assert_eq!(decode(10, b"5\r\nhello\r\n6\r\n").unwrap_err(), too_large);
    // A huge announced chunk with a trickle of data.
    assert_eq!(decode(2 << 20, b"300000\r\nabc").unwrap_err(), too_large);
    assert_eq!(
        decode(2 << 20, b"FFFFFFFFFFFFFFFF\r\n").unwrap_err(),
        too_large
    );
    // 0 means no limit, as in Limits::max_body; new() has none.
    assert!(decode(0, b"FFFFFFFF\r\nabc").is_ok());
    let mut d = ChunkedDecoder::new();
    assert!(d.decode(b"FFFFFFFF\r\nabc", &mut Vec::new(), 10).is_ok());
    // Byte by byte, the same answer.
    let input = b"5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n";
    let mut d = ChunkedDecoder::with_max_body(10);
    let mut out = Vec::new();
    let mut answer = Ok(());
    for b in input {
        if let Err(e) = d.decode(&[*b], &mut out, usize::MAX) {
            answer = Err(e);
            break;
        }
    }
    assert_eq!(answer, Err(too_large));
    assert_eq!(out, b"hello");
}

#[test]
fn errors_are_sticky() {
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    let e = d.decode(b"5\nhello", &mut out, 100).unwrap_err();
    assert_eq!(d.decode(b"0\r\n\r\n", &mut out, 100), Err(e));
    assert!(!d.is_done());
}

#[test]
fn incomplete_input_makes_progress() {
    let mut d = ChunkedDecoder::new();
    let mut out = Vec::new();
    // A partial size line is consumed; the state remembers it.
    let p = d.decode(b"1", &mut out, 100).unwrap();
    assert_eq!(p.consumed, 1);
    let p = d.decode(b"0\r", &mut out, 100).unwrap();
    assert_eq!(p.consumed, 2);
    let p = d.decode(b"\n0123456789abc", &mut out, 100).unwrap();
    assert_eq!((p.consumed, p.produced), (14, 13));
    let p = d.decode(b"def\r\n0\r\n\r", &mut out, 100).unwrap();
    assert!(!p.done);
    let p = d.decode(b"\n", &mut out, 100).unwrap();
    assert!(p.done);
    assert_eq!(out, b"0123456789abcdef");
}

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
fn mutated_bodies_never_panic_and_are_split_invariant() {
    let seed: &[u8] =
        b"5;a=\"b\"\r\nhello\r\n1A\r\n0123456789abcdefghijklmnop\r\n0\r\nT: v\r\n\r\nNEXT";
    let alphabet = b"\r\n \t;=\"\\0aFx:\x00\xff";
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for _ in 0..2000 {
        let mut input = seed.to_vec();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(input.len());
            match rng.below(3) {
                0 => input[i] = alphabet[rng.below(alphabet.len())],
                1 => input.insert(i, alphabet[rng.below(alphabet.len())]),
                _ => {
                    input.remove(i);
                }
            }
        }
        let whole = decode_all(&input).map(|(b, n, _)| (b, n));
        if let Ok((_, used)) = &whole {
            assert!(*used <= input.len());
        }
        for (feed, max_out) in [(1, 1), (3, 4), (5, usize::MAX)] {
            let split = run(&input, feed, max_out).map(|(b, n, _)| (b, n));
            assert_eq!(whole, split);
        }
    }
    for _ in 0..500 {
        let len = rng.below(100);
        let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = decode_all(&input);
    }
}
