//! Transparent mode, measured in one run through release relays on loopback and a real STUN
//! server (coturn): message latency over the WebRTC data channel against the relay path with
//! a 1 s poll interval (the same two engines, the session closed for the second part), the
//! session's setup time, and call setup from `start_call` to the callee's first audio frame.
//!
//!   cargo build --release -p jasper-relay && cargo bench -p jasper-engine --bench transparent
//!
//! Options after `--`: `--messages N` (default 200 direct, at most 60 through the relays).

use jasper_test::engine::befriend;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jasper_engine::{CallState, Engine, EngineConfig, EphemeralSecretStore, TransparentState};
use jasper_test::stun::StunServer;

mod common;
use common::*;

fn config(dir: &Path, relays: &[Relay], stun: &StunServer) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.relays = relays.iter().map(|r| r.1.clone()).collect();
    c.allow_private_relays = true;
    c.notifications = false;
    // The relay path the issue compares against: plain polling every second.
    c.poll_interval = Duration::from_secs(1);
    c.long_poll = Duration::ZERO;
    c.transparent.stun_servers = vec![stun.url.clone()];
    c.transparent.bind_addrs = vec!["127.0.0.1:0".into()];
    c
}

fn row(name: &str, sorted: &[Duration]) {
    println!(
        "| {name} | {} | {} | {} | {} |",
        sorted.len(),
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.99)),
        ms(*sorted.last().unwrap())
    );
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `start_call` until the callee holds the first audio frame; the callee accepts as soon as
/// the call rings, and the caller sends a 20 ms frame every 20 ms once it is answered.
async fn call_setup(alice: &Engine, bob: &Engine) -> Duration {
    let started = Instant::now();
    let call = alice.calls().start("bob").await.unwrap();
    until("the call to ring", || {
        bob.calls()
            .list()
            .iter()
            .any(|c| c.id == call.id && c.state == CallState::Ringing)
    })
    .await;
    bob.calls().accept(&call.id).await.unwrap();
    let sender = {
        let alice = alice.clone();
        let id = call.id.clone();
        tokio::spawn(async move {
            while alice
                .calls()
                .get(&id)
                .is_ok_and(|c| c.state != CallState::Active)
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while alice
                .calls()
                .send_audio(&id, vec![0xf8; 80], 20_000)
                .await
                .is_ok()
            {
                tick.tick().await;
            }
        })
    };
    let first = bob
        .calls()
        .next_audio(&call.id, Duration::from_secs(30))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(first.is_some(), "no audio arrived");
    alice.calls().hang_up(&call.id).await.unwrap();
    let _ = sender.await;
    until("the callee to see the hang-up", || {
        bob.calls()
            .get(&call.id)
            .is_ok_and(|c| c.state == CallState::Ended)
    })
    .await;
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = messages_arg(200);
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(3, dir.path());
    let stun = StunServer::start(dir.path());
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "jasper-engine transparent bench: 2 release relays and coturn on loopback, 2 in-process engines polling every 1 s\n"
    );

    let secrets = Arc::new(EphemeralSecretStore::default());
    let alice = Engine::open(
        config(&dir.path().join("alice"), &relays, &stun),
        secrets.clone(),
    )
    .await
    .unwrap();
    let bob = Engine::open(config(&dir.path().join("bob"), &relays, &stun), secrets)
        .await
        .unwrap();
    befriend(&alice, "alice", &bob, "bob").await;
    let mut events = Box::pin(bob.events().subscribe(0));

    // Session setup: the second consent until both data channels are open (two relay hops at
    // 1 s polling for consent/offer/answer dominate it).
    alice.transparent().set("bob", true).await.unwrap();
    until("bob to hear alice's consent", || {
        bob.transparent().status("alice").unwrap().peer_enabled
    })
    .await;
    let started = Instant::now();
    bob.transparent().set("alice", true).await.unwrap();
    until("the session", || {
        alice.transparent().status("bob").unwrap().state == TransparentState::Connected
            && bob.transparent().status("alice").unwrap().state == TransparentState::Connected
    })
    .await;
    let setup = started.elapsed();

    let warm = alice.messages().send("bob", "warm-up").await.unwrap();
    wait_for(&mut events, &warm.id).await;
    let direct = deliveries(&alice, "bob", &mut events, n, false).await;
    let warm_call: Vec<Duration> = {
        let mut v = Vec::new();
        for _ in 0..10 {
            v.push(call_setup(&alice, &bob).await);
        }
        v.sort();
        v
    };

    // The same engines with the session closed: the relay path, 1 s polling.
    alice.transparent().disconnect("bob").await.unwrap();
    until("bob to see the session closed", || {
        bob.transparent().status("alice").unwrap().state == TransparentState::Idle
    })
    .await;
    let relayed = deliveries(&alice, "bob", &mut events, n.min(60), true).await;
    assert_eq!(
        alice.transparent().status("bob").unwrap().state,
        TransparentState::Idle
    );

    // A call with no session up: start_call opens it first (signaling through the relays).
    let cold = call_setup(&alice, &bob).await;

    println!("| message delivery, send -> recipient event | n | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    row("WebRTC data channel (transparent mode)", &direct);
    row(
        "relays, 1 s polling (same engines, session closed)",
        &relayed,
    );
    println!(
        "\nmedian speed-up: {:.0}x",
        percentile(&relayed, 0.5).as_secs_f64() / percentile(&direct, 0.5).as_secs_f64()
    );
    println!("\n| setup | n | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    row(
        "call: `start_call` -> callee's first audio frame, session up",
        &warm_call,
    );
    row(
        "call: same, no session up (opened through the relays first)",
        &[cold],
    );
    row(
        "session: second consent -> both data channels open",
        &[setup],
    );
    alice.shutdown();
    bob.shutdown();
}
