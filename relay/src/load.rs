//! Load figures for `GET /status`, so clients can pick the least loaded relay: requests in
//! flight, parked long-polls, and the request rate averaged over the last minute.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct LoadMeter {
    active: AtomicUsize,
    total: AtomicU64,
    window: Mutex<(Instant, u64, f64)>,
    started: Instant,
}

impl Default for LoadMeter {
    fn default() -> Self {
        Self {
            active: AtomicUsize::new(0),
            total: AtomicU64::new(0),
            window: Mutex::new((Instant::now(), 0, 0.0)),
            started: Instant::now(),
        }
    }
}

/// Marks a request in flight until dropped.
pub struct InFlight<'a>(&'a LoadMeter);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl LoadMeter {
    pub fn begin(&self) -> InFlight<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Requests per second, exponentially averaged with a one-minute time constant; updated
    /// lazily whenever it is read (at most once a second).
    pub fn requests_per_second(&self) -> f64 {
        let mut w = self.window.lock();
        let now = Instant::now();
        let dt = now.duration_since(w.0).as_secs_f64();
        if dt >= 1.0 {
            let total = self.total();
            let rate = (total - w.1) as f64 / dt;
            let alpha = 1.0 - (-dt / 60.0).exp();
            // The first reading seeds the average instead of decaying from zero.
            w.2 = if w.1 == 0 && w.2 == 0.0 {
                rate
            } else {
                w.2 + alpha * (rate - w.2)
            };
            *w = (now, total, w.2);
        }
        (w.2 * 100.0).round() / 100.0
    }
}
