//! The drain callback (the loop's reader on the eventfd), the heartbeat
//! and the small functions the support module calls back.

use std::sync::atomic::Ordering;

use pyo3::intern;
use pyo3::prelude::*;

use crate::shared::{Event, STATS};

use super::start::start_call;
use super::{AsgiCall, PyCtx, ctx};

// ANCHOR: drain
/// `loop.add_reader(inbox_fd, Drain())`: called by the loop when the I/O
/// thread has queued events.
#[pyclass(module = "stage6_asgi", frozen)]
pub struct Drain;

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        STATS.py_wakeups.fetch_add(1, Ordering::Relaxed);
        let ctx = ctx();
        let mut events = Vec::new();
        ctx.inbox.take(&mut events);
        STATS
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        // New requests become Tasks, whose first step the loop's call_soon
        // would schedule: shadow it with our CallSoon (see `spawn_task`)
        // once for the batch, not once per Task.
        let lp = ctx.event_loop.bind(py);
        let shadowed = match &ctx.call_soon {
            Some(c) if events.iter().any(|e| matches!(e, Event::Start(_))) => {
                lp.setattr(intern!(py, "call_soon"), c.bind(py)).is_ok()
            }
            _ => false,
        };
        // Responses queued while the events are handed out wake the I/O
        // thread once, below (a FlushOutbox scheduled meanwhile is left to
        // run: it finds nothing to do).
        let before = ctx.signal_io.replace(super::SignalIo::AtDrainEnd);
        let handled = (|| -> PyResult<()> {
            for event in events {
                match event {
                    Event::Start(start) => start_call(py, &ctx, *start),
                    Event::Wake(id) => {
                        let call = ctx.waiting.borrow_mut().remove(&id);
                        if let Some(call) = call {
                            AsgiCall::wake(call.bind(py), &ctx);
                        }
                    }
                    Event::Drained => {
                        lp.call_method0(intern!(py, "stop"))?;
                    }
                    Event::StopRequested => {}
                }
            }
            Ok(())
        })();
        ctx.signal_io.set(before);
        ctx.outbox.signal_pending();
        if shadowed {
            lp.delattr(intern!(py, "call_soon"))?;
        }
        handled
    }
}
// ANCHOR_END: drain

/// `loop.call_later(interval, Beat(...))`: the heartbeat, sent from the
/// loop itself, so a loop blocked by the app stops beating.
#[pyclass(module = "stage6_asgi", frozen)]
pub struct Beat {
    pub interval: f64,
}

#[pymethods]
impl Beat {
    fn __call__(slf: Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let ctx = ctx();
        ctx.hooks.heartbeat();
        if ctx.hooks.should_stop() {
            ask_stop(&ctx);
        }
        let interval = slf.get().interval;
        ctx.event_loop
            .bind(py)
            .call_method1(intern!(py, "call_later"), (interval, slf))?;
        Ok(())
    }
}

/// Asks the I/O thread to stop accepting (once).
pub(super) fn ask_stop(ctx: &PyCtx) {
    if !ctx.stop_asked.replace(true) {
        ctx.stop_io.notify_one();
    }
}

/// Counts a turn of the loop (installed around the selector's `select`
/// with `--stats`).
#[pyfunction]
pub fn count_turn() {
    STATS.loop_turns.fetch_add(1, Ordering::Relaxed);
}

/// Logs a Python logging record with the server's logger.
#[pyfunction]
pub fn rust_log(level: i32, message: &str) {
    match level {
        l if l >= 40 => log::error!("{message}"),
        l if l >= 30 => log::warn!("{message}"),
        l if l >= 20 => log::info!("{message}"),
        _ => log::debug!("{message}"),
    }
}
