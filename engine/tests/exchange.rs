//! Two and three engines exchanging messages through a real relay mesh.

mod common;

use jasper_test::engine::befriend;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jasper_engine::EphemeralSecretStore;
use jasper_engine::{EngineError, MessageState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_exchange_messages_both_ways_through_distinct_relays() {
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(4, dir.path());
    let secrets = Arc::new(EphemeralSecretStore::default());
    let alice = engine(&dir.path().join("alice"), &relays, secrets.clone()).await;
    let bob = engine(&dir.path().join("bob"), &relays, secrets.clone()).await;
    let (a, _) = befriend(&alice, "alice", &bob, "bob").await;

    let sent = alice.messages().send("bob", "hello bob").await.unwrap();
    assert_eq!(sent.state, MessageState::Queued);
    let got = eventually(Duration::from_secs(15), || {
        bob.conversations()
            .messages("alice", None, 50)
            .map(|p| {
                p.messages
                    .iter()
                    .any(|m| m.id == sent.id && m.content == "hello bob")
            })
            .unwrap_or(false)
    })
    .await;
    assert!(got, "bob never received alice's message");
    let reply = bob.messages().send("alice", "hi alice").await.unwrap();
    assert!(
        eventually(Duration::from_secs(15), || alice
            .conversations()
            .messages("bob", None, 50)
            .is_ok_and(|p| p.messages.iter().any(|m| m.id == reply.id)))
        .await,
        "alice never received the reply"
    );
    // The sender sees its message reach the mesh.
    assert!(
        eventually(Duration::from_secs(15), || alice
            .messages()
            .get(&sent.id)
            .is_ok_and(|m| m.state == MessageState::Visible))
        .await,
        "state stuck at {:?}",
        alice.messages().get(&sent.id).unwrap().state
    );
    // TX relay for bob differs from alice's RX relay.
    let routes = alice.outbox().routes(&sent.id).unwrap();
    let tx = routes[0].1.clone().unwrap();
    assert_ne!(Some(tx), alice.relays().rx().unwrap());
    let received = bob
        .conversations()
        .messages("alice", None, 50)
        .unwrap()
        .messages;
    assert_eq!(
        received.iter().find(|m| m.id == sent.id).unwrap().sender,
        a.public_key
    );

    // Errors carry their codes.
    assert_eq!(
        alice
            .messages()
            .send("carol", "x")
            .await
            .unwrap_err()
            .code(),
        "unknown_conversation"
    );
    assert!(matches!(
        alice.contacts().add("not a key", "x", None).await,
        Err(EngineError::InvalidKey(_))
    ));
    let big = "x".repeat(alice.config().max_message_bytes + 1);
    assert_eq!(
        alice.messages().send("bob", &big).await.unwrap_err().code(),
        "message_too_large"
    );
    alice.shutdown();
    bob.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_with_edit_delete_react_and_a_refused_foreign_edit() {
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(5, dir.path());
    let secrets = Arc::new(EphemeralSecretStore::default());
    let mut engines = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let e = engine(&dir.path().join(name), &relays, secrets.clone()).await;
        e.identity().create().await.unwrap();
        engines.push(e);
    }
    let keys: Vec<String> = engines
        .iter()
        .map(|e| e.identity().info().unwrap().public_key)
        .collect();
    for (i, e) in engines.iter().enumerate() {
        for (j, name) in ["alice", "bob", "carol"].iter().enumerate() {
            if i != j {
                e.contacts().add(&keys[j], name, None).await.unwrap();
            }
        }
    }
    let (alice, bob, carol) = (&engines[0], &engines[1], &engines[2]);
    let group = alice
        .groups()
        .create("trio", &["bob".into(), "carol".into()])
        .await
        .unwrap();
    for e in [bob, carol] {
        assert!(
            eventually(Duration::from_secs(15), || e
                .conversations()
                .list()
                .is_ok_and(|cs| cs.iter().any(|c| c.channel_id
                    == group.channel_id
                    && c.members.len() == 2)))
            .await,
            "group did not arrive"
        );
    }
    let m = alice.messages().send("trio", "hello group").await.unwrap();
    let routes = alice.outbox().routes(&m.id).unwrap();
    assert_eq!(routes.len(), 2);
    assert!(
        eventually(Duration::from_secs(10), || alice
            .outbox()
            .routes(&m.id)
            .unwrap()
            .iter()
            .all(|(_, r)| r.is_some()))
        .await
    );
    let routes = alice.outbox().routes(&m.id).unwrap();
    assert_ne!(
        routes[0].1, routes[1].1,
        "each copy through a different TX relay"
    );
    for e in [bob, carol] {
        assert!(
            eventually(Duration::from_secs(15), || e
                .conversations()
                .messages("trio", None, 10)
                .is_ok_and(|p| p.messages.iter().any(|x| x.id == m.id)))
            .await
        );
    }
    alice
        .messages()
        .edit(&m.id, "hello group (edited)")
        .await
        .unwrap();
    bob.messages().react(&m.id, ":thumbsup:").await.unwrap();
    // Carol tries to edit alice's message: refused locally...
    assert_eq!(
        carol
            .messages()
            .edit(&m.id, "hijacked")
            .await
            .unwrap_err()
            .code(),
        "not_author"
    );
    for e in [alice, bob, carol] {
        let ok = eventually(Duration::from_secs(15), || {
            e.messages().get(&m.id).is_ok_and(|x| {
                x.content == "hello group (edited)"
                    && x.reactions
                        .iter()
                        .any(|r| r.reaction == ":thumbsup:" && r.reactor == keys[1])
            })
        })
        .await;
        assert!(
            ok,
            "edit/react not everywhere: {:?}",
            e.messages().get(&m.id)
        );
    }
    // ...and a hand-made EDIT sealed by carol and posted to a relay is refused by every client.
    let carol_key =
        jasper_core::PrivateKey::from_pkcs8_pem(&carol.identity().export().unwrap()).unwrap();
    let forged = jasper_core::protocol::InnerMessage {
        sender: keys[2].clone(),
        channel_id: group.channel_id.clone(),
        kind: jasper_core::protocol::MessageKind::Edit,
        content: "hijacked".into(),
        id: m.id.clone(),
        timestamp: jasper_core::protocol::timestamp_now(),
    };
    let to: Vec<jasper_core::PublicKey> = [&keys[0], &keys[1]]
        .iter()
        .map(|k| jasper_core::PublicKey::from_text(k).unwrap())
        .collect();
    let http = reqwest::Client::new();
    let mut forged_hashes = Vec::new();
    for packet in jasper_core::seal(&carol_key, &to, &forged).unwrap() {
        let resp = http
            .post(format!("http://{}/send", relays[0].addr))
            .json(&packet)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        forged_hashes.push(packet.hash);
    }
    // Wait until the forged edits were fetched (a later message from carol arrives after them).
    let marker = carol
        .messages()
        .send("trio", "after the forgery")
        .await
        .unwrap();
    for e in [alice, bob] {
        assert!(
            eventually(Duration::from_secs(15), || e
                .messages()
                .get(&marker.id)
                .is_ok())
            .await
        );
        assert_eq!(
            e.messages().get(&m.id).unwrap().content,
            "hello group (edited)",
            "a non-author's edit was applied"
        );
    }
    alice.messages().delete(&m.id).await.unwrap();
    for e in [alice, bob, carol] {
        assert!(
            eventually(Duration::from_secs(15), || e
                .messages()
                .get(&m.id)
                .is_ok_and(|x| x.deleted && x.content.is_empty()))
            .await
        );
    }
    for e in &engines {
        e.shutdown();
    }
}
