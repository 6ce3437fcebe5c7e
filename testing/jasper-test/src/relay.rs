//! Real `jasper-relay` processes on loopback.
//!
//! A relay has a directory of its own: the embedded store in `data/`, its log (stderr) in
//! `relay.log`. [`Relay::builder`] configures one; [`mesh`] and [`mesh_with`] start several,
//! each peered with all the others. A [`Relay`] is killed when dropped.
//!
//! ```no_run
//! let dir = tempfile::tempdir().unwrap();
//! let mut relay = jasper_test::relay::Relay::builder(dir.path()).start();
//! let status = relay.url("/status");
//! relay.crash();
//! relay.restart(); // same port, same data
//! ```

use std::fs::OpenOptions;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::process;

/// Sync intervals of a relay under test unless a test says otherwise: messages move between
/// relays within a second or two, instead of the relay's defaults (60 s and an hour).
pub const FAST_SYNC: SyncIntervals = SyncIntervals {
    hashes_secs: 1,
    servers_secs: 2,
};

/// How long a relay may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a relay may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `--sync-interval` and `--server-sync-interval`, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncIntervals {
    pub hashes_secs: u64,
    pub servers_secs: u64,
}

/// How a relay is to be started; from [`Relay::builder`], consumed by [`RelayBuilder::start`].
#[derive(Debug, Clone)]
pub struct RelayBuilder {
    dir: PathBuf,
    port: u16,
    peers: Vec<String>,
    redis: Option<String>,
    sync: Option<SyncIntervals>,
    allow_private_peers: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_level: String,
    binary: Option<PathBuf>,
    start_timeout: Duration,
    rate_limits: bool,
    /// The address it listens on (default loopback).
    ip: IpAddr,
    /// A command it runs under (`ip netns exec NETNS`), empty for none.
    wrapper: Vec<String>,
}

impl RelayBuilder {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            port: crate::free_port(),
            peers: Vec::new(),
            redis: None,
            sync: Some(FAST_SYNC),
            allow_private_peers: true,
            args: Vec::new(),
            env: Vec::new(),
            log_level: crate::test_log_level("info"),
            binary: None,
            start_timeout: START_TIMEOUT,
            rate_limits: true,
            ip: IpAddr::from([127, 0, 0, 1]),
            wrapper: Vec::new(),
        }
    }

    /// The loopback port (default: one free when the builder was made). `0` lets the relay
    /// choose; [`Relay::addr`] then says which it got, and a restart keeps it.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// A peer (`HOST:PORT`); repeatable.
    pub fn peer(mut self, addr: impl Into<String>) -> Self {
        self.peers.push(addr.into());
        self
    }

    pub fn peers<S: Into<String>>(mut self, addrs: impl IntoIterator<Item = S>) -> Self {
        self.peers.extend(addrs.into_iter().map(Into::into));
        self
    }

    /// The Redis store at `url` instead of the embedded one.
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(url.into());
        self
    }

    /// Sync intervals other than [`FAST_SYNC`].
    pub fn sync_intervals(mut self, hashes_secs: u64, servers_secs: u64) -> Self {
        self.sync = Some(SyncIntervals {
            hashes_secs,
            servers_secs,
        });
        self
    }

    /// No sync flags: the relay's own defaults (what benches measure, and what tests that pass
    /// their own `--sync-interval` among the extra arguments need).
    pub fn relay_default_sync(mut self) -> Self {
        self.sync = None;
        self
    }

    /// `--allow-private-peers` (default `true`: every peer of a test is on loopback).
    pub fn allow_private_peers(mut self, allow: bool) -> Self {
        self.allow_private_peers = allow;
        self
    }

    /// More flags, after the ones the builder makes.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable of the relay process.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// `JASPER_LOG` (default: `JASPER_TEST_LOG`, else `info`).
    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_level = level.into();
        self
    }

    /// The relay binary (default: [`crate::binary`]`("jasper-relay")`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// `false`: the relay's per-address rate limits off (`--rate-limits off`), for tests that
    /// send from one address faster than a client may; on by default, as in production.
    pub fn rate_limits(mut self, on: bool) -> Self {
        self.rate_limits = on;
        self
    }

    /// Runs the relay on `host` of a [`crate::netns::Network`], listening on its address (the
    /// port as set by [`Self::port`]).
    pub fn on_host(mut self, host: &crate::netns::Host) -> Self {
        self.ip = IpAddr::V4(host.ip);
        self.wrapper = host.exec_prefix().to_vec();
        self
    }

    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts the relay and waits for its `listening on` line; panics saying why not (exit
    /// status, log path and the log's last lines).
    pub fn start(self) -> Relay {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Self::start`], with the reason as an `Err`.
    pub fn try_start(self) -> Result<Relay, String> {
        let binary = self
            .binary
            .clone()
            .unwrap_or_else(|| crate::binary("jasper-relay"));
        let mut relay = Relay {
            addr: SocketAddr::new(self.ip, self.port),
            binary,
            settings: self,
            child: None,
        };
        relay.spawn()?;
        Ok(relay)
    }
}

/// A `jasper-relay` process (or one stopped, to be restarted). Killed (SIGKILL) on drop; its
/// directory stays for the test's temporary directory to remove.
pub struct Relay {
    settings: RelayBuilder,
    binary: PathBuf,
    /// Where it listens: the requested port, or the one it chose for port 0.
    addr: SocketAddr,
    child: Option<Child>,
}

impl Relay {
    /// A relay whose directory (store and log) is `dir`, with the defaults of a test: a free
    /// port, no peers, the embedded store, [`FAST_SYNC`], private peers allowed.
    pub fn builder(dir: &Path) -> RelayBuilder {
        RelayBuilder::new(dir)
    }

    fn command(&self) -> Result<Command, String> {
        let s = &self.settings;
        std::fs::create_dir_all(&s.dir)
            .map_err(|e| format!("cannot create {}: {e}", s.dir.display()))?;
        // Appended to, so a restarted relay's log follows the one before.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open {}: {e}", self.log_path().display()))?;
        let mut cmd = match s.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--allow-private-peers", &s.allow_private_peers.to_string()]);
        if let Some(sync) = s.sync {
            cmd.args(["--sync-interval", &sync.hashes_secs.to_string()])
                .args(["--server-sync-interval", &sync.servers_secs.to_string()]);
        }
        if let Some(url) = &s.redis {
            cmd.args(["--redis", url]);
        }
        for peer in &s.peers {
            cmd.args(["--peer", peer]);
        }
        if !s.rate_limits {
            cmd.args(["--rate-limits", "off"]);
        }
        cmd.args(&s.args);
        // Every flag of the relay also reads JASPER_RELAY_<NAME>: a variable set where the
        // tests run must not change the relay they start.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("JASPER_RELAY_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("JASPER_LOG", &s.log_level);
        for (key, value) in &s.env {
            cmd.env(key, value);
        }
        cmd.stdin(Stdio::null()).stderr(log);
        Ok(cmd)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let what = format!("jasper-relay in {}", self.settings.dir.display());
        let cmd = self.command().map_err(|e| format!("{what}: {e}"))?;
        let (child, line) = process::spawn_until_listening(cmd, self.settings.start_timeout)
            .map_err(|e| {
                format!(
                    "{what} did not start: {e}; its log is {}:\n{}",
                    self.log_path().display(),
                    self.log_tail(20)
                )
            })?;
        // "jasper-relay listening on 127.0.0.1:PORT": the port it got, when it was asked for 0.
        if let Some(addr) = line
            .rsplit("listening on ")
            .next()
            .and_then(|a| a.trim().parse().ok())
        {
            self.addr = addr;
        }
        self.child = Some(child);
        Ok(())
    }

    /// `IP:PORT` (`127.0.0.1:PORT` unless it runs on a host of a [`crate::netns::Network`]).
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://IP:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The relay's own directory (store and log).
    pub fn dir(&self) -> &Path {
        &self.settings.dir
    }

    /// The embedded store's directory.
    pub fn data_dir(&self) -> PathBuf {
        self.settings.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.settings.dir.join("relay.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: a crash, with no chance to flush anything.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 30 s); its status, `None` when it was
    /// not running.
    pub fn shutdown(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        Some(process::stop(&mut child, STOP_TIMEOUT))
    }

    /// SIGTERM, and asserts a graceful exit (status 0 within 30 s).
    pub fn stop(&mut self) {
        if let Some(status) = self.shutdown() {
            assert!(
                status.success(),
                "jasper-relay on {} exited with {status} after SIGTERM; its log is {}",
                self.addr,
                self.log_path().display()
            );
        }
    }

    /// Starts it again on the same port, data and flags (after [`Self::crash`] or
    /// [`Self::stop`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or crash the relay first");
        if let Err(e) = self.spawn() {
            panic!("{e}");
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.crash();
    }
}

/// `n` relays in `dir/relay0`, `dir/relay1`, ..., each peered with every other, with the
/// builder's defaults (fast sync).
pub fn mesh(n: usize, dir: &Path) -> Vec<Relay> {
    mesh_with(n, dir, |b| b)
}

/// As [`mesh`], each relay's builder passed through `configure` first (peers and port are
/// set; anything else may be changed).
///
/// The ports are free when chosen, but every relay must know its peers' ports before any of
/// them listens, so another process (a parallel test's relay, a WebRTC socket) can take one in
/// between. The whole mesh is then started again on fresh ports (three tries).
pub fn mesh_with(
    n: usize,
    dir: &Path,
    mut configure: impl FnMut(RelayBuilder) -> RelayBuilder,
) -> Vec<Relay> {
    let mut failures = Vec::new();
    for attempt in 0..3 {
        let ports: Vec<u16> = (0..n).map(|_| crate::free_port()).collect();
        let attempt_dir = if attempt == 0 {
            dir.to_owned()
        } else {
            dir.join(format!("retry{attempt}"))
        };
        match try_mesh_on(&ports, &attempt_dir, &mut configure) {
            Ok(relays) => return relays,
            Err(e) if e.contains("Address already in use") => failures.push(e),
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no mesh of {n} relays could start on free ports: {failures:#?}")
}

/// A full mesh on the given ports (one relay each).
pub fn mesh_on(
    ports: &[u16],
    dir: &Path,
    mut configure: impl FnMut(RelayBuilder) -> RelayBuilder,
) -> Vec<Relay> {
    try_mesh_on(ports, dir, &mut configure).unwrap_or_else(|e| panic!("{e}"))
}

/// A full mesh on the given ports, or why a relay did not start (the ones started are stopped
/// when dropped).
fn try_mesh_on(
    ports: &[u16],
    dir: &Path,
    configure: &mut impl FnMut(RelayBuilder) -> RelayBuilder,
) -> Result<Vec<Relay>, String> {
    // Each relay starts with peers that are not up yet: a relay keeps trying its peers, so the
    // order does not matter.
    (0..ports.len())
        .map(|i| {
            let peers = ports
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, p)| format!("127.0.0.1:{p}"));
            let builder = Relay::builder(&dir.join(format!("relay{i}")))
                .port(ports[i])
                .peers(peers);
            configure(builder).try_start()
        })
        .collect()
}
