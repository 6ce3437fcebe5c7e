//! `GET /metrics`: the relay for Prometheus (text exposition format 0.0.4). Requests by route
//! and status, admission refusals by reason, what is stored, the mesh's traffic by route,
//! every peer's score and counters, the broadcast tree, long-poll waiters and the store's
//! write latency, written with `jasper-metrics`; the test scrapes it with a real parser
//! (`prometheus-parse`).

use std::collections::BTreeMap;

pub use jasper_metrics::{Exposition, Histogram};
use parking_lot::Mutex;

/// The relay's routes, counted by name; anything else is `other` (so a scanner cannot grow
/// the series).
pub const ROUTES: [&str; 9] = [
    "/send",
    "/fetch",
    "/sync/servers",
    "/sync/hashes",
    "/sync/recent",
    "/sync/reconcile",
    "/mesh/announce",
    "/status",
    "/metrics",
];

/// Requests answered, by route and status.
#[derive(Default)]
pub struct RequestCounts {
    counts: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl RequestCounts {
    pub fn add(&self, path: &str, status: u16) {
        let route = ROUTES
            .iter()
            .find(|r| **r == path)
            .copied()
            .unwrap_or("other");
        *self.counts.lock().entry((route, status)).or_default() += 1;
    }

    fn snapshot(&self) -> Vec<((&'static str, u16), u64)> {
        self.counts.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// Requests answered, for the exposition.
pub fn write_requests(out: &mut Exposition, counts: &RequestCounts) {
    out.family(
        "jasper_relay_requests_total",
        "counter",
        "HTTP requests answered, by route and status.",
    );
    for ((route, status), n) in counts.snapshot() {
        out.sample(
            "jasper_relay_requests_total",
            &[("route", route), ("status", &status.to_string())],
            n as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_routes_are_one_series() {
        let c = RequestCounts::default();
        c.add("/send", 200);
        c.add("/wp-login.php", 404);
        c.add("/.env", 404);
        assert_eq!(c.snapshot(), vec![(("/send", 200), 1), (("other", 404), 2)]);
    }
}
