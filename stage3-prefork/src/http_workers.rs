//! Stage 3's worker classes: stage 1's loop (`-k sync`) and stage 2's
//! (`-k gthread`), reused as they are.

use std::io;

use stage1_single::SyncConfig;
use stage2_threads::ThreadConfig;

use crate::listen::WorkerListener;
use crate::worker::{WorkerClass, WorkerContext};

// ANCHOR: worker_classes
/// gunicorn's `sync` worker: stage 1's loop, one connection at a time.
pub struct SyncWorker(pub SyncConfig);

impl WorkerClass for SyncWorker {
    fn name(&self) -> String {
        "sync".to_string()
    }

    fn serve(&self, worker: WorkerContext<'_>) -> io::Result<()> {
        let app = worker.wsgi_app(false)?;
        let listener = tcp(worker.listener)?;
        stage1_single::serve_forever(&listener, &app, &self.0, worker.stop, worker.hooks)
    }
}

/// gunicorn's `gthread` worker: stage 2's poller and thread pool.
pub struct ThreadWorker(pub ThreadConfig);

impl WorkerClass for ThreadWorker {
    fn name(&self) -> String {
        "gthread".to_string()
    }

    fn serve(&self, worker: WorkerContext<'_>) -> io::Result<()> {
        let app = worker.wsgi_app(true)?;
        let listener = tcp(worker.listener)?;
        stage2_threads::serve_forever(&listener, &app, &self.0, worker.stop, worker.hooks)
    }
}
// ANCHOR_END: worker_classes

fn tcp(listener: WorkerListener) -> io::Result<std::net::TcpListener> {
    match listener {
        WorkerListener::Tcp(listener) => Ok(listener),
        WorkerListener::Unix(_) => Err(io::Error::other("the HTTP workers listen on TCP")),
    }
}
