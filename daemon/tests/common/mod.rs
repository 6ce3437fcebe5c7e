//! Shared fixtures of the daemon's integration tests: a mesh of real `jasper-relay` processes
//! on loopback (the kit's), real `jasperd` processes (start, SIGTERM, kill -9, restart on the
//! same data directory), the real `jasper` CLI with parsed `--json` output, a gRPC client over
//! the daemon's socket, and a wait-until helper.
//!
//! Set `JASPER_TEST_LOG` (e.g. `debug`) to change the daemons' and relays' log level; their
//! logs are files next to their data directories and a daemon's log is printed when a test
//! panics while it runs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jasper_client::Client;
use serde_json::{Value, json};

/// How long a daemon may take to print its "listening" line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn log_level() -> String {
    jasper_test::test_log_level("info")
}

/// A tokio runtime for the gRPC parts of a (synchronous) test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[allow(unused_imports)]
pub use jasper_test::{dropping_relay_on, free_port, wait_until};

// ---- binaries ---------------------------------------------------------------------------

// The kit's lookup, not `CARGO_BIN_EXE_*`: that names only this package's binaries, and a
// binary found by name keeps working when it moves to another package.
pub fn jasperd_binary() -> PathBuf {
    jasper_test::binary("jasperd")
}

pub fn jasper_binary() -> PathBuf {
    jasper_test::binary("jasper")
}

/// Starts `cmd` and waits for its `listening on` line (the kit's, with this file's timeout).
fn spawn_until_listening(cmd: Command) -> Result<Child, String> {
    jasper_test::process::spawn_until_listening(cmd, START_TIMEOUT).map(|(child, _)| child)
}

// ---- relays -----------------------------------------------------------------------------

pub use jasper_test::relay::Relay;

/// How these tests start one of the kit's relays (`Relay::start`): the embedded store in
/// `dir/data`, the log in `dir/relay.log` (`JASPER_TEST_LOG`, else info, as the daemons'),
/// syncing every second (servers every 2 s): the kit's defaults.
pub trait StartRelay {
    /// Starts a relay on `port` peered with `peers`.
    fn start(dir: &Path, port: u16, peers: &[String]) -> Relay;
}

impl StartRelay for Relay {
    fn start(dir: &Path, port: u16, peers: &[String]) -> Relay {
        Relay::builder(dir)
            .port(port)
            .peers(peers.iter().cloned())
            .start()
    }
}

/// Relays peered with each other in a full mesh (`relay0`, `relay1`, ... under the root).
pub struct Mesh {
    pub relays: Vec<Relay>,
}

impl Mesh {
    pub fn start(root: &Path, n: usize) -> Mesh {
        Mesh {
            relays: jasper_test::relay::mesh(n, root),
        }
    }

    pub fn addrs(&self) -> Vec<String> {
        self.relays.iter().map(Relay::addr).collect()
    }

    /// What each relay returns for `/fetch {recipient}`, in relay order.
    pub fn fetch_all(&self, rt: &tokio::runtime::Runtime, recipient: &str) -> Vec<Value> {
        let http = reqwest::Client::new();
        self.relays
            .iter()
            .map(|relay| {
                rt.block_on(async {
                    http.post(relay.url("/fetch"))
                        .json(&json!({ "recipient": recipient }))
                        .send()
                        .await
                        .and_then(|r| r.error_for_status())
                        .expect("relay answers /fetch")
                        .json::<Value>()
                        .await
                        .expect("/fetch answers JSON")
                })
            })
            .collect()
    }
}

/// Every string anywhere in a JSON document.
pub fn json_strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().flat_map(json_strings).collect(),
        Value::Object(o) => o
            .iter()
            .flat_map(|(k, v)| std::iter::once(k.as_str()).chain(json_strings(v)))
            .collect(),
        _ => Vec::new(),
    }
}

// ---- daemons ----------------------------------------------------------------------------

/// How to start a daemon; `Default` is keyutils, no relays, nothing extra.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// `--key-store` value; `None` leaves the default (Secret Service when available).
    pub key_store: Option<String>,
    pub relays: Vec<String>,
    /// More flags, e.g. `["--tcp", "127.0.0.1:9000", "--token-file", ...]`.
    pub extra: Vec<String>,
    /// Extra environment, e.g. `DBUS_SESSION_BUS_ADDRESS`.
    pub env: Vec<(String, String)>,
    /// Socket path; default `<dir>/jasperd.sock`.
    pub socket: Option<PathBuf>,
    /// Raise desktop notifications (off by default in tests).
    pub notifications: bool,
    /// Use loopback relays learned from other relays (on by default in tests).
    pub allow_private_relays: bool,
    /// A command the daemon runs under (`ip netns exec NETNS`: a host of the kit's
    /// `netns::Network`), empty for none.
    pub wrapper: Vec<String>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            key_store: Some("keyutils".into()),
            relays: Vec::new(),
            extra: Vec::new(),
            env: Vec::new(),
            socket: None,
            notifications: false,
            allow_private_relays: true,
            wrapper: Vec::new(),
        }
    }
}

impl DaemonOptions {
    /// Keyutils, every relay of `mesh`, short timings.
    pub fn for_mesh(mesh: &Mesh) -> Self {
        Self {
            relays: mesh.addrs(),
            ..Self::default()
        }
    }
}

/// A `jasperd` process with its own directory (`data/`, the socket, `jasperd.log`). Killed
/// (SIGKILL) on drop; the directory stays for the test's temp dir to remove.
pub struct Daemon {
    pub name: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
    child: Option<Child>,
    /// How many times it was started (each start appends to the same log).
    starts: u32,
}

impl Daemon {
    /// Starts `name` under `root` against `mesh` with the usual test flags.
    pub fn start(root: &Path, name: &str, mesh: &Mesh) -> Daemon {
        Self::start_with(root, name, DaemonOptions::for_mesh(mesh))
    }

    pub fn start_with(root: &Path, name: &str, opts: DaemonOptions) -> Daemon {
        let mut d = Self::new(root, name, opts);
        if let Err(e) = d.try_spawn() {
            panic!("jasperd {name} did not start: {e}\n{}", d.log());
        }
        d
    }

    /// Prepares without starting (for tests that expect the start to fail).
    pub fn new(root: &Path, name: &str, opts: DaemonOptions) -> Daemon {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("daemon dir");
        let socket = opts
            .socket
            .clone()
            .unwrap_or_else(|| dir.join("jasperd.sock"));
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--socket".into(),
            socket.display().to_string(),
            "--long-poll".into(),
            "5".into(),
            "--delivery-timeout".into(),
            "5".into(),
            "--poll-interval".into(),
            "1".into(),
            "--discovery-interval".into(),
            "2".into(),
            "--sent-copy-delay".into(),
            "1".into(),
        ];
        if !opts.notifications {
            args.push("--no-notifications".into());
        }
        if opts.allow_private_relays {
            args.push("--allow-private-relays".into());
        }
        if let Some(ks) = &opts.key_store {
            args.push("--key-store".into());
            args.push(ks.clone());
        }
        for r in &opts.relays {
            args.push("--relay".into());
            args.push(r.clone());
        }
        args.extend(opts.extra.iter().cloned());
        Daemon {
            name: name.to_owned(),
            dir,
            socket,
            args,
            env: opts.env,
            wrapper: opts.wrapper,
            child: None,
            starts: 0,
        }
    }

    /// Starts the process and waits for its "listening" line; `Err` carries why it did not.
    pub fn try_spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("daemon log");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(jasperd_binary());
                cmd
            }
            None => Command::new(jasperd_binary()),
        };
        cmd.args(&self.args)
            .env("JASPER_LOG", log_level())
            .env("NO_COLOR", "1")
            .env_remove("XDG_RUNTIME_DIR")
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.starts += 1;
        let child = spawn_until_listening(cmd)?;
        self.child = Some(child);
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("jasperd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// SIGKILL: a crash; the socket file and the data directory stay behind.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (at most 30 s) for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon is running");
        jasper_test::process::terminate(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("jasperd {} ignored SIGTERM for 30 s", self.name);
        })
    }

    /// Starts again on the same data directory and socket (after `kill9` or `stop`).
    pub fn restart(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("jasperd {} did not restart: {e}\n{}", self.name, self.log());
        }
    }

    /// Runs `jasper --socket <ours> --json <args>`.
    pub fn jasper(&self, args: &[&str]) -> Cli {
        self.jasper_with_stdin(args, None)
    }

    pub fn jasper_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Cli {
        let mut cmd = Command::new(jasper_binary());
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--json")
            .args(args);
        Cli::run(cmd, stdin)
    }

    /// Runs a CLI command that must succeed; returns its JSON output.
    pub fn ok(&self, args: &[&str]) -> Value {
        let out = self.jasper(args);
        assert!(
            out.success(),
            "jasper {args:?} on {} failed: {out:?}",
            self.name
        );
        out.json()
    }

    /// Runs a CLI command that must fail; returns (exit code, error code, message).
    pub fn fails(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.jasper(args);
        assert!(
            !out.success(),
            "jasper {args:?} on {} unexpectedly succeeded: {out:?}",
            self.name
        );
        let err = out.error();
        (
            out.code(),
            err["code"].as_str().unwrap_or_default().to_owned(),
            err["message"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Creates this daemon's identity; returns its public key.
    pub fn create_identity(&self) -> String {
        let info = self.ok(&["identity", "create"]);
        info["public_key"]
            .as_str()
            .expect("identity has a public key")
            .to_owned()
    }

    pub fn public_key(&self) -> String {
        self.ok(&["identity", "show"])["public_key"]
            .as_str()
            .expect("identity has a public key")
            .to_owned()
    }

    /// The messages of a conversation (newest page, up to 500).
    pub fn messages(&self, with: &str) -> Vec<Value> {
        let page = self.ok(&["messages", "--with", with, "--limit", "500"]);
        page["messages"].as_array().cloned().unwrap_or_default()
    }

    /// The message `id` of the conversation `with`, if it is there (and the conversation is).
    pub fn find_message(&self, with: &str, id: &str) -> Option<Value> {
        let out = self.jasper(&["messages", "--with", with, "--limit", "500"]);
        if !out.success() {
            return None;
        }
        out.json()["messages"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
    }

    /// Waits until the conversation `with` holds a message with this id.
    pub fn wait_for_message(&self, with: &str, id: &str, timeout: Duration) -> Value {
        wait_until(
            timeout,
            &format!("message {id} in {}'s conversation with {with}", self.name),
            || self.find_message(with, id),
        )
    }

    /// A gRPC client over the socket (on `rt`).
    pub fn client(&self, rt: &tokio::runtime::Runtime) -> Client {
        rt.block_on(Client::connect(&self.socket))
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "---- jasperd {} log (last 80 lines) ----\n{}",
                self.name,
                tail.join("\n")
            );
        }
        self.kill9();
    }
}

/// Alice and bob on a mesh of `relays` relays: identities made, contacts of each other.
pub fn alice_and_bob(root: &Path, relays: usize) -> (Mesh, Daemon, Daemon) {
    let mesh = Mesh::start(root, relays);
    let alice = Daemon::start(root, "alice", &mesh);
    let bob = Daemon::start(root, "bob", &mesh);
    alice.create_identity();
    bob.create_identity();
    befriend(&alice, "alice", &bob, "bob");
    (mesh, alice, bob)
}

/// Makes `a` and `b` contacts of each other under the given names.
pub fn befriend(a: &Daemon, a_name: &str, b: &Daemon, b_name: &str) {
    let a_key = a.public_key();
    let b_key = b.public_key();
    a.ok(&["contact", "add", &b_key, "--name", b_name]);
    b.ok(&["contact", "add", &a_key, "--name", a_name]);
}

// ---- the CLI ----------------------------------------------------------------------------

/// One finished `jasper` run.
#[derive(Debug)]
pub struct Cli {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    pub fn run(mut cmd: Command, stdin: Option<&str>) -> Cli {
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("jasper runs");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin piped");
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().expect("jasper finishes");
        Cli {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// stdout as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// The `error` object of a `--json` failure (on stderr).
    pub fn error(&self) -> Value {
        let v: Value = serde_json::from_str(self.stderr.trim())
            .unwrap_or_else(|e| panic!("stderr is not a JSON error ({e}): {self:?}"));
        v["error"].clone()
    }
}

/// A running `jasper --json watch --from SEQ`: its events as they arrive. Killed on drop
/// (which is a disconnect, as far as the daemon is concerned).
pub struct Watch {
    child: Child,
    events: mpsc::Receiver<Value>,
}

impl Watch {
    pub fn start(daemon: &Daemon, from: u64) -> Watch {
        let mut child = Command::new(jasper_binary())
            .arg("--socket")
            .arg(&daemon.socket)
            .args(["--json", "watch", "--from", &from.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("jasper watch runs");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("watch printed a non-JSON line ({e}): {line}"));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Watch { child, events }
    }

    /// The next event, if one arrives within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Value> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Reads events until `done` holds for the ones read so far (or panics after `timeout`).
    pub fn read_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "watch: timed out; got {seen:#?}");
            if let Some(e) = self.next(left.min(Duration::from_millis(500))) {
                seen.push(e);
            }
        }
        seen
    }

    /// Disconnects (kills the CLI process).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `seq` of a watched event.
pub fn seq(event: &Value) -> u64 {
    event["seq"].as_u64().expect("event has a seq")
}

/// Logging reverse proxies per (daemon, relay) pair and the attribution of what relays saw.
pub mod proxy;
