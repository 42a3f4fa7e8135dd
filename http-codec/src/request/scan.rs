//! Pass 1 of [`parse_head`](super::parse_head): the size limits.
//!
//! Walk the lines of the head and enforce [`Limits`] without interpreting
//! anything else, also while the head is still incomplete, so that a client
//! cannot make the server buffer an endless request line.

use super::{HttpError, Limits, bad_request, too_large};

/// What the limit scan found.
pub(super) struct Scanned {
    pub(super) outcome: Outcome,
    /// Header lines seen so far, including a partial last one.
    pub(super) header_lines: usize,
}

pub(super) enum Outcome {
    /// The head has not ended yet and no limit is crossed.
    Incomplete,
    /// The head ends after this many bytes (its final empty line included).
    Complete(usize),
    /// A limit is crossed; it became certain once `at` bytes had arrived
    /// (so the byte at index `at - 1` is the one that crossed it).
    Violation { at: usize, error: HttpError },
}

/// Walk the lines of `buf`, checking the limits, without interpreting
/// anything else.
///
/// Every decision is made from a prefix of the buffer and never revised by
/// later bytes: that is what makes byte-at-a-time parsing agree with
/// all-at-once parsing.
pub(super) fn scan(buf: &[u8], limits: &Limits) -> Scanned {
    let max_head = limits.max_head_bytes();
    let head_too_large = Outcome::Violation {
        at: max_head.saturating_add(1),
        error: too_large("request head too large"),
    };
    // Bytes beyond the largest possible head cannot change the answer.
    let window = buf.get(..max_head.saturating_add(1)).unwrap_or(buf);
    let mut scanned = scan_lines(window, limits);
    match scanned.outcome {
        Outcome::Complete(len) if len > max_head => scanned.outcome = head_too_large,
        Outcome::Incomplete if buf.len() > max_head => scanned.outcome = head_too_large,
        _ => {}
    }
    scanned
}

fn scan_lines(buf: &[u8], limits: &Limits) -> Scanned {
    let incomplete = |header_lines| Scanned {
        outcome: Outcome::Incomplete,
        header_lines,
    };

    // Empty lines before the request line (RFC 9112 2.2). A CR followed by
    // anything but LF starts the "request line"; httparse then rejects it.
    let mut pos = 0;
    loop {
        match (buf.get(pos), buf.get(pos + 1)) {
            (Some(b'\n'), _) => pos += 1,
            (Some(b'\r'), Some(b'\n')) => pos += 2,
            (Some(b'\r'), None) | (None, _) => return incomplete(0),
            _ => break,
        }
    }

    match measure_line(buf, pos, limits.max_request_line) {
        Line::Incomplete => return incomplete(0),
        Line::TooLong { at } => {
            return Scanned {
                outcome: Outcome::Violation {
                    at,
                    error: bad_request("request line too long"),
                },
                header_lines: 0,
            };
        }
        Line::Ends { next } => pos = next,
    }

    let mut header_lines = 0;
    loop {
        let violation = |at, error, header_lines| Scanned {
            outcome: Outcome::Violation { at, error },
            header_lines,
        };
        match (buf.get(pos), buf.get(pos + 1)) {
            (None, _) | (Some(b'\r'), None) => return incomplete(header_lines),
            // The empty line: the head is complete.
            (Some(b'\n'), _) => {
                return Scanned {
                    outcome: Outcome::Complete(pos + 1),
                    header_lines,
                };
            }
            (Some(b'\r'), Some(b'\n')) => {
                return Scanned {
                    outcome: Outcome::Complete(pos + 2),
                    header_lines,
                };
            }
            // A line starting with whitespace continues the previous field
            // (obs-fold, RFC 9112 5.2) or, right after the request line, is
            // whitespace before the first field (RFC 9112 2.2). Both must be
            // rejected: proxies disagree on how to join folded lines, and a
            // header hidden behind leading whitespace is one some of them
            // see and others do not.
            (Some(b' ' | b'\t'), _) => {
                let reason = if header_lines == 0 {
                    "whitespace before the first header field"
                } else {
                    "obsolete line folding in header field"
                };
                return violation(pos + 1, bad_request(reason), header_lines);
            }
            _ => {}
        }
        header_lines += 1;
        if header_lines > limits.max_header_count {
            return violation(pos + 1, too_large("too many header fields"), header_lines);
        }
        // gunicorn counts a field line with its CRLF against the limit.
        match measure_line(buf, pos, limits.max_header_size.saturating_sub(2)) {
            Line::Incomplete => return incomplete(header_lines),
            Line::TooLong { at } => {
                return violation(at, too_large("header field line too long"), header_lines);
            }
            Line::Ends { next } => pos = next,
        }
    }
}

enum Line {
    /// The line ends with LF (or CRLF); the next line starts at `next`.
    Ends { next: usize },
    /// No line end yet, and the line is not (yet) too long.
    Incomplete,
    /// The line's content is longer than the limit; certain after `at` bytes.
    TooLong { at: usize },
}

/// Measure the line starting at `start` against `max` bytes of content
/// (the content excludes the LF or CRLF that ends it).
///
/// Only the first `max + 2` bytes of the line are looked at, so even a
/// gigabyte without a newline costs nothing. A CR is counted as content as
/// soon as the byte after it is known not to be LF.
fn measure_line(buf: &[u8], start: usize, max: usize) -> Line {
    let end = start.saturating_add(max).saturating_add(2).min(buf.len());
    let window = buf.get(start..end).unwrap_or(&[]);
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            // Content is `lf` bytes, or `lf - 1` if a CR precedes the LF.
            // Only lf == max + 1 without that CR is over the limit.
            if lf > max && window.get(max) != Some(&b'\r') {
                Line::TooLong {
                    at: start + max + 1,
                }
            } else {
                Line::Ends {
                    next: start + lf + 1,
                }
            }
        }
        None if window.len() > max => {
            if window.get(max) != Some(&b'\r') {
                // max + 1 bytes of content already.
                Line::TooLong {
                    at: start + max + 1,
                }
            } else if window.len() > max + 1 {
                // The CR at index max is not followed by LF: content.
                Line::TooLong {
                    at: start + max + 2,
                }
            } else {
                // Exactly max bytes and a CR: the LF may still come.
                Line::Incomplete
            }
        }
        None => Line::Incomplete,
    }
}
