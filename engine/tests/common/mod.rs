//! Fixtures for engine tests: real `jasper-relay` processes on loopback, and engines running
//! in this process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jasper_engine::{Engine, EngineConfig, EphemeralSecretStore};
#[allow(unused_imports)]
pub use jasper_test::{dropping_relay, eventually, free_port};

/// The relay binary built in the same target directory as this test.
pub fn relay_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("jasper-relay");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p jasper-relay` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

pub struct RelayProc {
    pub addr: String,
    child: Child,
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` relays, each peered with every other, fast sync.
pub fn mesh(n: usize, dir: &std::path::Path) -> Vec<RelayProc> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    (0..n)
        .map(|i| {
            let mut cmd = Command::new(relay_binary());
            cmd.arg("--listen").arg(format!("127.0.0.1:{}", ports[i]));
            cmd.arg("--data-dir").arg(dir.join(format!("relay{i}")));
            cmd.args([
                "--allow-private-peers",
                "true",
                "--sync-interval",
                "1",
                "--server-sync-interval",
                "2",
            ]);
            for (j, p) in ports.iter().enumerate() {
                if j != i {
                    cmd.arg("--peer").arg(format!("127.0.0.1:{p}"));
                }
            }
            let mut child = cmd
                .env("JASPER_LOG", "warn")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let first = lines
                .by_ref()
                .map_while(Result::ok)
                .find(|l| l.contains("listening"))
                .unwrap_or_default();
            assert!(first.contains("listening"), "relay did not start: {first}");
            std::thread::spawn(move || for _ in lines {});
            RelayProc {
                addr: format!("127.0.0.1:{}", ports[i]),
                child,
            }
        })
        .collect()
}

pub fn config(dir: &std::path::Path, relays: &[RelayProc]) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.relays = relays.iter().map(|r| r.addr.clone()).collect();
    c.allow_private_relays = true;
    c.long_poll = Duration::from_secs(5);
    c.delivery_timeout = Duration::from_secs(4);
    c.witness_interval = Duration::from_millis(500);
    c.sent_copy_delay = Duration::from_millis(300);
    c.notifications = false;
    c
}

pub async fn engine(
    dir: &std::path::Path,
    relays: &[RelayProc],
    secrets: Arc<EphemeralSecretStore>,
) -> Engine {
    Engine::open(config(dir, relays), secrets).await.unwrap()
}

#[path = "stun.rs"]
mod stun;
#[allow(unused_imports)]
pub use stun::StunServer;
