use std::sync::atomic::{AtomicU64, Ordering};

use wsgi_bridge::hooks::WorkerHooks;

/// Counts the requests served, and asks the loop to stop after `max` of
/// them (0: never).
struct CountingHooks {
    served: AtomicU64,
    max: u64,
}

impl WorkerHooks for CountingHooks {
    fn request_finished(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    fn should_stop(&self) -> bool {
        self.max > 0 && self.served.load(Ordering::Relaxed) >= self.max
    }
}
