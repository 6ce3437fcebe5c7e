//! One conformance suite, run against both storage backends: the embedded store in a temp
//! directory and Redis (a real `redis-server`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Redis, recipients};
use jasper_core::{MessageHash, PublicKey};
use jasper_relay::store::embedded::EmbeddedStore;
use jasper_relay::store::redis::RedisStore;
use jasper_relay::store::{MessageStore, NewPacket, PutOutcome, RecentHashes, unix_now};

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
    // Two seconds, not one: expiry is in whole seconds, and a one-second packet stored late
    // in a second is already expired when read back at the start of the next.
    let short = new_packet(2, "short", 2);
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
    tokio::time::sleep(Duration::from_millis(3100)).await;
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

fn stored_seq(outcome: PutOutcome) -> u64 {
    match outcome {
        PutOutcome::Stored { seq } => seq,
        other => panic!("not stored: {other:?}"),
    }
}

fn recent_pairs(r: &RecentHashes) -> Vec<(u64, MessageHash)> {
    r.hashes.clone()
}

/// `recent` (for `/sync/recent`): bootstrap, arrival order, paging with `more`, a cursor ahead
/// of the store, and expired packets left out before and after a purge. `tag` keeps packets
/// of concurrently run backends apart (they would be the same packets otherwise).
async fn recent_in_arrival_order(store: Arc<dyn MessageStore>, tag: &str) {
    let boot = store.recent(None, 10).await.unwrap();
    assert!(boot.hashes.is_empty() && !boot.more, "{boot:?}");
    let start = boot.latest_seq;

    let mut stored = Vec::new();
    for i in 0..5 {
        let p = new_packet(i % 3, &format!("{tag} recent {i}"), 600);
        let seq = stored_seq(store.put(p.clone()).await.unwrap());
        stored.push((seq, p.hash));
    }
    assert_eq!(
        store
            .put(new_packet(0, &format!("{tag} recent 0"), 600))
            .await
            .unwrap(),
        PutOutcome::Duplicate,
        "a duplicate takes no seq"
    );
    let latest = stored[4].0;
    let boot = store.recent(None, 10).await.unwrap();
    assert_eq!(
        (boot.hashes.len(), boot.latest_seq, boot.more),
        (0, latest, false),
        "a bootstrap answers only the latest seq"
    );
    let all = store.recent(Some(start), 100).await.unwrap();
    assert_eq!(recent_pairs(&all), stored);
    assert_eq!((all.latest_seq, all.more), (latest, false));
    let after_first = store.recent(Some(stored[0].0), 100).await.unwrap();
    assert_eq!(recent_pairs(&after_first), stored[1..]);

    // Paging: `more` until the last page.
    let mut since = start;
    let mut pages = Vec::new();
    loop {
        let page = store.recent(Some(since), 2).await.unwrap();
        assert!(page.hashes.len() <= 2);
        pages.extend(page.hashes.iter().copied());
        let Some(&(last, _)) = page.hashes.last() else {
            panic!("an empty page after more = true")
        };
        since = last;
        if !page.more {
            break;
        }
    }
    assert_eq!(pages, stored);
    assert_eq!(since, latest);
    let exact = store.recent(Some(stored[2].0), 2).await.unwrap();
    assert_eq!(
        (recent_pairs(&exact), exact.more),
        (stored[3..].to_vec(), false)
    );
    let nothing = store.recent(Some(latest), 10).await.unwrap();
    assert_eq!((nothing.hashes.len(), nothing.latest_seq), (0, latest));
    // A cursor ahead of the store (as after a relay lost its data): the latest seq comes back.
    let ahead = store.recent(Some(latest + 1000), 10).await.unwrap();
    assert_eq!((ahead.hashes.len(), ahead.latest_seq), (0, latest));
    assert_eq!(
        store.recent(Some(u64::MAX), 10).await.unwrap().latest_seq,
        latest
    );

    // Expiry: a short-lived packet between two live ones is left out, as is `more` for it.
    let keep1 = new_packet(0, &format!("{tag} keep 1"), 600);
    let short = new_packet(1, &format!("{tag} short"), 1);
    let keep2 = new_packet(2, &format!("{tag} keep 2"), 600);
    let short2 = new_packet(1, &format!("{tag} short 2"), 1);
    let s1 = stored_seq(store.put(keep1.clone()).await.unwrap());
    let ss = stored_seq(store.put(short.clone()).await.unwrap());
    let s2 = stored_seq(store.put(keep2.clone()).await.unwrap());
    let ss2 = stored_seq(store.put(short2.clone()).await.unwrap());
    let before = store.recent(Some(latest), 10).await.unwrap();
    assert_eq!(
        recent_pairs(&before),
        vec![
            (s1, keep1.hash),
            (ss, short.hash),
            (s2, keep2.hash),
            (ss2, short2.hash)
        ]
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for purged in [false, true] {
        if purged {
            store.purge_expired().await.unwrap();
        }
        let live = store.recent(Some(latest), 10).await.unwrap();
        assert_eq!(
            (recent_pairs(&live), live.latest_seq, live.more),
            (vec![(s1, keep1.hash), (s2, keep2.hash)], ss2, false),
            "purged: {purged}"
        );
        let one = store.recent(Some(latest), 1).await.unwrap();
        assert_eq!(
            (recent_pairs(&one), one.more),
            (vec![(s1, keep1.hash)], true)
        );
        let last = store.recent(Some(s1), 1).await.unwrap();
        assert_eq!(
            (recent_pairs(&last), last.more),
            (vec![(s2, keep2.hash)], false),
            "only an expired packet follows: no more (purged: {purged})"
        );
        let tail = store.recent(Some(s2), 10).await.unwrap();
        assert_eq!((tail.hashes.len(), tail.latest_seq), (0, ss2));
    }
}

#[tokio::test]
async fn both_backends_list_recent_hashes_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let embedded: Arc<dyn MessageStore> =
        Arc::new(EmbeddedStore::open(dir.path(), RETENTION).unwrap());
    let redis = Redis::start();
    let with_redis: Arc<dyn MessageStore> =
        Arc::new(RedisStore::open(&redis.url(), "t4:", 3600).await.unwrap());
    tokio::join!(
        recent_in_arrival_order(embedded.clone(), "embedded"),
        recent_in_arrival_order(with_redis, "redis")
    );
    embedded.close().await.unwrap();
    drop(embedded);
    // The index is kept across a reopen.
    let reopened = EmbeddedStore::open(dir.path(), RETENTION).unwrap();
    let all = reopened.recent(Some(0), 100).await.unwrap();
    assert_eq!(
        all.hashes.len(),
        7,
        "5 + the 2 live ones of the expiry step"
    );
    assert!(all.hashes.windows(2).all(|w| w[0].0 < w[1].0));
}

/// Live packets by expiry: bounds (`to` excluded), order, limit, nothing expired; and the
/// reconciliation sketch built from them page by page equals one built in one go, even when
/// pages end inside the packets of one second.
async fn live_ranges_by_expiry(store: Arc<dyn MessageStore>, tag: &str) {
    use jasper_relay::mesh::sketch::LiveSketch;
    let base = unix_now() + 1000;
    let mut all = Vec::new();
    for (i, offset) in [5u64, 0, 3, 3, 3, 3, 9, 1].into_iter().enumerate() {
        let mut p = new_packet(i % 3, &format!("{tag} range {i}"), 0);
        p.expires_at = base + offset;
        all.push((p.hash, p.expires_at));
        store.put(p).await.unwrap();
    }
    let mut gone = new_packet(0, &format!("{tag} expired"), 0);
    gone.expires_at = unix_now() - 1;
    store.put(gone).await.unwrap();
    let key = |e: &(MessageHash, u64)| (e.1, e.0);
    all.sort_by_key(key);
    let mut got = store.live_range(0, u64::MAX, usize::MAX).await.unwrap();
    assert!(
        got.windows(2).all(|w| w[0].1 <= w[1].1),
        "{tag}: soonest first"
    );
    got.sort_by_key(key);
    assert_eq!(got, all, "{tag}");
    let mid = store.live_range(base + 1, base + 5, 100).await.unwrap();
    assert_eq!(mid.len(), 5, "{tag}: {mid:?}");
    assert!(mid.iter().all(|(_, at)| (base + 1..base + 5).contains(at)));
    assert_eq!(
        store.live_range(base + 3, base + 9, 2).await.unwrap().len(),
        2
    );
    assert!(store.live_range(0, base, 100).await.unwrap().is_empty());
    let whole = LiveSketch::of(all.iter().copied());
    for page in [1, 2, 3, 100] {
        let paged = LiveSketch::load_paged(store.as_ref(), page).await.unwrap();
        assert_eq!(paged.items(), 8, "{tag}, pages of {page}");
        assert_eq!(paged.symbols(), whole.symbols(), "{tag}, pages of {page}");
    }
}

#[tokio::test]
async fn both_backends_list_live_packets_by_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let embedded: Arc<dyn MessageStore> =
        Arc::new(EmbeddedStore::open(dir.path(), RETENTION).unwrap());
    let redis = Redis::start();
    let with_redis: Arc<dyn MessageStore> =
        Arc::new(RedisStore::open(&redis.url(), "t6:", 3600).await.unwrap());
    tokio::join!(
        live_ranges_by_expiry(embedded, "embedded"),
        live_ranges_by_expiry(with_redis, "redis")
    );
}

/// Three packets stored; returns them as (seq, hash) in arrival order.
async fn three(store: &dyn MessageStore, tag: &str) -> Vec<(u64, MessageHash)> {
    let mut out = Vec::new();
    for i in 0..3 {
        let p = new_packet(i, &format!("{tag} old {i}"), 600);
        out.push((stored_seq(store.put(p.clone()).await.unwrap()), p.hash));
    }
    out
}

#[tokio::test]
async fn an_embedded_store_without_the_arrival_index_builds_it_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), RETENTION).unwrap();
    let stored = three(&store, "embedded").await;
    store.close().await.unwrap();
    drop(store);
    // Make it look like a directory written before the index existed.
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let by_seq = db
            .keyspace("by_seq", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let keys: Vec<_> = by_seq
            .iter()
            .map(|item| item.into_inner().unwrap().0)
            .collect();
        assert_eq!(keys.len(), 3);
        for k in keys {
            by_seq.remove(k).unwrap();
        }
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        meta.remove(b"by_seq_built".to_vec()).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let reopened = EmbeddedStore::open(dir.path(), RETENTION).unwrap();
    let all = reopened.recent(Some(0), 100).await.unwrap();
    assert_eq!((all.hashes, all.latest_seq), (stored.clone(), stored[2].0));
    let Ok(PutOutcome::Stored { seq }) = reopened.put(new_packet(0, "after", 600)).await else {
        panic!()
    };
    let after = reopened.recent(Some(stored[2].0), 100).await.unwrap();
    assert_eq!(
        after.hashes.iter().map(|h| h.0).collect::<Vec<_>>(),
        vec![seq]
    );
}

#[tokio::test]
async fn a_redis_store_without_the_arrival_index_builds_it_on_open() {
    let redis = Redis::start();
    let store = RedisStore::open(&redis.url(), "t5:", 3600).await.unwrap();
    let stored = three(&store, "redis").await;
    drop(store);
    // Make it look like a store written before the index existed.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let removed: u64 = redis::cmd("DEL")
        .arg("t5:arrivals")
        .arg("t5:arrivals_built")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let reopened = RedisStore::open(&redis.url(), "t5:", 3600).await.unwrap();
    let all = reopened.recent(Some(0), 100).await.unwrap();
    assert_eq!((all.hashes, all.latest_seq), (stored.clone(), stored[2].0));
}
