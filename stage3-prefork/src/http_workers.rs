//! Stage 3's worker classes: stage 1's loop (`-k sync`), stage 2's
//! (`-k gthread`) and stage 6's event loop (`-k asgi`), reused as they are.

use std::io;

use stage1_single::SyncConfig;
use stage2_threads::ThreadConfig;

use crate::worker::{WorkerClass, WorkerContext};

// ANCHOR: worker_classes
/// gunicorn's `sync` worker: stage 1's loop, one connection at a time.
pub struct SyncWorker(pub SyncConfig);

impl WorkerClass for SyncWorker {
    fn name(&self) -> String {
        "sync".to_string()
    }

    fn serve(&self, worker: WorkerContext<'_>) -> io::Result<()> {
        let apps = worker.wsgi_apps(false)?;
        stage1_single::serve_all(&worker.listeners, &apps, &self.0, worker.stop, worker.hooks)
    }
}

/// gunicorn's `gthread` worker: stage 2's poller and thread pool.
pub struct ThreadWorker(pub ThreadConfig);

impl WorkerClass for ThreadWorker {
    fn name(&self) -> String {
        "gthread".to_string()
    }

    fn serve(&self, worker: WorkerContext<'_>) -> io::Result<()> {
        let apps = worker.wsgi_apps(true)?;
        stage2_threads::serve_all(&worker.listeners, &apps, &self.0, worker.stop, worker.hooks)
    }
}
// ANCHOR_END: worker_classes

// ANCHOR: asgi_worker
/// An ASGI app on stage 6's event loop, one per worker process: what
/// `gunicorn -k uvicorn.workers.UvicornWorker` runs. The loop itself calls
/// the heartbeat, so a loop blocked by `time.sleep` is a silent worker, and
/// `--timeout` kills it.
pub struct AsgiWorker(pub stage6_asgi::AsgiConfig);

impl WorkerClass for AsgiWorker {
    fn name(&self) -> String {
        "asgi".to_string()
    }

    fn load_app(
        &self,
        args: &wsgi_bridge::cli::AppArgs,
        _source: &wsgi_bridge::embed::AppSource,
    ) -> Result<pyo3::Py<pyo3::PyAny>, wsgi_bridge::embed::StartError> {
        // Without an app: stage 6's built-in hello app, an ASGI one.
        stage6_asgi::load_app(args)
    }

    fn serve(&self, worker: WorkerContext<'_>) -> io::Result<()> {
        stage6_asgi::serve_all(
            worker.listeners,
            worker.app,
            &self.0,
            worker.stop,
            worker.hooks,
        )
    }
}
// ANCHOR_END: asgi_worker
