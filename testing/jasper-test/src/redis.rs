//! A real `redis-server` on a free loopback port, for the relay's Redis store.

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
        let port = crate::free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--daemonize", "no"])
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
