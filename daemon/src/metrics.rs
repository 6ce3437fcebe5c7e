//! `GET /metrics` for jasperd (opt-in, `--metrics ADDR` on loopback, behind the bearer token
//! of `--token-file`): the outbox by state, each relay's results and standing, whether an
//! identity exists, and uptime, in Prometheus text format (`jasper-metrics`). It names relays,
//! never contacts or keys; the token keeps other local users out, since a loopback port is
//! theirs to reach too.

use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jasper_engine::Engine;
use jasper_metrics::Exposition;

use crate::listener::BearerToken;

#[derive(Clone)]
struct Metrics {
    engine: Engine,
    token: BearerToken,
    started: Instant,
}

pub fn router(engine: Engine, token: BearerToken) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(Metrics {
            engine,
            token,
            started: Instant::now(),
        })
}

async fn metrics(State(m): State<Metrics>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !m.token.accepts(authorization) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid `authorization: Bearer <token>` header is required\n",
        )
            .into_response();
    }
    match render(&m.engine, m.started) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

fn render(engine: &Engine, started: Instant) -> Result<String, jasper_engine::EngineError> {
    let mut out = Exposition::default();
    out.family(
        "jasperd_outbox_copies",
        "gauge",
        "Sealed copies in the outbox, by state.",
    );
    for (state, n) in engine.outbox().counts()? {
        out.sample("jasperd_outbox_copies", &[("state", state)], n as f64);
    }
    let relays = engine.relays().list()?;
    out.family("jasperd_relays", "gauge", "Relays known and usable.")
        .sample("jasperd_relays", &[], relays.len() as f64);
    out.family(
        "jasperd_relay_requests_total",
        "counter",
        "Requests to each relay, by result.",
    );
    for r in &relays {
        let a = r.address.as_str();
        out.sample(
            "jasperd_relay_requests_total",
            &[("relay", a), ("result", "ok")],
            r.successes as f64,
        );
        out.sample(
            "jasperd_relay_requests_total",
            &[("relay", a), ("result", "failed")],
            r.failures as f64,
        );
    }
    out.family(
        "jasperd_relay_forged_total",
        "counter",
        "Packets from each relay that did not open (junk, forged or corrupted).",
    );
    for r in &relays {
        out.sample(
            "jasperd_relay_forged_total",
            &[("relay", &r.address)],
            r.forged as f64,
        );
    }
    out.family(
        "jasperd_relay_lost_total",
        "counter",
        "Sends each relay acknowledged that never showed up elsewhere.",
    );
    for r in &relays {
        out.sample(
            "jasperd_relay_lost_total",
            &[("relay", &r.address)],
            r.lost as f64,
        );
    }
    out.family(
        "jasperd_relay_suspect",
        "gauge",
        "1 while a relay is suspect.",
    );
    for r in &relays {
        out.sample(
            "jasperd_relay_suspect",
            &[("relay", &r.address)],
            f64::from(u8::from(r.suspect)),
        );
    }
    out.family(
        "jasperd_relay_latency_seconds",
        "gauge",
        "Each relay's latency as measured by jasperd (exponentially averaged).",
    );
    for r in &relays {
        if let Some(ms) = r.latency_ms {
            out.sample(
                "jasperd_relay_latency_seconds",
                &[("relay", &r.address)],
                ms / 1000.0,
            );
        }
    }
    let anonymity = engine.relays().anonymity()?;
    out.family(
        "jasperd_anonymity_roles_waiting",
        "gauge",
        "Relay roles waiting for a relay of their own (their messages wait).",
    )
    .sample(
        "jasperd_anonymity_roles_waiting",
        &[],
        anonymity.waiting.len() as f64,
    );
    out.family("jasperd_identity", "gauge", "1 once an identity exists.")
        .sample(
            "jasperd_identity",
            &[],
            f64::from(u8::from(engine.identity().info().is_ok())),
        );
    out.family(
        "jasperd_uptime_seconds",
        "gauge",
        "Seconds since jasperd started serving.",
    )
    .sample(
        "jasperd_uptime_seconds",
        &[],
        started.elapsed().as_secs() as f64,
    );
    Ok(out.finish())
}
