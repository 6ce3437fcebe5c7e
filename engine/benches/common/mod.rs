//! What the engine's benches share: release relays on loopback (the kit's), percentiles,
//! waiting for a message's arrival event.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jasper_engine::{Engine, EventKind};

/// A `jasper-relay` process of the kit (killed on drop) and its address.
pub struct Relay(pub jasper_test::relay::Relay, pub String);

/// `n` relays in a full mesh, with the relay's own sync intervals (what a deployment runs) and
/// only errors logged.
pub fn mesh(n: usize, dir: &Path) -> Vec<Relay> {
    jasper_test::relay::mesh_with(n, dir, |b| b.relay_default_sync().log_level("error"))
        .into_iter()
        .map(|relay| {
            let addr = relay.addr();
            Relay(relay, addr)
        })
        .collect()
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Reads events until the `MessageReceived` of `id`.
pub async fn wait_for(
    events: &mut (impl futures::Stream<Item = jasper_engine::Result<jasper_engine::Event>> + Unpin),
    id: &str,
) {
    while let Some(e) = events.next().await {
        if let EventKind::MessageReceived { message } = e.unwrap().kind
            && message.id == id
        {
            return;
        }
    }
}

/// Sends `n` messages to `to` one after the other, each once the previous arrived; the
/// sorted latencies from `send` to the recipient's event. `spread`: start sends at varying
/// points of a polling period, so polling is measured fairly rather than phase-locked.
pub async fn deliveries(
    sender: &Engine,
    to: &str,
    events: &mut (impl futures::Stream<Item = jasper_engine::Result<jasper_engine::Event>> + Unpin),
    n: usize,
    spread: bool,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if spread {
            tokio::time::sleep(Duration::from_millis(137 * (i as u64 % 7))).await;
        }
        let started = Instant::now();
        let m = sender
            .messages()
            .send(to, &format!("message {i}"))
            .await
            .unwrap();
        wait_for(events, &m.id).await;
        out.push(started.elapsed());
    }
    out.sort();
    out
}

/// `--messages N` from the bench's arguments (after `--`), else `default`.
pub fn messages_arg(default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--messages")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// POSTs a JSON body to a relay and returns the answer's body (benches only: panics on error).
pub async fn post_json(http: &reqwest::Client, url: String, body: Vec<u8>) -> Vec<u8> {
    http.post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}
