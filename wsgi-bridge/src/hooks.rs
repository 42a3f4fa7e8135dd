//! What a worker loop tells whoever runs it.
//!
//! Stages 1 and 2 run their loop directly and need none of this. Stage 3's
//! master runs the same loops in forked workers and watches them: a worker
//! proves it is alive (heartbeat), shows whether it is busy, and stops after
//! `--max-requests`. The loops call these hooks (`HttpConnection::serve_one`
//! calls the request ones, only when a request really arrived); stage 3
//! implements them.

// ANCHOR: worker_hooks
/// Hooks a worker loop calls. Every method has a do-nothing default.
pub trait WorkerHooks: Sync {
    /// Called at least once a second while the loop is not stuck in a
    /// request: the proof of life a master's `--timeout` watches.
    fn heartbeat(&self) {}

    /// A request is about to be served.
    fn request_started(&self) {}

    /// The loop woke up for a connection and found none to accept: another
    /// process took it first (the "thundering herd" stage 3 measures).
    fn accept_missed(&self) {}

    /// A request was served.
    fn request_finished(&self) {}

    /// Asked after each request: `true` makes the loop stop gracefully, as
    /// on SIGTERM (the worker has served its `--max-requests`).
    fn should_stop(&self) -> bool {
        false
    }

    /// A connection was accepted (`true`) or closed (`false`), for a loop
    /// that holds many at once (stage 6): the master's count of each
    /// worker's connections.
    fn connection(&self, _opened: bool) {}

    /// Asked by such a loop after each accept: `false` when a sibling
    /// should take the next connection (stage 3: this worker holds more than
    /// four connections more than its least loaded sibling). Workers sharing a listening socket otherwise split keep-alive
    /// connections as they happen to wake up, as unevenly as 32 to 0.
    fn should_accept(&self) -> bool {
        true
    }
}
// ANCHOR_END: worker_hooks

/// The hooks of a server that runs its loop itself.
pub struct NoHooks;

impl WorkerHooks for NoHooks {}

// ANCHOR: request_hooks
/// Python code a server runs around each request, with the GIL: gunicorn's
/// `pre_request` and `post_request` server hooks. A server that has such
/// hooks gives them to its app ([`WsgiApp::set_request_hooks`]); without
/// them a request makes no extra Python call.
///
/// [`WsgiApp::set_request_hooks`]: crate::wsgi::call::WsgiApp::set_request_hooks
pub trait RequestHooks: Send + Sync {
    /// Called once environ is built, before the app: returns the object
    /// `after` gets back (gunicorn's `req`). An error is answered as the
    /// app's own errors are: a traceback in the log, a 500 to the client.
    fn before(
        &self,
        py: pyo3::Python<'_>,
        environ: &pyo3::Bound<'_, pyo3::types::PyDict>,
    ) -> pyo3::PyResult<pyo3::Py<pyo3::PyAny>>;

    /// Called once the response is written (or has failed): what `before`
    /// returned, the request's environ, the status and the body bytes sent,
    /// and the head the app gave `start_response` as the server kept it
    /// (its headers without the hop-by-hop ones; `None` if the request
    /// never reached the app). The head is moved here, not copied.
    /// Errors are the hook's to report: the response is gone already.
    fn after(
        &self,
        py: pyo3::Python<'_>,
        req: pyo3::Py<pyo3::PyAny>,
        environ: pyo3::Py<pyo3::types::PyDict>,
        status: u16,
        body_bytes: u64,
        head: Option<&crate::wsgi::response_head::ResponseHead>,
    );
}
// ANCHOR_END: request_hooks
