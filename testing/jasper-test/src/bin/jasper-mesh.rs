//! `jasper-mesh`: a full mesh of real `jasper-relay` processes on loopback (and optionally a
//! coturn STUN server) for the tests that are not written in Rust and for `scripts/mesh.sh`,
//! started by the same fixtures as the Rust tests' relays.
//!
//! Prints ONE JSON line on stdout once every relay serves:
//!
//! ```text
//! {"relays":[{"address":"127.0.0.1:P","url":"http://127.0.0.1:P","data_dir":"…","log":"…","pid":N}],"stun":"stun:127.0.0.1:P"|null}
//! ```
//!
//! then runs until its stdin closes or it gets SIGTERM or SIGINT, and stops the relays
//! (SIGTERM, each waited for). Stdin is the lifeline: a test that dies without cleaning up
//! closes it, and the relays go with it.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use jasper_test::relay::{Relay, RelayBuilder, mesh_on};
use jasper_test::stun::StunServer;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

/// Starts a full mesh of jasper-relay processes on loopback, prints their addresses as one JSON
/// line, and runs until stdin closes or SIGTERM/SIGINT.
#[derive(Debug, Parser)]
#[command(name = "jasper-mesh", version)]
struct Args {
    /// How many relays (default 3, or as many as --ports names).
    #[arg(long)]
    relays: Option<usize>,
    /// The relays' ports, one relay each (default: free ports).
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    ports: Vec<u16>,
    /// Directory of the relays: relayN/data (the embedded store) and relayN/relay.log.
    #[arg(long)]
    dir: PathBuf,
    /// Seconds between hash syncs with each peer.
    #[arg(long, default_value_t = 1)]
    sync_interval: u64,
    /// Seconds between server-list exchanges.
    #[arg(long, default_value_t = 2)]
    server_sync_interval: u64,
    /// Also start a STUN server (coturn) on a free port.
    #[arg(long)]
    stun: bool,
    /// Start the STUN server on this port (implies --stun).
    #[arg(long)]
    stun_port: Option<u16>,
    /// The jasper-relay binary (default: JASPER_RELAY_BIN, else the one beside this binary).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// The relays' JASPER_LOG (default: JASPER_TEST_LOG, else info).
    #[arg(long)]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let ports = match (&args.ports[..], args.relays) {
        ([], n) => (0..n.unwrap_or(3))
            .map(|_| jasper_test::free_port())
            .collect(),
        (ports, Some(n)) if n != ports.len() => {
            eprintln!(
                "jasper-mesh: --relays {n} and {} --ports disagree",
                ports.len()
            );
            return ExitCode::from(2);
        }
        (ports, _) => ports.to_vec(),
    };
    if let Err(e) = std::fs::create_dir_all(&args.dir) {
        eprintln!("jasper-mesh: cannot create {}: {e}", args.dir.display());
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    // The handlers go in before the JSON line: whoever reads it may send SIGTERM at once, and
    // that must stop the relays, not kill this process and leave them running.
    let (mut term, mut int) = runtime.block_on(async {
        (
            signal(SignalKind::terminate()).expect("a SIGTERM handler"),
            signal(SignalKind::interrupt()).expect("a SIGINT handler"),
        )
    });

    let configure = |b: RelayBuilder| {
        let b = b.sync_intervals(args.sync_interval, args.server_sync_interval);
        let b = match &args.relay_bin {
            Some(bin) => b.binary(bin),
            None => b,
        };
        match &args.log_level {
            Some(level) => b.log_level(level),
            None => b,
        }
    };
    // A relay that does not start panics with the reason; the ones already started are
    // dropped (killed) while it unwinds.
    let mut relays = mesh_on(&ports, &args.dir, configure);
    let stun = match (args.stun, args.stun_port) {
        (_, Some(port)) => {
            Some(StunServer::try_start_on(&args.dir, port).unwrap_or_else(|e| panic!("{e}")))
        }
        (true, None) => Some(StunServer::start(&args.dir)),
        (false, None) => None,
    };
    println!("{}", announcement(&relays, stun.as_ref()));

    let (closed_tx, mut stdin_closed) = tokio::sync::oneshot::channel::<()>();
    // A plain thread: a read blocked on stdin must not keep the runtime from shutting down.
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    let why = runtime.block_on(async {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = &mut stdin_closed => "stdin closed",
        }
    });
    eprintln!("jasper-mesh: {why}; stopping the relays");
    let mut graceful = true;
    for relay in &mut relays {
        match relay.shutdown() {
            Some(status) if !status.success() => {
                eprintln!(
                    "jasper-mesh: the relay on {} exited with {status}; its log is {}",
                    relay.addr(),
                    relay.log_path().display()
                );
                graceful = false;
            }
            _ => {}
        }
    }
    drop(stun);
    if graceful {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The JSON line that tells the caller what runs where.
fn announcement(relays: &[Relay], stun: Option<&StunServer>) -> String {
    let relays: Vec<_> = relays
        .iter()
        .map(|r| {
            json!({
                "address": r.addr(),
                "url": r.url(""),
                "data_dir": r.data_dir(),
                "log": r.log_path(),
                "pid": r.pid(),
            })
        })
        .collect();
    json!({ "relays": relays, "stun": stun.map(|s| s.url.clone()) }).to_string()
}
