//! Fixtures for engine tests: real `jasper-relay` processes on loopback, and engines running
//! in this process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jasper_engine::{Engine, EngineConfig, EphemeralSecretStore};

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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

pub async fn eventually<F: FnMut() -> bool>(limit: Duration, mut check: F) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real STUN server (coturn, `--stun-only`) on a loopback port, logging every Binding
/// request it handles so a test can count them.
pub struct StunServer {
    pub url: String,
    pub log: PathBuf,
    child: Child,
}

impl StunServer {
    pub fn start(dir: &std::path::Path) -> StunServer {
        let port = free_udp_port();
        let log = dir.join(format!("coturn-{port}.log"));
        let child = Command::new("turnserver")
            .args(["-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls", "--simple-log", "-V"])
            .args(["--listening-ip", "127.0.0.1", "--listening-port", &port.to_string()])
            .arg("--log-file")
            .arg(&log)
            .arg("--pidfile")
            .arg(dir.join(format!("coturn-{port}.pid")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver (Debian package coturn) is needed: scripts/test.sh installs it");
        let server = StunServer {
            url: format!("stun:127.0.0.1:{port}"),
            log,
            child,
        };
        // Ready once it answers a Binding request.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut request = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        request.extend_from_slice(&rand_bytes12());
        loop {
            sock.send_to(&request, ("127.0.0.1", port)).unwrap();
            let mut buf = [0u8; 512];
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && n >= 20
                && buf[0..2] == [1, 1]
            {
                break;
            }
            assert!(Instant::now() < deadline, "coturn did not answer STUN on port {port}");
        }
        server
    }

    /// Binding requests handled so far (the readiness probe included).
    pub fn bindings(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("handle_turn_binding") && l.ends_with("start"))
            .count()
    }
}

impl Drop for StunServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_bytes12() -> [u8; 12] {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_le_bytes();
    n[..12].try_into().unwrap()
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
