//! How much work packets from a relay may cost us: a token bucket of private-key operations
//! per RX relay. Everything a relay serves passes the cheap public checks of `open` first
//! (hash, recipient, sizes, envelope form: no private key); what passes them costs an RSA
//! decryption, the expensive step a flood of well-formed junk would make us repeat. With the
//! bucket empty, the rest of a fetched page waits: the RX cursor is not moved past it, so the
//! next fetch serves it again, and what was opened meanwhile is skipped as seen (no key
//! operation). So a flood is opened at the budget's pace, never faster, and nothing is lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The budget's settings (`EngineConfig::open_budget`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenBudgetConfig {
    /// Private-key operations per minute, per relay, on average...
    pub per_minute: u32,
    /// ...and at once (what a week offline piles up is opened in one go up to this).
    pub burst: u32,
}

impl Default for OpenBudgetConfig {
    fn default() -> Self {
        // An RSA-4096 decryption is about 5-10 ms on a phone: 300 a minute is at most 5 % of
        // a core, and a person's traffic never comes near it.
        Self {
            per_minute: 300,
            burst: 500,
        }
    }
}

#[derive(Default)]
pub(crate) struct OpenBudget {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl OpenBudget {
    /// Takes one operation from `relay`'s bucket, or says how long until one is there.
    pub fn take(&self, config: &OpenBudgetConfig, relay: &str) -> Result<(), Duration> {
        let per_sec = f64::from(config.per_minute.max(1)) / 60.0;
        let burst = f64::from(config.burst.max(1));
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let (tokens, at) = buckets.entry(relay.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_pace_and_each_relay_on_its_own() {
        let config = OpenBudgetConfig {
            per_minute: 60,
            burst: 3,
        };
        let b = OpenBudget::default();
        for _ in 0..3 {
            b.take(&config, "a:1").unwrap();
        }
        let wait = b.take(&config, "a:1").unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        b.take(&config, "b:1").unwrap();
    }
}
