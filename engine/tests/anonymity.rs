//! Relay roles under `strict` and `relaxed` anonymity, and the delivery check where no relay
//! can confirm privately: real relay processes, engines in this process.

mod common;

use jasper_test::engine::befriend;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jasper_engine::{AnonymityMode, EphemeralSecretStore, MessageState, RelayRoleKind};

/// Alice with `known` relays of the mesh and no learning of others; bob on the whole mesh.
async fn pair(
    dir: &std::path::Path,
    relays: &[RelayProc],
    known: usize,
    mode: AnonymityMode,
) -> (jasper_engine::Engine, jasper_engine::Engine, String) {
    let secrets = Arc::new(EphemeralSecretStore::default());
    let mut config = common::config(&dir.join("alice"), &relays[..known]);
    config.allow_private_relays = false;
    config.anonymity = mode;
    let alice = jasper_engine::Engine::open(config, secrets.clone())
        .await
        .unwrap();
    let bob = engine(&dir.join("bob"), relays, secrets).await;
    let (_, b) = befriend(&alice, "alice", &bob, "bob").await;
    (alice, bob, b.public_key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_waits_for_a_relay_of_its_own_and_then_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(3, dir.path());
    // Two relays for three roles (RX, own copies, bob).
    let (alice, bob, bob_key) = pair(dir.path(), &relays, 2, AnonymityMode::Strict).await;
    let m = alice
        .messages()
        .send("bob", "needs a third relay")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || alice
            .messages()
            .get(&m.id)
            .is_ok_and(|m| m.state == MessageState::Waiting))
        .await,
        "{:?}",
        alice.messages().get(&m.id)
    );
    let waiting = alice.messages().get(&m.id).unwrap();
    let why = waiting.failure.unwrap_or_default();
    assert!(why.contains("3 relays needed, 2 known"), "{why}");
    let report = alice.relays().anonymity().unwrap();
    assert_eq!(report.mode, AnonymityMode::Strict);
    assert_eq!((report.relays_needed, report.relays_known), (3, 2));
    assert!(report.shared.is_empty(), "{report:?}");
    assert!(
        report
            .waiting
            .iter()
            .any(|r| r.kind == RelayRoleKind::TxContact && r.key == bob_key),
        "{report:?}"
    );
    assert!(report.summary.contains("waiting"), "{}", report.summary);
    // Nothing reached the mesh while it waited.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(bob.messages().get(&m.id).is_err());

    alice.relays().add(&relays[2].addr).await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || bob
            .messages()
            .get(&m.id)
            .is_ok())
        .await,
        "the waiting message did not go out once a third relay was known"
    );
    assert!(
        eventually(Duration::from_secs(15), || alice
            .messages()
            .get(&m.id)
            .is_ok_and(|m| m.state == MessageState::Visible))
        .await,
        "{:?}",
        alice.messages().get(&m.id)
    );
    let report = alice.relays().anonymity().unwrap();
    assert!(
        report.waiting.is_empty() && report.shared.is_empty(),
        "{report:?}"
    );
    // Three roles on three distinct relays.
    let mut used: Vec<String> = report
        .roles
        .iter()
        .filter_map(|r| r.relay.clone())
        .collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 3, "{report:?}");
    assert!(report.summary.starts_with("private"), "{}", report.summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_shares_and_reports_what_the_shared_relay_links() {
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(2, dir.path());
    let (alice, bob, bob_key) = pair(dir.path(), &relays, 2, AnonymityMode::Relaxed).await;
    let m = alice
        .messages()
        .send("bob", "through a shared relay")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || bob
            .messages()
            .get(&m.id)
            .is_ok())
        .await,
        "relaxed mode did not send"
    );
    let report = alice.relays().anonymity().unwrap();
    assert_eq!(report.mode, AnonymityMode::Relaxed);
    assert!(report.waiting.is_empty(), "{report:?}");
    // Two relays, three roles: exactly one relay holds two keys, ours and bob's.
    assert_eq!(report.shared.len(), 1, "{report:?}");
    let keys: Vec<&str> = report.shared[0]
        .roles
        .iter()
        .map(|r| r.key.as_str())
        .collect();
    let own = alice.identity().info().unwrap().public_key;
    assert!(
        keys.contains(&own.as_str()) && keys.contains(&bob_key.as_str()),
        "{report:?}"
    );
    assert!(report.summary.contains("bob's key"), "{}", report.summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_private_witness_a_message_ends_unconfirmed_not_sent_forever() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = Arc::new(EphemeralSecretStore::default());
    // Relays that accept everything, spread nothing and offer no recent-hash feed.
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(dropping_relay().await);
    }
    let mut config = jasper_engine::EngineConfig::new(dir.path().join("alice"));
    config.relays = relays.clone();
    config.allow_private_relays = false;
    config.long_poll = Duration::ZERO;
    config.poll_interval = Duration::from_millis(500);
    config.delivery_timeout = Duration::from_secs(2);
    config.witness_interval = Duration::from_millis(300);
    config.notifications = false;
    let alice = jasper_engine::Engine::open(config, secrets).await.unwrap();
    alice.identity().create().await.unwrap();
    let bob = jasper_core::PrivateKey::generate().unwrap();
    alice
        .contacts()
        .add(bob.public_key().to_text(), "bob", None)
        .await
        .unwrap();
    let m = alice.messages().send("bob", "into the void").await.unwrap();
    assert!(
        eventually(Duration::from_secs(15), || alice
            .messages()
            .get(&m.id)
            .is_ok_and(|m| m.state == MessageState::Unconfirmed))
        .await,
        "{:?}",
        alice.messages().get(&m.id)
    );
    let why = alice
        .messages()
        .get(&m.id)
        .unwrap()
        .failure
        .unwrap_or_default();
    assert!(why.contains("sync.recent"), "{why}");
    assert_eq!(alice.relays().anonymity().unwrap().witness, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_chosen_before_any_role_is_left_once_it_carries_a_tx_role() {
    // Alice opens with no identity, so her witness is chosen before any role exists. Three
    // relays for three roles (RX, own copies, bob): unless the witness happens to become the
    // RX relay, it has to take a TX role. It must then be left for the RX relay at once, even
    // with copies in flight (a TX relay can never show its own copies: a copy it dropped would
    // never be re-sent), and the copies in flight must still turn visible on the new witness.
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(3, dir.path());
    let secrets = Arc::new(EphemeralSecretStore::default());
    let alice = engine(&dir.path().join("alice"), &relays, secrets.clone()).await;
    // Long enough for the first discovery pass and a few witness reads (every 500 ms here)
    // before alice has a key: the anonymity report, which names the witness, needs a key.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bob = engine(&dir.path().join("bob"), &relays, secrets).await;
    befriend(&alice, "alice", &bob, "bob").await;
    let mut sent = Vec::new();
    for i in 0..4 {
        let text = format!("message {i}, sent while the first witness is still read");
        sent.push(alice.messages().send("bob", &text).await.unwrap().id);
    }
    for id in &sent {
        assert!(
            eventually(Duration::from_secs(30), || alice
                .messages()
                .get(id)
                .is_ok_and(|m| m.state == MessageState::Visible))
            .await,
            "{:?} / {:?}",
            alice.messages().get(id),
            alice.relays().anonymity()
        );
    }
    // Never `unconfirmed` on the way: a witness that is also the copies' TX relay can never
    // show them (they would turn visible only after the witness changed, and a dropped one
    // would never be re-sent).
    let mut after = 0;
    while let Some(event) = alice.events().next(after, Duration::ZERO).await.unwrap() {
        after = event.seq;
        if let jasper_engine::EventKind::MessageStateChanged {
            message_id,
            state,
            failure,
            ..
        } = event.kind
        {
            assert!(
                !(sent.contains(&message_id) && state == MessageState::Unconfirmed),
                "{message_id} was unconfirmed on the way: {failure:?}"
            );
        }
    }
    let report = alice.relays().anonymity().unwrap();
    let rx = report
        .roles
        .iter()
        .find(|r| r.kind == RelayRoleKind::Rx)
        .and_then(|r| r.relay.clone());
    assert!(rx.is_some(), "{report:?}");
    assert_eq!(
        report.witness, rx,
        "the witness is not the RX relay: {report:?}"
    );
    assert!(
        report
            .roles
            .iter()
            .filter(|r| r.kind != RelayRoleKind::Rx)
            .all(|r| r.relay != report.witness),
        "the witness carries a TX role: {report:?}"
    );
}
