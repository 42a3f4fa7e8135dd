//! The HTTP parser's rules, applied to what nginx forwards.
//!
//! nginx has parsed the request already, with its own limits and its own
//! leniency (an 8 KiB header line, BEL or DEL in a value, tabs kept around
//! a value). So that an app behind stage 5 sees what it would see behind
//! stage 3, a worker checks the variables against the same limits and rules
//! as `http-codec`, and answers the same statuses: 400 for a request line
//! too long or a bad character, 431 for too many or too long header fields,
//! 400 for a second Content-Type.

use wsgi_bridge::http::request::{HttpError, Limits};

use super::UwsgiRequest;

/// Checks a request as nginx forwarded it; `Err` is what to answer.
pub fn check(request: &UwsgiRequest, limits: &Limits) -> Result<(), HttpError> {
    // `METHOD SP URI SP PROTOCOL`: the request line as the client sent it.
    let line = request.method().len()
        + 1
        + request.var("REQUEST_URI").map_or(0, <[u8]>::len)
        + 1
        + request.var("SERVER_PROTOCOL").map_or(8, <[u8]>::len);
    if line > limits.max_request_line {
        return Err(HttpError::new(400, "request line too long"));
    }
    let mut fields = 0;
    let mut content_types = 0;
    for (key, value) in &request.vars {
        let Some(name) = key.strip_prefix("HTTP_") else {
            continue;
        };
        fields += 1;
        if fields > limits.max_header_count {
            return Err(HttpError::new(431, "too many header fields"));
        }
        // `Name: value` and its CRLF, as gunicorn (and the codec) count.
        if name.len() + 2 + value.len() + 2 > limits.max_header_size {
            return Err(HttpError::new(431, "header field line too long"));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HttpError::new(400, "invalid character in header value"));
        }
        if name == "CONTENT_TYPE" {
            content_types += 1;
            if content_types > 1 {
                return Err(HttpError::new(400, "duplicate Content-Type"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsgi_bridge::http::request::BodyKind;

    fn request(vars: &[(&str, &[u8])]) -> UwsgiRequest {
        UwsgiRequest {
            modifier1: 0,
            modifier2: 0,
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            body: BodyKind::Empty,
        }
    }

    fn status(vars: &[(&str, &[u8])]) -> Option<u16> {
        check(&request(vars), &Limits::default())
            .err()
            .map(|e| e.status)
    }

    #[test]
    fn the_codecs_limits_and_rules() {
        let base: &[(&str, &[u8])] = &[("REQUEST_METHOD", b"GET"), ("REQUEST_URI", b"/")];
        assert_eq!(status(base), None);
        let long_uri = vec![b'a'; 4094];
        assert_eq!(
            status(&[("REQUEST_METHOD", b"GET"), ("REQUEST_URI", &long_uri)]),
            Some(400)
        );
        // 8188 bytes of `X-Big: ...` fit (8190 with the CRLF), 8189 do not.
        let fits = vec![b'a'; 8188 - "X-BIG: ".len()];
        let over = vec![b'a'; 8189 - "X-BIG: ".len()];
        assert_eq!(status(&[("HTTP_X_BIG", &fits)]), None);
        assert_eq!(status(&[("HTTP_X_BIG", &over)]), Some(431));
        let many: Vec<(String, Vec<u8>)> = (0..101)
            .map(|i| (format!("HTTP_X_{i}"), b"v".to_vec()))
            .collect();
        let many: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(status(&many), Some(431));
        assert_eq!(status(&[("HTTP_X", b"a\x07b")]), Some(400));
        assert_eq!(status(&[("HTTP_X", b"a\x7fb")]), Some(400));
        assert_eq!(status(&[("HTTP_X", b"a\tb")]), None);
        assert_eq!(
            status(&[("HTTP_CONTENT_TYPE", b"a/b"), ("HTTP_CONTENT_TYPE", b"c/d")]),
            Some(400)
        );
    }
}
