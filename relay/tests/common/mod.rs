//! Shared fixtures of the relay's integration tests: real `jasper-relay` processes on
//! loopback, a real `redis-server`, test packets and a small HTTP client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jasper_core::MessageHash;
use jasper_core::protocol::Packet;
use serde_json::{Value, json};

/// RSA-4096 public keys in canonical text form (test fixtures, no private halves kept).
pub fn recipients() -> Vec<String> {
    include_str!("../fixtures/recipients.txt")
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn rsa2048_key() -> String {
    include_str!("../fixtures/rsa2048.txt").trim().to_owned()
}

/// A well-formed packet for `recipient` whose sealed content is `text` (relays do not look
/// inside, so any base64 does).
pub fn packet(recipient: &str, text: &str) -> Packet {
    let engine = base64::engine::general_purpose::STANDARD;
    let message = engine.encode(format!("sealed:{text}"));
    Packet {
        recipient: recipient.to_owned(),
        hash: MessageHash::of_message(&message).to_string(),
        message,
        signature: engine.encode(format!("signature of {text}")),
        expires_at: None,
    }
}

pub use jasper_test::free_port;

fn relay_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jasper-relay"))
}

/// A `jasper-relay` child process. Killed on drop.
pub struct Relay {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    pub data_dir: PathBuf,
}

impl Relay {
    /// Starts a relay on a fresh port with the embedded store in `data_dir` and `extra` flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Relay {
        Self::start_on(free_port(), data_dir, extra)
    }

    pub fn start_on(port: u16, data_dir: &Path, extra: &[&str]) -> Relay {
        let mut args = vec![
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
            "--allow-private-peers".to_owned(),
            "true".to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut relay = Relay {
            port,
            args,
            child: None,
            data_dir: data_dir.to_owned(),
        };
        relay.spawn();
        relay
    }

    fn spawn(&mut self) {
        let mut child = Command::new(relay_binary())
            .args(&self.args)
            .env(
                "JASPER_LOG",
                std::env::var("JASPER_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("jasper-relay starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.contains("listening"))
            .unwrap_or_default();
        assert!(
            first.contains("listening on"),
            "relay did not start: {first:?}"
        );
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGTERM, then wait for a graceful exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe_kill(child.id(), "TERM");
            let status = child.wait().expect("relay exits");
            assert!(status.success(), "relay exited with {status}");
        }
    }

    /// SIGKILL: a crash, with no chance to flush anything.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or crash it first");
        self.spawn();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.crash();
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// A private `redis-server` with fsync on every write. Killed on drop.
pub struct Redis {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
            ])
            .args(["--appendfsync", "always", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        let redis = Redis {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
}

/// POSTs a raw body; returns the status and the JSON answer.
pub async fn post_raw(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("answer is not JSON: {text:?}"));
    (status, value)
}

pub async fn post(url: &str, body: &Value) -> (u16, Value) {
    post_raw(url, serde_json::to_vec(body).unwrap()).await
}

pub async fn send(relay: &Relay, p: &Packet) -> (u16, Value) {
    post(&relay.url("/send"), &serde_json::to_value(p).unwrap()).await
}

/// Hashes of the messages a relay holds for `recipient`.
pub async fn hashes_for(relay: &Relay, recipient: &str) -> Vec<String> {
    let (status, body) = post(&relay.url("/fetch"), &json!({ "recipient": recipient })).await;
    assert_eq!(status, 200, "{body}");
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["hash"].as_str().unwrap().to_owned())
        .collect()
}

/// Whether the relay holds `hash` (fetch by hash).
pub async fn holds(relay: &Relay, hash: &str) -> bool {
    let Ok(resp) = client()
        .post(relay.url("/fetch"))
        .json(&json!({ "hashes": [hash] }))
        .send()
        .await
    else {
        return false;
    };
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    body["messages"].get(0).is_some_and(|m| !m.is_null())
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn status(relay: &Relay) -> Value {
    client()
        .get(relay.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The entry for `peer` in a relay's `/status`.
pub async fn peer_report(relay: &Relay, peer: &str) -> Option<Value> {
    let s = status(relay).await;
    s["peers"]
        .as_array()?
        .iter()
        .find(|p| p["address"] == peer)
        .cloned()
}
