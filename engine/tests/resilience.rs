//! Several logins of one key, and a TX relay that drops what it acknowledges.

mod common;

use jasper_test::engine::befriend;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jasper_engine::EphemeralSecretStore;
use jasper_engine::MessageState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_logins_of_one_key_end_with_identical_histories() {
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(4, dir.path());
    let secrets = Arc::new(EphemeralSecretStore::default());
    let phone = engine(&dir.path().join("phone"), &relays, secrets.clone()).await;
    let laptop = engine(&dir.path().join("laptop"), &relays, secrets.clone()).await;
    let bob = engine(&dir.path().join("bob"), &relays, secrets.clone()).await;
    let me = phone.identity().create().await.unwrap();
    let same = laptop
        .identity()
        .import(&phone.identity().export().unwrap())
        .await
        .unwrap();
    assert_eq!(me.public_key, same.public_key);
    let b = bob.identity().create().await.unwrap();
    phone
        .contacts()
        .add(&b.public_key, "bob", None)
        .await
        .unwrap();
    laptop
        .contacts()
        .add(&b.public_key, "bob", None)
        .await
        .unwrap();
    bob.contacts()
        .add(&me.public_key, "me", None)
        .await
        .unwrap();

    let m1 = phone
        .messages()
        .send("bob", "from the phone")
        .await
        .unwrap();
    let m2 = bob.messages().send("me", "to both logins").await.unwrap();
    assert!(
        eventually(Duration::from_secs(15), || laptop
            .messages()
            .get(&m1.id)
            .is_ok()
            && laptop.messages().get(&m2.id).is_ok())
        .await,
        "laptop missing messages"
    );
    let m3 = laptop
        .messages()
        .send("bob", "from the laptop")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || phone
            .messages()
            .get(&m3.id)
            .is_ok())
        .await
    );
    laptop
        .messages()
        .edit(&m1.id, "from the phone, edited on the laptop")
        .await
        .unwrap();
    bob.messages().react(&m3.id, ":wave:").await.unwrap();
    phone.messages().delete(&m3.id).await.unwrap();

    let settled = |e: &jasper_engine::Engine| {
        e.messages().get(&m1.id).is_ok_and(|m| m.edited)
            && e.messages()
                .get(&m3.id)
                .is_ok_and(|m| m.deleted && m.reactions.len() == 1)
    };
    assert!(
        eventually(Duration::from_secs(20), || settled(&phone)
            && settled(&laptop))
        .await,
        "logins did not converge"
    );
    let history = |e: &jasper_engine::Engine| {
        e.conversations()
            .messages("bob", None, 100)
            .unwrap()
            .messages
            .into_iter()
            .map(|m| {
                (
                    m.id,
                    m.sender,
                    m.content,
                    m.outgoing,
                    m.edited,
                    m.deleted,
                    m.reactions,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(history(&phone), history(&laptop));
    assert_eq!(history(&phone).len(), 3);
    // Bob sees the laptop's message from the same key as the phone's.
    assert!(
        eventually(Duration::from_secs(15), || bob
            .messages()
            .get(&m3.id)
            .is_ok_and(|m| m.sender == me.public_key && m.deleted))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tx_relay_that_drops_messages_is_detected_and_routed_around() {
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(4, dir.path());
    let secrets = Arc::new(EphemeralSecretStore::default());
    // Alice knows three real relays (and learns none: private addresses are not learned):
    // her RX, her own copies' TX and carol's TX take them all.
    let mut config = common::config(&dir.path().join("alice"), &relays[..3]);
    config.allow_private_relays = false;
    let alice = jasper_engine::Engine::open(config, secrets.clone())
        .await
        .unwrap();
    let bob = engine(&dir.path().join("bob"), &relays[1..], secrets.clone()).await;
    befriend(&alice, "alice", &bob, "bob").await;
    let carol = jasper_core::PrivateKey::generate().unwrap();
    alice
        .contacts()
        .add(carol.public_key().to_text(), "carol", None)
        .await
        .unwrap();
    let to_carol = alice
        .messages()
        .send("carol", "takes the last free relay")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || alice
            .messages()
            .get(&to_carol.id)
            .is_ok_and(|m| m.state == MessageState::Visible))
        .await,
        "{:?}",
        alice.messages().get(&to_carol.id)
    );
    // The dropper is then the only relay free for bob's TX assignment.
    let dropper = dropping_relay().await;
    alice.relays().add(&dropper).await.unwrap();

    let m = alice
        .messages()
        .send("bob", "through a bad relay")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || alice
            .outbox()
            .routes(&m.id)
            .unwrap()[0]
            .1
            .as_deref()
            == Some(dropper.as_str()))
        .await
    );
    // A relay that has seen no key of alice's yet, for the re-send (strict: the others each
    // saw one of her keys already).
    alice.relays().add(&relays[3].addr).await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), || bob
            .messages()
            .get(&m.id)
            .is_ok())
        .await,
        "the message never arrived through another relay"
    );
    // The route is recorded when the new relay's acknowledgement is processed, which may come
    // after bob already fetched the copy: read it once the message is visible.
    assert!(
        eventually(Duration::from_secs(15), || alice
            .messages()
            .get(&m.id)
            .is_ok_and(|m| m.state == MessageState::Visible))
        .await
    );
    // Re-sent through a relay that had seen no other key of hers (normally the one just added;
    // under load one of her own roles may have moved there first), never the dropper.
    let route = alice.outbox().routes(&m.id).unwrap()[0].1.clone();
    assert_ne!(
        route.as_deref(),
        Some(dropper.as_str()),
        "{:?}",
        alice.relays().anonymity()
    );
    let report = alice
        .relays()
        .list()
        .unwrap()
        .into_iter()
        .find(|r| r.address == dropper)
        .unwrap();
    assert!(report.lost >= 1 && report.suspect, "{report:?}");
    // The dropper saw bob's key and nothing else; nothing was shared.
    let anonymity = alice.relays().anonymity().unwrap();
    assert!(anonymity.shared.is_empty(), "{anonymity:?}");
    assert!(anonymity.waiting.is_empty(), "{anonymity:?}");
    // Exactly once at bob, although it was sent twice.
    let copies = bob
        .conversations()
        .messages("alice", None, 10)
        .unwrap()
        .messages
        .iter()
        .filter(|x| x.id == m.id)
        .count();
    assert_eq!(copies, 1);
}

/// A `SENT` copy leaves at a random time within `sent_copy_delay`, not with the message it
/// copies: the other login gets it later than the recipient does, by up to the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_copies_leave_at_random_times_within_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(4, dir.path());
    let secrets = Arc::new(EphemeralSecretStore::default());
    let delay = Duration::from_secs(3);
    let mut config = common::config(&dir.path().join("phone"), &relays);
    config.sent_copy_delay = delay;
    let phone = jasper_engine::Engine::open(config, secrets.clone())
        .await
        .unwrap();
    let laptop = engine(&dir.path().join("laptop"), &relays, secrets.clone()).await;
    let bob = engine(&dir.path().join("bob"), &relays, secrets.clone()).await;
    phone.identity().create().await.unwrap();
    laptop
        .identity()
        .import(&phone.identity().export().unwrap())
        .await
        .unwrap();
    let b = bob.identity().create().await.unwrap();
    phone
        .contacts()
        .add(&b.public_key, "bob", None)
        .await
        .unwrap();

    let mut gaps = Vec::new();
    for i in 0..8 {
        let m = phone
            .messages()
            .send("bob", &format!("message {i}"))
            .await
            .unwrap();
        let mut at_bob = None;
        let started = std::time::Instant::now();
        loop {
            if at_bob.is_none() && bob.messages().get(&m.id).is_ok() {
                at_bob = Some(started.elapsed());
            }
            if laptop.messages().get(&m.id).is_ok() {
                let at_laptop = started.elapsed();
                gaps.push(at_laptop.saturating_sub(at_bob.unwrap_or(at_laptop)));
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the SENT copy of message {i} never reached the other login"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Eight uniform delays in [0, 3 s]: all under 0.5 s has probability (1/6)^8.
    assert!(
        gaps.iter().any(|g| *g > Duration::from_millis(500)),
        "copies left with their messages: {gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| *g < delay + Duration::from_secs(3)),
        "a copy waited longer than the delay allows: {gaps:?}"
    );
}

/// A flood of well-formed junk for bob's key (each packet passes the cheap checks and costs a
/// private-key operation before it fails): bob opens it at his budget's pace and no faster,
/// each junk packet counts against the relay that served it, and alice's message behind the
/// junk still arrives (nothing is lost to the budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_flood_is_opened_at_the_budgets_pace_and_the_real_message_still_arrives() {
    use base64::Engine as _;
    const JUNK: usize = 30;
    let budget = jasper_engine::messages::budget::OpenBudgetConfig {
        per_minute: 120,
        burst: 5,
    };
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(4, dir.path());
    let secrets = Arc::new(EphemeralSecretStore::default());
    let alice = engine(&dir.path().join("alice"), &relays, secrets.clone()).await;
    let mut bob_config = config(&dir.path().join("bob"), &relays);
    bob_config.open_budget = budget;
    let bob = jasper_engine::Engine::open(bob_config, secrets.clone())
        .await
        .unwrap();
    befriend(&alice, "alice", &bob, "bob").await;
    let bob_key = bob.identity().info().unwrap().public_key;

    // Junk of the right form: version byte 1, sizes above the minimum, random content.
    let b64 = base64::engine::general_purpose::STANDARD;
    let http = reqwest::Client::new();
    // Bob may start opening junk as soon as the first arrives.
    let started = std::time::Instant::now();
    for i in 0..JUNK {
        let mut message = vec![1u8];
        message.extend((0..1200).map(|j| ((i * 31 + j * 7) % 251) as u8));
        let message = b64.encode(&message);
        let mut signature = vec![1u8];
        signature.extend([i as u8; 40]);
        let packet = jasper_core::protocol::Packet {
            recipient: bob_key.clone(),
            hash: jasper_core::MessageHash::of_message(&message).to_string(),
            message,
            signature: b64.encode(&signature),
            expires_at: None,
        };
        let r = http
            .post(format!("http://{}/send", relays[i % relays.len()].addr))
            .json(&packet)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let sent = alice
        .messages()
        .send("bob", "behind the junk")
        .await
        .unwrap();
    let forged = || {
        bob.relays()
            .list()
            .unwrap()
            .iter()
            .map(|r| r.forged)
            .sum::<u64>()
    };
    assert!(
        eventually(Duration::from_secs(60), || bob
            .conversations()
            .messages("alice", None, 50)
            .is_ok_and(|p| p.messages.iter().any(|m| m.id == sent.id)))
        .await,
        "alice's message never arrived behind the junk ({} junk opened)",
        forged()
    );
    assert!(
        eventually(Duration::from_secs(60), || forged() == JUNK as u64).await,
        "every junk packet counted once against its relay: {}",
        forged()
    );
    let took = started.elapsed();
    // The budget: at most `burst` at once, then two a second; opening the 30 junk packets
    // (each fetched from a relay) cannot have been faster than (30 - 5) / 2 s. (Alice's
    // message may come by a relay or by a direct session, which the budget does not meter.)
    let floor = Duration::from_secs_f64((JUNK - budget.burst as usize) as f64 / 2.0);
    assert!(
        took >= floor,
        "{JUNK} junk packets opened in {took:?}, faster than the budget's {floor:?}"
    );
}
