//! What the app gives `start_response`: a status and a list of headers,
//! checked and turned into the bytes of the response head.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::string::PyStringData;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::http::response::is_hop_by_hop;
use crate::http::token::{is_tchar, parse_digits};

/// What `start_response` was given, checked and converted to bytes.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub code: u16,
    /// The status as given, e.g. `200 OK`, then the app's headers minus
    /// hop-by-hop ones (and minus `Server` and `Date` where the server
    /// writes its own), each as the line `Name: value\r\n`: latin-1 bytes
    /// ready for the wire, in one buffer (one allocation per response, not
    /// two per header).
    wire: Vec<u8>,
    /// Where the status ends in `wire`.
    status_len: usize,
    /// The app's own `Content-Length`, if it set one.
    pub content_length: Option<u64>,
    /// The app said `Connection: close`.
    pub close: bool,
}

impl ResponseHead {
    /// Checks `start_response`'s arguments the way `wsgiref.validate` does,
    /// and refuses what would break the HTTP framing (a newline in a header
    /// value is a response-splitting attack). `server_and_date`: the server
    /// writes its own `Server` and `Date` (`ResponseRules::server_and_date`),
    /// and the app's are dropped.
    pub fn check(
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        server_and_date: bool,
    ) -> PyResult<ResponseHead> {
        // The status and every header line go straight into one buffer,
        // checked where they lie.
        let mut wire = Vec::with_capacity(256);
        push_latin1(&mut wire, status, "the status")?;
        let code = status_code(&wire)?;
        let mut head = ResponseHead {
            code,
            status_len: wire.len(),
            wire,
            content_length: None,
            close: false,
        };
        for item in header_items(headers)? {
            head.push_header(&item?, server_and_date)?;
        }
        Ok(head)
    }

    /// The head of an error response the server makes itself.
    pub fn of_error(code: u16) -> ResponseHead {
        ResponseHead {
            code,
            wire: Vec::new(),
            status_len: 0,
            content_length: None,
            close: true,
        }
    }

    /// The status as given, e.g. `200 OK`.
    pub fn status_line(&self) -> &[u8] {
        &self.wire[..self.status_len]
    }

    /// The app's header lines, each ending with CRLF.
    pub fn header_lines(&self) -> &[u8] {
        &self.wire[self.status_len..]
    }

    /// The app's headers as sent, `(name, value)` in the app's order,
    /// hop-by-hop ones (and those `check` dropped) left out; each value as
    /// written, spaces included (latin-1 bytes). An error response the
    /// server made has none.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        // A name is a token (no ':') and a value has no CR or LF: each line
        // is `name: value`, as `push_header` wrote it.
        self.header_lines()
            .split(|&b| b == b'\n')
            .filter_map(|line| line.strip_suffix(b"\r"))
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                Some((&line[..colon], &line[colon + 2..]))
            })
    }

    /// Adds one `(name, value)` header: checked, then kept as a line of
    /// `wire`, unless it is hop-by-hop (the server's business), or a
    /// `Server` or `Date` while `server_and_date` says the server writes
    /// its own.
    fn push_header(&mut self, item: &Bound<'_, PyAny>, server_and_date: bool) -> PyResult<()> {
        let Some([name, value]) = item.cast::<PyTuple>().ok().map(|t| t.as_slice()) else {
            return Err(PyTypeError::new_err(format!(
                "each response header must be a (name, value) tuple, not {}",
                item.repr().map(|r| r.to_string()).unwrap_or_default()
            )));
        };
        // The line `name: value\r\n` is written, then checked; a line that
        // is dropped is cut off again.
        let wire = &mut self.wire;
        let line_start = wire.len();
        push_latin1(wire, name, "a header name")?;
        let name_end = wire.len();
        wire.extend_from_slice(b": ");
        push_latin1(wire, value, "a header value")?;
        let name = &wire[line_start..name_end];
        let value = &wire[name_end + 2..];
        check_header(name, value)?;
        if is_hop_by_hop(name) {
            // Framing and persistence belong to the server; remember only
            // whether the app wants the connection closed.
            if name.eq_ignore_ascii_case(b"connection")
                && value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                self.close = true;
            }
            wire.truncate(line_start);
            return Ok(());
        }
        if server_and_date
            && (name.eq_ignore_ascii_case(b"server") || name.eq_ignore_ascii_case(b"date"))
        {
            // The head already has the server's own pair: a second Server
            // or Date would contradict it. gunicorn drops the app's (its
            // util.hop_headers lists both); behind nginx (uwsgi), where
            // the server writes none, the app's pass, as uWSGI passes them.
            wire.truncate(line_start);
            return Ok(());
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_digits(value).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "the Content-Length header {:?} is not a number",
                    String::from_utf8_lossy(value)
                ))
            })?;
            if self.code == 204 || self.code < 200 {
                // RFC 9110 8.6: never on a 1xx or a 204 (which has no body).
                wire.truncate(line_start);
                return Ok(());
            }
            self.content_length = Some(n);
        }
        wire.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// The code of a status such as `200 OK`: three digits, a space, a reason,
/// no control character.
fn status_code(status_line: &[u8]) -> PyResult<u16> {
    let code = (status_line.len() >= 5
        && status_line[..3].iter().all(u8::is_ascii_digit)
        && status_line[3] == b' ')
        .then(|| {
            status_line[..3]
                .iter()
                .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'))
        })
        .filter(|c| (100..1000).contains(c))
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "the status {:?} is not of the form '200 OK' (three digits, a space, a reason)",
                String::from_utf8_lossy(status_line)
            ))
        })?;
    if status_line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(PyValueError::new_err(
            "the status contains a control character",
        ));
    }
    Ok(code)
}

/// The items of the headers argument. A plain list, as PEP 3333 asks, is
/// read in place; any other iterable is accepted too, through an iterator
/// (one more object per response).
fn header_items<'py>(
    headers: &Bound<'py, PyAny>,
) -> PyResult<impl Iterator<Item = PyResult<Bound<'py, PyAny>>>> {
    let (list, other) = match headers.cast_exact::<PyList>() {
        Ok(list) => (Some(list.iter()), None),
        Err(_) => {
            let items = headers.try_iter().map_err(|_| {
                PyTypeError::new_err("the response headers must be a list of (name, value) tuples")
            })?;
            (None, Some(items))
        }
    };
    Ok(list
        .into_iter()
        .flatten()
        .map(Ok)
        .chain(other.into_iter().flatten()))
}

/// A header name must be a token, and a value must not end the line early.
fn check_header(name: &[u8], value: &[u8]) -> PyResult<()> {
    if name.is_empty() || !name.iter().copied().all(is_tchar) {
        return Err(PyValueError::new_err(format!(
            "the header name {:?} is not a valid HTTP token",
            String::from_utf8_lossy(name)
        )));
    }
    if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(PyValueError::new_err(format!(
            "the value of header {:?} contains a newline or NUL (that would split the response)",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// Appends a native string (PEP 3333: a `str` whose characters all fit in
/// latin-1) to `out`, one byte per character.
fn push_latin1(out: &mut Vec<u8>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<()> {
    let s = obj.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a str, not {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    // CPython stores a str whose characters are all below 256 as one byte
    // per character: exactly its latin-1 bytes, copied with no conversion.
    // Any other storage means a character outside latin-1.
    // SAFETY: the data is only read while `s` is borrowed, and not kept.
    if let PyStringData::Ucs1(bytes) = unsafe { s.data() }? {
        out.extend_from_slice(bytes);
        return Ok(());
    }
    // `to_str` refuses a lone surrogate with its own error first.
    let s = s.to_str()?;
    Err(PyValueError::new_err(format!(
        "{what} {s:?} has a character outside latin-1 (encode it, e.g. RFC 8187 for filenames)"
    )))
}
