//! A real `redis-server` on a free loopback port, for the relay's Redis store, and a real
//! Redis Cluster of several of them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `redis-server` may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A private `redis-server`, persisting to its directory with an fsync on every write (what
/// the relay's durability is measured against). Killed on drop.
pub struct Redis {
    port: u16,
    dir: PathBuf,
    child: Child,
    /// The temporary directory of [`Redis::start`], removed on drop.
    _temp: Option<tempfile::TempDir>,
}

impl Redis {
    /// A server with a temporary directory of its own; panics when it does not start.
    pub fn start() -> Redis {
        let temp = tempfile::tempdir().expect("a temporary directory for redis-server");
        let mut redis = Self::try_start_in(temp.path()).unwrap_or_else(|e| panic!("{e}"));
        redis._temp = Some(temp);
        redis
    }

    /// A server keeping its files (and `redis.log`) in `dir`, which must exist; `Err` says why
    /// it did not start.
    pub fn try_start_in(dir: &Path) -> Result<Redis, String> {
        Self::try_start_with(dir, &[])
    }

    /// As [`Self::try_start_in`], with more `redis-server` arguments.
    fn try_start_with(dir: &Path, extra: &[&str]) -> Result<Redis, String> {
        let port = crate::free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--daemonize", "no"])
            .args(extra)
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server (scripts/test.sh installs it): {e}"))?;
        let mut redis = Redis {
            port,
            dir: dir.to_owned(),
            child,
            _temp: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !redis.answers_ping() {
            if let Ok(Some(status)) = redis.child.try_wait() {
                return Err(format!(
                    "redis-server exited ({status}); its log is {}",
                    dir.join("redis.log").display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server did not answer PING within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    /// Ready means answering commands, not only accepting connections (it accepts while it
    /// still loads its files).
    fn answers_ping(&self) -> bool {
        let pong = TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(b"PING\r\n")?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf)?;
            Ok(buf.starts_with(b"+PONG"))
        });
        matches!(pong, Ok(true))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of `redis-server` processes on loopback, each a primary owning a share of
/// the 16,384 slots (no replicas), created with `redis-cli --cluster create`. Killed on drop.
pub struct RedisCluster {
    nodes: Vec<Redis>,
    _temp: tempfile::TempDir,
}

impl RedisCluster {
    /// A cluster of `n` (at least 3) primaries, ready (`cluster_state:ok` on every node);
    /// panics when it does not come up.
    pub fn start(n: usize) -> RedisCluster {
        let temp = tempfile::tempdir().expect("a temporary directory for the cluster");
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let dir = temp.path().join(format!("node{i}"));
            std::fs::create_dir_all(&dir).expect("node directory");
            let node = Redis::try_start_with(
                &dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ],
            )
            .unwrap_or_else(|e| panic!("{e}"));
            nodes.push(node);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli (installed with redis-server by scripts/test.sh)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes, _temp: temp };
        let deadline = Instant::now() + START_TIMEOUT;
        while !cluster.nodes.iter().all(|n| cluster_ok(n.port())) {
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// Every node's `redis://127.0.0.1:PORT`, comma-separated (what `--redis` takes with
    /// `--redis-cluster`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn nodes(&self) -> &[Redis] {
        &self.nodes
    }
}

fn cluster_ok(port: u16) -> bool {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "cluster", "info"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
}
