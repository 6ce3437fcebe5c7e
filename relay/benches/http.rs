//! HTTP benchmark of the relay: `/send` and `/fetch` throughput and p50/p99 latency against
//! the release `jasper-relay` binary with each store (embedded, Redis), and in the same run a
//! bare axum server answering every POST with a fixed `{"ok":true}` (the ceiling the HTTP
//! stack allows on this machine), and optionally an external relay's `/send` (`--reference`).
//!
//! ```text
//! cargo bench -p jasper-relay --bench http -- [--duration SECS] [--warmup SECS]
//!     [--connections N] [--bodies N] [--reference http://127.0.0.1:18080]
//!     [--redis redis://127.0.0.1:6379 | --no-redis] [--send-only] [--processes 1,2,4]
//! ```
//!
//! `--processes`: then `/send` of N relay processes sharing one Redis of the bench's own (one
//! relay to the mesh, README "Several processes, one Redis"), the connections spread over them
//! round robin, for each N given; each N on a fresh Redis.
//!
//! Every server under test is a separate process on loopback, started by the test kit
//! (`jasper-test`): the relay binary (Cargo builds it for benches, in `target/release/`), a
//! `redis-server` this bench starts itself (fsync on every write) unless `--redis` names one,
//! and the bare server (this executable re-run with `--serve-bare`, on a multi-threaded Tokio
//! runtime like the relay's).
//! The load generator is closed-loop: N keep-alive HTTP/1.1 connections (one hyper client
//! connection per task), each sending its next request when the previous answer has been read
//! whole, on ONE thread (Tokio current-thread runtime), so the server has the other core(s).
//! Every `/send` body is a distinct valid packet, generated before any timing starts; a phase
//! that runs out of them stops early and says so (raise `--bodies`).
//!
//! `JASPER_BENCH_RELAY=PATH` runs another relay binary with the same load generator (to compare
//! two builds). Results and the commands used: `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use jasper_core::MessageHash;
use jasper_core::protocol::Packet;
use jasper_test::redis::Redis;
use jasper_test::relay::Relay;
use rand::{Rng, RngCore, SeedableRng};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const RECIPIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/recipients.txt");
/// The relay binary Cargo built for this bench; `JASPER_BENCH_RELAY=PATH` runs another build
/// instead (to compare two versions with the same load generator).
fn relay_bin() -> PathBuf {
    std::env::var_os("JASPER_BENCH_RELAY")
        .map(PathBuf::from)
        .unwrap_or_else(|| jasper_test::binary("jasper-relay"))
}
/// Random bytes in each packet's `message` (before base64).
const MESSAGE_BYTES: usize = 1024;
/// Random bytes in each packet's `signature` (before base64): one RSA-4096 block.
const SIGNATURE_BYTES: usize = 512;
/// Hashes per `/fetch {hashes}` request.
const FETCH_HASHES: usize = 10;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--serve-bare") {
        serve_bare();
        return;
    }
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench http: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(opts) {
        eprintln!("bench http: {e}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: cargo bench -p jasper-relay --bench http -- [--duration SECS] \
[--warmup SECS] [--connections N] [--bodies N] [--reference URL] [--redis URL | --no-redis] \
[--send-only] [--processes 1,2,4]";

struct Opts {
    duration: Duration,
    warmup: Duration,
    connections: usize,
    bodies: usize,
    reference: Option<SocketAddr>,
    redis: RedisChoice,
    send_only: bool,
    /// Process counts for the shared-Redis `/send` rows (empty: none).
    processes: Vec<usize>,
}

enum RedisChoice {
    Own,
    External(String),
    Skip,
}

impl Opts {
    fn parse(args: &[String]) -> Res<Self> {
        let mut o = Opts {
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            connections: 32,
            bodies: 300_000,
            reference: None,
            redis: RedisChoice::Own,
            send_only: false,
            processes: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{a} needs a value"))
            };
            match a.as_str() {
                // Cargo passes `--bench` to benchmark executables.
                "--bench" => {}
                "--duration" => o.duration = Duration::from_secs_f64(value()?.parse()?),
                "--warmup" => o.warmup = Duration::from_secs_f64(value()?.parse()?),
                "--connections" => o.connections = value()?.parse()?,
                "--bodies" => o.bodies = value()?.parse()?,
                "--reference" => o.reference = Some(loopback_addr(&value()?)?),
                "--redis" => o.redis = RedisChoice::External(value()?),
                "--no-redis" => o.redis = RedisChoice::Skip,
                "--send-only" => o.send_only = true,
                "--processes" => {
                    o.processes = value()?
                        .split(',')
                        .map(|n| n.parse())
                        .collect::<Result<_, _>>()?
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other}").into()),
            }
        }
        if o.connections == 0 || o.bodies == 0 || o.duration.is_zero() {
            return Err("--connections, --bodies and --duration must be positive".into());
        }
        Ok(o)
    }
}

/// `http://host:port[/...]` to a socket address, which must be on this machine: the bench
/// sends load to loopback only.
fn loopback_addr(url: &str) -> Res<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: expected http://HOST:PORT"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{url}: the bench only sends load to loopback addresses").into());
    }
    Ok(addr)
}

// ---------------------------------------------------------------------------------------------
// The bare HTTP stack: axum 0.8 (as the relay), reads each body whole and answers {"ok":true}.

fn serve_bare() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Exit with the parent: it holds our stdin open.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    rt.block_on(async {
        async fn ok(body: axum::body::Bytes) -> impl axum::response::IntoResponse {
            std::hint::black_box(body.len());
            ([(CONTENT_TYPE, "application/json")], r#"{"ok":true}"#)
        }
        let app = axum::Router::new().fallback(axum::routing::post(ok));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("bare listening on {}", listener.local_addr().expect("addr"));
        axum::serve(listener, app).await.expect("serve");
    });
}

// ---------------------------------------------------------------------------------------------
// Processes under test.

/// The bare server's process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if jasper_test::process::terminate(&mut self.child, Duration::from_secs(15)).is_none() {
            eprintln!("{} did not stop on SIGTERM; killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU seconds the processes `pids` used so far (user + system), from /proc.
fn cpu_secs(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| proc_cpu_secs(p).unwrap_or(0.0)).sum()
}

fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3 of stat(5), so utime (14) and stime (15) are 11, 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / tck)
}

fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage writes only the struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

/// How long a server under test may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The address at the end of a `... listening on ADDRESS` line.
fn listening_address(line: &str) -> Res<SocketAddr> {
    let addr = line.rsplit("listening on ").next().unwrap_or(line);
    Ok(addr.trim().parse()?)
}

fn start_bare() -> Res<(Proc, SocketAddr)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    // Its stdin stays open (held by `Child`) for as long as it is to run.
    cmd.arg("--serve-bare")
        .stdin(Stdio::piped())
        .stderr(Stdio::inherit());
    let (child, line) = jasper_test::process::spawn_until_listening(cmd, START_TIMEOUT)
        .map_err(|e| format!("bare server: {e}"))?;
    let proc = Proc {
        name: "bare server",
        child,
    };
    let addr = listening_address(&line)?;
    Ok((proc, addr))
}

/// The relay on a port of its choosing in `dir`, with the embedded store or Redis at `redis`
/// and its own defaults otherwise (no sync intervals, no private peers, `info` logs in
/// `dir/relay.log`).
fn start_relay(dir: &Path, redis: Option<&str>) -> Res<Relay> {
    let run: u64 = rand::random();
    start_relay_with_prefix(dir, redis, &format!("jasper-bench:{run:016x}:"))
}

/// `prefix`: the Redis key prefix (processes with the same one are one relay).
fn start_relay_with_prefix(dir: &Path, redis: Option<&str>, prefix: &str) -> Res<Relay> {
    // A load test from one address, with more packets per recipient than a relay keeps by
    // default: rate limits off and the quotas out of the way (what is measured is the store).
    std::fs::create_dir_all(dir)?;
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        "[admission]\nrate_limits = false\nrecipient_max_packets = 1000000000\n\
         recipient_max_bytes = 1000000000000\nmax_stored_packets = 1000000000\n\
         max_stored_bytes = 1000000000000\n",
    )?;
    let mut relay = Relay::builder(dir)
        .binary(relay_bin())
        .args(["--config".to_owned(), config.display().to_string()])
        .port(0)
        .relay_default_sync()
        .allow_private_peers(false)
        .log_level("info")
        .start_timeout(START_TIMEOUT);
    if let Some(url) = redis {
        // A fresh key prefix, so an external Redis's earlier contents do not interfere.
        relay = relay.redis(url).env("JASPER_RELAY_REDIS_PREFIX", prefix);
    }
    Ok(relay.try_start()?)
}

// ---------------------------------------------------------------------------------------------
// Request bodies.

fn load_recipients() -> Res<Vec<String>> {
    let text = std::fs::read_to_string(RECIPIENTS)
        .map_err(|e| format!("cannot read {RECIPIENTS}: {e}"))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return Err(format!("{RECIPIENTS} holds no keys").into());
    }
    Ok(keys)
}

/// `/send` bodies: distinct valid packets, and each one's hash.
fn send_bodies(n: usize, recipients: &[String]) -> (Vec<Bytes>, Vec<String>) {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6a61_7370_6572);
    let mut message = vec![0u8; MESSAGE_BYTES];
    let mut signature = vec![0u8; SIGNATURE_BYTES];
    let mut bodies = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    for i in 0..n {
        rng.fill_bytes(&mut message);
        message[..8].copy_from_slice(&(i as u64).to_be_bytes());
        rng.fill_bytes(&mut signature);
        let message = b64.encode(&message);
        let hash = MessageHash::of_message(&message).to_hex();
        let packet = Packet {
            recipient: recipients[i % recipients.len()].clone(),
            message,
            hash: hash.clone(),
            signature: b64.encode(&signature),
            expires_at: None,
        };
        bodies.push(Bytes::from(serde_json::to_vec(&packet).expect("packet")));
        hashes.push(hash);
    }
    (bodies, hashes)
}

fn fetch_recipient_bodies(recipients: &[String]) -> Vec<Bytes> {
    recipients
        .iter()
        .map(|r| Bytes::from(serde_json::json!({ "recipient": r }).to_string()))
        .collect()
}

/// `/fetch {hashes}` bodies, each naming `FETCH_HASHES` random hashes among `stored`.
fn fetch_hash_bodies(stored: &[String], n: usize) -> Vec<Bytes> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..n)
        .map(|_| {
            let pick: Vec<&str> = (0..FETCH_HASHES)
                .map(|_| stored[rng.random_range(0..stored.len())].as_str())
                .collect();
            Bytes::from(serde_json::json!({ "hashes": pick }).to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Load generator.

#[derive(Clone, Copy, PartialEq)]
enum Pool {
    /// Cycle through the bodies (their content does not matter to the server).
    Wrap,
    /// Stop the phase when the bodies run out (every request must be a new packet).
    Once,
}

#[derive(Default)]
struct ConnResult {
    latencies_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    duplicates: u64,
    response_bytes: u64,
    last_done: Option<Instant>,
}

struct Stats {
    requests: usize,
    secs: f64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    first_error: Option<String>,
    duplicates: u64,
    mean_response_bytes: f64,
    issued: usize,
    exhausted: bool,
    server_cores: Option<f64>,
    client_cores: f64,
}

struct Phase<'a> {
    /// Connection i goes to `addrs[i % addrs.len()]` (several processes of one relay).
    addrs: Vec<SocketAddr>,
    path: &'static str,
    bodies: &'a Arc<Vec<Bytes>>,
    pool: Pool,
    /// Offset into `bodies` of the first body to send.
    start: usize,
}

/// One phase of load; `servers`: the pids whose CPU time is the server side's.
fn run_phase(opts: &Opts, phase: &Phase<'_>, servers: &[u32]) -> Res<Stats> {
    // One thread for the whole load generator.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server_cpu0 = cpu_secs(servers);
    let client_cpu0 = self_cpu_secs();
    let wall0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(phase.start));
    let exhausted = Arc::new(AtomicBool::new(false));
    let begin = Instant::now();
    let measure_from = begin + opts.warmup;
    let end = measure_from + opts.duration;
    let results: Vec<ConnResult> = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..opts.connections {
            let conn = Conn {
                addr: phase.addrs[i % phase.addrs.len()],
                path: phase.path,
                bodies: phase.bodies.clone(),
                pool: phase.pool,
                next: next.clone(),
                exhausted: exhausted.clone(),
                measure_from,
                end,
            };
            tasks.push(tokio::spawn(conn.run()));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await??);
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out)
    })?;
    let wall = wall0.elapsed().as_secs_f64();
    let server_cores = if servers.is_empty() {
        None
    } else {
        Some((cpu_secs(servers) - server_cpu0) / wall)
    };
    let client_cores = (self_cpu_secs() - client_cpu0) / wall;

    let mut lat: Vec<u64> = Vec::new();
    let mut errors = 0;
    let mut duplicates = 0;
    let mut response_bytes = 0;
    let mut first_error = None;
    let mut last_done = measure_from;
    for r in results {
        lat.extend_from_slice(&r.latencies_ns);
        errors += r.errors;
        duplicates += r.duplicates;
        response_bytes += r.response_bytes;
        first_error = first_error.or(r.first_error);
        if let Some(t) = r.last_done {
            last_done = last_done.max(t);
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1e6
    };
    let secs = last_done
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    Ok(Stats {
        requests: lat.len(),
        secs,
        rps: if secs > 0.0 {
            lat.len() as f64 / secs
        } else {
            0.0
        },
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: lat.last().map_or(f64::NAN, |&n| n as f64 / 1e6),
        errors,
        first_error,
        duplicates,
        mean_response_bytes: response_bytes as f64 / lat.len().max(1) as f64,
        issued: next
            .load(Ordering::Relaxed)
            .min(phase.bodies.len() + phase.start)
            - phase.start,
        exhausted: exhausted.load(Ordering::Relaxed),
        server_cores,
        client_cores,
    })
}

struct Conn {
    addr: SocketAddr,
    path: &'static str,
    bodies: Arc<Vec<Bytes>>,
    pool: Pool,
    next: Arc<AtomicUsize>,
    exhausted: Arc<AtomicBool>,
    measure_from: Instant,
    end: Instant,
}

impl Conn {
    async fn run(self) -> Res<ConnResult> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let host = self.addr.to_string();
        let mut out = ConnResult {
            latencies_ns: Vec::with_capacity(1 << 14),
            ..ConnResult::default()
        };
        while Instant::now() < self.end {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let body = match self.pool {
                Pool::Wrap => self.bodies[i % self.bodies.len()].clone(),
                Pool::Once => match self.bodies.get(i) {
                    Some(b) => b.clone(),
                    None => {
                        self.exhausted.store(true, Ordering::Relaxed);
                        break;
                    }
                },
            };
            let req = Request::post(self.path)
                .header(HOST, host.as_str())
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(body))?;
            let t0 = Instant::now();
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            let t1 = Instant::now();
            if t0 < self.measure_from {
                continue;
            }
            out.latencies_ns.push((t1 - t0).as_nanos() as u64);
            out.last_done = Some(t1);
            out.response_bytes += body.len() as u64;
            if !status.is_success() {
                out.errors += 1;
                if out.first_error.is_none() {
                    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
                    out.first_error = Some(format!("{status}: {text}"));
                }
            } else if self.path == "/send" && contains(&body, br#""stored":false"#) {
                out.duplicates += 1;
            }
        }
        Ok(out)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Row {
    server: String,
    request: String,
    stats: Stats,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn report(row: &Row) {
    let s = &row.stats;
    eprintln!(
        "  {:<34} {:<28} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}{}  (load {})",
        row.server,
        row.request,
        s.rps,
        s.p50_ms,
        s.p99_ms,
        s.errors,
        s.first_error
            .as_ref()
            .map(|e| format!(" [first: {e}]"))
            .unwrap_or_default(),
        loadavg()
    );
}

fn run(opts: Opts) -> Res<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "jasper-relay HTTP bench: {} connections, {:.0} s warm-up + {:.0} s measured per row, \
         load generator on 1 thread (Tokio current-thread runtime); {cores} cores; load average \
         {}",
        opts.connections,
        opts.warmup.as_secs_f64(),
        opts.duration.as_secs_f64(),
        loadavg()
    );
    eprintln!("relay binary: {}", relay_bin().display());
    let recipients = load_recipients()?;
    let t = Instant::now();
    let (bodies, hashes) = send_bodies(opts.bodies, &recipients);
    let bodies = Arc::new(bodies);
    let avg_body = bodies.iter().map(|b| b.len()).sum::<usize>() / bodies.len();
    eprintln!(
        "generated {} /send bodies ({} recipients, {avg_body} bytes each on average) in {:.1} s",
        bodies.len(),
        recipients.len(),
        t.elapsed().as_secs_f64()
    );
    let fetch_recipient = Arc::new(fetch_recipient_bodies(&recipients));
    let tmp = tempfile::tempdir()?;
    let mut rows = Vec::new();

    // 1. The bare HTTP stack, with the same /send bodies.
    {
        let (bare, addr) = start_bare()?;
        let phase = Phase {
            addrs: vec![addr],
            path: "/send",
            bodies: &bodies,
            pool: Pool::Wrap,
            start: 0,
        };
        let stats = run_phase(&opts, &phase, &[bare.child.id()])?;
        rows.push(Row {
            server: "bare axum, fixed {\"ok\":true}".into(),
            request: "POST /send body".into(),
            stats,
        });
        report(rows.last().unwrap());
    }

    // 2. The relay with each store.
    let mut backends: Vec<(&str, Option<String>)> = vec![("embedded", None)];
    let mut own_redis = None;
    match &opts.redis {
        RedisChoice::Skip => {}
        RedisChoice::External(url) => backends.push(("Redis (external)", Some(url.clone()))),
        RedisChoice::Own => {
            let dir = tmp.path().join("redis");
            std::fs::create_dir_all(&dir)?;
            let redis = Redis::try_start_in(&dir)?;
            backends.push(("Redis, appendfsync always", Some(redis.url())));
            own_redis = Some(redis);
        }
    }
    for (name, redis_url) in &backends {
        let dir = tmp.path().join(format!("relay-{}", rows.len()));
        std::fs::create_dir_all(&dir)?;
        let mut relay = start_relay(&dir, redis_url.as_deref())?;
        let addr = relay.socket_addr();
        let pid = relay.pid().expect("the relay runs");
        eprintln!("started jasper-relay ({name}), pid {pid}, on {addr}");
        let mut servers = vec![pid];
        if redis_url.is_some()
            && let Some(r) = &own_redis
        {
            servers.push(r.pid());
        }
        let server = format!("jasper-relay, {name}");
        let send = run_phase(
            &opts,
            &Phase {
                addrs: vec![addr],
                path: "/send",
                bodies: &bodies,
                pool: Pool::Once,
                start: 0,
            },
            &servers,
        )?;
        let sent = send.issued;
        rows.push(Row {
            server: server.clone(),
            request: "/send (new packet)".into(),
            stats: send,
        });
        report(rows.last().unwrap());
        if sent == 0 {
            return Err("no packet was sent".into());
        }
        if opts.send_only {
            relay.stop();
            continue;
        }
        let by_recipient = run_phase(
            &opts,
            &Phase {
                addrs: vec![addr],
                path: "/fetch",
                bodies: &fetch_recipient,
                pool: Pool::Wrap,
                start: 0,
            },
            &servers,
        )?;
        let per_recipient = sent.div_ceil(recipients.len()).min(1000);
        rows.push(Row {
            server: server.clone(),
            request: format!("/fetch {{recipient}} (~{per_recipient} packets)"),
            stats: by_recipient,
        });
        report(rows.last().unwrap());
        let by_hash = Arc::new(fetch_hash_bodies(&hashes[..sent], 20_000));
        let by_hashes = run_phase(
            &opts,
            &Phase {
                addrs: vec![addr],
                path: "/fetch",
                bodies: &by_hash,
                pool: Pool::Wrap,
                start: 0,
            },
            &servers,
        )?;
        rows.push(Row {
            server: server.clone(),
            request: format!("/fetch {{hashes}} ({FETCH_HASHES} hashes)"),
            stats: by_hashes,
        });
        report(rows.last().unwrap());
        relay.stop();
    }
    drop(own_redis);

    // 3. Several processes of one relay on one Redis.
    for &n in &opts.processes {
        let dir = tmp.path().join(format!("shared-{n}"));
        std::fs::create_dir_all(dir.join("redis"))?;
        let redis = Redis::try_start_in(&dir.join("redis"))?;
        let mut relays = Vec::with_capacity(n);
        for i in 0..n {
            let relay_dir = dir.join(format!("relay-{i}"));
            std::fs::create_dir_all(&relay_dir)?;
            relays.push(start_relay_with_prefix(
                &relay_dir,
                Some(&redis.url()),
                "jasper-bench-shared:",
            )?);
        }
        let mut servers: Vec<u32> = relays.iter().filter_map(Relay::pid).collect();
        servers.push(redis.pid());
        let send = run_phase(
            &opts,
            &Phase {
                addrs: relays.iter().map(Relay::socket_addr).collect(),
                path: "/send",
                bodies: &bodies,
                pool: Pool::Once,
                start: 0,
            },
            &servers,
        )?;
        rows.push(Row {
            server: format!("jasper-relay ×{n} processes, one Redis (appendfsync always)"),
            request: "/send (new packet)".into(),
            stats: send,
        });
        report(rows.last().unwrap());
        for mut relay in relays {
            relay.stop();
        }
    }

    // 4. The reference relay's /send, with the same bodies.
    if let Some(addr) = opts.reference {
        let stats = run_phase(
            &opts,
            &Phase {
                addrs: vec![addr],
                path: "/send",
                bodies: &bodies,
                pool: Pool::Once,
                start: 0,
            },
            &[],
        )?;
        rows.push(Row {
            server: format!("reference relay at {addr}"),
            request: "/send (new packet)".into(),
            stats,
        });
        report(rows.last().unwrap());
    }

    println!("{}", table(&opts, &rows));
    Ok(())
}

fn table(opts: &Opts, rows: &[Row]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n{} connections, {:.0} s measured after {:.0} s warm-up; load generator: 1 thread \
         (Tokio current-thread runtime) on the same machine.\n",
        opts.connections,
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64()
    );
    t.push_str(
        "| server | request | req/s | p50 ms | p99 ms | max ms | errors | mean answer bytes | \
         server CPU (cores) | client CPU (cores) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let s = &r.stats;
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {:.0} | {} | {:.2} |",
            r.server,
            r.request,
            s.rps,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.errors,
            s.mean_response_bytes,
            s.server_cores.map_or("n/a".into(), |c| format!("{c:.2}")),
            s.client_cores,
        );
    }
    let mut notes = Vec::new();
    for r in rows {
        let s = &r.stats;
        if s.exhausted {
            notes.push(format!(
                "{} {}: ran out of distinct bodies after {} requests ({:.1} s measured); \
                 raise --bodies",
                r.server, r.request, s.issued, s.secs
            ));
        }
        if s.duplicates > 0 {
            notes.push(format!(
                "{} {}: {} answers were duplicates",
                r.server, r.request, s.duplicates
            ));
        }
        if let Some(e) = &s.first_error {
            notes.push(format!("{} {}: first error {e}", r.server, r.request));
        }
        let _ = s.requests;
    }
    let rps = |server: &str, request: &str| {
        rows.iter()
            .find(|r| r.server.starts_with(server) && r.request.starts_with(request))
            .map(|r| r.stats.rps)
    };
    let bare = rps("bare", "POST");
    let embedded = rps("jasper-relay, embedded", "/send");
    let reference = rps("reference", "/send");
    if let (Some(b), Some(e)) = (bare, embedded) {
        let _ = writeln!(
            t,
            "\nembedded /send ÷ bare stack = {:.2} (target ≥ 0.5: {})",
            e / b,
            if e / b >= 0.5 { "met" } else { "missed" }
        );
    }
    if let (Some(r), Some(e)) = (reference, embedded) {
        let _ = writeln!(
            t,
            "embedded /send ÷ reference /send = {:.1} (target ≥ 10: {})",
            e / r,
            if e / r >= 10.0 { "met" } else { "missed" }
        );
    }
    for n in notes {
        let _ = writeln!(t, "note: {n}");
    }
    t
}
