//! `cargo xtask mesh`: the demo. Three relays on loopback, peered with each other, with the
//! embedded store (from the test kit's `jasper-mesh`, with a loopback STUN server when coturn is
//! installed); one raw packet sent to the first relay and fetched from the third; then two
//! daemons, alice and bob (keys in the kernel keyring), that exchange an end-to-end encrypted
//! message through the mesh, each sending through another relay than it receives on; then
//! transparent mode, and a second message straight over a WebRTC data channel. Runs until
//! Ctrl-C, for trying the `jasper` CLI against either socket.
//!
//!   JASPER_MESH_PORTS="9000 9001 9002"  relay ports (default 8080 8081 8082)
//!   JASPER_MESH_DIR=/tmp/mesh           logs and data (default ~/.local/share/jasper-mesh)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Ctx, home, interrupt, step};

pub fn run(ctx: &Ctx) -> Result<(), String> {
    interrupt::catch();
    let ports: Vec<u16> = std::env::var("JASPER_MESH_PORTS")
        .unwrap_or_else(|_| "8080 8081 8082".into())
        .split_whitespace()
        .map(|p| {
            p.parse()
                .map_err(|_| format!("JASPER_MESH_PORTS: {p:?} is no port"))
        })
        .collect::<Result<_, _>>()?;
    if ports.len() < 3 {
        return Err("JASPER_MESH_PORTS needs three ports at least".into());
    }
    let dir = std::env::var_os("JASPER_MESH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".local/share/jasper-mesh"));
    step(
        "building the relay, the daemon, the CLI and jasper-mesh",
        &mut ctx.cargo(&[
            "build",
            "--quiet",
            "-p",
            "jasper-relay",
            "-p",
            "jasper-daemon",
            "-p",
            "jasper-cli",
            "-p",
            "jasper-test",
            "--bins",
        ]),
    )?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut running = Running::default();

    // The relays (and STUN) come from jasper-mesh: one JSON line once they all serve; it stops
    // them when its stdin closes, so they cannot outlive this demo.
    let mut mesh = ctx.command(ctx.debug("jasper-mesh"));
    mesh.arg("--dir").arg(&dir).arg("--ports");
    mesh.args(ports.iter().map(u16::to_string));
    mesh.args(["--sync-interval", "10", "--server-sync-interval", "60"]);
    if on_path("turnserver") {
        mesh.args(["--stun-port", &(ports[0] + 400).to_string()]);
    }
    let log = file(&dir.join("jasper-mesh.log"))?;
    let mut child = mesh
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run jasper-mesh: {e}"))?;
    running.mesh_stdin = child.stdin.take();
    let announced = first_line(
        child.stdout.take().expect("piped"),
        Duration::from_secs(120),
    );
    running.children.push(child);
    let announced = announced.ok_or_else(|| {
        format!(
            "jasper-mesh did not start; see {}/jasper-mesh.log and {}/relay*/relay.log",
            dir.display(),
            dir.display()
        )
    })?;
    let addresses = json_strings(&announced, "address");
    println!(
        "Relays: {}   (logs and data in {})",
        addresses.join(" "),
        dir.display()
    );

    demo_packet(&ports)?;

    // Two daemons: each its own data directory, socket and key-store entry.
    let stun = json_strings(&announced, "stun").into_iter().next();
    for who in ["alice", "bob"] {
        let home = dir.join(who);
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
        let mut jasperd = ctx.command(ctx.debug("jasperd"));
        jasperd
            .arg("--data-dir")
            .arg(home.join("data"))
            .arg("--socket")
            .arg(home.join("jasperd.sock"))
            .args([
                "--key-store",
                "keyutils",
                "--allow-private-relays",
                "--no-notifications",
            ])
            // Transparent mode: host candidates on loopback, and the STUN server if any.
            .args(["--webrtc-bind", "127.0.0.1:0"]);
        for p in &ports {
            jasperd.args(["--relay", &format!("127.0.0.1:{p}")]);
        }
        if let Some(stun) = &stun {
            jasperd.args(["--stun", stun]);
        }
        let log = file(&dir.join(format!("{who}.log")))?;
        let child = jasperd
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run jasperd: {e}"))?;
        running.children.push(child);
    }
    for who in ["alice", "bob"] {
        let socket = dir.join(who).join("jasperd.sock");
        wait(Duration::from_secs(10), || socket.exists().then_some(()))
            .ok_or_else(|| format!("{who}'s daemon did not start; see {who}.log"))?;
    }
    let j = Cli {
        binary: ctx.debug("jasper"),
        dir: dir.clone(),
    };
    let alice_key = json_strings(
        &j.run("alice", &["--json", "identity", "create"])?,
        "public_key",
    )
    .pop()
    .ok_or("alice has no public key")?;
    let bob_key = json_strings(
        &j.run("bob", &["--json", "identity", "create"])?,
        "public_key",
    )
    .pop()
    .ok_or("bob has no public key")?;
    j.run("alice", &["contact", "add", &bob_key, "--name", "bob"])?;
    j.run("bob", &["contact", "add", &alice_key, "--name", "alice"])?;
    j.run(
        "alice",
        &[
            "send",
            "--to",
            "bob",
            "Hello Bob, this crossed the mesh end-to-end encrypted.",
        ],
    )?;
    println!("alice sent bob a message; waiting for bob's daemon to receive it...");
    if let Some(history) = wait(Duration::from_secs(30), || {
        j.run("bob", &["messages", "--with", "alice"])
            .ok()
            .filter(|h| h.contains("Hello Bob"))
    }) {
        print!("bob received:\n{history}");
    }
    print!("alice's RX relay: {}", j.run("alice", &["relays", "rx"])?);
    println!("alice's relays, one per key (no relay sees two of her keys):");
    for line in j.run("alice", &["relays", "anonymity"])?.lines() {
        println!("  {line}");
    }

    println!("\nTransparent mode (the contact and the STUN operator learn your IP address):");
    let _ = j.run("alice", &["transparent", "enable", "bob"]);
    let _ = j.run("bob", &["transparent", "enable", "alice"]);
    let status = wait(Duration::from_secs(30), || {
        j.run("alice", &["transparent", "status", "bob"])
            .ok()
            .filter(|s| s.contains("connected"))
    });
    print!(
        "{}",
        status.unwrap_or(j.run("alice", &["transparent", "status", "bob"])?)
    );
    let sent = j.run(
        "alice",
        &[
            "--json",
            "send",
            "--to",
            "bob",
            "Hello again, straight over WebRTC.",
        ],
    )?;
    let id = json_strings(&sent, "id")
        .into_iter()
        .next()
        .unwrap_or_default();
    if let Some(history) = wait(Duration::from_secs(30), || {
        j.run("bob", &["messages", "--with", "alice"])
            .ok()
            .filter(|h| h.contains("straight over WebRTC"))
    }) {
        println!("{}", history.lines().last().unwrap_or_default());
    }
    let routes = j.run("alice", &["routes", &id])?;
    let route = routes
        .lines()
        .next()
        .and_then(|l| l.split('\t').nth(1))
        .unwrap_or("?");
    println!("route of that message: {route}");
    let jasper = j.binary.display();
    println!(
        "Try: {jasper} --socket {}/bob/jasperd.sock send --to alice 'hi'",
        dir.display()
    );
    println!(
        "     {jasper} --socket {}/alice/jasperd.sock watch",
        dir.display()
    );
    println!(
        "Chat: {jasper} --socket {}/alice/jasperd.sock chat   (and bob's, in another terminal)",
        dir.display()
    );
    println!(
        "Status: curl http://127.0.0.1:{}/status     Stop: Ctrl-C",
        ports[0]
    );
    while !interrupt::happened() {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The processes of the demo: daemons are stopped with SIGTERM and waited for, and closing
/// jasper-mesh's stdin stops the relays, also when the demo fails half-way.
#[derive(Default)]
struct Running {
    mesh_stdin: Option<ChildStdin>,
    children: Vec<Child>,
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.mesh_stdin.take());
        for child in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// The `jasper` CLI against one daemon's socket.
struct Cli {
    binary: PathBuf,
    dir: PathBuf,
}

impl Cli {
    /// stdout of `jasper --socket <who's> args`; an error with stderr when it fails.
    fn run(&self, who: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.binary)
            .arg("--socket")
            .arg(self.dir.join(who).join("jasperd.sock"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run jasper: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "jasper {} for {who}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// A raw packet into the first relay and out of the third: relays check only the key, the
/// base64 and the hash, so openssl stands in for a client (its key is a real RSA-4096 one).
fn demo_packet(ports: &[u16]) -> Result<(), String> {
    let pem = output(Command::new("openssl").args([
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:4096",
    ]))?;
    let der = output_with_input(
        Command::new("openssl").args(["pkey", "-pubout", "-outform", "DER"]),
        &pem,
    )?;
    let key = base64(&der);
    let message = base64(format!("demo {}", unix_seconds()).as_bytes());
    let hash = String::from_utf8_lossy(&output_with_input(
        &mut Command::new("sha256sum"),
        message.as_bytes(),
    )?)
    .split_whitespace()
    .next()
    .unwrap_or_default()
    .to_owned();
    let body = format!(
        r#"{{"recipient":"{key}","message":"{message}","hash":"{hash}","signature":"c2lnbmF0dXJl"}}"#
    );
    let (status, _) = http_post(ports[0], "/send", &body)?;
    if status != 200 {
        return Err(format!(
            "relay 127.0.0.1:{} refused the demo packet ({status})",
            ports[0]
        ));
    }
    println!("Sent {hash} to 127.0.0.1:{}", ports[0]);
    let fetched = wait(Duration::from_secs(5), || {
        http_post(ports[2], "/fetch", &format!(r#"{{"hashes":["{hash}"]}}"#))
            .ok()
            .filter(|(_, answer)| answer.contains(&message))
    });
    if fetched.is_some() {
        println!("Fetched it from 127.0.0.1:{}: the mesh works.", ports[2]);
    }
    Ok(())
}

/// One HTTP/1.1 POST of a JSON body to a loopback relay: (status, body).
fn http_post(port: u16, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Every string value of `"key":` in a JSON text (the few fields the demo reads; a JSON
/// parser would be a dependency for four lookups).
fn json_strings(json: &str, key: &str) -> Vec<String> {
    let needle = format!("\"{key}\"");
    let mut out = Vec::new();
    let mut rest = json;
    while let Some(i) = rest.find(&needle) {
        rest = &rest[i + needle.len()..];
        let value = rest.trim_start().strip_prefix(':').map(str::trim_start);
        if let Some(v) = value.and_then(|v| v.strip_prefix('"'))
            && let Some(end) = v.find('"')
        {
            out.push(v[..end].to_owned());
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn output(command: &mut Command) -> Result<Vec<u8>, String> {
    let out = command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({})",
            command.get_program(),
            out.status
        ));
    }
    Ok(out.stdout)
}

fn output_with_input(command: &mut Command, input: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input)
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({})",
            command.get_program(),
            out.status
        ));
    }
    Ok(out.stdout)
}

/// The first line a process prints, within `timeout`; the rest is drained in the background so
/// it never blocks on a full pipe.
fn first_line(stdout: impl Read + Send + 'static, timeout: Duration) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next().and_then(Result::ok));
        for _ in lines {}
    });
    rx.recv_timeout(timeout).ok().flatten()
}

/// `check` every 100 ms until it gives something, at most `limit` (or Ctrl-C).
fn wait<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline || interrupt::happened() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn file(path: &Path) -> Result<std::fs::File, String> {
    std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::{base64, json_strings};

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn json_strings_finds_every_value_of_a_key() {
        let line =
            r#"{"relays":[{"address":"127.0.0.1:1"},{"address": "127.0.0.1:2"}],"stun":null}"#;
        assert_eq!(
            json_strings(line, "address"),
            ["127.0.0.1:1", "127.0.0.1:2"]
        );
        assert!(json_strings(line, "stun").is_empty());
    }
}
