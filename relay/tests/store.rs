//! One conformance suite, run against both storage backends: the embedded store (the log) in
//! a temp directory and Redis (a real `redis-server`); then what is the log's own: torn
//! tails, sealed segments and their index files, expiry by whole segments, the migration of a
//! fjall directory.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Redis, RedisCluster, recipients};
use jasper_core::{MessageHash, PublicKey};
use jasper_relay::store::embedded::EmbeddedStore;
use jasper_relay::store::log::{LogOptions, LogStore};
use jasper_relay::store::redis::RedisStore;
use jasper_relay::store::{MessageStore, NewPacket, PutOutcome, Quotas, RecentHashes, unix_now};

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
    let store: Arc<dyn MessageStore> = Arc::new(LogStore::open(dir.path(), RETENTION).unwrap());
    suite(store.clone()).await;
    racing_puts(store.clone()).await;
    store.close().await.unwrap();
    drop(store);
    let reopened = LogStore::open(dir.path(), RETENTION).unwrap();
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

/// A Redis Cluster of three primaries: the same suite, with every key of the store in the slot
/// of its hash tag, whichever node owns it; two stores (prefixes) on one cluster are apart.
#[tokio::test]
async fn redis_cluster_store_conforms() {
    let cluster = RedisCluster::start(3);
    let seeds: Vec<String> = cluster.urls().split(',').map(str::to_owned).collect();
    let store: Arc<dyn MessageStore> =
        Arc::new(RedisStore::open_cluster(&seeds, "c1:", 3600).await.unwrap());
    suite(store.clone()).await;
    racing_puts(store.clone()).await;
    // These two expect stores of their own.
    let fresh = |prefix: &'static str| {
        let seeds = seeds.clone();
        async move {
            let s: Arc<dyn MessageStore> = Arc::new(
                RedisStore::open_cluster(&seeds, prefix, 3600)
                    .await
                    .unwrap(),
            );
            s
        }
    };
    recent_in_arrival_order(fresh("c3:").await, "cluster").await;
    live_ranges_by_expiry(fresh("c4:").await, "cluster").await;
    drop(store);
    // One seed is enough to find the rest.
    let again = RedisStore::open_cluster(&seeds[2..], "c1:", 3600)
        .await
        .unwrap();
    assert!(again.count().await.unwrap() >= 4);
    let other = RedisStore::open_cluster(&seeds, "c2:", 3600).await.unwrap();
    assert_eq!(other.count().await.unwrap(), 0);
    // The store's keys all sit in its tag's slot, so on one node.
    let holding: Vec<usize> = cluster
        .nodes()
        .iter()
        .map(|n| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &n.port().to_string(), "--scan", "--pattern", "{c1}:*"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).lines().count()
        })
        .collect();
    assert_eq!(holding.iter().filter(|n| **n > 0).count(), 1, "{holding:?}");
    assert!(holding.iter().sum::<usize>() > 10, "{holding:?}");
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
        Arc::new(LogStore::open(dir.path(), Duration::from_secs(3)).unwrap());
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
    let embedded: Arc<dyn MessageStore> = Arc::new(LogStore::open(dir.path(), RETENTION).unwrap());
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
    let reopened = LogStore::open(dir.path(), RETENTION).unwrap();
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
    let embedded: Arc<dyn MessageStore> = Arc::new(LogStore::open(dir.path(), RETENTION).unwrap());
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

/// A data directory of the fjall store (the embedded store until 2026-12), here one from before
/// its arrival index, becomes a log on the first open: packets with their seqs, tombstones, the
/// arrival counter; fjall's files are gone afterwards.
#[tokio::test]
async fn a_fjall_directory_is_migrated_into_the_log_on_first_open() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Duration::from_secs(3600);
    let store = EmbeddedStore::open(dir.path(), retention).unwrap();
    let short = new_packet(1, "expires before the upgrade", 1);
    let short_seq = stored_seq(store.put(short.clone()).await.unwrap());
    let stored = three(&store, "embedded").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    // The newest packet went, so only the counter remembers its seq.
    let newest = new_packet(2, "newest, expires too", 1);
    let newest_seq = stored_seq(store.put(newest.clone()).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    store.close().await.unwrap();
    drop(store);
    // Make it look like a directory written before the arrival index existed.
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
    let log = LogStore::open(dir.path(), retention).unwrap();
    assert!(dir.path().join("log").is_dir());
    for gone in ["keyspaces", "version", "lock", "log.migrating"] {
        assert!(!dir.path().join(gone).exists(), "{gone} left behind");
    }
    let all = log.recent(Some(0), 100).await.unwrap();
    assert_eq!(all.hashes, stored);
    assert_eq!(all.latest_seq, newest_seq);
    assert!(short_seq < stored[0].0);
    let held = log
        .get(stored.iter().map(|(_, h)| *h).collect())
        .await
        .unwrap();
    assert!(held.iter().all(Option::is_some));
    assert_eq!(held[0].as_ref().unwrap().seq, stored[0].0);
    assert_eq!(log.by_recipient(fp(0), None, 10).await.unwrap().len(), 1);
    // The tombstones came along: neither expired packet is fetched or stored again.
    assert!(
        log.unknown(vec![short.hash, newest.hash])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(log.put(short.clone()).await.unwrap(), PutOutcome::Expired);
    assert_eq!(log.put(newest).await.unwrap(), PutOutcome::Expired);
    // The counter continues past the newest seq the fjall store handed out.
    let next = stored_seq(log.put(new_packet(0, "after", 600)).await.unwrap());
    assert_eq!(next, newest_seq + 1);
    log.close().await.unwrap();
    drop(log);
    let reopened = LogStore::open(dir.path(), retention).unwrap();
    assert_eq!(reopened.recent(Some(0), 100).await.unwrap().hashes.len(), 4);
    assert!(reopened.unknown(vec![short.hash]).await.unwrap().is_empty());
}

fn segments(dir: &std::path::Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

/// Packets of about 3 KB, the size of a real one, so that a small segment fills quickly.
fn big_packet(key_index: usize, i: usize, ttl: u64) -> NewPacket {
    new_packet(key_index, &format!("{i:04} {}", "x".repeat(2_000)), ttl)
}

/// After a crash the log's last frame may be half written. It is cut off on open, everything
/// before it is kept, and the store goes on from there.
#[tokio::test]
async fn a_torn_tail_is_cut_off_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path(), RETENTION).unwrap();
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(stored_seq(
            store.put(big_packet(i % 3, i, 600)).await.unwrap(),
        ));
    }
    store.close().await.unwrap();
    drop(store);
    let last = segments(dir.path(), "seg").pop().unwrap();
    let clean = std::fs::metadata(&last).unwrap().len();
    // Half of a copy of the last frame, as a write cut off by a power loss would leave it.
    let bytes = std::fs::read(&last).unwrap();
    let frame_len = bytes.len() / 5;
    let mut torn = bytes.clone();
    torn.extend_from_slice(&bytes[bytes.len() - frame_len..bytes.len() - frame_len / 2]);
    std::fs::write(&last, &torn).unwrap();
    let store = LogStore::open(dir.path(), RETENTION).unwrap();
    assert_eq!(std::fs::metadata(&last).unwrap().len(), clean);
    let recent = store.recent(Some(0), 100).await.unwrap();
    assert_eq!(recent.hashes.iter().map(|h| h.0).collect::<Vec<_>>(), seqs);
    let next = stored_seq(store.put(big_packet(0, 99, 600)).await.unwrap());
    assert_eq!(next, seqs[4] + 1);
    drop(store);
    let store = LogStore::open(dir.path(), RETENTION).unwrap();
    assert_eq!(store.count().await.unwrap(), 6);
    let got = store.by_recipient(fp(0), Some(seqs[4]), 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, big_packet(0, 99, 600).message);
}

async fn check_sealed(store: LogStore, expected: &[(u64, MessageHash)]) {
    let all = store.recent(Some(0), 100).await.unwrap();
    assert_eq!(all.hashes, expected);
    let got = store
        .get(expected.iter().map(|(_, h)| *h).collect())
        .await
        .unwrap();
    assert!(got.iter().all(Option::is_some));
    assert_eq!(
        store.by_recipient(fp(1), None, 100).await.unwrap().len(),
        13
    );
    store.close().await.unwrap();
}

/// Full segments are sealed with an index file; a store reopens from those files, and from
/// the segments themselves when an index file is missing or damaged.
#[tokio::test]
async fn sealed_segments_reopen_from_their_index_files_or_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 16 << 10,
        ..Default::default()
    };
    let store = LogStore::open_with(dir.path(), RETENTION, options).unwrap();
    let mut expected = Vec::new();
    for i in 0..40 {
        let p = big_packet(i % 3, i, 600);
        expected.push((stored_seq(store.put(p.clone()).await.unwrap()), p.hash));
    }
    store.close().await.unwrap();
    drop(store);
    let sealed = segments(dir.path(), "idx");
    assert!(sealed.len() >= 4, "{sealed:?}");
    assert_eq!(segments(dir.path(), "seg").len(), sealed.len() + 1);
    check_sealed(
        LogStore::open_with(dir.path(), RETENTION, options).unwrap(),
        &expected,
    )
    .await;
    std::fs::remove_file(&sealed[0]).unwrap();
    let mut damaged = std::fs::read(&sealed[1]).unwrap();
    damaged[30] ^= 0x55;
    std::fs::write(&sealed[1], damaged).unwrap();
    check_sealed(
        LogStore::open_with(dir.path(), RETENTION, options).unwrap(),
        &expected,
    )
    .await;
    // Rebuilt: the next open reads them again.
    assert!(sealed[0].exists());
    check_sealed(
        LogStore::open_with(dir.path(), RETENTION, options).unwrap(),
        &expected,
    )
    .await;
}

/// Expired packets are dead at once (tombstones) and forgotten after the retention; a segment
/// goes from disk once all it holds is forgotten, and nothing comes back on reopen.
#[tokio::test]
async fn expired_segments_are_deleted_and_their_packets_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 8 << 10,
        ..Default::default()
    };
    // Times are whole seconds: a packet made at W (1 s to live) expires at floor(W) + 1 and is
    // forgotten at floor(W) + 1 + retention. The checks below sit 2.1 s and 5.1+ s after W, so
    // with a 4 s retention the first falls between expiry and forgetting wherever in its second
    // W lies and however slow the puts are (up to 1.9 s), and the second falls after it. (With
    // 2 s, a W late in its second put the first check past forgetting: it failed now and then.)
    let retention = Duration::from_secs(4);
    let store = LogStore::open_with(dir.path(), retention, options).unwrap();
    let short: Vec<_> = (0..12).map(|i| big_packet(i % 3, i, 1)).collect();
    for p in &short {
        stored_seq(store.put(p.clone()).await.unwrap());
    }
    let long: Vec<_> = (100..112).map(|i| big_packet(i % 3, i, 600)).collect();
    for p in &long {
        stored_seq(store.put(p.clone()).await.unwrap());
    }
    let before = segments(dir.path(), "seg").len();
    assert!(before >= 6, "{before}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(store.purge_expired().await.unwrap(), 12);
    assert_eq!(store.count().await.unwrap(), 12);
    assert_eq!(
        store.put(short[0].clone()).await.unwrap(),
        PutOutcome::Expired
    );
    assert!(store.unknown(vec![short[5].hash]).await.unwrap().is_empty());
    // Past expiry + retention: at least W + 5.1 s.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    store.purge_expired().await.unwrap();
    let after = segments(dir.path(), "seg").len();
    assert!(after < before, "{before} -> {after}");
    assert_eq!(
        store.unknown(vec![short[5].hash]).await.unwrap(),
        vec![short[5].hash]
    );
    store.close().await.unwrap();
    drop(store);
    let store = LogStore::open_with(dir.path(), retention, options).unwrap();
    assert_eq!(store.count().await.unwrap(), 12);
    let got = store
        .get(short.iter().chain(&long).map(|p| p.hash).collect())
        .await
        .unwrap();
    assert!(got[..12].iter().all(Option::is_none));
    assert!(got[12..].iter().all(Option::is_some));
}

#[tokio::test]
async fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = LogStore::open(dir.path(), RETENTION).unwrap();
    let Err(e) = LogStore::open(dir.path(), RETENTION) else {
        panic!("opened twice")
    };
    assert!(
        e.to_string().contains("in use by another relay process"),
        "{e}"
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

/// Quotas, checked by `put` with its other checks: a recipient's packets, the store's packets,
/// and bytes for each; a re-sent packet already held is still a duplicate, not a refusal; what
/// expires frees its room.
async fn quotas_refuse_and_expiry_frees(
    open: impl Fn(Quotas) -> std::pin::Pin<Box<dyn std::future::Future<Output = Arc<dyn MessageStore>>>>,
    tag: &str,
) {
    let store = open(Quotas {
        recipient_packets: 3,
        stored_packets: 5,
        ..Quotas::UNLIMITED
    })
    .await;
    let short = new_packet(0, &format!("{tag} short"), 2);
    assert!(matches!(
        store.put(short).await,
        Ok(PutOutcome::Stored { .. })
    ));
    let kept = new_packet(0, &format!("{tag} kept"), 600);
    for p in [kept.clone(), new_packet(0, &format!("{tag} third"), 600)] {
        assert!(matches!(store.put(p).await, Ok(PutOutcome::Stored { .. })));
    }
    let fourth = new_packet(0, &format!("{tag} fourth"), 600);
    assert_eq!(
        store.put(fourth.clone()).await.unwrap(),
        PutOutcome::RecipientFull,
        "{tag}"
    );
    assert_eq!(
        store.put(kept).await.unwrap(),
        PutOutcome::Duplicate,
        "{tag}"
    );
    for i in 0..2 {
        let p = new_packet(1, &format!("{tag} other {i}"), 600);
        assert!(
            matches!(store.put(p).await, Ok(PutOutcome::Stored { .. })),
            "{tag}"
        );
    }
    let sixth = new_packet(2, &format!("{tag} sixth"), 600);
    assert_eq!(
        store.put(sixth.clone()).await.unwrap(),
        PutOutcome::StoreFull,
        "{tag}"
    );
    assert_eq!(
        store.count().await.unwrap(),
        5,
        "{tag}: nothing held was dropped"
    );
    // The short one expires: one packet of room for recipient 0 and for the store.
    tokio::time::sleep(Duration::from_secs(3)).await;
    store.purge_expired().await.unwrap();
    assert!(
        matches!(store.put(fourth).await, Ok(PutOutcome::Stored { .. })),
        "{tag}"
    );
    assert_eq!(
        store.put(sixth).await.unwrap(),
        PutOutcome::StoreFull,
        "{tag}"
    );

    // Bytes: a store that keeps less than one packet, for a recipient and in all.
    let tiny = open(Quotas {
        recipient_bytes: 100,
        ..Quotas::UNLIMITED
    })
    .await;
    let p = new_packet(2, &format!("{tag} bytes"), 600);
    assert_eq!(
        tiny.put(p.clone()).await.unwrap(),
        PutOutcome::RecipientFull,
        "{tag}"
    );
    let tiny = open(Quotas {
        stored_bytes: 100,
        ..Quotas::UNLIMITED
    })
    .await;
    assert_eq!(tiny.put(p).await.unwrap(), PutOutcome::StoreFull, "{tag}");
}

#[tokio::test]
async fn both_backends_keep_their_quotas() {
    let dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let dirs_for_open = dirs.clone();
    let log = quotas_refuse_and_expiry_frees(
        move |quotas| {
            let dir = tempfile::tempdir().unwrap();
            let store = LogStore::open_with(
                dir.path(),
                RETENTION,
                LogOptions {
                    quotas,
                    ..Default::default()
                },
            )
            .unwrap();
            dirs_for_open.lock().unwrap().push(dir);
            Box::pin(async move { Arc::new(store) as Arc<dyn MessageStore> })
        },
        "log",
    );
    let redis = Redis::start();
    let url = redis.url();
    let n = std::sync::atomic::AtomicUsize::new(0);
    let with_redis = quotas_refuse_and_expiry_frees(
        move |quotas| {
            let prefix = format!("q{}:", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            let url = url.clone();
            Box::pin(async move {
                Arc::new(
                    RedisStore::open(&url, &prefix, 3600)
                        .await
                        .unwrap()
                        .with_quotas(quotas),
                ) as Arc<dyn MessageStore>
            })
        },
        "redis",
    );
    tokio::join!(log, with_redis);

    // The log rebuilds what each recipient holds on open: still full after a reopen.
    let dir = tempfile::tempdir().unwrap();
    let quotas = Quotas {
        recipient_packets: 1,
        ..Quotas::UNLIMITED
    };
    let open = || {
        LogStore::open_with(
            dir.path(),
            RETENTION,
            LogOptions {
                quotas,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let store = open();
    assert!(matches!(
        store.put(new_packet(0, "one", 600)).await,
        Ok(PutOutcome::Stored { .. })
    ));
    store.close().await.unwrap();
    drop(store);
    let store = open();
    assert_eq!(
        store.put(new_packet(0, "two", 600)).await.unwrap(),
        PutOutcome::RecipientFull
    );
    drop(dirs);
}
