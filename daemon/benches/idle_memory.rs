//! Resident memory of an idle `jasperd` holding 10,000 stored messages.
//!
//!   cargo build --release -p jasper-relay -p jasper-cli
//!   cargo bench -p jasper-daemon --bench idle_memory
//!
//! Starts three release relays (the test kit's), a release `jasperd` (bob, keyutils key store)
//! and an in-process engine (alice) that sends bob `--messages N` (default 10,000) messages
//! through the relays; once bob has stored them all, restarts bob and reads its VmRSS while
//! idle.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jasper_engine::{Engine, EngineConfig, EphemeralSecretStore};

/// How long a process may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_bob(dir: &Path, relays: &[String]) -> Proc {
    let mut cmd = Command::new(jasper_test::binary("jasperd"));
    cmd.arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--socket")
        .arg(dir.join("bob.sock"));
    cmd.args([
        "--key-store",
        "keyutils",
        "--allow-private-relays",
        "--no-notifications",
    ]);
    for r in relays {
        cmd.arg("--relay").arg(r);
    }
    cmd.env("JASPER_LOG", "warn");
    let (child, _) = jasper_test::process::spawn_until_listening(cmd, START_TIMEOUT)
        .unwrap_or_else(|e| panic!("jasperd (bob): {e}"));
    Proc(child)
}

fn jasper(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(jasper_test::binary("jasper"))
        .arg("--socket")
        .arg(dir.join("bob.sock"))
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jasper {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn stored(dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("data/jasper.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
        .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: i64 = args
        .iter()
        .position(|a| a == "--messages")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    // The relays' own sync intervals, as deployed; only errors logged.
    let mesh =
        jasper_test::relay::mesh_with(3, dir.path(), |b| b.relay_default_sync().log_level("error"));
    let relays: Vec<String> = mesh.iter().map(|r| r.addr()).collect();
    let bob_dir = dir.path().join("bob");
    std::fs::create_dir_all(&bob_dir).unwrap();
    let mut bob = start_bob(&bob_dir, &relays);
    let fresh_rss = rss_kib(bob.0.id());
    let bob_key = jasper(&bob_dir, &["identity", "create"])["public_key"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut config = EngineConfig::new(dir.path().join("alice"));
    config.relays = relays.clone();
    config.allow_private_relays = true;
    config.notifications = false;
    let alice = Engine::open(config, Arc::new(EphemeralSecretStore::default()))
        .await
        .unwrap();
    let alice_key = alice.identity().create().await.unwrap().public_key;
    alice.contacts().add(&bob_key, "bob", None).await.unwrap();
    jasper(&bob_dir, &["contact", "add", &alice_key, "--name", "alice"]);

    let started = Instant::now();
    for i in 0..n {
        // The engine does its sealing and fsync off the runtime itself.
        alice
            .messages()
            .send(
                "bob",
                &format!("stored message number {i}, a short line of chat"),
            )
            .await
            .unwrap();
    }
    while stored(&bob_dir) < n {
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "bob stored only {} of {n}",
            stored(&bob_dir)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fill = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let busy_rss = rss_kib(bob.0.id());
    drop(bob);
    bob = start_bob(&bob_dir, &relays);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_rss = rss_kib(bob.0.id());
    let db_size = std::fs::metadata(bob_dir.join("data/jasper.sqlite3"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "jasperd idle memory ({n} messages received through 3 release relays in {:.1} s)\n",
        fill.as_secs_f64()
    );
    println!("| jasperd (release) | VmRSS |");
    println!("|---|---|");
    println!(
        "| fresh, no identity, no messages | {:.1} MiB |",
        fresh_rss as f64 / 1024.0
    );
    println!(
        "| right after receiving {n} messages | {:.1} MiB |",
        busy_rss as f64 / 1024.0
    );
    println!(
        "| restarted, idle 10 s, {n} messages stored ({:.1} MiB database) | {:.1} MiB |",
        db_size as f64 / 1048576.0,
        idle_rss as f64 / 1024.0
    );
    alice.shutdown();
}
