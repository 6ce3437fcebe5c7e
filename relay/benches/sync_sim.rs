//! Sync between two real `jasper-relay` processes that hold N packets in common and differ by
//! d (d/2 held only by each): the bytes and round trips one reconciliation costs, and how long
//! the relay that starts peered with the other takes to hold what it lacked.
//!
//! The stores are written directly (`LogStore`, the relay's own embedded store, packets
//! with the same global `expires_at` in both, spread over the retention as live traffic is)
//! and the relays are then started on them, so the relay that syncs also builds its sketch
//! from a store of N packets at start. Relay A has no peers; relay B has A as its only peer
//! and syncs at start (its first round), pulling the d/2 it lacks. Measured from B's `GET
//! /status` `mesh.traffic`: `/sync/reconcile` requests (round trips) and bytes (request and
//! answer bodies), and `/fetch` for the pull. The hash sync it replaces would cost one
//! `/sync/hashes` exchange of both lists, about 2 × 67 × N bytes; the table gives that too.
//!
//! ```text
//! cargo bench -p jasper-relay --bench sync_sim -- [--stored 100000,1000000]
//!     [--diffs 10,100,300,1000,10000] [--seed N]
//! ```
//!
//! Results and commands: `docs/benchmarks.md`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jasper_core::{MessageHash, PublicKey};
use jasper_relay::store::log::LogStore;
use jasper_relay::store::{MessageStore, NewPacket, PutOutcome, unix_now};
use jasper_test::relay::Relay;
use rand::{RngCore, SeedableRng};
use serde_json::Value;

mod sim_kit;

use sim_kit::{Res, first_recipient, run_bench};

/// The relays' default TTL: packets expire spread over it, as they would after a week.
const RETENTION_SECS: u64 = 7 * 24 * 3600;
const TOMBSTONES: Duration = Duration::from_secs(3600);
/// Stores are written with this many puts in flight (the writer batches them).
const PUTS_IN_FLIGHT: usize = 256;
const SYNC_TIMEOUT: Duration = Duration::from_secs(600);

struct Opts {
    stored: Vec<usize>,
    diffs: Vec<usize>,
    seed: u64,
}

impl Opts {
    fn parse(args: &[String]) -> Res<Self> {
        let mut o = Opts {
            stored: vec![100_000, 1_000_000],
            diffs: vec![10, 100, 300, 1_000, 10_000],
            seed: 11,
        };
        let list = |v: &str| -> Res<Vec<usize>> {
            Ok(v.split(',')
                .map(|n| n.replace('_', "").parse())
                .collect::<Result<_, _>>()?)
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--stored" => o.stored = list(&value()?)?,
                "--diffs" => o.diffs = list(&value()?)?,
                "--seed" => o.seed = value()?.parse()?,
                "--bench" => {}
                other => return Err(format!("unknown argument {other}").into()),
            }
        }
        Ok(o)
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    run_bench("sync_sim", Opts::parse, runtime, run);
}

struct Row {
    stored: usize,
    diffs: usize,
    reconcile_requests: u64,
    reconcile_bytes: u64,
    fetch_requests: u64,
    fetch_bytes: u64,
    hash_requests: u64,
    seconds: f64,
}

async fn run(opts: Opts) -> Res<()> {
    let recipient = first_recipient()?;
    let fp = PublicKey::from_text(&recipient)?.fingerprint();
    let mut rows = Vec::new();
    for &n in &opts.stored {
        let dir = tempfile::tempdir()?;
        let base = dir.path().join("base");
        let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed ^ n as u64);
        let started = Instant::now();
        fill(&base, (0..n).map(|_| packet(&recipient, fp, &mut rng))).await?;
        eprintln!(
            "== {n} packets written in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        for &d in &opts.diffs {
            let run_dir = dir.path().join(format!("d{d}"));
            for side in ["a", "b"] {
                copy_dir(&base, &run_dir.join(side).join("data"))?;
            }
            for side in ["a", "b"] {
                let only: Vec<NewPacket> = (0..d / 2)
                    .map(|_| packet(&recipient, fp, &mut rng))
                    .collect();
                fill(&run_dir.join(side).join("data"), only.into_iter()).await?;
            }
            let row = sync_once(&run_dir, n, d).await?;
            eprintln!("{}", table_row(&row));
            rows.push(row);
            std::fs::remove_dir_all(&run_dir)?;
        }
    }
    println!("\n{}", table(&rows));
    Ok(())
}

/// A packet of about 400 bytes expiring at a random second of the retention (the same in
/// both stores, as a packet's `expires_at` is global).
fn packet(recipient: &str, fp: [u8; 32], rng: &mut impl RngCore) -> NewPacket {
    let mut body = [0u8; 180];
    rng.fill_bytes(&mut body);
    let message = hex::encode(body);
    NewPacket {
        recipient: recipient.to_owned(),
        recipient_fp: fp,
        hash: MessageHash::of_message(&message),
        message,
        signature: "c2lnbmF0dXJl".to_owned(),
        expires_at: unix_now() + 3600 + rng.next_u64() % (RETENTION_SECS - 3600),
    }
}

async fn fill(dir: &Path, packets: impl Iterator<Item = NewPacket>) -> Res<()> {
    let store: Arc<dyn MessageStore> = Arc::new(LogStore::open(dir, TOMBSTONES)?);
    let outcomes: Vec<_> = futures::stream::iter(packets)
        .map(|p| {
            let store = store.clone();
            async move { store.put(p).await }
        })
        .buffer_unordered(PUTS_IN_FLIGHT)
        .collect()
        .await;
    for o in outcomes {
        if !matches!(o?, PutOutcome::Stored { .. }) {
            return Err("a packet was not stored".into());
        }
    }
    store.close().await?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Res<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

async fn sync_once(dir: &Path, n: usize, d: usize) -> Res<Row> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let start = |side: &str, peers: Vec<String>| {
        Relay::builder(&dir.join(side))
            .binary(jasper_test::binary("jasper-relay"))
            .peers(peers)
            .relay_default_sync()
            .log_level("warn")
            .args(["--sync-interval", "3600"])
            .start_timeout(Duration::from_secs(300))
            .try_start()
    };
    let a = start("a", Vec::new())?;
    let started = Instant::now();
    let b = start("b", vec![a.addr()])?;
    let want = (n + d / 2 + d / 2) as u64;
    let deadline = Instant::now() + SYNC_TIMEOUT;
    let status = loop {
        let s: Value = http.get(b.url("/status")).send().await?.json().await?;
        if s["stored_messages"].as_u64() == Some(want) {
            break s;
        }
        if Instant::now() > deadline {
            return Err(format!("{n} stored, {d} differences: B never caught up: {s}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let t = &status["mesh"]["traffic"];
    let route = |r: &str| {
        let c = &t[r];
        (
            c["requests"].as_u64().unwrap_or(0),
            c["bytes_sent"].as_u64().unwrap_or(0) + c["bytes_received"].as_u64().unwrap_or(0),
        )
    };
    let (reconcile_requests, reconcile_bytes) = route("/sync/reconcile");
    let (fetch_requests, fetch_bytes) = route("/fetch");
    let (hash_requests, _) = route("/sync/hashes");
    drop((a, b));
    Ok(Row {
        stored: n,
        diffs: d,
        reconcile_requests,
        reconcile_bytes,
        fetch_requests,
        fetch_bytes,
        hash_requests,
        seconds,
    })
}

fn table_row(r: &Row) -> String {
    format!(
        "| {} | {} | {} | {:.1} kB | {:.0} B | {} | {:.0} kB | {} | {:.1} MB | {:.1} s |",
        r.stored,
        r.diffs,
        r.reconcile_requests,
        r.reconcile_bytes as f64 / 1000.0,
        r.reconcile_bytes as f64 / r.diffs.max(1) as f64,
        r.fetch_requests,
        r.fetch_bytes as f64 / 1000.0,
        r.hash_requests,
        2.0 * 67.0 * r.stored as f64 / 1e6,
        r.seconds,
    )
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| stored | differences | reconcile round trips | reconcile bytes | per difference | \
         /fetch requests | /fetch bytes | /sync/hashes requests | hash sync would be | \
         B start to caught up |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&table_row(r));
        out.push('\n');
    }
    out
}
