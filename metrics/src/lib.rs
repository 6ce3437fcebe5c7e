//! Prometheus text exposition (format 0.0.4) for the relay's and jasperd's `/metrics`: a
//! family's `# HELP` and `# TYPE`, samples with escaped labels, cumulative histograms. Written
//! by hand because both programs expose a few families computed at scrape time, which needs no
//! registry; what they write is checked by a real parser (`prometheus-parse`) in their tests.
//! No I/O.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A latency histogram with fixed buckets (seconds).
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), then the overflow.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

/// From half a millisecond (a batch's fsync on a fast disk) to a second (a stalled one).
pub const STORE_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
];

impl Histogram {
    /// A histogram over `bounds` (seconds, increasing).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }
}

/// One exposition being written.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

/// A label value, escaped as the format asks (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        self
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
            let _ = writeln!(self.text, " {}", value as i64);
        } else {
            let _ = writeln!(self.text, " {value}");
        }
        self
    }

    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) -> &mut Self {
        self.family(name, "histogram", help);
        let mut cumulative = 0u64;
        for (bound, count) in h.bounds.iter().zip(&h.counts) {
            cumulative += count.load(Ordering::Relaxed);
            self.sample(
                &format!("{name}_bucket"),
                &[("le", &bound.to_string())],
                cumulative as f64,
            );
        }
        cumulative += h.counts[h.bounds.len()].load(Ordering::Relaxed);
        self.sample(
            &format!("{name}_bucket"),
            &[("le", "+Inf")],
            cumulative as f64,
        );
        let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], cumulative as f64)
    }

    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_histograms_are_cumulative() {
        let mut out = Exposition::default();
        out.family("x", "gauge", "help")
            .sample("x", &[("peer", "a\"b\\c\nd")], 1.5);
        let h = Histogram::new(STORE_BOUNDS);
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(5));
        out.histogram("h_seconds", "latency", &h);
        let text = out.finish();
        assert!(text.contains(r#"x{peer="a\"b\\c\nd"} 1.5"#), "{text}");
        assert!(
            text.contains(r#"h_seconds_bucket{le="0.0005"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"h_seconds_bucket{le="0.005"} 2"#), "{text}");
        assert!(text.contains(r#"h_seconds_bucket{le="+Inf"} 3"#), "{text}");
        assert!(text.contains("h_seconds_count 3"), "{text}");
    }
}
