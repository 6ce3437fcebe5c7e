//! A real STUN server for transparent-mode tests: coturn (`--stun-only`) on a loopback UDP
//! port, logging each Binding request so a test can count them. Shared by the engine's and the
//! daemon's tests (`#[path]`-included).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real STUN server (coturn, `--stun-only`) on a loopback port, logging every Binding
/// request it handles so a test can count them.
pub struct StunServer {
    pub url: String,
    pub log: PathBuf,
    child: Child,
}

impl StunServer {
    /// Starts coturn on a free UDP port and waits until it answers a Binding request. A port
    /// another process takes between the check and coturn's bind makes coturn exit or stay
    /// silent; then it is started again on another port (three tries).
    pub fn start(dir: &std::path::Path) -> StunServer {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(dir) {
                Ok(server) => return server,
                Err(e) => failures.push(e),
            }
        }
        panic!("coturn did not start: {failures:?}");
    }

    fn try_start(dir: &std::path::Path) -> Result<StunServer, String> {
        let port = jasper_test::free_udp_port();
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver (Debian package coturn) is needed: scripts/test.sh installs it");
        let mut server = StunServer {
            url: format!("stun:127.0.0.1:{port}"),
            log,
            child,
        };
        // Ready once it answers a Binding request.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
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
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("port {port}: coturn exited ({status})"));
            }
            if Instant::now() >= deadline {
                return Err(format!("port {port}: no STUN answer within 10 s"));
            }
        }
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
