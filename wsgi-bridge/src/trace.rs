//! `--trace FILE`: what each thread did, and when, for the book's pictures.
//!
//! With a trace on, the request path notes the moments that matter: when a
//! thread asked for the GIL and when it got it, each step with the GIL held
//! (environ, the app, start_response, the body), and the socket writes made
//! without it. A sampler thread reads CPython's own GIL state (who holds it)
//! every 20 µs, so the picture also shows what no Rust code sees: the GIL
//! taken away from a thread in the middle of the app, every switch interval
//! (5 ms). `trace-view` draws the file (`cargo run --bin trace-view`).
//!
//! A profile function (the C side of `sys.setprofile`) notes the C calls
//! of the app that last over 50 µs, such as `time.sleep`: C code may let
//! go of the GIL, and the picture must tell a sleeping thread from a
//! waiting one.
//!
//! Off, a trace costs one relaxed atomic load per step ([`start`]). On, a
//! step is two clock reads (about 20 ns each, vDSO) and a push onto the
//! thread's own buffer; a thread writes nothing itself: a flusher thread
//! appends the buffers to the file every 100 ms.
//!
//! The file is text, one record a line, space-separated:
//!
//! ```text
//! KIND PID TID START_NS END_NS ARG [LABEL...]
//! ```
//!
//! Times are `CLOCK_MONOTONIC` nanoseconds (every process of the machine
//! shares that clock, so stage 3's master and workers write one file).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;

static ON: AtomicBool = AtomicBool::new(false);
static SINK: OnceLock<Sink> = OnceLock::new();
/// Requests inside `Python::attach` now: the GIL sampler sleeps when none is.
static IN_PYTHON: AtomicUsize = AtomicUsize::new(0);

struct Sink {
    file: Mutex<File>,
    /// Every thread's buffer; the flusher drains them.
    buffers: Mutex<Vec<Arc<Buffer>>>,
}

struct Buffer {
    tid: i32,
    records: Mutex<Vec<Record>>,
}

struct Record {
    kind: &'static str,
    start: u64,
    end: u64,
    arg: u64,
    label: Option<Box<str>>,
}

thread_local! {
    static MINE: RefCell<Option<Arc<Buffer>>> = const { RefCell::new(None) };
}

/// Whether a trace is being written.
#[inline(always)]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The start of a step: the time, if a trace is on. Off, this is the whole
/// cost of tracing: one relaxed load and a branch.
#[inline(always)]
pub fn start() -> Option<u64> {
    if enabled() { Some(now()) } else { None }
}

/// Ends a step begun by [`start`] (nothing when the trace is off).
#[inline(always)]
pub fn end(started: Option<u64>, kind: &'static str) {
    if let Some(t) = started {
        record(kind, t, now(), 0, None);
    }
}

/// Ends a step made without the GIL (a socket write or read): the record
/// says whether this thread held the GIL all the same (it must not).
#[inline(always)]
pub fn end_io(started: Option<u64>, kind: &'static str) {
    if let Some(t) = started {
        // SAFETY: PyGILState_Check may be called by any thread, with or
        // without the GIL; it only reads.
        let held = unsafe { pyo3::ffi::PyGILState_Check() } != 0;
        record(kind, t, now(), held as u64, None);
    }
}

/// The thread got the GIL (`Python::attach` entered): records the wait
/// since `asked`, and the start of the hold, with the thread's Python
/// thread state (how the sampler's records are matched to this thread).
#[inline(always)]
pub fn got_gil(asked: Option<u64>) -> Option<u64> {
    let asked = asked?;
    let t = now();
    record("wait", asked, t, 0, None);
    watch_c_calls();
    IN_PYTHON.fetch_add(1, Ordering::Relaxed);
    Some(t)
}

thread_local! {
    static PROFILED: Cell<bool> = const { Cell::new(false) };
    static C_CALL_START: Cell<u64> = const { Cell::new(0) };
}

/// The C functions the app calls that last longer than this are recorded
/// (`c_call`): `time.sleep`, a socket read... C code may release the GIL
/// (time.sleep does), and the picture must tell such a thread from one
/// that waits for the GIL.
const LONG_C_CALL_NS: u64 = 50_000;

/// Installs, once per thread, a profile function (the C version of
/// `sys.setprofile`) that notes long C calls. Called with the GIL held.
fn watch_c_calls() {
    if PROFILED.get() {
        return;
    }
    PROFILED.set(true);
    // SAFETY: with the GIL held, for this thread's state.
    unsafe { pyo3::ffi::PyEval_SetProfile(Some(on_profile_event), std::ptr::null_mut()) };
}

unsafe extern "C" fn on_profile_event(
    _obj: *mut pyo3::ffi::PyObject,
    _frame: *mut pyo3::ffi::PyFrameObject,
    what: std::os::raw::c_int,
    func: *mut pyo3::ffi::PyObject,
) -> std::os::raw::c_int {
    match what {
        pyo3::ffi::PyTrace_C_CALL => C_CALL_START.set(now()),
        pyo3::ffi::PyTrace_C_RETURN | pyo3::ffi::PyTrace_C_EXCEPTION => {
            let (start, end) = (C_CALL_START.replace(0), now());
            if start != 0 && end - start > LONG_C_CALL_NS {
                // SAFETY: called by CPython with the GIL held; `func` is the
                // C function object.
                let name = unsafe { c_function_name(func) };
                record("c_call", start, end, 0, Some(name.into()));
            }
        }
        _ => {}
    }
    0
}

/// `func.__module__ + "." + func.__name__`, as well as it can be found.
unsafe fn c_function_name(func: *mut pyo3::ffi::PyObject) -> String {
    use pyo3::ffi;
    let attr = |name: &std::ffi::CStr| -> Option<String> {
        // SAFETY: GIL held; the new reference is released below.
        unsafe {
            let value = ffi::PyObject_GetAttrString(func, name.as_ptr());
            if value.is_null() {
                ffi::PyErr_Clear();
                return None;
            }
            let text = ffi::PyUnicode_AsUTF8(value);
            let out = if text.is_null() {
                ffi::PyErr_Clear();
                None
            } else {
                Some(
                    std::ffi::CStr::from_ptr(text)
                        .to_string_lossy()
                        .into_owned(),
                )
            };
            ffi::Py_DecRef(value);
            out
        }
    };
    match (attr(c"__module__"), attr(c"__name__")) {
        (Some(module), Some(name)) => format!("{module}.{name}"),
        (None, Some(name)) => name,
        _ => "C code".to_string(),
    }
}

/// The thread is about to let go of the GIL (leaving `Python::attach`).
#[inline(always)]
pub fn release_gil(held_since: Option<u64>) {
    if let Some(t) = held_since {
        // SAFETY: called with the GIL held: this thread's state exists.
        let tstate = unsafe { pyo3::ffi::PyThreadState_Get() } as u64;
        record("py", t, now(), tstate, None);
        IN_PYTHON.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request begins (a request that never ends, in a worker killed for
/// it, is still seen).
pub fn begin(started: Option<u64>, label: impl FnOnce() -> String) {
    if let Some(t) = started {
        record("begin", t, t, 0, Some(label().into()));
    }
}

/// A request from `started` to now, labelled (its method and target).
pub fn request(started: Option<u64>, label: impl FnOnce() -> String) {
    if let Some(t) = started {
        record("req", t, now(), 0, Some(label().into()));
    }
}

/// Adds a record to this thread's buffer.
pub fn record(kind: &'static str, start: u64, end: u64, arg: u64, label: Option<Box<str>>) {
    let Some(sink) = SINK.get() else { return };
    let rec = Record {
        kind,
        start,
        end,
        arg,
        label,
    };
    MINE.with(|mine| {
        let mut mine = mine.borrow_mut();
        let buffer = mine.get_or_insert_with(|| {
            let buffer = Arc::new(Buffer {
                // SAFETY: gettid has no preconditions.
                tid: unsafe { libc::gettid() },
                records: Mutex::new(Vec::with_capacity(1024)),
            });
            if let Ok(mut all) = sink.buffers.lock() {
                all.push(buffer.clone());
            }
            buffer
        });
        if let Ok(mut records) = buffer.records.lock() {
            records.push(rec);
        }
    });
}

/// Starts a trace into `path` (truncated). In stage 3 the master calls it
/// before forking: the workers inherit the open file (appending), and
/// start their own [`start_flusher`].
pub fn open(path: &Path) -> io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    drop(file);
    let file = std::fs::OpenOptions::new().append(true).open(path)?;
    let sink = Sink {
        file: Mutex::new(file),
        buffers: Mutex::new(Vec::new()),
    };
    if SINK.set(sink).is_err() {
        return Err(io::Error::other("a trace is already open"));
    }
    write_line(&format!(
        "# wsgi-course trace: KIND PID TID START_NS END_NS ARG [LABEL] (CLOCK_MONOTONIC ns), started by pid {}",
        std::process::id()
    ));
    ON.store(true, Ordering::Relaxed);
    Ok(())
}

/// Writes one line now (the master's events: it has one thread and no
/// flusher). One `write` of a whole line to a file opened for appending:
/// lines from several processes do not mix.
pub fn write_line(line: &str) {
    let Some(sink) = SINK.get() else { return };
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    if let Ok(mut file) = sink.file.lock() {
        let _ = file.write_all(text.as_bytes());
    }
}

/// An event of a process (stage 3's master: a worker born, dead, a signal).
pub fn event(kind: &str, pid: i32, slot: usize, arg: u64, label: &str) {
    let t = now();
    write_line(&format!("{kind} {pid} {slot} {t} {t} {arg} {label}"));
}

/// Appends every thread's records to the file.
pub fn flush() {
    let Some(sink) = SINK.get() else { return };
    let buffers: Vec<Arc<Buffer>> = match sink.buffers.lock() {
        Ok(all) => all.clone(),
        Err(_) => return,
    };
    let pid = std::process::id();
    let mut text = String::new();
    for buffer in buffers {
        let records = match buffer.records.lock() {
            Ok(mut records) => std::mem::take(&mut *records),
            Err(_) => continue,
        };
        for r in records {
            use std::fmt::Write as _;
            let _ = write!(
                text,
                "{} {pid} {} {} {} {}",
                r.kind, buffer.tid, r.start, r.end, r.arg
            );
            if let Some(label) = r.label {
                text.push(' ');
                text.push_str(&label);
            }
            text.push('\n');
        }
    }
    if text.is_empty() {
        return;
    }
    if let Ok(mut file) = sink.file.lock() {
        // Whole lines, one write each block: a block from another process
        // lands before or after, never inside.
        let _ = file.write_all(text.as_bytes());
    }
}

/// Starts the thread that writes the records out every 100 ms (in each
/// process that serves requests: stage 2, each stage 3 worker).
pub fn start_flusher() {
    if !enabled() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("trace-flush".into())
        .spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(100));
                flush();
            }
        });
}

/// How often the sampler looks at the GIL.
const SAMPLE_EVERY: Duration = Duration::from_micros(20);
/// Longer than this between two looks, and the sampler does not vouch for
/// the time between them (it was not scheduled).
const MAX_GAP_NS: u64 = 200_000;

/// Where CPython 3.11 keeps its GIL: `_PyRuntime.ceval.gil` (see
/// `Include/internal/pycore_gil.h`): `interval` (µs), `last_holder` (a
/// thread state), `locked`. Internal, so checked before use.
const GIL_INTERVAL: usize = 360;
const GIL_LAST_HOLDER: usize = 368;
const GIL_LOCKED: usize = 376;

/// Starts the GIL sampler: a thread that reads, every 20 µs, whether the
/// GIL is held and by which thread state, and records each holder's time
/// (`gil` records; ARG is the holder's thread state, which `py` records
/// match to a thread, or 0 when nobody held it). It reads CPython's internal state, known for 3.11:
/// it checks the switch interval it finds there against
/// `sys.getswitchinterval()` first, and samples nothing if they differ.
pub fn start_gil_sampler(py: Python<'_>) {
    if !enabled() {
        return;
    }
    let Some(gil) = find_gil(py) else {
        log::warn!(
            "--trace: this Python's GIL state is not where CPython 3.11 keeps it; the trace will show time spent in Python, not who held the GIL"
        );
        return;
    };
    let _ = std::thread::Builder::new()
        .name("trace-gil".into())
        .spawn(move || sample_gil(gil));
}

/// The address of `_PyRuntime.ceval.gil`, once checked.
fn find_gil(py: Python<'_>) -> Option<usize> {
    let version = py.version_info();
    if (version.major, version.minor) != (3, 11) {
        return None;
    }
    // SAFETY: dlsym with a valid C string; _PyRuntime is libpython's data.
    let runtime = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_PyRuntime".as_ptr()) } as usize;
    if runtime == 0 {
        return None;
    }
    let interval_us = py
        .import("sys")
        .and_then(|sys| sys.call_method0("getswitchinterval"))
        .and_then(|v| v.extract::<f64>())
        .ok()?;
    // SAFETY: inside _PyRuntime (a static struct far larger than this).
    let found = unsafe { std::ptr::read_volatile((runtime + GIL_INTERVAL) as *const u64) };
    ((interval_us * 1e6).round() as u64 == found).then_some(runtime)
}

fn sample_gil(runtime: usize) {
    // A fine timer: the default slack (50 µs) would blur the samples.
    // SAFETY: prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    // On a busy machine a sampler scheduled like any thread misses whole
    // milliseconds (the picture then shows them as "not sampled"): ask for
    // real-time scheduling, allowed to root (CAP_SYS_NICE). It sleeps
    // between looks, so it takes little from the threads it watches.
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: a valid sched_param; 0 is this thread. Failure (EPERM) is
    // fine: it samples with ordinary scheduling.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    let read = || {
        // SAFETY: aligned fields of a live static struct, read without the
        // GIL as its own waiters do (they are atomics in CPython).
        unsafe {
            let locked = std::ptr::read_volatile((runtime + GIL_LOCKED) as *const i32);
            let holder = std::ptr::read_volatile((runtime + GIL_LAST_HOLDER) as *const u64);
            if locked != 0 { holder } else { 0 }
        }
    };
    // Each `gil` record is a stretch the sampler watched with one holder
    // (ARG 0: nobody). A stretch ends at a change, or at a gap: when the
    // sampler itself was not running (the machine busy), it cannot say who
    // held the GIL meanwhile, and `trace-view` must not guess from its
    // records.
    let (mut holder, mut since) = (read(), now());
    let mut last = since;
    loop {
        if IN_PYTHON.load(Ordering::Relaxed) == 0 {
            // No request in Python: look again in 100 µs (a sampler at full
            // speed all the time would take a third of a core). What a
            // request does before the sampler wakes is not vouched for:
            // `trace-view` settles it from the `py` spans.
            if last > since {
                record("gil", since, last, holder, None);
            }
            std::thread::sleep(Duration::from_micros(100));
            (holder, since) = (read(), now());
            last = since;
            continue;
        }
        std::thread::sleep(SAMPLE_EVERY);
        let current = read();
        let t = now();
        let gap = t - last > MAX_GAP_NS;
        if current != holder || gap {
            let end = if gap { last } else { t };
            if end > since {
                record("gil", since, end, holder, None);
            }
            (holder, since) = (current, t);
        }
        last = t;
    }
}
