//! The I/O thread: a tokio runtime (one thread) that owns every socket.
//!
//! Each connection is a tokio task: it reads request heads with the course's
//! HTTP/1.1 codec, hands each request to the Python thread as an
//! [`Event::Start`], feeds the request body into the exchange as the app asks
//! for it, and writes what the app's `send()` queued. It never touches Python.
//!
//! - this file: the runtime, the accept loop, the drain on stop;
//! - `conn`: one connection (its read buffer, its requests one after
//!   another, errors answered without the app, closing gently);
//! - `http`: one HTTP exchange (the body as the app asks for it, the
//!   response bytes it queued);
//! - `websocket`: the upgrade check and the messages of a WebSocket.

mod conn;
mod http;
mod socket;
mod websocket;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_codec::request::Limits;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, watch};
use wsgi_bridge::conn::Listener;

use crate::shared::{Event, Inbox, Outbox, Peer};
use socket::Acceptor;

use conn::connection;

/// What the connection tasks need to know.
pub struct IoConfig {
    pub limits: Limits,
    /// Idle time allowed between requests on one connection; `None`: close
    /// after every response.
    pub keep_alive: Option<Duration>,
    /// How long a client may take to send a request head, or a body the app
    /// waits for, or to take a response.
    pub timeout: Duration,
    /// How long running requests get to finish after the stop.
    pub graceful_timeout: Duration,
    pub server_header: Arc<str>,
    /// The master's hooks (stage 3 `-k asgi`): the worker's connection
    /// count, and whether to let a sibling take the next connection.
    pub hooks: &'static dyn wsgi_bridge::hooks::WorkerHooks,
}

pub(super) struct Ctx {
    cfg: IoConfig,
    inbox: Arc<Inbox>,
    outbox: Arc<Outbox>,
    live: AtomicUsize,
    all_closed: Notify,
    /// Wakes [`signal_python`]: events wait in the inbox.
    events_queued: Notify,
}

// ANCHOR: to_python
impl Ctx {
    /// Hands `event` to the Python thread. The eventfd is not written here
    /// but by [`signal_python`], which runs after the connection tasks
    /// already woken: one write for every event of this turn of the I/O
    /// thread, not one per connection.
    pub(super) fn to_python(&self, event: Event) {
        if self.inbox.push_quiet(event) {
            self.events_queued.notify_one();
        }
    }
}

/// Writes the Python thread's eventfd for the events the connection tasks
/// queued. `Notify::notify_one` from a task of this thread puts this task
/// at the back of the run queue, behind the connection tasks the same
/// `epoll_wait` woke: each of them queues its event first.
async fn signal_python(ctx: Arc<Ctx>) {
    loop {
        ctx.events_queued.notified().await;
        ctx.inbox.signal_pending();
    }
}
// ANCHOR_END: to_python

/// Runs the I/O thread until a stop: `stop_fd` readable (a signal) or
/// `stop` notified (the Python side: the hooks asked). Then stops accepting,
/// lets running requests finish (up to the graceful timeout), and tells the
/// Python thread with [`Event::Drained`]. It accepts on every listener
/// (stage 3's `-b` given more than once).
pub fn run(
    listeners: Vec<Listener>,
    stop_fd: OwnedFd,
    inbox: Arc<Inbox>,
    outbox: Arc<Outbox>,
    cfg: IoConfig,
    stop: Arc<Notify>,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(listeners, stop_fd, inbox.clone(), outbox, cfg, stop));
    // Whatever happened, the Python loop must not wait for ever.
    inbox.push(Event::Drained);
    // Connection tasks left after the graceful timeout are dropped here.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn serve(
    listeners: Vec<Listener>,
    stop_fd: OwnedFd,
    inbox: Arc<Inbox>,
    outbox: Arc<Outbox>,
    cfg: IoConfig,
    stop: Arc<Notify>,
) -> io::Result<()> {
    let acceptors = listeners
        .into_iter()
        .map(Acceptor::from_std)
        .collect::<io::Result<Vec<_>>>()?;
    tokio::spawn(deliver(outbox.clone()));
    #[allow(deprecated)]
    let stop_fd = AsyncFd::with_interest(stop_fd, tokio::io::Interest::READABLE)?;
    let graceful = cfg.graceful_timeout;
    let ctx = Arc::new(Ctx {
        cfg,
        inbox,
        outbox,
        live: AtomicUsize::new(0),
        all_closed: Notify::new(),
        events_queued: Notify::new(),
    });
    tokio::spawn(signal_python(ctx.clone()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // One accepting task per listener; they end at the stop, closing their
    // listener.
    let accepting: Vec<_> = acceptors
        .into_iter()
        .enumerate()
        .map(|(index, acceptor)| {
            tokio::spawn(accept_loop(
                acceptor,
                index,
                ctx.clone(),
                shutdown_rx.clone(),
            ))
        })
        .collect();
    tokio::select! {
        ready = stop_fd.readable() => {
            if let Ok(mut guard) = ready {
                guard.clear_ready();
            }
        }
        _ = stop.notified() => {}
    }
    let _ = shutdown_tx.send(true);
    for task in accepting {
        let _ = task.await;
    }
    let live = ctx.live.load(Ordering::Relaxed);
    if live > 0 {
        log::info!("Waiting for {live} connection(s) to finish (up to {graceful:?})");
        let _ = tokio::time::timeout(graceful, async {
            while ctx.live.load(Ordering::Relaxed) > 0 {
                ctx.all_closed.notified().await;
            }
        })
        .await;
    }
    Ok(())
}

/// Accepts connections on one listener, each served by a task of its own,
/// until the stop.
async fn accept_loop(
    acceptor: Acceptor,
    listener: usize,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = acceptor.accept() => match accepted {
                Ok((stream, client)) => {
                    ctx.live.fetch_add(1, Ordering::Relaxed);
                    ctx.cfg.hooks.connection(true);
                    let conn_ctx = ctx.clone();
                    let shutdown = shutdown.clone();
                    let peer = Peer { client, listener };
                    tokio::spawn(async move {
                        let ctx = conn_ctx;
                        connection(stream, peer, &ctx, shutdown).await;
                        ctx.cfg.hooks.connection(false);
                        if ctx.live.fetch_sub(1, Ordering::Relaxed) == 1 {
                            ctx.all_closed.notify_one();
                        }
                    });
                    let_a_sibling_accept(&ctx);
                }
                // The listening socket was shut down: stage 3's master does
                // that when it stops (`-k asgi`), so that new clients are
                // refused at once. Stop accepting; the stop itself (TERM,
                // then `stop_fd`) is on its way, and running requests finish.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was
                    // taken: not a reason to stop serving.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

// ANCHOR: balance
/// How long a worker ahead of its siblings leaves new connections to them,
/// at most, and in what steps.
const BALANCE_WAIT: Duration = Duration::from_millis(1);
const BALANCE_STEP: Duration = Duration::from_micros(50);

/// Workers share the listening socket, and the one awake first would take
/// a whole burst of new connections (32 to 0 was seen: one worker then
/// serves every keep-alive client while the other idles). A worker that
/// should leave the next connection to a sibling (stage 3's scoreboard
/// says: one that holds far fewer) stops for a moment, long enough for the
/// sibling to wake up and accept. It sleeps, the whole I/O thread: on a
/// busy machine a sibling needs the core to wake up on, and a thread that
/// spins keeps it. A hung sibling costs each accept this moment, no more;
/// standalone (no siblings), a worker never waits.
fn let_a_sibling_accept(ctx: &Ctx) {
    let until = Instant::now() + BALANCE_WAIT;
    while !ctx.cfg.hooks.should_accept() && Instant::now() < until {
        std::thread::sleep(BALANCE_STEP);
    }
}
// ANCHOR_END: balance

// ANCHOR: deliver
/// Wakes the connection tasks the Python thread put in the outbox, a batch
/// per wake-up of the I/O thread. `notify_one` here, on the runtime's own
/// thread, only queues the task: no system call.
async fn deliver(outbox: Arc<Outbox>) -> io::Result<()> {
    // The raw descriptor stays open while this task runs: the task owns an
    // Arc of the outbox, dropped after `fd`.
    #[allow(deprecated)]
    let fd = AsyncFd::with_interest(outbox.fd(), tokio::io::Interest::READABLE)?;
    let mut batch = Vec::with_capacity(64);
    loop {
        let mut ready = fd.readable().await?;
        ready.clear_ready();
        outbox.take(&mut batch);
        for x in batch.drain(..) {
            x.to_io.notify_one();
        }
    }
}
// ANCHOR_END: deliver
