//! One conformance suite, run against both storage backends: the embedded store in a temp
//! directory and Redis (a real `redis-server`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Redis, recipients};
use jasper_core::{MessageHash, PublicKey};
use jasper_relay::store::embedded::EmbeddedStore;
use jasper_relay::store::redis::RedisStore;
use jasper_relay::store::{MessageStore, NewPacket, PutOutcome, unix_now};

const RETENTION: Duration = Duration::from_secs(3600);

fn new_packet(key_index: usize, text: &str, ttl: u64) -> NewPacket {
    let p = common::packet(&recipients()[key_index], text);
    NewPacket {
        recipient_fp: PublicKey::from_text(&p.recipient).unwrap().fingerprint(),
        recipient: p.recipient,
        hash: MessageHash::parse(&p.hash, "hash").unwrap(),
        message: p.message,
        signature: p.signature,
        expires_at: unix_now() + ttl,
    }
}

fn fp(key_index: usize) -> [u8; 32] {
    PublicKey::from_text(&recipients()[key_index])
        .unwrap()
        .fingerprint()
}

async fn suite(store: Arc<dyn MessageStore>) {
    // Store, duplicate, conflict.
    let a = new_packet(0, "a", 600);
    let b = new_packet(0, "b", 600);
    let c = new_packet(1, "c", 600);
    let Ok(PutOutcome::Stored { seq: sa }) = store.put(a.clone()).await else {
        panic!("a not stored")
    };
    let Ok(PutOutcome::Stored { seq: sb }) = store.put(b.clone()).await else {
        panic!("b not stored")
    };
    assert!(sb > sa, "arrival order is increasing");
    assert!(matches!(
        store.put(c.clone()).await,
        Ok(PutOutcome::Stored { .. })
    ));
    assert_eq!(store.put(a.clone()).await.unwrap(), PutOutcome::Duplicate);
    let mut other = a.clone();
    other.signature = "b3RoZXI=".into();
    assert_eq!(store.put(other).await.unwrap(), PutOutcome::Conflict);
    assert_eq!(store.count().await.unwrap(), 3);

    // By recipient: everything, newest-N, and after a cursor.
    let all = store.by_recipient(fp(0), None, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|p| p.hash).collect::<Vec<_>>(),
        vec![a.hash, b.hash]
    );
    assert_eq!(all[0].message, a.message);
    assert_eq!(all[0].signature, a.signature);
    assert_eq!(all[0].expires_at, a.expires_at);
    let newest = store.by_recipient(fp(0), None, 1).await.unwrap();
    assert_eq!(
        newest.iter().map(|p| p.hash).collect::<Vec<_>>(),
        vec![b.hash]
    );
    let after = store.by_recipient(fp(0), Some(sa), 100).await.unwrap();
    assert_eq!(
        after.iter().map(|p| p.hash).collect::<Vec<_>>(),
        vec![b.hash]
    );
    assert!(
        store
            .by_recipient(fp(2), None, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // By hashes, aligned, None where unknown.
    let nope = MessageHash::of_message("nope");
    let got = store.get(vec![c.hash, nope, a.hash]).await.unwrap();
    assert_eq!(got[0].as_ref().unwrap().recipient, c.recipient);
    assert!(got[1].is_none());
    assert_eq!(got[2].as_ref().unwrap().hash, a.hash);

    // Sync helpers.
    let mut live = store.live_hashes().await.unwrap();
    live.sort();
    let mut expected = vec![a.hash, b.hash, c.hash];
    expected.sort();
    assert_eq!(live, expected);
    assert_eq!(store.unknown(vec![a.hash, nope]).await.unwrap(), vec![nope]);

    // Expiry: gone from every read, refused when offered again, never "unknown" to sync.
    let short = new_packet(2, "short", 1);
    assert!(matches!(
        store.put(short.clone()).await,
        Ok(PutOutcome::Stored { .. })
    ));
    assert_eq!(
        store.get(vec![short.hash]).await.unwrap()[0]
            .as_ref()
            .unwrap()
            .hash,
        short.hash
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(store.get(vec![short.hash]).await.unwrap()[0].is_none());
    assert!(
        store
            .by_recipient(fp(2), None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.live_hashes().await.unwrap().contains(&short.hash));
    for _ in 0..2 {
        store.purge_expired().await.unwrap();
        assert_eq!(store.put(short.clone()).await.unwrap(), PutOutcome::Expired);
        assert!(
            store.unknown(vec![short.hash]).await.unwrap().is_empty(),
            "tombstone forgotten"
        );
    }
    let mut stale = new_packet(2, "stale", 0);
    stale.expires_at = unix_now() - 1;
    assert_eq!(store.put(stale).await.unwrap(), PutOutcome::Expired);
    assert_eq!(store.count().await.unwrap(), 3);
}

/// Concurrent puts of the same new packet: exactly one is stored.
async fn racing_puts(store: Arc<dyn MessageStore>) {
    let p = new_packet(1, "race", 600);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (s, p) = (store.clone(), p.clone());
        tasks.push(tokio::spawn(async move { s.put(p).await.unwrap() }));
    }
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap() {
            PutOutcome::Stored { .. } => stored += 1,
            PutOutcome::Duplicate => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn embedded_store_conforms_and_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn MessageStore> =
        Arc::new(EmbeddedStore::open(dir.path(), RETENTION).unwrap());
    suite(store.clone()).await;
    racing_puts(store.clone()).await;
    store.close().await.unwrap();
    drop(store);
    let reopened = EmbeddedStore::open(dir.path(), RETENTION).unwrap();
    assert_eq!(reopened.count().await.unwrap(), 4);
    assert_eq!(
        reopened.by_recipient(fp(0), None, 100).await.unwrap().len(),
        2
    );
    // The arrival counter continues after a reopen instead of reusing sequence numbers.
    let Ok(PutOutcome::Stored { seq }) = reopened.put(new_packet(0, "after", 600)).await else {
        panic!()
    };
    let all = reopened.by_recipient(fp(0), None, 100).await.unwrap();
    assert_eq!(all.last().unwrap().seq, seq);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[tokio::test]
async fn redis_store_conforms_and_keeps_everything_across_reconnect() {
    let redis = Redis::start();
    let store: Arc<dyn MessageStore> =
        Arc::new(RedisStore::open(&redis.url(), "t1:", 3600).await.unwrap());
    suite(store.clone()).await;
    racing_puts(store.clone()).await;
    drop(store);
    let again = RedisStore::open(&redis.url(), "t1:", 3600).await.unwrap();
    assert_eq!(again.count().await.unwrap(), 4);
    // Another prefix on the same server is another store.
    let other = RedisStore::open(&redis.url(), "t2:", 3600).await.unwrap();
    assert_eq!(other.count().await.unwrap(), 0);
}

/// Tombstones are kept for the retention period (3 s here) after expiry, then forgotten.
async fn tombstones_are_forgotten_after_retention(store: Arc<dyn MessageStore>) {
    let p = new_packet(0, "short tombstone", 1);
    assert!(matches!(
        store.put(p.clone()).await,
        Ok(PutOutcome::Stored { .. })
    ));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    store.purge_expired().await.unwrap();
    assert_eq!(store.put(p.clone()).await.unwrap(), PutOutcome::Expired);
    assert!(store.unknown(vec![p.hash]).await.unwrap().is_empty());
    // expires_at + 3 s retention has passed (whole seconds: wait past the boundary).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    store.purge_expired().await.unwrap();
    assert_eq!(store.unknown(vec![p.hash]).await.unwrap(), vec![p.hash]);
}

#[tokio::test]
async fn both_backends_forget_tombstones_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let embedded: Arc<dyn MessageStore> =
        Arc::new(EmbeddedStore::open(dir.path(), Duration::from_secs(3)).unwrap());
    let redis = Redis::start();
    let with_redis: Arc<dyn MessageStore> =
        Arc::new(RedisStore::open(&redis.url(), "t3:", 3).await.unwrap());
    tokio::join!(
        tombstones_are_forgotten_after_retention(embedded),
        tombstones_are_forgotten_after_retention(with_redis)
    );
}
