//! Mesh simulation: R real `jasper-relay` processes on loopback, peered as a random graph of
//! fixed degree or as a full mesh, with broadcast by flood or by tree (`mesh/tree.rs`).
//! Packets are injected at random relays at a steady rate; the bench measures
//!
//! - relay-to-relay bytes and requests per injected packet: the sum over every relay of what
//!   its peer client sent and received (request and answer bodies, by route, from each relay's
//!   `GET /status` `mesh.traffic`; HTTP headers are not in the bytes, and are about 200 bytes
//!   per request, so the request count is given beside them);
//! - time until every relay holds a packet (p50, p99, max over the injected packets), observed
//!   by one long-poll `/fetch` per relay for the packets' recipient;
//! - down and back: a tenth of the relays (at least one) stop, `--missed` packets are sent to
//!   the others, and they start again on their stores: the time from their restart until each
//!   holds every missed packet (they catch up by reconciliation in their first sync round,
//!   at start), and the bytes every relay spent meanwhile.
//!
//! ```text
//! cargo bench -p jasper-relay --bench mesh_sim -- [--relays 10,30,100] [--degree 8]
//!     [--packets 200] [--rate 20] [--modes flood,tree] [--topologies graph,full]
//!     [--full-max 30] [--missed 100] [--warmup 30] [--graft-after-ms MS] [--seed N]
//! ```
//!
//! Before measuring, each mesh runs a warm-up of packets (the tree forms from the first ones,
//! which flood) and waits for peers to have read each other's `/status`. Learned peers are off
//! (`--allow-private-peers false` on loopback), so the graph stays the one configured. Results
//! and commands: `docs/benchmarks.md`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jasper_core::MessageHash;
use jasper_core::protocol::Packet;
use jasper_test::relay::Relay;
use parking_lot::Mutex;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{Value, json};

mod sim_kit;

use sim_kit::{Res, first_recipient, run_bench};

/// Random bytes of each packet's `message`: with the key and signature, a packet of about
/// 3.5 KB, the size of a short sealed text message.
const MESSAGE_BYTES: usize = 1850;
const SIGNATURE_BYTES: usize = 512;
/// How long after the last injection a packet may take to reach every relay before it counts
/// as not covered.
const COVER_TIMEOUT: Duration = Duration::from_secs(20);

struct Opts {
    relays: Vec<usize>,
    degree: usize,
    packets: usize,
    rate: f64,
    modes: Vec<String>,
    topologies: Vec<String>,
    full_max: usize,
    missed: usize,
    warmup: usize,
    graft_after_ms: Option<u64>,
    seed: u64,
}

impl Opts {
    fn parse(args: &[String]) -> Res<Self> {
        let mut o = Opts {
            relays: vec![10, 30, 100],
            degree: 8,
            packets: 200,
            rate: 20.0,
            modes: vec!["flood".into(), "tree".into()],
            topologies: vec!["graph".into(), "full".into()],
            full_max: 30,
            missed: 100,
            warmup: 30,
            graft_after_ms: None,
            seed: 7,
        };
        let list = |v: &str| v.split(',').map(str::to_owned).collect::<Vec<_>>();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--relays" => {
                    o.relays = list(&value()?)
                        .iter()
                        .map(|r| r.parse())
                        .collect::<Result<_, _>>()?
                }
                "--degree" => o.degree = value()?.parse()?,
                "--packets" => o.packets = value()?.parse()?,
                "--rate" => o.rate = value()?.parse()?,
                "--modes" => o.modes = list(&value()?),
                "--topologies" => o.topologies = list(&value()?),
                "--full-max" => o.full_max = value()?.parse()?,
                "--missed" => o.missed = value()?.parse()?,
                "--warmup" => o.warmup = value()?.parse()?,
                "--graft-after-ms" => o.graft_after_ms = Some(value()?.parse()?),
                "--seed" => o.seed = value()?.parse()?,
                "--bench" => {}
                other => return Err(format!("unknown argument {other}").into()),
            }
        }
        Ok(o)
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    run_bench("mesh_sim", Opts::parse, runtime, run);
}

struct Row {
    relays: usize,
    topology: String,
    mode: String,
    links: usize,
    packet_bytes: usize,
    bytes_per_packet: f64,
    requests_per_packet: f64,
    by_route: Vec<(String, f64)>,
    covered: usize,
    packets: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    eager_links: f64,
    down: usize,
    missed: usize,
    catch_up_ms: f64,
    catch_up_bytes: f64,
}

async fn run(opts: Opts) -> Res<()> {
    let recipient = first_recipient()?;
    let mut rows = Vec::new();
    for &r in &opts.relays {
        for topology in &opts.topologies {
            if topology == "full" && r > opts.full_max {
                continue;
            }
            let graph = match topology.as_str() {
                "graph" if r > opts.degree => random_regular(r, opts.degree, opts.seed)?,
                "graph" | "full" => full_mesh(r),
                other => return Err(format!("unknown topology {other}").into()),
            };
            for mode in &opts.modes {
                let row = simulate(&opts, &graph, topology, mode, &recipient).await?;
                print_row(&row);
                rows.push(row);
            }
        }
    }
    println!("\n{}", table(&rows));
    println!("{}", plot(&rows));
    Ok(())
}

/// Neighbours of each relay: a random `d`-regular graph, drawn as a circulant (each relay
/// linked to the d/2 next on a ring) randomised by degree-preserving double-edge swaps
/// (10 per edge), kept when simple and connected. (The pairing model almost never draws a
/// simple graph at d = 8.)
fn random_regular(n: usize, d: usize, seed: u64) -> Res<Vec<Vec<usize>>> {
    if !d.is_multiple_of(2) || d >= n {
        return Err(format!("degree {d} must be even and below {n} relays").into());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..100 {
        let mut edges: Vec<(usize, usize)> = (0..n)
            .flat_map(|i| (1..=d / 2).map(move |k| (i, (i + k) % n)))
            .collect();
        let mut present: HashSet<(usize, usize)> =
            edges.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
        for _ in 0..10 * edges.len() {
            let (x, y) = (
                rng.random_range(0..edges.len()),
                rng.random_range(0..edges.len()),
            );
            let ((a, b), (c, e)) = (edges[x], edges[y]);
            let key = |p: usize, q: usize| (p.min(q), p.max(q));
            if x == y || [a, b].contains(&c) || [a, b].contains(&e) {
                continue;
            }
            if present.contains(&key(a, e)) || present.contains(&key(c, b)) {
                continue;
            }
            present.remove(&key(a, b));
            present.remove(&key(c, e));
            present.insert(key(a, e));
            present.insert(key(c, b));
            edges[x] = (a, e);
            edges[y] = (c, b);
        }
        let mut graph = vec![Vec::new(); n];
        for &(a, b) in &edges {
            graph[a].push(b);
            graph[b].push(a);
        }
        graph.iter_mut().for_each(|v| v.sort());
        if connected(&graph) {
            return Ok(graph);
        }
    }
    Err("could not draw a connected regular graph".into())
}

fn full_mesh(n: usize) -> Vec<Vec<usize>> {
    (0..n)
        .map(|i| (0..n).filter(|&j| j != i).collect())
        .collect()
}

fn connected(graph: &[Vec<usize>]) -> bool {
    let mut seen = vec![false; graph.len()];
    let mut stack = vec![0];
    seen[0] = true;
    while let Some(i) = stack.pop() {
        for &j in &graph[i] {
            if !seen[j] {
                seen[j] = true;
                stack.push(j);
            }
        }
    }
    seen.iter().all(|s| *s)
}

fn packets(n: usize, recipient: &str, rng: &mut impl RngCore) -> Vec<Packet> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    (0..n)
        .map(|_| {
            let mut message = vec![0u8; MESSAGE_BYTES];
            let mut signature = vec![0u8; SIGNATURE_BYTES];
            rng.fill_bytes(&mut message);
            rng.fill_bytes(&mut signature);
            let message = b64.encode(&message);
            Packet {
                recipient: recipient.to_owned(),
                hash: MessageHash::of_message(&message).to_hex(),
                message,
                signature: b64.encode(&signature),
                expires_at: None,
            }
        })
        .collect()
}

/// When each relay first showed each hash, by one long-poll per relay.
type Arrivals = Arc<Mutex<HashMap<String, Vec<Option<Instant>>>>>;

async fn simulate(
    opts: &Opts,
    graph: &[Vec<usize>],
    topology: &str,
    mode: &str,
    recipient: &str,
) -> Res<Row> {
    let n = graph.len();
    let dir = tempfile::tempdir()?;
    let ports = listen_ports(n)?;
    eprintln!("== {n} relays, {topology}, {mode}: starting");
    let mut relays = Vec::with_capacity(n);
    // The relays' `graft_after_ms`, when given, through a config file.
    let config = match opts.graft_after_ms {
        Some(ms) => {
            let path = dir.path().join("relay.toml");
            std::fs::write(&path, format!("graft_after_ms = {ms}\n"))?;
            Some(path)
        }
        None => None,
    };
    for (i, neighbours) in graph.iter().enumerate() {
        relays.push(start(
            &dir.path().join(format!("r{i}")),
            ports[i],
            neighbours
                .iter()
                .map(|&j| format!("127.0.0.1:{}", ports[j])),
            mode,
            config.as_deref(),
        )?);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .timeout(Duration::from_secs(30))
        .build()?;
    // Peers read each other's /status on start and retry every 5 s until they answer.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed ^ n as u64);
    let arrivals: Arrivals = Arc::new(Mutex::new(HashMap::new()));
    let mut watchers = Vec::new();
    for (i, relay) in relays.iter().enumerate() {
        watchers.push(tokio::spawn(watch(
            http.clone(),
            relay.url("/fetch"),
            recipient.to_owned(),
            i,
            n,
            arrivals.clone(),
        )));
    }
    let warmup = packets(opts.warmup, recipient, &mut rng);
    let everyone: Vec<&Relay> = relays.iter().collect();
    inject(&http, &everyone, &warmup, opts.rate, &mut rng, None).await?;
    let warm: Vec<String> = warmup.iter().map(|p| p.hash.clone()).collect();
    wait_covered(&arrivals, &warm, n, Instant::now() + COVER_TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = traffic(&http, &everyone).await?;
    let measured = packets(opts.packets, recipient, &mut rng);
    let mut injected = HashMap::new();
    inject(
        &http,
        &everyone,
        &measured,
        opts.rate,
        &mut rng,
        Some(&mut injected),
    )
    .await?;
    let hashes: Vec<String> = measured.iter().map(|p| p.hash.clone()).collect();
    wait_covered(&arrivals, &hashes, n, Instant::now() + COVER_TIMEOUT).await;
    // Let the last pushes and announcements finish before reading the counters.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = traffic(&http, &everyone).await?;
    let eager = eager_links(&http, &everyone).await?;
    drop(everyone);

    // Down and back: a tenth of the relays stop while packets go on, then start again.
    let down: Vec<usize> = rand::seq::index::sample(&mut rng, n, (n / 10).max(1)).into_vec();
    for &i in &down {
        relays[i].stop();
    }
    let up: Vec<usize> = (0..n).filter(|i| !down.contains(i)).collect();
    let missed = packets(opts.missed, recipient, &mut rng);
    let up_relays: Vec<&Relay> = up.iter().map(|&i| &relays[i]).collect();
    inject(&http, &up_relays, &missed, opts.rate, &mut rng, None).await?;
    let missed_hashes: Vec<String> = missed.iter().map(|p| p.hash.clone()).collect();
    wait_covered_by(
        &arrivals,
        &missed_hashes,
        &up,
        Instant::now() + COVER_TIMEOUT,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_back = traffic(&http, &up_relays).await?;
    drop(up_relays);
    let back_at = Instant::now();
    for &i in &down {
        relays[i].restart();
    }
    wait_covered(&arrivals, &missed_hashes, n, Instant::now() + COVER_TIMEOUT).await;
    let catch_up_ms = {
        let a = arrivals.lock();
        let mut last = back_at;
        let mut complete = true;
        for h in &missed_hashes {
            for &i in &down {
                match a.get(h).and_then(|t| t[i]) {
                    Some(at) => last = last.max(at),
                    None => complete = false,
                }
            }
        }
        if complete {
            last.duration_since(back_at).as_secs_f64() * 1000.0
        } else {
            f64::NAN
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all: Vec<&Relay> = relays.iter().collect();
    let after_back = traffic(&http, &all).await?;
    // The restarted relays' counters began at zero; the others' are read as deltas.
    let catch_up_bytes: u64 = after_back.values().map(|c| c.1).sum::<u64>()
        - before_back.values().map(|c| c.1).sum::<u64>();
    for w in watchers {
        w.abort();
    }

    let mut cover_ms = Vec::new();
    {
        let arrivals = arrivals.lock();
        for h in &hashes {
            let Some(times) = arrivals.get(h) else {
                continue;
            };
            if times.iter().all(Option::is_some) {
                let last = times.iter().flatten().max().expect("n > 0");
                cover_ms.push(last.duration_since(injected[h]).as_secs_f64() * 1000.0);
            }
        }
    }
    cover_ms.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        if cover_ms.is_empty() {
            f64::NAN
        } else {
            cover_ms[((cover_ms.len() as f64 * q).ceil() as usize).clamp(1, cover_ms.len()) - 1]
        }
    };
    let packets_n = opts.packets as f64;
    let mut total_bytes = 0.0;
    let mut total_requests = 0.0;
    let mut by_route = Vec::new();
    for (route, (req_after, bytes_after)) in &after {
        let (req_before, bytes_before) = before.get(route).copied().unwrap_or((0, 0));
        let bytes = (bytes_after - bytes_before) as f64;
        total_bytes += bytes;
        total_requests += (req_after - req_before) as f64;
        if bytes > 0.0 {
            by_route.push((route.clone(), bytes / packets_n));
        }
    }
    by_route.sort_by(|a, b| b.1.total_cmp(&a.1));
    drop(relays);
    Ok(Row {
        relays: n,
        topology: topology.to_owned(),
        mode: mode.to_owned(),
        links: graph.iter().map(Vec::len).sum::<usize>() / 2,
        packet_bytes: serde_json::to_vec(&measured[0])?.len(),
        bytes_per_packet: total_bytes / packets_n,
        requests_per_packet: total_requests / packets_n,
        by_route,
        covered: cover_ms.len(),
        packets: opts.packets,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: cover_ms.last().copied().unwrap_or(f64::NAN),
        eager_links: eager,
        down: down.len(),
        missed: opts.missed,
        catch_up_ms,
        catch_up_bytes: catch_up_bytes as f64,
    })
}

/// Ports for the relays below the ephemeral range, so that the many outgoing connections of
/// a large mesh cannot take a port before its relay listens on it.
fn listen_ports(n: usize) -> Res<Vec<u16>> {
    let mut ports = Vec::with_capacity(n);
    for port in 20_000..32_000u16 {
        if ports.len() == n {
            break;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    if ports.len() < n {
        return Err(format!("only {} free ports in 20000..32000", ports.len()).into());
    }
    Ok(ports)
}

fn start(
    dir: &Path,
    port: u16,
    peers: impl Iterator<Item = String>,
    mode: &str,
    config: Option<&Path>,
) -> Res<Relay> {
    let config: Vec<String> = config
        .map(|c| vec!["--config".to_owned(), c.display().to_string()])
        .unwrap_or_default();
    Ok(Relay::builder(dir)
        .binary(jasper_test::binary("jasper-relay"))
        .port(port)
        .peers(peers)
        .relay_default_sync()
        .allow_private_peers(false)
        .log_level("warn")
        .args(["--broadcast", mode])
        .args(config)
        .start_timeout(Duration::from_secs(30))
        .try_start()?)
}

/// Sends each packet to a random one of these relays, `rate` per second; records when each
/// was sent.
async fn inject(
    http: &reqwest::Client,
    relays: &[&Relay],
    packets: &[Packet],
    rate: f64,
    rng: &mut impl Rng,
    mut injected: Option<&mut HashMap<String, Instant>>,
) -> Res<()> {
    let gap = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    for (k, p) in packets.iter().enumerate() {
        let due = start + gap * k as u32;
        tokio::time::sleep_until(due.into()).await;
        let relay = relays[rng.random_range(0..relays.len())];
        if let Some(m) = injected.as_deref_mut() {
            m.insert(p.hash.clone(), Instant::now());
        }
        send(http, relay, p).await?;
    }
    Ok(())
}

/// Posts one packet; a connection that fails before the request is written (a pooled
/// connection the relay closed as it idled) is tried again on a fresh one, twice. Anything
/// else ends the run with the whole error chain and the end of the relay's log.
async fn send(http: &reqwest::Client, relay: &Relay, p: &Packet) -> Res<()> {
    let mut tries = 0;
    loop {
        tries += 1;
        match http.post(relay.url("/send")).json(p).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                return Err(format!("{} /send answered {status}: {body}", relay.addr()).into());
            }
            Err(e) if (e.is_connect() || e.is_request()) && tries < 3 => {
                eprintln!(
                    "{}: /send failed ({}), trying again",
                    relay.addr(),
                    chain(&e)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                let log = relay.log();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "{} /send failed after {tries} tries: {}; the end of its log:\n{}",
                    relay.addr(),
                    chain(&e),
                    tail.join("\n")
                )
                .into());
            }
        }
    }
}

/// An error with its sources, outermost first.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Long-polls one relay for the recipient's packets and records when each hash first shows.
async fn watch(
    http: reqwest::Client,
    url: String,
    recipient: String,
    index: usize,
    relays: usize,
    arrivals: Arrivals,
) {
    let mut since: Option<u64> = None;
    loop {
        let body = json!({ "recipient": recipient, "wait": 10, "since": since });
        let answer: Value = match http.post(&url).json(&body).send().await {
            Ok(r) => match r.json().await {
                Ok(v) => v,
                Err(_) => continue,
            },
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let now = Instant::now();
        if let Some(messages) = answer["messages"].as_array() {
            let mut arrivals = arrivals.lock();
            for m in messages {
                if let Some(h) = m["hash"].as_str() {
                    let times = arrivals
                        .entry(h.to_owned())
                        .or_insert_with(|| vec![None; relays]);
                    times[index].get_or_insert(now);
                }
            }
        }
        since = answer["cursor"].as_u64().or(since);
    }
}

async fn wait_covered(arrivals: &Arrivals, hashes: &[String], n: usize, deadline: Instant) {
    while Instant::now() < deadline {
        let done = {
            let a = arrivals.lock();
            hashes.iter().all(|h| {
                a.get(h)
                    .is_some_and(|t| t.len() == n && t.iter().all(Option::is_some))
            })
        };
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Until each hash shows at every one of these relays, or the deadline.
async fn wait_covered_by(arrivals: &Arrivals, hashes: &[String], at: &[usize], deadline: Instant) {
    while Instant::now() < deadline {
        let done = {
            let a = arrivals.lock();
            hashes
                .iter()
                .all(|h| a.get(h).is_some_and(|t| at.iter().all(|&i| t[i].is_some())))
        };
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Links that are eager (pushed every packet) as the relays see them: the sum over relays of
/// their peers not marked lazy, halved (a link seen eager from one end counts half). A
/// spanning tree has R − 1; the flood, every link.
async fn eager_links(http: &reqwest::Client, relays: &[&Relay]) -> Res<f64> {
    let mut ends = 0usize;
    for relay in relays {
        let status: Value = http.get(relay.url("/status")).send().await?.json().await?;
        let peers = status["peers"]
            .as_array()
            .map_or(0, |p| p.iter().filter(|p| p["state"] == "active").count());
        let lazy = status["mesh"]["broadcast"]["lazy_peers"]
            .as_array()
            .map_or(0, Vec::len);
        ends += peers - lazy.min(peers);
    }
    Ok(ends as f64 / 2.0)
}

/// Requests and body bytes (sent plus received) of every relay's peer client, by route.
async fn traffic(http: &reqwest::Client, relays: &[&Relay]) -> Res<HashMap<String, (u64, u64)>> {
    let mut total: HashMap<String, (u64, u64)> = HashMap::new();
    for relay in relays {
        let status: Value = http.get(relay.url("/status")).send().await?.json().await?;
        let routes = status["mesh"]["traffic"]
            .as_object()
            .ok_or("a relay's /status has no mesh.traffic")?;
        for (route, c) in routes {
            let e = total.entry(route.clone()).or_default();
            e.0 += c["requests"].as_u64().unwrap_or(0);
            e.1 +=
                c["bytes_sent"].as_u64().unwrap_or(0) + c["bytes_received"].as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}

/// Progress on stderr: the row, and where the bytes went.
fn print_row(r: &Row) {
    let routes: Vec<String> = r
        .by_route
        .iter()
        .map(|(route, b)| format!("{route} {:.0} kB", b / 1000.0))
        .collect();
    eprint!("{}", table_row(r));
    eprintln!("  bytes by route: {}", routes.join(", "));
}

fn table_row(r: &Row) -> String {
    format!(
        "| {} | {} | {} | {:.0} | {} | {:.0} kB | {:.2} | {:.0} | {}/{} | {:.0} ms | {:.0} ms | {:.0} ms | {} | {:.0} ms | {:.0} kB |\n",
        r.relays,
        if r.topology == "graph" {
            "random regular"
        } else {
            "full mesh"
        },
        r.links,
        r.eager_links,
        r.mode,
        r.bytes_per_packet / 1000.0,
        r.bytes_per_packet / ((r.relays - 1) * r.packet_bytes) as f64,
        r.requests_per_packet,
        r.covered,
        r.packets,
        r.p50_ms,
        r.p99_ms,
        r.max_ms,
        r.down,
        r.catch_up_ms,
        r.catch_up_bytes / 1000.0,
    )
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| R | peering | links | eager links | broadcast | bytes/packet | × (R−1)×size | requests/packet | covered | p50 | p99 | max | down | catch-up | catch-up bytes |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&table_row(r));
    }
    if let Some(r) = rows.first() {
        out.push_str(&format!(
            "\nPacket size: {} bytes. Down and back: that many relays stopped while the \
             others got {} packets; catch-up is from their restart until each held them all.\n",
            r.packet_bytes, r.missed
        ));
    }
    out
}

/// Bytes per packet against R, flood and tree, on the degree-d graph: a Mermaid chart.
fn plot(rows: &[Row]) -> String {
    let graph: Vec<&Row> = rows.iter().filter(|r| r.topology == "graph").collect();
    let mut rs: Vec<usize> = graph.iter().map(|r| r.relays).collect();
    rs.dedup();
    let series = |mode: &str| -> Vec<String> {
        rs.iter()
            .map(|n| {
                graph
                    .iter()
                    .find(|r| r.relays == *n && r.mode == mode)
                    .map_or("0".into(), |r| {
                        format!("{:.0}", r.bytes_per_packet / 1000.0)
                    })
            })
            .collect()
    };
    format!(
        "```mermaid\nxychart-beta\n    title \"Relay-to-relay kB per packet (degree-8 graph)\"\n    \
         x-axis \"relays\" [{}]\n    y-axis \"kB per packet\"\n    line [{}]\n    line [{}]\n```\n\
         (first line: flood; second: tree)",
        rs.iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        series("flood").join(", "),
        series("tree").join(", "),
    )
}
