//! What the two threads of a stage 6 process share.
//!
//! The I/O thread (tokio) owns the sockets; the Python thread runs the
//! asyncio loop and the app. They never wait for each other: each side puts
//! what it has into shared state under a short lock and wakes the other.
//!
//! - I/O → Python: a connection task queues an [`Event`] in the [`Inbox`]
//!   ([`Inbox::push_quiet`], no system call); after the tasks this turn of
//!   the I/O thread woke, one write to an eventfd the asyncio loop watches
//!   (`loop.add_reader`) covers them all ([`Inbox::signal_pending`]). The
//!   loop wakes up once for a whole batch of events. The I/O thread never
//!   takes the GIL.
//! - Python → I/O: the app's `send()` appends bytes to an [`Exchange`]'s
//!   output and queues the exchange in the [`Outbox`] (`py::wake_io`); the
//!   I/O thread's eventfd is written once for everything the apps queued in
//!   one turn of the loop. One task of the I/O thread takes the whole batch
//!   and wakes each connection's task (`Notify::notify_one`, on its own
//!   thread: no system call). Waking the task straight from the Python
//!   thread would cost one eventfd write (tokio's waker) per response, on
//!   the thread that holds the GIL.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use http_codec::request::{RequestHead, Version};
use tokio::sync::Notify;

/// Bytes of response the app may have queued and not yet written before its
/// `send()` waits (back-pressure on a slow client).
pub const SEND_HIGH_WATER: usize = 256 * 1024;
/// A waiting `send()` resumes once the queue drops below this.
pub const SEND_LOW_WATER: usize = 64 * 1024;
/// Request body bytes read ahead of the app, at most.
pub const BODY_READ_AHEAD: usize = 64 * 1024;
/// WebSocket messages received ahead of the app, at most.
pub const WS_READ_AHEAD: usize = 64;

/// Something the Python thread must act on.
pub enum Event {
    /// A request head arrived: call the app.
    Start(Box<Start>),
    /// Something changed for this exchange (body data, a disconnect, room to
    /// send): resolve its waiting `receive()` or `send()`.
    Wake(u64),
    /// The I/O thread stopped taking requests and every connection is done:
    /// run the lifespan shutdown and stop the loop.
    Drained,
    /// Stop accepting (a signal, or the hooks asked): sent by whoever noticed
    /// first, acted on by the I/O thread.
    StopRequested,
}

/// Which kind of ASGI scope a request becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Http,
    WebSocket,
}

/// A request for the app: its head, where it came from, the shared state.
pub struct Start {
    pub kind: Kind,
    pub head: RequestHead,
    pub peer: Peer,
    pub exchange: std::sync::Arc<Exchange>,
    /// The server wants to keep the connection open after this response and
    /// the client allows it.
    pub keep_alive: bool,
}

/// Who a connection is with, and which of the server's listeners it came
/// through (its scope's `server`).
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The client's address; `None` on a unix socket (the scope's `client`
    /// is then `None`, as uvicorn's).
    pub client: Option<std::net::SocketAddr>,
    pub listener: usize,
}

impl Peer {
    /// The client's host for the access log (empty on a unix socket).
    pub fn host(&self) -> String {
        self.client.map(|a| a.ip().to_string()).unwrap_or_default()
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.client {
            Some(a) => write!(f, "{}:{}", a.ip(), a.port()),
            None => f.write_str("a unix socket client"),
        }
    }
}

/// The Python thread's inbox: events from the I/O thread.
pub type Inbox = Mailbox<Event>;

/// The I/O thread's inbox: exchanges whose connection task has something to
/// do (bytes to write, a body to read, the end of the response).
pub type Outbox = Mailbox<std::sync::Arc<Exchange>>;

/// A queue one thread fills and another empties, with an eventfd that tells
/// the emptying thread's event loop there is something to take. Both
/// directions use it: [`Inbox`] and [`Outbox`].
pub struct Mailbox<T> {
    queue: Mutex<MailboxState<T>>,
    efd: OwnedFd,
}

// ANCHOR: inbox
struct MailboxState<T> {
    items: Vec<T>,
    /// The eventfd was written and the other side has not taken the batch
    /// yet.
    signalled: bool,
}

impl<T> Mailbox<T> {
    /// Queues `item` and writes the eventfd if this is the first item since
    /// the other side last took the batch.
    pub fn push(&self, item: T) {
        let wake = {
            let mut q = lock(&self.queue);
            q.items.push(item);
            !std::mem::replace(&mut q.signalled, true)
        };
        if wake {
            signal(&self.efd);
        }
    }
    // ANCHOR_END: inbox

    pub fn new() -> io::Result<Mailbox<T>> {
        Ok(Mailbox {
            queue: Mutex::new(MailboxState {
                items: Vec::with_capacity(64),
                signalled: false,
            }),
            efd: eventfd()?,
        })
    }

    /// The descriptor the emptying side's event loop watches.
    pub fn fd(&self) -> i32 {
        self.efd.as_raw_fd()
    }

    // ANCHOR: outbox
    /// Queues `item` without a system call and returns whether the eventfd
    /// is still to be written for it, which [`Mailbox::signal_pending`] then
    /// does once for the whole batch (see `io::Ctx::to_python` and
    /// `py::wake_io`).
    pub fn push_quiet(&self, item: T) -> bool {
        let mut q = lock(&self.queue);
        q.items.push(item);
        !q.signalled
    }

    /// Writes the eventfd if items wait that it was not written for.
    pub fn signal_pending(&self) {
        let wake = {
            let mut q = lock(&self.queue);
            !q.items.is_empty() && !std::mem::replace(&mut q.signalled, true)
        };
        if wake {
            signal(&self.efd);
        }
    }

    /// Takes every item queued so far (called by the emptying side when the
    /// eventfd is readable).
    pub fn take(&self, into: &mut Vec<T>) {
        drain_eventfd(&self.efd);
        let mut q = lock(&self.queue);
        q.signalled = false;
        std::mem::swap(&mut q.items, into);
    }
    // ANCHOR_END: outbox
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a valid descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal(efd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes from a valid u64 to our eventfd.
    unsafe { libc::write(efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

fn drain_eventfd(efd: &OwnedFd) {
    let mut counter: u64 = 0;
    // SAFETY: reading 8 bytes into a valid u64 from our non-blocking eventfd.
    unsafe { libc::read(efd.as_raw_fd(), (&mut counter as *mut u64).cast(), 8) };
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One request (or one WebSocket session) as both threads see it.
pub struct Exchange {
    pub id: u64,
    pub state: Mutex<XState>,
    /// Wakes the connection's tokio task: Python queued output or asked for
    /// more body. Notified on the I/O thread only (see [`Exchange::wake_io`]).
    pub to_io: Notify,
    /// Where the Python thread puts the exchange to have `to_io` notified.
    pub outbox: std::sync::Arc<Outbox>,
    pub version: Version,
    pub head_request: bool,
}

/// A WebSocket message or event, in either direction.
#[derive(Debug)]
pub enum WsIn {
    Text(String),
    Binary(Vec<u8>),
    /// The client closed (or the connection broke: 1006).
    Closed {
        code: u16,
        reason: String,
    },
}

#[derive(Debug)]
pub enum WsOut {
    Accept {
        subprotocol: Option<String>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    },
    Text(String),
    Binary(Vec<u8>),
    Close {
        code: u16,
        reason: String,
    },
}

/// The state both threads touch, under the exchange's lock.
#[derive(Default)]
pub struct XState {
    // Request body (HTTP).
    pub body: VecDeque<Vec<u8>>,
    pub body_buffered: usize,
    /// The whole body has been read (or there was none).
    pub body_done: bool,
    /// The app called `receive()`: time to send `100 Continue` and read.
    pub want_body: bool,

    // Response (HTTP).
    pub out: Vec<u8>,
    /// Bytes queued by the app and not yet written.
    pub unsent: usize,
    /// The app finished the response (`more_body` false, or an error page).
    pub out_done: bool,
    /// Close the connection after writing what is queued.
    pub close_after: bool,
    /// The app failed after the head went out: close without ending the body.
    pub abort: bool,
    pub status: u16,
    pub body_bytes: u64,

    // WebSocket.
    pub ws_in: VecDeque<WsIn>,
    pub ws_out: VecDeque<WsOut>,

    // Both.
    /// The client is gone (a write failed, the connection broke, or it sent
    /// EOF after its whole request).
    pub disconnected: bool,
    /// The client sent EOF (it may still read the response): `receive()`
    /// reports a disconnect.
    pub client_eof: bool,
    /// The connection task has finished with this exchange.
    pub io_done: bool,
    /// What a waiting `receive()` waits for, if one does.
    pub recv_blocked: RecvWait,
    /// A `send()` waits for the queue to drain below the low-water mark.
    pub send_blocked: bool,
}

/// What a waiting `receive()` waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecvWait {
    #[default]
    Nothing,
    /// More of the request body (or its end, or a disconnect).
    Body,
    /// Only a disconnect (the request was read whole).
    Disconnect,
    /// A WebSocket message (or a disconnect).
    Message,
}

impl XState {
    /// Whether the Python side waits for something that is now there. Clears
    /// the waits when so: the caller must then send `Event::Wake` (once).
    /// Both threads call it after every change that may matter, so a change
    /// made just before Python registered its wait is not missed.
    pub fn wake_due(&mut self) -> bool {
        let gone = self.disconnected || self.io_done;
        let recv = match self.recv_blocked {
            RecvWait::Nothing => false,
            RecvWait::Body => !self.body.is_empty() || self.body_done || gone || self.client_eof,
            RecvWait::Disconnect => gone || self.client_eof,
            RecvWait::Message => !self.ws_in.is_empty() || gone,
        };
        let send = self.send_blocked && (self.unsent < SEND_LOW_WATER || gone);
        let due = recv || send;
        if due {
            self.recv_blocked = RecvWait::Nothing;
            self.send_blocked = false;
        }
        due
    }
}

impl Exchange {
    pub fn new(version: Version, head_request: bool, outbox: std::sync::Arc<Outbox>) -> Exchange {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Exchange {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(XState::default()),
            to_io: Notify::new(),
            outbox,
            version,
            head_request,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, XState> {
        lock(&self.state)
    }
}

/// Counters printed at exit with `--stats` (or `STAGE6_STATS=1`): what one
/// request costs in trips across the threads.
#[derive(Default)]
pub struct Stats {
    /// HTTP requests and WebSocket sessions given to the app.
    pub requests: AtomicU64,
    /// WebSocket messages received from clients.
    pub ws_messages: AtomicU64,
    /// Times the asyncio loop woke up for the eventfd.
    pub py_wakeups: AtomicU64,
    /// Events handled in those wake-ups.
    pub events: AtomicU64,
    /// Turns of the asyncio loop (calls of its selector's `select`, counted
    /// with `--stats` on the standard loop only): the loop thread takes the
    /// GIL back after each one, whatever woke it (eventfd, timer).
    pub loop_turns: AtomicU64,
    /// `Python::attach` calls made by Rust in `serve_forever`: one for the
    /// start-up, one the loop runs inside; the request path makes none and
    /// the I/O thread never takes the GIL.
    pub attaches: AtomicU64,
    /// Apps whose coroutine finished in its first step, with no trip
    /// through the asyncio loop.
    pub eager_done: AtomicU64,
    /// Coroutines that really suspended and went on as asyncio Tasks.
    pub suspended: AtomicU64,
    /// Socket writes of response bytes the app queued (HTTP).
    pub writes: AtomicU64,
}

pub static STATS: Stats = Stats {
    requests: AtomicU64::new(0),
    ws_messages: AtomicU64::new(0),
    py_wakeups: AtomicU64::new(0),
    events: AtomicU64::new(0),
    loop_turns: AtomicU64::new(0),
    attaches: AtomicU64::new(0),
    eager_done: AtomicU64::new(0),
    suspended: AtomicU64::new(0),
    writes: AtomicU64::new(0),
};

impl Stats {
    pub fn report(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let units = (get(&self.requests) + get(&self.ws_messages)).max(1) as f64;
        let turns = get(&self.loop_turns);
        format!(
            "stats: {} requests/sessions, {} WebSocket messages; the loop woke {} times for the \
             eventfd ({} events): {:.3} per request or message; {}; {} Python::attach calls by \
             Rust (start-up, and the one the loop runs in; none per request); {} apps finished in their first step (no trip \
             through the loop), {} suspended; {} socket writes for HTTP responses",
            get(&self.requests),
            get(&self.ws_messages),
            get(&self.py_wakeups),
            get(&self.events),
            get(&self.py_wakeups) as f64 / units,
            if turns > 0 {
                format!(
                    "{turns} loop turns in all (GIL re-acquisitions by the loop thread, timers \
                     included): {:.3} per request or message",
                    turns as f64 / units
                )
            } else {
                "loop turns not counted (uvloop)".to_string()
            },
            get(&self.attaches),
            get(&self.eager_done),
            get(&self.suspended),
            get(&self.writes),
        )
    }
}
