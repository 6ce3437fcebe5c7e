//! Faults between hosts: four relays, two daemons and the test itself, each its own host in a
//! network namespace (the kit's `netns`), under a seeded schedule of partitions, lossy and slow
//! links, relay crashes (SIGKILL) and daemon crashes, with traffic throughout: packets sent
//! straight to relays by the test, and messages sent with `jasper send` both ways. After the
//! network heals it checks the invariants:
//!
//! 1. every packet a relay acknowledged is held by every relay, exactly once;
//! 2. every message `jasper send` accepted is in the recipient's conversation exactly once;
//! 3. a packet that expired while its relay was cut off never comes back: no other relay ever
//!    holds it, and its own relay stops serving it once it has expired.
//!
//! Needs root and minutes: `scripts/faults.sh` runs it (seeds 1, 2, 3 unless
//! `JASPER_FAULT_SEEDS` says otherwise), not `scripts/test.sh`. Figures in
//! docs/benchmarks.md ("Faults between hosts").

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Daemon, DaemonOptions, befriend, runtime};
use jasper_core::MessageHash;
use jasper_test::netns::Network;
use jasper_test::relay::Relay;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const RELAYS: usize = 4;
/// Seeded steps after the first (the expiry step), each with its own fault; a fixed partition
/// follows them.
const STEPS: usize = 12;
const STEP: Duration = Duration::from_secs(4);
/// Packets the test sends straight to relays in each step.
const PACKETS_PER_STEP: usize = 6;
/// How long a short-lived packet lives; the expiry step outlasts it.
const SHORT_LIFE_SECS: u64 = 5;
/// How long the mesh and the daemons get to converge once the network is healed.
const CONVERGE: Duration = Duration::from_secs(180);

#[derive(Debug, Clone)]
enum Fault {
    /// The relays and daemons split in two; none of the first group reaches the second.
    Partition(Vec<String>, Vec<String>),
    Lossy(String, u8),
    Slow(String, u32),
    CrashRelay(usize),
    CrashDaemon(&'static str),
    Calm,
}

/// Dropped in this order: the processes first, then the namespaces they ran in.
struct Hosts {
    relays: Vec<Relay>,
    alice: Daemon,
    bob: Daemon,
    net: Network,
}

fn relay_name(i: usize) -> String {
    format!("relay{i}")
}

fn seeds() -> Vec<u64> {
    std::env::var("JASPER_FAULT_SEEDS")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("JASPER_FAULT_SEEDS: numbers, comma-separated")
        })
        .collect()
}

#[test]
#[ignore = "needs root, network namespaces and minutes: scripts/faults.sh runs it"]
fn faults_between_hosts_lose_nothing_duplicate_nothing_and_revive_nothing() {
    let mut figures = Vec::new();
    for seed in seeds() {
        figures.push(run_seed(seed));
    }
    println!("== faults between hosts");
    for f in &figures {
        println!("   {f}");
    }
}

fn start(root: &std::path::Path) -> Hosts {
    let mut names: Vec<String> = (0..RELAYS).map(relay_name).collect();
    names.extend(["alice".into(), "bob".into()]);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let net = Network::create(&refs).unwrap_or_else(|e| panic!("{e}"));
    const PORT: u16 = 8080;
    let addrs: Vec<String> = (0..RELAYS)
        .map(|i| format!("{}:{PORT}", net.host(&relay_name(i)).ip))
        .collect();
    let relays: Vec<Relay> = (0..RELAYS)
        .map(|i| {
            Relay::builder(&root.join(relay_name(i)))
                .on_host(net.host(&relay_name(i)))
                .port(PORT)
                .peers(
                    addrs
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(_, a)| a.clone()),
                )
                // A peer that timed out during a partition is quarantined; the default (30 s,
                // doubling) would stretch a 1-minute schedule into many.
                .args(["--quarantine-secs", "2", "--peer-timeout", "3"])
                .start()
        })
        .collect();
    let daemon = |name: &'static str| {
        Daemon::start_with(
            root,
            name,
            DaemonOptions {
                relays: addrs.clone(),
                wrapper: net.host(name).exec_prefix().to_vec(),
                ..DaemonOptions::default()
            },
        )
    };
    let alice = daemon("alice");
    let bob = daemon("bob");
    alice.create_identity();
    bob.create_identity();
    befriend(&alice, "alice", &bob, "bob");
    Hosts {
        relays,
        alice,
        bob,
        net,
    }
}

/// A packet for `recipient` of random bytes (relays check form and hash, not content).
fn packet(recipient: &str, rng: &mut StdRng, expires_at: Option<u64>) -> Value {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let mut message = vec![0u8; 600];
    let mut signature = vec![0u8; 512];
    rng.fill(&mut message[..]);
    rng.fill(&mut signature[..]);
    let message = b64.encode(&message);
    let mut p = json!({
        "recipient": recipient,
        "hash": MessageHash::of_message(&message).to_hex(),
        "message": message,
        "signature": b64.encode(&signature),
    });
    if let Some(at) = expires_at {
        p["expires_at"] = json!(at);
    }
    p
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `POST /send`; `true` when the relay acknowledged it.
async fn send(http: &reqwest::Client, relay: &str, p: &Value) -> bool {
    http.post(format!("http://{relay}/send"))
        .json(p)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// How many times each hash is in `relay`'s answer to `/fetch {recipient}`; `None` when it
/// does not answer.
async fn held(
    http: &reqwest::Client,
    relay: &str,
    recipient: &str,
) -> Option<HashMap<String, usize>> {
    let answer: Value = http
        .post(format!("http://{relay}/fetch"))
        .json(&json!({ "recipient": recipient }))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .await
        .ok()?;
    let mut counts = HashMap::new();
    for m in answer["messages"].as_array()? {
        *counts
            .entry(m["hash"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    Some(counts)
}

fn pick_fault(rng: &mut StdRng) -> Fault {
    let hosts: Vec<String> = (0..RELAYS)
        .map(relay_name)
        .chain(["alice".into(), "bob".into()])
        .collect();
    match rng.random_range(0..6) {
        0 => {
            // A random split of all six hosts, neither side empty.
            loop {
                let (a, b): (Vec<String>, Vec<String>) =
                    hosts.iter().cloned().partition(|_| rng.random_bool(0.5));
                if !a.is_empty() && !b.is_empty() {
                    return Fault::Partition(a, b);
                }
            }
        }
        1 => Fault::Lossy(
            hosts[rng.random_range(0..hosts.len())].clone(),
            rng.random_range(10..=40),
        ),
        2 => Fault::Slow(
            hosts[rng.random_range(0..hosts.len())].clone(),
            rng.random_range(64..=512),
        ),
        3 => Fault::CrashRelay(rng.random_range(0..RELAYS)),
        4 => Fault::CrashDaemon(if rng.random_bool(0.5) { "alice" } else { "bob" }),
        _ => Fault::Calm,
    }
}

/// Every run's figures, one line.
fn run_seed(seed: u64) -> String {
    let began = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let mut hosts = start(root.path());
    let rt = runtime();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    // The schedule is drawn up front from the seed alone; the traffic has a generator of its
    // own, since how much of it fits in a step depends on the machine's speed.
    let mut plan = StdRng::seed_from_u64(seed);
    let lonely = plan.random_range(0..RELAYS);
    let mut schedule: Vec<Fault> = (0..STEPS).map(|_| pick_fault(&mut plan)).collect();
    // The last step splits the mesh in halves, a daemon on each, for twice as long: what piles
    // up on both sides must meet once it heals (the convergence time measured).
    schedule.push(Fault::Partition(
        vec!["relay0".into(), "relay1".into(), "alice".into()],
        vec!["relay2".into(), "relay3".into(), "bob".into()],
    ));
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7261_6666_6963_0000);
    let recipient = jasper_core::PrivateKey::generate()
        .unwrap()
        .public_key()
        .to_text()
        .to_owned();
    let addrs: Vec<String> = hosts.relays.iter().map(Relay::addr).collect();

    // Step 0: one relay cut off from the others while it takes short-lived packets, and kept
    // cut off until they have expired.
    let rest: Vec<String> = (0..RELAYS)
        .filter(|&i| i != lonely)
        .map(relay_name)
        .collect();
    hosts
        .net
        .partition(&[vec![relay_name(lonely)], rest])
        .unwrap();
    let expires_at = unix_now() + SHORT_LIFE_SECS;
    let short_lived: Vec<String> = (0..3)
        .map(|_| {
            let p = packet(&recipient, &mut rng, Some(expires_at));
            assert!(
                rt.block_on(send(&http, &addrs[lonely], &p)),
                "relay{lonely} refused a short-lived packet"
            );
            p["hash"].as_str().unwrap().to_owned()
        })
        .collect();
    let at_lonely = rt
        .block_on(held(&http, &addrs[lonely], &recipient))
        .expect("the cut-off relay answers the test");
    assert!(
        short_lived.iter().all(|h| at_lonely.get(h) == Some(&1)),
        "relay{lonely} holds its short-lived packets before they expire: {at_lonely:?}"
    );
    let mut revived = Vec::new();
    let mut check_revived = |rt: &tokio::runtime::Runtime, when: &str| {
        for (i, relay) in addrs.iter().enumerate() {
            if let Some(counts) = rt.block_on(held(&http, relay, &recipient)) {
                let expired = unix_now() >= expires_at;
                for h in &short_lived {
                    if counts.contains_key(h) && (i != lonely || expired) {
                        revived.push(format!("{h} at relay{i} ({when})"));
                    }
                }
            }
        }
    };
    while unix_now() < expires_at + 2 {
        std::thread::sleep(Duration::from_millis(500));
    }
    hosts.net.heal().unwrap();

    // The seeded steps.
    let mut acked: Vec<String> = Vec::new();
    let mut unacked = 0;
    let mut sent_by = BTreeMap::<&'static str, Vec<String>>::new();
    let mut refused_cli = 0;
    let mut partition_checks = 0;
    for (step, fault) in schedule.iter().enumerate() {
        let last = step == STEPS;
        let length = if last { 2 * STEP } else { STEP };
        let mut crashed_relay = None;
        let mut crashed_daemon = None;
        match fault {
            Fault::Partition(a, b) => hosts.net.partition(&[a.clone(), b.clone()]).unwrap(),
            Fault::Lossy(h, pct) => hosts.net.lossy(h, *pct).unwrap(),
            Fault::Slow(h, kbit) => hosts.net.slow(h, *kbit).unwrap(),
            Fault::CrashRelay(i) => crashed_relay = Some(*i),
            Fault::CrashDaemon(name) => crashed_daemon = Some(*name),
            Fault::Calm => {}
        }
        let started = Instant::now();
        let mut sent_this_step = 0;
        let mut acked_this_step = Vec::new();
        while started.elapsed() < length {
            // The crash lands mid-step, with traffic before and after it.
            if started.elapsed() > length / 3 {
                if let Some(i) = crashed_relay.take() {
                    hosts.relays[i].crash();
                }
                if let Some(name) = crashed_daemon.take() {
                    if name == "alice" {
                        hosts.alice.kill9();
                    } else {
                        hosts.bob.kill9();
                    }
                }
            }
            // Spread over the step, so that some land after the crash (and are refused).
            if sent_this_step < PACKETS_PER_STEP
                && started.elapsed() >= length * sent_this_step as u32 / PACKETS_PER_STEP as u32
            {
                let p = packet(&recipient, &mut rng, None);
                let to = rng.random_range(0..RELAYS);
                let hash = p["hash"].as_str().unwrap().to_owned();
                if rt.block_on(send(&http, &addrs[to], &p)) {
                    acked_this_step.push((to, hash.clone()));
                    acked.push(hash);
                } else {
                    unacked += 1;
                }
                sent_this_step += 1;
            }
            for (from, to, daemon) in [("alice", "bob", &hosts.alice), ("bob", "alice", &hosts.bob)]
            {
                if !rng.random_bool(0.3) {
                    continue;
                }
                let text = format!(
                    "seed {seed} step {step} from {from} #{}",
                    rng.random::<u32>()
                );
                let out = daemon.jasper(&["send", "--to", to, &text]);
                if out.success() {
                    let id = out.json()["id"].as_str().unwrap().to_owned();
                    sent_by.entry(from).or_default().push(id);
                } else {
                    refused_cli += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        check_revived(&rt, &format!("step {step}"));
        // A partition that did not cut would make this test vacuous: what one side
        // acknowledged during the step is on none of the other side's relays.
        if let Fault::Partition(a, b) = fault {
            for (to, hash) in &acked_this_step {
                let other = if a.contains(&relay_name(*to)) { b } else { a };
                for i in (0..RELAYS).filter(|i| other.contains(&relay_name(*i))) {
                    if let Some(counts) = rt.block_on(held(&http, &addrs[i], &recipient)) {
                        assert!(
                            !counts.contains_key(hash),
                            "seed {seed} step {step}: {hash}, sent to relay{to}, crossed the \
                             partition to relay{i}"
                        );
                        partition_checks += 1;
                    }
                }
            }
        }
        // Undo this step's fault before the next.
        hosts.net.heal().unwrap();
        for relay in &mut hosts.relays {
            if !relay.is_running() {
                relay.restart();
            }
        }
        for daemon in [&mut hosts.alice, &mut hosts.bob] {
            if !daemon.is_running() {
                daemon.restart();
            }
        }
    }

    // Healed: wait for every relay to hold every acknowledged packet, and every accepted
    // message to be in its recipient's conversation.
    let healed = Instant::now();
    let converged = |rt: &tokio::runtime::Runtime| -> Result<(), String> {
        for (i, relay) in addrs.iter().enumerate() {
            let counts = rt
                .block_on(held(&http, relay, &recipient))
                .ok_or_else(|| format!("relay{i} does not answer"))?;
            let missing = acked.iter().filter(|h| !counts.contains_key(*h)).count();
            if missing > 0 {
                return Err(format!(
                    "relay{i} lacks {missing} of {} acknowledged packets",
                    acked.len()
                ));
            }
        }
        for (from, to, receiver) in [("alice", "bob", &hosts.bob), ("bob", "alice", &hosts.alice)] {
            let got = receiver.messages(from);
            let ids: Vec<&str> = got.iter().filter_map(|m| m["id"].as_str()).collect();
            let missing = sent_by.get(from).map_or(0, |sent| {
                sent.iter().filter(|id| !ids.contains(&id.as_str())).count()
            });
            if missing > 0 {
                return Err(format!("{to} lacks {missing} of {from}'s messages"));
            }
        }
        Ok(())
    };
    let converged_after = loop {
        let why = match converged(&rt) {
            Ok(()) => break healed.elapsed(),
            Err(why) => why,
        };
        assert!(
            healed.elapsed() < CONVERGE,
            "seed {seed}: not converged {CONVERGE:?} after healing: {why}; schedule {schedule:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };

    // Exactly once, everywhere; and two more sync rounds for anything to come back.
    std::thread::sleep(Duration::from_secs(3));
    check_revived(&rt, "after healing");
    for (i, relay) in addrs.iter().enumerate() {
        let counts = rt.block_on(held(&http, relay, &recipient)).unwrap();
        let twice: Vec<_> = counts.iter().filter(|&(_, &n)| n > 1).collect();
        assert!(
            twice.is_empty(),
            "seed {seed}: relay{i} holds packets more than once: {twice:?}"
        );
    }
    let mut delivered = 0;
    for (from, receiver) in [("alice", &hosts.bob), ("bob", &hosts.alice)] {
        let got = receiver.messages(from);
        let mut counts = HashMap::<&str, usize>::new();
        for m in &got {
            *counts
                .entry(m["id"].as_str().unwrap_or_default())
                .or_default() += 1;
        }
        for id in sent_by.get(from).into_iter().flatten() {
            assert_eq!(
                counts.get(id.as_str()),
                Some(&1),
                "seed {seed}: {from}'s message {id} is not in the conversation exactly once"
            );
            delivered += 1;
        }
    }
    assert!(
        revived.is_empty(),
        "seed {seed}: expired packets came back: {revived:?}"
    );

    let kinds = |f: &dyn Fn(&Fault) -> bool| schedule.iter().filter(|x| f(x)).count();
    format!(
        "seed {seed}: {} partitions, {} lossy, {} slow, {} relay crashes, {} daemon crashes, {} calm; \
         {} packets acknowledged ({unacked} not), on all {RELAYS} relays exactly once; \
         {delivered} messages accepted and delivered exactly once ({refused_cli} sends refused while a daemon was down); \
         {partition_checks} checks that a partition held; \
         {} short-lived packets never came back; converged {:.1} s after healing; run {:.0} s",
        kinds(&|f| matches!(f, Fault::Partition(..))),
        kinds(&|f| matches!(f, Fault::Lossy(..))),
        kinds(&|f| matches!(f, Fault::Slow(..))),
        kinds(&|f| matches!(f, Fault::CrashRelay(..))),
        kinds(&|f| matches!(f, Fault::CrashDaemon(..))),
        kinds(&|f| matches!(f, Fault::Calm)),
        acked.len(),
        short_lived.len(),
        converged_after.as_secs_f64(),
        began.elapsed().as_secs_f64(),
    )
}
