//! `send()` in a WebSocket scope: accept, messages, close.

use http_codec::token::is_tchar;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;

use crate::shared::{SEND_HIGH_WATER, WsOut};

use super::call::{field, get_type};
use super::http_send::as_bytes;
use super::{AsgiCall, ctx};

impl AsgiCall {
    /// `send(message)` for a WebSocket call. Returns whether to wait.
    pub(super) fn send_ws(&mut self, message: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = message.py();
        let kind = get_type(message)?;
        let kind = kind.to_str()?;
        let out = match kind {
            "websocket.accept" => {
                if self.ws_accepted || self.ws_closed {
                    return Err(PyRuntimeError::new_err(
                        "websocket.accept sent twice, or after close",
                    ));
                }
                let subprotocol = match field(message, intern!(py, "subprotocol")) {
                    Ok(p) if !p.is_none() => Some(p.extract::<String>()?),
                    _ => None,
                };
                let mut headers = Vec::new();
                if let Ok(h) = field(message, intern!(py, "headers")) {
                    for item in h.try_iter()? {
                        let (n, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
                        let (n, v) = (as_bytes(&n)?.to_vec(), as_bytes(&v)?.to_vec());
                        if n.is_empty()
                            || !n.iter().all(|&b| is_tchar(b))
                            || v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
                        {
                            return Err(PyValueError::new_err(
                                "invalid header in websocket.accept",
                            ));
                        }
                        headers.push((n, v));
                    }
                }
                self.ws_accepted = true;
                WsOut::Accept {
                    subprotocol,
                    headers,
                }
            }
            "websocket.send" => {
                if !self.ws_accepted {
                    return Err(PyRuntimeError::new_err(
                        "websocket.send before websocket.accept",
                    ));
                }
                if self.ws_closed {
                    return Err(PyRuntimeError::new_err(
                        "websocket.send after websocket.close",
                    ));
                }
                match field(message, intern!(py, "bytes")) {
                    Ok(b) if !b.is_none() => WsOut::Binary(as_bytes(&b)?.to_vec()),
                    _ => match field(message, intern!(py, "text")) {
                        Ok(t) if !t.is_none() => WsOut::Text(t.extract::<String>()?),
                        _ => {
                            return Err(PyValueError::new_err(
                                "websocket.send needs 'bytes' or 'text'",
                            ));
                        }
                    },
                }
            }
            "websocket.close" => {
                if self.ws_closed {
                    return Ok(false);
                }
                let code = match field(message, intern!(py, "code")) {
                    Ok(c) if !c.is_none() => c.extract::<u16>()?,
                    _ => 1000,
                };
                let reason = match field(message, intern!(py, "reason")) {
                    Ok(r) if !r.is_none() => r.extract::<String>()?,
                    _ => String::new(),
                };
                self.ws_closed = true;
                WsOut::Close { code, reason }
            }
            other => {
                return Err(PyRuntimeError::new_err(format!(
                    "unexpected ASGI message '{other}' in a websocket scope"
                )));
            }
        };
        let x = self.x.clone();
        let mut s = x.lock();
        if s.disconnected {
            return Err(PyErr::from_value(ctx().disconnected_exc.bind(py).call0()?));
        }
        let size = match &out {
            WsOut::Text(t) => t.len(),
            WsOut::Binary(b) => b.len(),
            _ => 0,
        };
        s.ws_out.push_back(out);
        s.unsent += size;
        let wait = s.unsent >= SEND_HIGH_WATER;
        drop(s);
        super::wake_io(py, &x);
        Ok(wait)
    }
}
