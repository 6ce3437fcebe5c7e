//! `GET /metrics` scraped from a real relay in a two-relay mesh and read by a real Prometheus
//! text-format parser (`prometheus-parse`): every family typed, and the figures are the ones
//! the traffic made (requests by route and status, refusals, stored packets and bytes, the
//! store's latency histogram, the peer's score and the mesh's bytes).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Relay, StartRelay, eventually, packet, recipients};
use prometheus_parse::{Scrape, Value};

async fn scrape(relay: &Relay) -> Scrape {
    let resp = reqwest::get(relay.url("/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let text = resp.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition")
}

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(_) | Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text_with_the_figures_the_traffic_made() {
    let dir = tempfile::tempdir().unwrap();
    let b = Relay::start(&dir.path().join("b"), &[]);
    let config = dir.path().join("a.toml");
    std::fs::write(&config, "[admission]\nsend_per_sec = 1\nsend_burst = 5\n").unwrap();
    let a = Relay::start(
        &dir.path().join("a"),
        &["--peer", &b.addr(), "--config", config.to_str().unwrap()],
    );
    let keys = recipients();
    // From 127.0.0.2, not a peer's address: the client budget (5 at once).
    let http = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    // All at once: a refusal is held a second, in which the budget would refill by one.
    let sends = (0..7).map(|i| {
        let p = packet(&keys[i % 3], &format!("metered {i}"));
        let req = http.post(a.url("/send")).json(&p);
        async move { req.send().await.unwrap().status().as_u16() }
    });
    let codes: Vec<u16> = futures::future::join_all(sends).await;
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 5, "{codes:?}");
    assert_eq!(
        http.get(a.url("/wp-login.php"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The broadcast reaches b.
    assert!(
        eventually(Duration::from_secs(10), || async {
            reqwest::get(b.url("/status"))
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()["stored_messages"]
                == 5
        })
        .await
    );

    let s = scrape(&a).await;
    for family in [
        "jasper_relay_requests_total",
        "jasper_relay_refusals_total",
        "jasper_relay_stored_packets",
        "jasper_relay_stored_bytes",
        "jasper_relay_store_put_seconds",
        "jasper_relay_peer_score",
        "jasper_relay_mesh_bytes_total",
    ] {
        assert!(s.docs.contains_key(family), "no HELP for {family}");
    }
    let sent = value(
        &s,
        "jasper_relay_requests_total",
        &[("route", "/send"), ("status", "200")],
    );
    assert_eq!(sent, Some(5.0));
    let limited = value(
        &s,
        "jasper_relay_requests_total",
        &[("route", "/send"), ("status", "429")],
    );
    assert_eq!(limited, Some(2.0));
    assert_eq!(
        value(
            &s,
            "jasper_relay_requests_total",
            &[("route", "other"), ("status", "404")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "jasper_relay_refusals_total",
            &[("reason", "rate_send")]
        ),
        Some(2.0)
    );
    assert_eq!(value(&s, "jasper_relay_stored_packets", &[]), Some(5.0));
    assert!(value(&s, "jasper_relay_stored_bytes", &[]).unwrap() > 5.0 * 700.0);
    let put = s
        .samples
        .iter()
        .find(|x| x.metric == "jasper_relay_store_put_seconds")
        .expect("the store's histogram");
    let Value::Histogram(buckets) = &put.value else {
        panic!("not a histogram: {:?}", put.value)
    };
    assert_eq!(buckets.last().unwrap().count, 5.0, "{buckets:?}");
    assert_eq!(
        value(&s, "jasper_relay_peer_score", &[("peer", &b.addr())]),
        Some(100.0)
    );
    let pushed = value(
        &s,
        "jasper_relay_mesh_bytes_total",
        &[("route", "/send"), ("direction", "sent")],
    )
    .unwrap();
    assert!(pushed > 5.0 * 700.0, "{pushed}");
}
