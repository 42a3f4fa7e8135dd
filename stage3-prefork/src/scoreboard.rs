//! The scoreboard: a table in memory shared by the master and its workers.
//!
//! Each worker owns one slot and writes into it (a heartbeat, whether it is
//! busy, how many requests it served); the master reads every slot to find
//! hung workers (`--timeout`) and to answer `--stats`. It is an anonymous
//! `MAP_SHARED` mapping made before the first fork, so every worker sees the
//! same physical pages: the idea behind uWSGI's scoreboard and harakiri.
//! gunicorn gets the same effect by having each worker touch a temporary file.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
use nix::time::{ClockId, clock_gettime};

/// Most workers the master will run at once.
pub const MAX_WORKERS: usize = 256;

// ANCHOR: slot
/// One worker's slot. Only atomics: two processes write and read it at once.
/// Each slot has a cache line of its own (64 bytes): two workers writing
/// their heartbeats into one line would make the cores pass it back and
/// forth on every request ("false sharing").
#[repr(C, align(64))]
pub struct Slot {
    pub pid: AtomicI32,
    /// When the worker last proved it was alive (monotonic milliseconds).
    pub heartbeat_ms: AtomicU64,
    pub requests: AtomicU64,
    pub busy: AtomicU32,
    /// Wake-ups that found no connection to accept (the thundering herd).
    pub accept_missed: AtomicU64,
    /// Connections open now (`-k asgi`, which holds many): its siblings
    /// read it to share new connections out evenly.
    pub connections: AtomicU32,
}
// ANCHOR_END: slot

pub struct Scoreboard {
    slots: NonNull<Slot>,
}

// The mapping is shared memory of atomics: safe to use from any thread.
unsafe impl Send for Scoreboard {}
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    // ANCHOR: scoreboard_new
    pub fn new() -> nix::Result<Scoreboard> {
        let len = NonZeroUsize::new(std::mem::size_of::<Slot>() * MAX_WORKERS)
            .expect("the table is not empty");
        // SAFETY: a fresh anonymous mapping; zeroed pages are valid atomics.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )?
        };
        Ok(Scoreboard { slots: ptr.cast() })
    }
    // ANCHOR_END: scoreboard_new

    pub fn slot(&self, index: usize) -> &Slot {
        assert!(index < MAX_WORKERS);
        // SAFETY: index is in bounds of the mapping, which lives as long as self.
        unsafe { &*self.slots.as_ptr().add(index) }
    }
}

impl Slot {
    /// Prepares the slot for a new worker (called by the master before fork).
    pub fn reset(&self, pid: i32) {
        self.pid.store(pid, Ordering::Relaxed);
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
        self.busy.store(0, Ordering::Relaxed);
        self.accept_missed.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
    }

    /// Whether a worker owns the slot (the master clears it when it reaps
    /// the worker).
    pub fn is_live(&self) -> bool {
        self.pid.load(Ordering::Relaxed) != 0
    }

    /// Milliseconds since the worker's last heartbeat.
    pub fn silent_for_ms(&self) -> u64 {
        now_ms().saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed))
    }
}

/// A clock every process on the machine agrees on, that never goes back.
pub fn now_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}
