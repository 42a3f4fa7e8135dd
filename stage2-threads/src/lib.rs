//! Stage 2: one process, a pool of threads, one GIL.
//!
//! Stage 1 served one connection at a time, so one slow request held up
//! everyone. Here a fixed pool of threads serves requests side by side, and
//! the main thread does only what needs no thread of its own: accepting
//! connections and watching the idle ones, with `mio` (epoll on Linux).
//! This is the design of gunicorn's `gthread` worker.
//!
//! ```text
//!            ┌──────── main thread: a mio poller, never runs Python ───────┐
//! clients ──►│ the listener, the stop fd, every idle keep-alive connection │
//!            └────────┬─────────────────────────────────────▲──────────────┘
//!    readable: a job  │ channel                    channel  │ done (+ waker)
//!            ┌────────▼─────────────────────────────────────┴──────────────┐
//!            │ pool of N threads: read the request, call the app (GIL),    │
//!            │ write the response, hand the connection back                │
//!            └─────────────────────────────────────────────────────────────┘
//! ```
//!
//! The lesson is measured, not asserted. All the threads share one
//! interpreter and its one GIL. A thread gives the GIL up while it waits on
//! its socket or sleeps (`time.sleep`, a database call), so requests that
//! mostly wait scale with the number of threads. Pure-Python computation
//! holds the GIL, so it runs one thread at a time however many there are.
//! `stage2-threads/lab.sh` measures both, for 1, 2, 4 and 8 threads.
//!
//! And the app's globals are now shared. `/counter` in `apps/lab.py` reads
//! the global `counter`, sleeps a millisecond, and writes back what it read
//! plus one. There is one interpreter, so one `counter` for all the threads:
//! while one sleeps (GIL released), others read the same old value, and
//! their writes overwrite each other. 200 concurrent requests on 8 threads
//! end with a count far below 200; stage 1, one request at a time, always
//! counts 200. The GIL makes each bytecode atomic, not a read-then-write:
//! shared state needs a lock (`threading.Lock`), and the app can tell it
//! runs threaded from `environ["wsgi.multithread"]`.
//!
//! Stage 3 runs this same loop in each of its worker processes, as its
//! `-k gthread` worker class.

use std::io;
use std::mem;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use wsgi_bridge::conn::{Listener, Stream};
use wsgi_bridge::hooks::WorkerHooks;
use wsgi_bridge::http::request::Limits;
use wsgi_bridge::serve::{Arrived, HttpConnection};
use wsgi_bridge::wsgi::call::WsgiApp;
use wsgi_bridge::wsgi::environ::Peer;

mod pool;

/// How the server treats threads and connections.
#[derive(Clone, Debug)]
pub struct ThreadConfig {
    pub limits: Limits,
    /// Threads in the pool: how many requests run at once.
    pub threads: usize,
    /// How long a kept-alive connection may sit idle waiting for its next
    /// request. Zero: close after every response.
    pub keep_alive: Duration,
    /// How long a client may take to send its request or to take the response.
    pub timeout: Duration,
    /// Most connections open at once (idle or busy); past it the server
    /// stops accepting until one closes.
    pub worker_connections: usize,
    /// On stop, how long requests in flight get to finish.
    pub graceful_timeout: Duration,
}

/// A connection on its way to the pool, and the slot it occupies in the
/// main thread's table.
struct Job {
    slot: usize,
    conn: HttpConnection,
    /// The listener it came through: which of `Shared::apps` serves it.
    origin: usize,
}

/// A connection on its way back: `None` if the pool closed it.
struct Done {
    slot: usize,
    conn: Option<HttpConnection>,
}

/// What the main thread and the pool threads share.
struct Shared<'a> {
    /// The app as seen through each listener (its `SERVER_NAME` and
    /// `SERVER_PORT`), in the listeners' order.
    apps: &'a [WsgiApp],
    config: &'a ThreadConfig,
    hooks: &'a dyn WorkerHooks,
    /// Jobs: the main thread pushes, every pool thread takes (see
    /// `pool::JobQueue`).
    jobs: pool::JobQueue,
    /// Finished connections, back to the main thread ...
    done: Sender<Done>,
    /// ... which sleeps in `epoll_wait`, not on the channel: the waker makes
    /// its poll return when a connection was closed.
    waker: Waker,
    /// The poller's registry: a pool thread puts a kept-alive connection
    /// back under the poller's watch itself (see `pool::serve_jobs`).
    registry: Registry,
    /// The server is stopping: no more keep-alive. Set by the main thread on
    /// a signal, or by a pool thread when the hooks ask to stop.
    stopping: AtomicBool,
}

const STOP: Token = Token(1);
const WAKER: Token = Token(2);
/// Connection `i` of the table is registered as token `FIRST_CONN + i`.
const FIRST_CONN: usize = 3;
/// Listener `i` is registered as token `LISTENERS + i`, far above any
/// connection's.
const LISTENERS: usize = usize::MAX / 2;

/// The main loop wakes up at least this often, to prove it is alive
/// (`hooks.heartbeat()`) even when nothing happens.
const TICK: Duration = Duration::from_millis(500);

// ANCHOR: serve_forever
/// Accepts connections and serves their requests on `config.threads`
/// threads until `stop` becomes readable (a signal arrived: see `main.rs`)
/// or `hooks` asks to stop; then stops accepting, lets the requests in
/// flight finish, closes idle connections and returns.
///
/// If requests are still running `config.graceful_timeout` after the stop,
/// the process exits (status 0) without waiting for them: a thread cannot
/// be stopped from outside, a process can.
pub fn serve_forever(
    listener: &TcpListener,
    app: &WsgiApp,
    config: &ThreadConfig,
    stop: BorrowedFd<'_>,
    hooks: &dyn WorkerHooks,
) -> io::Result<()> {
    let listener = Listener::Tcp(listener.try_clone()?);
    serve_all(
        std::slice::from_ref(&listener),
        std::slice::from_ref(app),
        config,
        stop,
        hooks,
    )
}

/// [`serve_forever`] on several listening sockets (stage 3 with `-b` given
/// more than once, or `-b unix:PATH`): the poller watches them all, as
/// gunicorn's gthread worker registers every listener with its poller.
/// `apps[i]` serves the connections of `listeners[i]`.
pub fn serve_all(
    listeners: &[Listener],
    apps: &[WsgiApp],
    config: &ThreadConfig,
    stop: BorrowedFd<'_>,
    hooks: &dyn WorkerHooks,
) -> io::Result<()> {
    // Non-blocking: the loop accepts until the kernel says "no more"
    // (WouldBlock), and in stage 3 another process may take a connection first.
    for listener in listeners {
        listener.set_nonblocking(true)?;
    }
    // With --trace: a thread that watches who holds the GIL.
    if wsgi_bridge::trace::enabled() {
        pyo3::Python::attach(wsgi_bridge::trace::start_gil_sampler);
    }
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let registry = poll.registry().try_clone()?;
    let (done_tx, done_rx) = mpsc::channel();
    let shared = Shared {
        apps,
        config,
        hooks,
        jobs: pool::JobQueue::new(),
        done: done_tx,
        waker,
        registry,
        stopping: AtomicBool::new(false),
    };
    // Scoped threads may borrow `shared` (and through it the app): the scope
    // does not end before every thread has finished.
    thread::scope(|scope| {
        // Dropped when this closure returns, however it returns: the pool
        // threads then see the queue closed and end, and the scope can
        // join them.
        let _close = pool::CloseOnDrop(&shared.jobs);
        for i in 0..config.threads.max(1) {
            let shared = &shared;
            thread::Builder::new()
                .name(format!("pool-{i}"))
                .spawn_scoped(scope, move || pool::run(shared))?;
        }
        let mut main = MainLoop::new(poll, listeners, &shared, done_rx);
        main.run(stop)
    })
}
// ANCHOR_END: serve_forever

/// An entry of the connection table: where one open connection is, from
/// the main thread's point of view.
enum ConnEntry {
    Free,
    /// Waiting for its next request: watched by the poller, closed at `deadline`.
    Idle {
        conn: HttpConnection,
        deadline: Instant,
    },
    /// A pool thread has it. `readable`: the poller reported its next
    /// request before the connection was back in this table (the pool
    /// thread watches it again first, then sends it back): serve it as soon
    /// as it is.
    Busy {
        readable: bool,
    },
}

/// The main thread: a poller and the table of open connections.
struct MainLoop<'a> {
    poll: Poll,
    listeners: &'a [Listener],
    shared: &'a Shared<'a>,
    done: Receiver<Done>,
    /// Open connections, by slot; `free` lists the free slots to reuse.
    slots: Vec<ConnEntry>,
    /// The listener each slot's connection came through.
    origins: Vec<usize>,
    free: Vec<usize>,
    /// Connections open (idle + busy), and how many of them the pool has.
    open: usize,
    busy: usize,
    /// The listener is registered with the poller.
    accepting: bool,
    /// An accept failed for lack of resources (file descriptors): try again soon.
    retry_accept: bool,
    /// One connection was taken from listener `i` on the last turn; more
    /// may be waiting there.
    more_to_accept: Vec<bool>,
    /// The poller said listener `i` has a connection waiting.
    woke: Vec<bool>,
    /// The earliest deadline of an idle connection (maybe one since handed
    /// to the pool: then the sweep finds nothing, which is harmless).
    next_expiry: Option<Instant>,
    last_beat: Instant,
}

impl<'a> MainLoop<'a> {
    fn new(
        poll: Poll,
        listeners: &'a [Listener],
        shared: &'a Shared<'a>,
        done: Receiver<Done>,
    ) -> MainLoop<'a> {
        MainLoop {
            poll,
            listeners,
            shared,
            done,
            slots: Vec::new(),
            origins: Vec::new(),
            free: Vec::new(),
            open: 0,
            busy: 0,
            accepting: false,
            retry_accept: false,
            more_to_accept: vec![false; listeners.len()],
            woke: vec![false; listeners.len()],
            next_expiry: None,
            last_beat: Instant::now(),
        }
    }

    // ANCHOR: poller_loop
    /// Sleeps until something happens, deals with it, repeats. Nothing here
    /// blocks or touches Python: a slow client or a slow app only ever
    /// holds up one pool thread, never this loop.
    fn run(&mut self, stop: BorrowedFd<'_>) -> io::Result<()> {
        let registry = self.poll.registry();
        registry.register(&mut SourceFd(&stop.as_raw_fd()), STOP, Interest::READABLE)?;
        self.listen(true);
        let mut events = Events::with_capacity(256);
        loop {
            self.heartbeat();
            self.wait(&mut events, self.poll_timeout())?;
            self.woke.fill(false);
            for event in &events {
                match event.token() {
                    Token(t) if t >= LISTENERS => self.woke[t - LISTENERS] = true,
                    // A signal arrived: leave the loop below.
                    STOP => self.shared.stopping.store(true, Ordering::Relaxed),
                    // A pool thread finished: its connections are taken below.
                    WAKER => {}
                    // A connection has bytes (or was closed): to the pool.
                    Token(t) => self.readable(t - FIRST_CONN),
                }
            }
            let retry = mem::take(&mut self.retry_accept);
            for i in 0..self.listeners.len() {
                if self.woke[i] || self.more_to_accept[i] || retry {
                    self.accept_one(i, self.woke[i]);
                }
            }
            self.take_back_finished();
            self.close_expired(Instant::now());
            if self.shared.stopping.load(Ordering::Relaxed) {
                return self.drain(&mut events);
            }
        }
    }
    // ANCHOR_END: poller_loop

    /// Sleeps in `epoll_wait` until an event or the timeout. A signal
    /// interrupting the wait is not an error: the stop fd tells us about it.
    fn wait(&mut self, events: &mut Events, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                events.clear();
                Ok(())
            }
            result => result,
        }
    }

    /// How long the poll may sleep: until the next idle connection expires,
    /// and never more than a tick.
    fn poll_timeout(&self) -> Duration {
        let mut timeout = TICK;
        if self.retry_accept {
            timeout = Duration::from_millis(10);
        }
        if self.more_to_accept.contains(&true) {
            // Connections may be waiting: just look at the other events.
            timeout = Duration::ZERO;
        }
        if let Some(t) = self.next_expiry {
            timeout = timeout.min(t.saturating_duration_since(Instant::now()));
        }
        timeout
    }

    fn heartbeat(&mut self) {
        // Under load the loop turns thousands of times a second; the hook
        // (a system call in stage 3) need not run every time.
        let now = Instant::now();
        if now.duration_since(self.last_beat) >= TICK / 5 {
            self.last_beat = now;
            self.shared.hooks.heartbeat();
        }
    }

    /// Starts or stops watching the listeners. At `--worker-connections`
    /// open connections the server stops accepting: new clients wait in the
    /// kernel's backlog until a connection closes.
    fn listen(&mut self, on: bool) {
        if on == self.accepting {
            return;
        }
        let registry = self.poll.registry();
        for (i, listener) in self.listeners.iter().enumerate() {
            let mut source = SourceFd(&listener.as_raw_fd());
            let result = if on {
                registry.register(&mut source, Token(LISTENERS + i), Interest::READABLE)
            } else {
                registry.deregister(&mut source)
            };
            if let Err(e) = result {
                log::error!("cannot change the listener's registration: {e}");
                return;
            }
        }
        self.accepting = on;
    }

    /// Takes one waiting connection. One per turn of the loop, not all of
    /// them: in stage 3 every worker process sleeping on the shared
    /// listener is woken for a new connection, and a worker that took all
    /// the waiting ones (32 clients connecting at once) would serve them all
    /// for their whole keep-alive life while the other workers idle (that
    /// was measured: one worker of two doing all the work). Taking one,
    /// then the other events, then the next, lets the workers woken at the
    /// same time share them. mio's notifications are edge-triggered (it
    /// says "readable" once), so `more_to_accept` brings the loop back here
    /// at once, until the kernel answers WouldBlock.
    ///
    /// Woken at the same time, the worker already awake would still win
    /// most races. So a worker with more kept-alive connections than
    /// threads first gives the others a head start, the longer the more
    /// connections it has (nginx's `accept_mutex_delay` in miniature): the
    /// least loaded worker tends to take the next one. Connections that do
    /// not stay (`--keep-alive 0`) are spread by the races themselves.
    fn accept_one(&mut self, i: usize, woken: bool) {
        self.more_to_accept[i] = false;
        let config = self.shared.config;
        if !config.keep_alive.is_zero() && self.open >= config.threads {
            let over = (self.open + 1 - config.threads).min(10) as u32;
            thread::sleep(Duration::from_micros(20) * over);
        }
        while self.accepting {
            if self.open >= self.shared.config.worker_connections {
                log::debug!(
                    "{} connections open (--worker-connections): not accepting until one closes",
                    self.open
                );
                self.listen(false);
                return;
            }
            match self.listeners[i].accept() {
                Ok((stream, peer)) => {
                    self.add(stream, peer, i);
                    self.more_to_accept[i] = true;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if woken {
                        // Woken for nothing: in stage 3, another worker
                        // process took the connection first.
                        self.shared.hooks.accept_missed();
                    }
                    return;
                }
                // The listening socket was shut down (stage 3's master does
                // that when it stops): no more connections will come, so
                // stop as on TERM, finishing the requests in flight.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.listen(false);
                    self.shared.stopping.store(true, Ordering::Relaxed);
                    return;
                }
                // Interrupted, or a client gone before we took its connection.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                // Out of file descriptors or memory: not a reason to stop
                // serving; try again in a moment.
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    self.retry_accept = true;
                    return;
                }
            }
        }
    }

    /// A new connection: set it up and watch it until its first request arrives.
    fn add(&mut self, stream: Stream, peer: Peer, origin: usize) {
        // Blocking, with timeouts, is how the pool threads read and write
        // (the listener is non-blocking, and on some systems accepted
        // sockets inherit that). See `watch` for why mio does not mind.
        let setup = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(self.shared.config.timeout)))
            .and_then(|()| stream.set_write_timeout(Some(self.shared.config.timeout)));
        if let Err(e) = setup {
            log::warn!("cannot set up the connection from {}: {e}", peer.addr);
            return;
        }
        // Small responses go out at once instead of waiting (Nagle's
        // algorithm) for more data that will never come.
        if let Stream::Tcp(tcp) = &stream {
            let _ = tcp.set_nodelay(true);
        }
        let mut conn = HttpConnection::new(stream, peer);
        // A pool thread that reads a head (one that arrived while it served
        // the previous request) gives it --timeout in all, not per read.
        conn.limit_head_time(self.shared.config.timeout);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(ConnEntry::Free);
            self.origins.push(0);
            self.slots.len() - 1
        });
        self.origins[slot] = origin;
        self.open += 1;
        // A new client gets the full --timeout to send its first request,
        // as in stage 1; between requests, --keep-alive applies.
        let deadline = Instant::now() + self.shared.config.timeout;
        self.watch(slot, conn, deadline);
    }

    /// Puts a new connection in the poller's care until it becomes readable.
    ///
    /// Its socket stays in blocking mode. mio asks for non-blocking sources
    /// because its notifications are edge-triggered: whoever reads must read
    /// until WouldBlock, or never hear of the rest. Here the main thread
    /// never reads: on the first notification it unregisters the socket and
    /// hands it to a pool thread, which reads with blocking calls and
    /// timeouts. When the connection goes back to idle it is registered
    /// afresh (by that pool thread: see `pool::watch_again`), and epoll
    /// reports at registration any bytes already waiting (a request sent
    /// while the previous response was being written).
    fn watch(&mut self, slot: usize, conn: HttpConnection, deadline: Instant) {
        let fd = conn.stream().as_raw_fd();
        let token = Token(FIRST_CONN + slot);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            log::warn!("cannot watch a connection: {e}");
            self.release(slot);
            return;
        }
        self.slots[slot] = ConnEntry::Idle { conn, deadline };
        self.next_expiry = Some(self.next_expiry.map_or(deadline, |t| t.min(deadline)));
    }

    // ANCHOR: hand_off
    /// The poller says a connection is readable: its next request (or its
    /// close) is there. An idle one goes to the pool. A busy one is on its
    /// way back from the pool (see `take_back_finished`): noted, it goes
    /// to the pool as soon as it is back.
    fn readable(&mut self, slot: usize) {
        let limits = &self.shared.config.limits;
        let arrived = match &mut self.slots[slot] {
            // The poller reads the head itself, and a thread gets the
            // connection only once the head is complete: a client that
            // sends it one byte at a time holds no thread, only a slot in
            // this table, until its deadline.
            ConnEntry::Idle { conn, .. } => {
                let began = conn.has_buffered_bytes();
                (conn.read_without_waiting(limits), began)
            }
            ConnEntry::Busy { readable } => {
                *readable = true;
                return;
            }
            // An event about a connection closed since: nothing to do.
            ConnEntry::Free => return,
        };
        match arrived {
            (Arrived::Head, _) => self.hand_to_pool(slot),
            (Arrived::Closed, _) => self.close_idle(slot),
            // The first bytes of a head: from now on the whole head has
            // --timeout to arrive, however slowly its bytes trickle in.
            (Arrived::Part, false) => {
                let head_deadline = Instant::now() + self.shared.config.timeout;
                if let ConnEntry::Idle { deadline, .. } = &mut self.slots[slot] {
                    *deadline = head_deadline;
                }
                self.next_expiry = Some(
                    self.next_expiry
                        .map_or(head_deadline, |t| t.min(head_deadline)),
                );
            }
            (Arrived::Part, true) => {}
        }
    }

    /// Stops watching an idle connection and gives it to the pool.
    fn hand_to_pool(&mut self, slot: usize) {
        let conn = match mem::replace(&mut self.slots[slot], ConnEntry::Busy { readable: false }) {
            ConnEntry::Idle { conn, .. } => conn,
            other => {
                self.slots[slot] = other;
                return;
            }
        };
        // Stop hearing about it while a pool thread has it, but stay
        // registered: changing the interest (EPOLL_CTL_MOD) costs less than
        // unregistering and registering again (a kernel allocation each).
        // mio wants some interest: out-of-band data, which HTTP never sends,
        // amounts to none.
        let fd = conn.stream().as_raw_fd();
        let token = Token(FIRST_CONN + slot);
        let _ = self
            .poll
            .registry()
            .reregister(&mut SourceFd(&fd), token, Interest::PRIORITY);
        self.busy += 1;
        let origin = self.origins[slot];
        self.shared.jobs.push(Job { slot, conn, origin });
    }

    /// Takes back the connections the pool finished with. One that stays
    /// open is already watched again (the pool thread registered it before
    /// sending it back, without waking this thread: nothing is to be done
    /// with an idle connection until its next request, and that wakes the
    /// poller anyway); its idle deadline starts now. One the pool closed is
    /// forgotten.
    fn take_back_finished(&mut self) {
        let keep_alive = self.shared.config.keep_alive;
        while let Ok(Done { slot, conn }) = self.done.try_recv() {
            self.busy -= 1;
            let readable = matches!(self.slots[slot], ConnEntry::Busy { readable: true });
            match conn {
                Some(conn) if !self.shared.stopping.load(Ordering::Relaxed) => {
                    let deadline = Instant::now() + keep_alive;
                    self.slots[slot] = ConnEntry::Idle { conn, deadline };
                    self.next_expiry = Some(self.next_expiry.map_or(deadline, |t| t.min(deadline)));
                    if readable {
                        self.hand_to_pool(slot);
                    }
                }
                // Stopping: serve a request that has arrived, close the rest.
                Some(conn) => {
                    let deadline = Instant::now();
                    self.slots[slot] = ConnEntry::Idle { conn, deadline };
                    if readable || self.request_waiting(slot) {
                        self.hand_to_pool(slot);
                    } else {
                        self.close_idle(slot);
                    }
                }
                // Dropping the connection closes it (and a closed socket
                // leaves the poller by itself).
                None => self.release(slot),
            }
        }
    }
    // ANCHOR_END: hand_off

    /// Forgets a closed connection; below the limit again, accepts again.
    fn release(&mut self, slot: usize) {
        self.slots[slot] = ConnEntry::Free;
        self.free.push(slot);
        self.open -= 1;
        if self.open < self.shared.config.worker_connections
            && !self.shared.stopping.load(Ordering::Relaxed)
        {
            self.listen(true);
        }
    }

    /// Whether an idle connection has bytes waiting to be read (a request):
    /// a peek that neither blocks nor consumes anything.
    fn request_waiting(&self, slot: usize) -> bool {
        let ConnEntry::Idle { conn, .. } = &self.slots[slot] else {
            return false;
        };
        let mut byte = 0u8;
        // SAFETY: recv(2) into one valid byte, on a socket this table owns.
        let n = unsafe {
            libc::recv(
                conn.stream().as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n > 0
    }

    /// Closes an idle connection.
    fn close_idle(&mut self, slot: usize) {
        if let ConnEntry::Idle { conn, .. } = mem::replace(&mut self.slots[slot], ConnEntry::Free) {
            let fd = conn.stream().as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            self.release(slot);
        }
    }

    /// Closes the idle connections whose time is up. Walking the whole table
    /// is simple and cheap (it holds at most --worker-connections entries),
    /// and happens only when the earliest deadline has passed.
    fn close_expired(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|t| now < t) {
            return;
        }
        let mut next: Option<Instant> = None;
        for slot in 0..self.slots.len() {
            if let ConnEntry::Idle { deadline, .. } = self.slots[slot] {
                if deadline <= now {
                    self.close_idle(slot);
                } else {
                    next = Some(next.map_or(deadline, |t| t.min(deadline)));
                }
            }
        }
        self.next_expiry = next;
    }

    // ANCHOR: graceful_drain
    /// The graceful stop: accept nothing more, close the idle connections,
    /// and wait for the requests in flight, at most `graceful_timeout`.
    fn drain(&mut self, events: &mut Events) -> io::Result<()> {
        self.listen(false);
        // An idle connection whose request has already arrived (one just
        // accepted, or one whose next request came before the poller saw
        // it) is served, not closed: closing it would drop a request the
        // client has sent. The others are closed now.
        for slot in 0..self.slots.len() {
            if self.request_waiting(slot) {
                self.hand_to_pool(slot);
            } else {
                self.close_idle(slot);
            }
        }
        let timeout = self.shared.config.graceful_timeout;
        let deadline = Instant::now() + timeout;
        if self.busy > 0 {
            log::info!(
                "Stopping: waiting up to {}s for {} request(s) in flight",
                timeout.as_secs(),
                self.busy
            );
        }
        while self.busy > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!(
                    "{} request(s) still running after the graceful timeout ({}s): exiting without them",
                    self.busy,
                    timeout.as_secs()
                );
                std::process::exit(0);
            }
            self.heartbeat();
            // Pool threads now close every connection after its response
            // (`stopping` is set), and wake us up when they do.
            self.wait(events, left.min(TICK))?;
            self.take_back_finished();
        }
        Ok(())
    }
    // ANCHOR_END: graceful_drain
}
