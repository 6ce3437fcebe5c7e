//! A database written by an earlier schema opens with every contact, conversation, message and
//! event intact. The fixture `tests/fixtures/history-v0/` was written by the engine as it was
//! before the schema had numbered migrations (`PRAGMA user_version` 0), through real relays:
//! regenerate it only for a new baseline, with
//!   JASPER_WRITE_FIXTURE=1 cargo test -p jasper-engine --test migrations -- --ignored
//! and keep the old one's test too.

mod common;

use jasper_test::engine::befriend;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jasper_engine::store::{Db, now_ms};
use jasper_engine::{ConversationKind, EphemeralSecretStore, MessageState};
use serde_json::{Value, json};

fn fixture_dir(name: &str) -> PathBuf {
    // Read when the test runs, not baked in when it is built: a target directory shared by
    // checkouts at different paths may run a binary built in another one.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets it");
    Path::new(&manifest_dir).join("tests/fixtures").join(name)
}

/// Everything a user would miss: contacts, conversations with their messages (content, edits,
/// deletions, reactions, state), and the event log.
fn history(db: &Db) -> Value {
    let contacts: Vec<Value> = db
        .contacts()
        .unwrap()
        .into_iter()
        .map(|c| json!({ "name": c.name, "key": c.key }))
        .collect();
    let conversations: Vec<Value> = db
        .conversations()
        .unwrap()
        .into_iter()
        .map(|c| {
            let page = db.messages_page(c.id, None, 500).unwrap();
            let messages: Vec<Value> = page
                .messages
                .into_iter()
                .map(|m| {
                    json!({
                        "id": m.id, "sender": m.sender, "content": m.content,
                        "edited": m.edited, "deleted": m.deleted, "history": m.history,
                        "reactions": m.reactions.iter().map(|r| &r.reaction).collect::<Vec<_>>(),
                        "state": serde_json::to_value(&m.state).unwrap(),
                    })
                })
                .collect();
            json!({ "name": c.name, "kind": serde_json::to_value(c.kind).unwrap(),
                    "channel_id": c.channel_id, "members": c.members, "messages": messages })
        })
        .collect();
    let events: Vec<Value> = db
        .events_after(0, 100_000)
        .unwrap()
        .into_iter()
        .map(|e| json!({ "seq": e.seq, "kind": serde_json::to_value(&e.kind).unwrap()["type"] }))
        .collect();
    json!({ "contacts": contacts, "conversations": conversations, "events": events })
}

#[test]
fn a_database_from_before_numbered_migrations_keeps_all_its_history() {
    let src = fixture_dir("history-v0");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(src.join("expected.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("jasper.sqlite3"),
        dir.path().join("jasper.sqlite3"),
    )
    .unwrap();
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(history(&db), expected);
    // Every numbered migration ran, and a second open changes nothing.
    assert_eq!(db.schema_version().unwrap(), Db::SCHEMA_VERSION);
    drop(db);
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(history(&db), expected);
    // What the relays saw was recovered (the exposure backfill, migration 2).
    assert!(!db.exposures().unwrap().is_empty());
    read_state_starts_at_the_history_it_migrated(&db);
}

/// Migration 3: the history from before read state counts as read (the fixture holds
/// messages from bob, which would otherwise be unread), and what arrives after it does.
fn read_state_starts_at_the_history_it_migrated(db: &Db) {
    let conversations = db.conversations().unwrap();
    for c in &conversations {
        assert_eq!(c.unread, 0, "{}: old history counts as read", c.name);
        assert!(c.last_activity_at >= c.created_at, "{}", c.name);
    }
    let dm = conversations
        .iter()
        .find(|c| c.kind == ConversationKind::Direct && c.name == "bob")
        .expect("the DM with bob");
    let incoming = db
        .messages_page(dm.id, None, 500)
        .unwrap()
        .messages
        .iter()
        .filter(|m| !m.outgoing)
        .count();
    assert!(incoming > 0, "the fixture has a message from bob");
    // A message arriving now, with an author timestamp older than the whole history: still
    // unread (the marker is the arrival order), and it is the conversation's latest activity.
    let bob = dm.members[0].clone();
    let store = |id: &str, sender: &str, outgoing: bool, timestamp: &str| {
        db.tx(|tx| {
            let state = if outgoing {
                MessageState::Queued
            } else {
                MessageState::Received
            };
            Db::insert_message(
                tx,
                dm.id,
                id,
                sender,
                outgoing,
                "text",
                "some text",
                timestamp,
                state,
            )
            .map(|_| ())
        })
        .unwrap();
        db.read(|conn| Db::conversation(conn, dm.id))
            .unwrap()
            .unwrap()
    };
    let before = now_ms();
    let after = store("late-arrival", &bob, false, "2000-01-01T00:00:00.000Z");
    assert_eq!(after.unread, 1);
    assert!(after.last_activity_at >= before, "{after:?}");
    // Outgoing messages never count.
    let after = store("my-reply", "me", true, "2000-01-01T00:00:01.000Z");
    assert_eq!(after.unread, 1);
}

#[test]
fn a_database_from_a_newer_version_is_refused_untouched() {
    let src = fixture_dir("history-v0");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jasper.sqlite3");
    std::fs::copy(src.join("jasper.sqlite3"), &path).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", Db::SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = Db::open(dir.path())
        .err()
        .expect("a newer schema is refused");
    assert!(err.to_string().contains("newer"), "{err}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, Db::SCHEMA_VERSION + 1);
}

/// Writes the fixture with the engine of the day: alice's data directory after DMs both ways,
/// an edit, a reaction, a deletion, a group of three and a message in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the fixture; run with JASPER_WRITE_FIXTURE=1 for a new baseline"]
async fn write_fixture() {
    if std::env::var_os("JASPER_WRITE_FIXTURE").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(5, dir.path());
    let secrets = Arc::new(EphemeralSecretStore::default());
    let alice = engine(&dir.path().join("alice"), &relays, secrets.clone()).await;
    let bob = engine(&dir.path().join("bob"), &relays, secrets.clone()).await;
    befriend(&alice, "alice", &bob, "bob").await;
    let carol = jasper_core::PrivateKey::generate().unwrap();
    alice
        .contacts()
        .add(carol.public_key().to_text(), "carol", None)
        .await
        .unwrap();
    let m1 = alice
        .messages()
        .send("bob", "hello bob, with \"quotes\" and ünïcode")
        .await
        .unwrap();
    let m2 = bob.messages().send("alice", "hello alice").await.unwrap();
    let m3 = alice.messages().send("bob", "to be deleted").await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || alice
            .messages()
            .get(&m2.id)
            .is_ok()
            && bob.messages().get(&m3.id).is_ok())
        .await
    );
    alice
        .messages()
        .edit(&m1.id, "hello bob, edited")
        .await
        .unwrap();
    bob.messages().react(&m1.id, ":wave:").await.unwrap();
    alice.messages().delete(&m3.id).await.unwrap();
    alice
        .groups()
        .create("friends", &["bob".to_owned(), "carol".to_owned()])
        .await
        .unwrap();
    let g = alice
        .messages()
        .send("friends", "hello friends")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || alice
            .messages()
            .get(&m1.id)
            .is_ok_and(|m| m.reactions.len() == 1)
            && bob.messages().get(&g.id).is_ok()
            && alice
                .messages()
                .get(&g.id)
                .is_ok_and(|m| m.state == jasper_engine::MessageState::Visible))
        .await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    alice.shutdown();
    bob.shutdown();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let db_path = dir.path().join("alice/jasper.sqlite3");
    {
        let conn = rusqlite::Connection::open(&db_path).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    let out = fixture_dir("history-v0");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(&db_path, out.join("jasper.sqlite3")).unwrap();
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&db_path, copy.path().join("jasper.sqlite3")).unwrap();
    let db = Db::open(copy.path()).unwrap();
    let expected = serde_json::to_string_pretty(&history(&db)).unwrap();
    std::fs::write(out.join("expected.json"), expected + "\n").unwrap();
}
