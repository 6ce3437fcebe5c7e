//! The kit's fixtures against the real programs they start: `jasper-relay` (built beforehand:
//! `cargo build -p jasper-relay`), `redis-server`, coturn, and this crate's `jasper-mesh`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use jasper_test::redis::Redis;
use jasper_test::relay::{self, Relay};
use jasper_test::stun::StunServer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One HTTP/1.1 request with `Connection: close`; the status and the JSON body. A plain socket:
/// the kit's tests need no HTTP client of their own.
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn status(relay: &Relay) -> Value {
    let (code, body) = http(&relay.addr(), "GET", "/status", None);
    assert_eq!(code, 200, "{body}");
    body
}

/// A packet relays accept: a real RSA-4096 key (the relay tests' fixture), base64 content and
/// its SHA-256 (relays look no deeper).
fn packet(text: &str) -> Value {
    let key = include_str!("../../../relay/tests/fixtures/recipients.txt")
        .lines()
        .next()
        .expect("a fixture key")
        .to_owned();
    let message = base64::engine::general_purpose::STANDARD.encode(text);
    let hash = format!("{:x}", Sha256::digest(message.as_bytes()));
    json!({ "recipient": key, "message": message, "hash": hash, "signature": "c2lnbmF0dXJl" })
}

fn holds(relay: &Relay, hash: &str) -> bool {
    let (_, body) = http(
        &relay.addr(),
        "POST",
        "/fetch",
        Some(&json!({ "hashes": [hash] })),
    );
    body["messages"].get(0).is_some_and(|m| !m.is_null())
}

fn refuses(addr: &str) -> bool {
    TcpStream::connect(addr).is_err()
}

#[test]
fn a_relay_keeps_its_port_and_data_across_a_crash_and_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Relay::builder(&dir.path().join("r"))
        .log_level("info")
        .start();
    let addr = relay.addr();
    let first_pid = relay.pid().expect("running");
    let p = packet("kept across restarts");
    let hash = p["hash"].as_str().unwrap().to_owned();
    let (code, body) = http(&addr, "POST", "/send", Some(&p));
    assert_eq!(code, 200, "{body}");

    relay.crash();
    assert!(!relay.is_running());
    assert!(refuses(&addr), "a crashed relay still accepts connections");
    relay.restart();
    assert_eq!(relay.addr(), addr, "a restart keeps the port");
    assert_ne!(relay.pid(), Some(first_pid), "a restart is a new process");
    assert!(holds(&relay, &hash), "the message is gone after a crash");

    relay.stop();
    assert!(relay.pid().is_none());
    relay.restart();
    assert!(holds(&relay, &hash), "the message is gone after a stop");
    assert!(relay.data_dir().starts_with(dir.path().join("r")));
    assert!(
        relay.log().contains("using embedded store"),
        "the log file holds the relay's stderr: {:?}",
        relay.log()
    );
}

#[test]
fn a_relay_asked_for_port_0_reports_the_port_it_got() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::builder(dir.path()).port(0).start();
    assert_ne!(relay.port(), 0);
    assert_eq!(
        relay.url("/status"),
        format!("http://{}/status", relay.addr())
    );
    assert_eq!(status(&relay)["software"], "jasper-relay");
}

#[test]
fn a_relay_that_cannot_start_says_why_and_where_its_log_is() {
    let dir = tempfile::tempdir().unwrap();
    let err = Relay::builder(dir.path())
        .arg("--sync-interval")
        .arg("0")
        .relay_default_sync()
        .try_start()
        .err()
        .expect("--sync-interval 0 is refused");
    assert!(err.contains("exited (exit status: 2)"), "{err}");
    assert!(err.contains("relay.log"), "{err}");
    assert!(err.contains("at least 1 second"), "the log's tail: {err}");
}

#[test]
fn a_mesh_peers_every_relay_with_every_other_one() {
    let dir = tempfile::tempdir().unwrap();
    let relays = relay::mesh(3, dir.path());
    for (i, relay) in relays.iter().enumerate() {
        let peers: Vec<String> = status(relay)["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["address"].as_str().unwrap().to_owned())
            .collect();
        let mut others: Vec<String> = relays
            .iter()
            .filter(|r| r.addr() != relay.addr())
            .map(Relay::addr)
            .collect();
        others.sort();
        assert_eq!(peers, others, "relay {i}'s peers");
        assert_eq!(relay.dir(), dir.path().join(format!("relay{i}")));
    }
    // Fast sync: a packet sent to one relay reaches the others.
    let p = packet("across the mesh");
    assert_eq!(http(&relays[0].addr(), "POST", "/send", Some(&p)).0, 200);
    let hash = p["hash"].as_str().unwrap();
    jasper_test::wait_until(Duration::from_secs(10), "the packet on relay 2", || {
        holds(&relays[2], hash).then_some(())
    });
}

#[test]
fn redis_answers_until_dropped() {
    let redis = Redis::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/0", redis.port()));
    let mut conn = TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    conn.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    conn.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    let addr = format!("127.0.0.1:{}", redis.port());
    drop(redis);
    assert!(refuses(&addr), "redis-server survived its drop");
}

#[test]
fn a_relay_runs_on_redis() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::builder(dir.path())
        .redis(redis.url())
        .log_level("info")
        .start();
    let p = packet("stored in redis");
    assert_eq!(http(&relay.addr(), "POST", "/send", Some(&p)).0, 200);
    assert!(holds(&relay, p["hash"].as_str().unwrap()));
    assert!(relay.log().contains("using Redis store"), "{}", relay.log());
}

#[test]
fn the_stun_server_answers_and_counts_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let stun = StunServer::start(dir.path());
    assert_eq!(stun.url, format!("stun:127.0.0.1:{}", stun.port()));
    // The readiness probe was one Binding request; coturn may log it a moment later.
    jasper_test::wait_until(Duration::from_secs(5), "coturn logging a binding", || {
        (stun.bindings() >= 1).then_some(())
    });
}

#[test]
fn a_missing_binary_names_the_command_that_builds_it() {
    let panic = std::panic::catch_unwind(|| jasper_test::binary("no-such-binary"))
        .expect_err("a missing binary panics");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("no-such-binary is missing"), "{message}");
    assert!(
        message.contains("cargo build --bin no-such-binary"),
        "{message}"
    );
    assert!(message.contains("NO_SUCH_BINARY_BIN"), "{message}");
}

/// Starts `jasper-mesh` with `args`; the child (stdin piped) and its JSON line.
fn jasper_mesh(args: &[&str]) -> (std::process::Child, Value) {
    let mut child = Command::new(jasper_test::binary("jasper-mesh"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("jasper-mesh runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let announced = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("jasper-mesh printed {line:?}, not JSON: {e}"));
    (child, announced)
}

#[test]
fn jasper_mesh_announces_its_relays_and_stops_them_when_stdin_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, announced) =
        jasper_mesh(&["--relays", "2", "--dir", dir.path().to_str().unwrap()]);
    let relays = announced["relays"].as_array().unwrap();
    assert_eq!(relays.len(), 2);
    assert_eq!(announced["stun"], Value::Null);
    for r in relays {
        let addr = r["address"].as_str().unwrap();
        assert_eq!(r["url"], format!("http://{addr}"));
        assert!(r["pid"].as_u64().is_some(), "{r}");
        assert!(std::path::Path::new(r["log"].as_str().unwrap()).is_file());
        let (code, status) = http(addr, "GET", "/status", None);
        assert_eq!(code, 200);
        assert_eq!(status["peers"].as_array().unwrap().len(), 1, "{status}");
    }
    drop(child.stdin.take());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "jasper-mesh exited with {exit}");
    for r in relays {
        assert!(
            refuses(r["address"].as_str().unwrap()),
            "a relay outlived jasper-mesh"
        );
    }
}

#[test]
fn jasper_mesh_takes_ports_and_stun_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [jasper_test::free_port(), jasper_test::free_port()];
    let (p0, p1) = (ports[0].to_string(), ports[1].to_string());
    let (mut child, announced) = jasper_mesh(&[
        "--ports",
        &p0,
        &p1,
        "--stun",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let addresses: Vec<&str> = announced["relays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        addresses,
        [format!("127.0.0.1:{p0}"), format!("127.0.0.1:{p1}")]
    );
    assert!(
        announced["stun"]
            .as_str()
            .is_some_and(|s| s.starts_with("stun:127.0.0.1:")),
        "{announced}"
    );
    let exit = jasper_test::process::terminate(&mut child, Duration::from_secs(30))
        .expect("jasper-mesh exits on SIGTERM");
    assert!(exit.success(), "jasper-mesh exited with {exit}");
    for addr in addresses {
        assert!(refuses(addr), "{addr} outlived jasper-mesh");
    }
}
