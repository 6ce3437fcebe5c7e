//! Transparent mode between two engines in this process: real relays for signaling, a real
//! STUN server (coturn) on loopback, real WebRTC peer connections.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use jasper_engine::{CallState, Engine, EphemeralSecretStore, MessageState, TransparentState};

async fn pair(
    dir: &std::path::Path,
    relays: &[RelayProc],
    stun: &StunServer,
) -> (Engine, Engine, String, String) {
    let secrets = Arc::new(EphemeralSecretStore::default());
    let mut engines = Vec::new();
    for name in ["alice", "bob"] {
        let mut c = config(&dir.join(name), relays);
        c.transparent.stun_servers = vec![stun.url.clone()];
        c.transparent.bind_addrs = vec!["127.0.0.1:0".into()];
        c.transparent.connect_timeout = Duration::from_secs(10);
        // Plain 1 s polling: signals take up to a second through the relays, which is what
        // lets a closing channel outrun its `bye` (see the teardown below).
        c.long_poll = Duration::ZERO;
        c.poll_interval = Duration::from_secs(1);
        engines.push(
            jasper_engine::Engine::open(c, secrets.clone())
                .await
                .unwrap(),
        );
    }
    let bob = engines.pop().unwrap();
    let alice = engines.pop().unwrap();
    let a = alice.identity().create().await.unwrap().public_key;
    let b = bob.identity().create().await.unwrap().public_key;
    alice.contacts().add(&b, "bob", None).await.unwrap();
    bob.contacts().add(&a, "alice", None).await.unwrap();
    (alice, bob, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_session_carries_messages_and_a_call_then_falls_back_to_relays() {
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(3, dir.path());
    let stun = StunServer::start(dir.path());
    let probes = stun.bindings();
    let (alice, bob, _a, _b) = pair(dir.path(), &relays, &stun).await;

    assert_eq!(
        alice.transparent().set("bob", true).await.unwrap().state,
        TransparentState::WaitingForPeer
    );
    bob.transparent().set("alice", true).await.unwrap();
    let up = eventually(Duration::from_secs(20), || {
        alice.transparent().status("bob").unwrap().state == TransparentState::Connected
            && bob.transparent().status("alice").unwrap().state == TransparentState::Connected
    })
    .await;
    assert!(
        up,
        "no session: alice {:?}, bob {:?}",
        alice.transparent().status("bob"),
        bob.transparent().status("alice")
    );
    assert!(stun.bindings() > probes, "the STUN server was never asked");

    let sent = alice
        .messages()
        .send("bob", "over the data channel")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || bob
            .conversations()
            .messages("alice", None, 10)
            .is_ok_and(|p| p.messages.iter().any(|m| m.id == sent.id)))
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || alice
            .messages()
            .get(&sent.id)
            .is_ok_and(|m| m.state == MessageState::Visible))
        .await
    );
    let routes = alice.outbox().routes(&sent.id).unwrap();
    assert!(
        routes.iter().any(|(_, r)| r.as_deref() == Some("webrtc")),
        "{routes:?}"
    );
    assert_eq!(
        bob.transparent().status("alice").unwrap().direct_received,
        1
    );

    // A call with audio.
    let call = alice.calls().start("bob").await.unwrap();
    assert_eq!(call.state, CallState::Ringing);
    assert!(
        eventually(Duration::from_secs(5), || bob
            .calls()
            .list()
            .iter()
            .any(|c| c.id == call.id))
        .await
    );
    bob.calls().accept(&call.id).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || alice
            .calls()
            .get(&call.id)
            .is_ok_and(|c| c.state == CallState::Active))
        .await
    );
    for i in 0..50u8 {
        alice
            .calls()
            .send_audio(&call.id, vec![i; 40], 20_000)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut got = Vec::new();
    while got.len() < 50 {
        match bob
            .calls()
            .next_audio(&call.id, Duration::from_secs(5))
            .await
            .unwrap()
        {
            Some(f) => got.push(f),
            None => break,
        }
    }
    assert_eq!(got.len(), 50);
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f.data, vec![i as u8; 40]);
    }
    assert!(got.windows(2).all(|w| w[1].sequence == w[0].sequence + 1));
    // And back: the answerer's frames reach the offerer.
    for i in 0..10u8 {
        bob.calls()
            .send_audio(&call.id, vec![i; 30], 20_000)
            .await
            .unwrap();
    }
    let mut back = Vec::new();
    while back.len() < 10 {
        match alice
            .calls()
            .next_audio(&call.id, Duration::from_secs(5))
            .await
            .unwrap()
        {
            Some(f) => back.push(f.data),
            None => break,
        }
    }
    assert_eq!(back, (0..10u8).map(|i| vec![i; 30]).collect::<Vec<_>>());
    alice.calls().hang_up(&call.id).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || bob
            .calls()
            .get(&call.id)
            .is_ok_and(|c| c.state == CallState::Ended
                && c.end_reason.as_deref() == Some("remote_hung_up")))
        .await
    );

    // Torn down on purpose, by the answering side: the offerer sees its channel close before
    // the `bye` crosses the relays, and its automatic reconnect must not undo the close.
    let alice_offers =
        alice.identity().info().unwrap().fingerprint < bob.identity().info().unwrap().fingerprint;
    let (closer, contact) = if alice_offers {
        (&bob, "alice")
    } else {
        (&alice, "bob")
    };
    closer.transparent().disconnect(contact).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            alice.transparent().status("bob").unwrap().state == TransparentState::Idle
                && bob.transparent().status("alice").unwrap().state == TransparentState::Idle
        })
        .await
    );
    // Past the first reconnect delay (4 s): still closed on both sides.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        alice.transparent().status("bob").unwrap().state,
        TransparentState::Idle
    );
    assert_eq!(
        bob.transparent().status("alice").unwrap().state,
        TransparentState::Idle
    );
    let later = alice
        .messages()
        .send("bob", "through the relays")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || bob
            .conversations()
            .messages("alice", None, 10)
            .is_ok_and(|p| p.messages.iter().any(|m| m.id == later.id)))
        .await
    );
    let routes = alice.outbox().routes(&later.id).unwrap();
    assert!(
        routes.iter().all(|(_, r)| r.as_deref() != Some("webrtc")),
        "{routes:?}"
    );
    alice.shutdown();
    bob.shutdown();
}
