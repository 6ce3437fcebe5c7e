//! A real STUN server for transparent-mode tests: coturn (`--stun-only`) on a loopback port,
//! logging each Binding request so a test can count them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long coturn may take to answer its first Binding request.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Ports tried by [`StunServer::start`] before it gives up.
const ATTEMPTS: usize = 3;

/// A real STUN server (coturn, `--stun-only`) on a loopback port, logging every Binding
/// request it handles so a test can count them. Killed on drop.
pub struct StunServer {
    /// `stun:127.0.0.1:PORT`.
    pub url: String,
    pub log: PathBuf,
    port: u16,
    child: Child,
}

impl StunServer {
    /// Starts coturn on a free port, its log and pid file in `dir`. It listens on that one
    /// UDP port only (`--no-tcp`, `--no-rfc5780`); a start that exits or does not answer (the
    /// port taken in between) is retried on another.
    pub fn start(dir: &Path) -> StunServer {
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start_on(dir, crate::free_tcp_and_udp_port()) {
                Ok(server) => return server,
                Err(e) => failures.push(e),
            }
        }
        panic!("coturn did not start on {ATTEMPTS} ports: {failures:#?}")
    }

    /// Starts coturn on `port` (one attempt).
    pub fn try_start_on(dir: &Path, port: u16) -> Result<StunServer, String> {
        let log = dir.join(format!("coturn-{port}.log"));
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--stun-only",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                // UDP on one port only: WebRTC's STUN is UDP, and every further listener
                // (TCP, the RFC 5780 alternate port P+1) is another port that may be taken.
                "--no-tcp",
                "--no-rfc5780",
                "--simple-log",
                "-V",
            ])
            .args([
                "--listening-ip",
                "127.0.0.1",
                "--listening-port",
                &port.to_string(),
            ])
            .arg("--log-file")
            .arg(&log)
            .arg("--pidfile")
            .arg(dir.join(format!("coturn-{port}.pid")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot run turnserver (Debian package coturn; scripts/test.sh installs it): {e}")
            })?;
        let mut server = StunServer {
            url: format!("stun:127.0.0.1:{port}"),
            log,
            port,
            child,
        };
        server.await_binding()?;
        Ok(server)
    }

    /// Ready once it answers a Binding request.
    fn await_binding(&mut self) -> Result<(), String> {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + START_TIMEOUT;
        let mut request = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        request.extend_from_slice(&transaction_id());
        loop {
            // A send fails while nothing listens (ICMP port unreachable): that is a retry too.
            let _ = sock.send_to(&request, ("127.0.0.1", self.port));
            let mut buf = [0u8; 512];
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && n >= 20
                && buf[0..2] == [1, 1]
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "coturn on port {} exited ({status}); its log is {}",
                    self.port,
                    self.log.display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "coturn did not answer STUN on port {} within {START_TIMEOUT:?}; its log is {}",
                    self.port,
                    self.log.display()
                ));
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
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

/// A STUN transaction id: 12 bytes that differ between runs (the clock's nanoseconds).
fn transaction_id() -> [u8; 12] {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos()
        .to_le_bytes();
    n[..12].try_into().expect("u128 has 16 bytes")
}
