//! What durable writes this disk allows, against what the embedded store gets: the measurement
//! behind the choice of the embedded store's next design (issue 13, part 5).
//!
//! Records of `--record` bytes (default 3,000, a `/send` packet's stored record) are written in
//! batches of `--batch` records, each batch durable (`fdatasync`) before the next is
//! acknowledged, by one writer, for `--secs` seconds per variant, all in one run:
//!
//! - `log, serial`: one append-only file; write the batch, `fdatasync`, next batch. The shape
//!   of a time-segmented log with group commit.
//! - `log, pipelined`: the same file, but batch n+1 is written while batch n's `fdatasync`
//!   runs on a second thread (a batch counts as durable when a sync that began after its write
//!   has finished). What overlapping the fsync with the next batch's work buys.
//! - `fjall, 1 insert per record` and `fjall, 4 inserts per record` (the embedded store's
//!   layout: the record and three index entries, in four keyspaces, and a counter per batch):
//!   fjall write batches with `PersistMode::SyncData`, as the store's writer commits them;
//!   and the same with the records' keyspace in key-value separation (records in blob files,
//!   so compactions stop rewriting them).
//!
//! ```text
//! cargo bench -p jasper-relay --bench append_log -- [--batch 16,64,256] [--record 3000] [--secs 5]
//! ```
//!
//! Results and commands: `docs/benchmarks.md`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjall::{Database, KeyspaceCreateOptions, PersistMode};
use parking_lot::{Condvar, Mutex};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Opts {
    batches: Vec<usize>,
    record: usize,
    secs: f64,
}

fn parse(args: &[String]) -> Res<Opts> {
    let mut o = Opts {
        batches: vec![16, 64, 256],
        record: 3000,
        secs: 5.0,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--batch" => {
                o.batches = value()?
                    .split(',')
                    .map(|n| n.parse())
                    .collect::<Result<_, _>>()?
            }
            "--record" => o.record = value()?.parse()?,
            "--secs" => o.secs = value()?.parse()?,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&args).and_then(run);
    if let Err(e) = result {
        eprintln!("append_log: {e}");
        std::process::exit(1);
    }
}

fn run(o: Opts) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let record: Vec<u8> = (0..o.record).map(|i| (i * 31 % 251) as u8).collect();
    let span = Duration::from_secs_f64(o.secs);
    println!(
        "| batch | log, serial | log, pipelined | fjall, 1 insert per record | fjall, 4 inserts \
         per record (the store's layout) | the same, records in blob files |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (i, &batch) in o.batches.iter().enumerate() {
        let at = dir.path().join(format!("b{i}"));
        std::fs::create_dir_all(&at)?;
        // Each variant's files go as soon as it is measured (a long run writes gigabytes).
        let gone = |p: &Path| std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        let serial = log_serial(&at.join("serial.log"), &record, batch, span)?;
        gone(&at.join("serial.log"))?;
        let pipelined = log_pipelined(&at.join("pipelined.log"), &record, batch, span)?;
        gone(&at.join("pipelined.log"))?;
        let one = fjall_batches(&at.join("fjall1"), &record, batch, span, 1, false)?;
        gone(&at.join("fjall1"))?;
        let four = fjall_batches(&at.join("fjall4"), &record, batch, span, 4, false)?;
        gone(&at.join("fjall4"))?;
        let blobs = fjall_batches(&at.join("fjall4b"), &record, batch, span, 4, true)?;
        gone(&at.join("fjall4b"))?;
        println!("| {batch} | {serial:.0} | {pipelined:.0} | {one:.0} | {four:.0} | {blobs:.0} |");
    }
    println!("\nDurable records per second, {} bytes each.", o.record);
    Ok(())
}

/// Write a batch, fdatasync, repeat.
fn log_serial(path: &Path, record: &[u8], batch: usize, span: Duration) -> Res<f64> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    let buf: Vec<u8> = record.repeat(batch);
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < span {
        f.write_all(&buf)?;
        f.sync_data()?;
        done += batch as u64;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// The writer appends batch after batch; a syncer thread fdatasyncs whatever has been written
/// and publishes how far is durable. The writer waits for a sync only when it is two batches
/// ahead of the durable point (so one sync overlaps the next batch's write, as a pipelined
/// group commit would allow).
fn log_pipelined(path: &Path, record: &[u8], batch: usize, span: Duration) -> Res<f64> {
    struct Marks {
        written: u64,
        durable: u64,
        stop: bool,
    }
    let f = Arc::new(OpenOptions::new().create(true).append(true).open(path)?);
    let marks = Arc::new((
        Mutex::new(Marks {
            written: 0,
            durable: 0,
            stop: false,
        }),
        Condvar::new(),
    ));
    let syncer = {
        let (f, marks) = (f.clone(), marks.clone());
        std::thread::spawn(move || -> std::io::Result<()> {
            loop {
                let upto = {
                    let mut m = marks.0.lock();
                    while m.written == m.durable && !m.stop {
                        marks.1.wait(&mut m);
                    }
                    if m.stop && m.written == m.durable {
                        return Ok(());
                    }
                    m.written
                };
                f.sync_data()?;
                marks.0.lock().durable = upto;
                marks.1.notify_all();
            }
        })
    };
    let buf: Vec<u8> = record.repeat(batch);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < span {
        (&*f).write_all(&buf)?;
        sent += batch as u64;
        let mut m = marks.0.lock();
        m.written = sent;
        marks.1.notify_all();
        while sent - m.durable > 2 * batch as u64 {
            marks.1.wait(&mut m);
        }
    }
    // Everything written must be durable before it counts.
    {
        let mut m = marks.0.lock();
        while m.durable < sent {
            marks.1.wait(&mut m);
        }
        m.stop = true;
        marks.1.notify_all();
    }
    let secs = start.elapsed().as_secs_f64();
    syncer.join().expect("syncer")?;
    Ok(sent as f64 / secs)
}

/// fjall write batches with SyncData, `keyspaces` inserts per record (the first the record,
/// the rest 40-byte index entries), plus one counter insert per batch; `blobs`: the records'
/// keyspace separates values into blob files.
fn fjall_batches(
    dir: &Path,
    record: &[u8],
    batch: usize,
    span: Duration,
    keyspaces: usize,
    blobs: bool,
) -> Res<f64> {
    let db = Database::builder(dir).open()?;
    let ks: Vec<_> = (0..keyspaces)
        .map(|i| {
            db.keyspace(&format!("k{i}"), || {
                let o = KeyspaceCreateOptions::default();
                if blobs && i == 0 {
                    o.with_kv_separation(Some(fjall::KvSeparationOptions::default()))
                } else {
                    o
                }
            })
        })
        .collect::<Result<_, _>>()?;
    let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < span {
        let mut b = db.batch().durability(Some(PersistMode::SyncData));
        for _ in 0..batch {
            n += 1;
            let key = n.to_be_bytes();
            b.insert(&ks[0], key.to_vec(), record.to_vec());
            for k in &ks[1..] {
                let mut index = key.to_vec();
                index.extend_from_slice(&[7u8; 32]);
                b.insert(k, index, key.to_vec());
            }
        }
        b.insert(&meta, b"seq".to_vec(), n.to_be_bytes().to_vec());
        b.commit()?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}
