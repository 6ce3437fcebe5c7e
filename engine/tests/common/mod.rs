//! Fixtures for engine tests: real `jasper-relay` processes on loopback (the kit's), and
//! engines running in this process.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use jasper_engine::{Engine, EngineConfig, EphemeralSecretStore};
#[allow(unused_imports)]
pub use jasper_test::stun::StunServer;
#[allow(unused_imports)]
pub use jasper_test::{dropping_relay, eventually, free_port};

/// A relay of [`mesh`], with its address as a field (what the tests pass to engines).
pub struct RelayProc {
    pub addr: String,
    pub relay: jasper_test::relay::Relay,
}

/// `n` relays, each peered with every other, fast sync.
pub fn mesh(n: usize, dir: &std::path::Path) -> Vec<RelayProc> {
    jasper_test::relay::mesh_with(n, dir, |b| b.log_level("warn"))
        .into_iter()
        .map(|relay| RelayProc {
            addr: relay.addr(),
            relay,
        })
        .collect()
}

pub fn config(dir: &std::path::Path, relays: &[RelayProc]) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.relays = relays.iter().map(|r| r.addr.clone()).collect();
    c.allow_private_relays = true;
    c.long_poll = Duration::from_secs(5);
    c.delivery_timeout = Duration::from_secs(4);
    c.witness_interval = Duration::from_millis(500);
    c.sent_copy_delay = Duration::from_millis(300);
    c.notifications = false;
    c
}

pub async fn engine(
    dir: &std::path::Path,
    relays: &[RelayProc],
    secrets: Arc<EphemeralSecretStore>,
) -> Engine {
    Engine::open(config(dir, relays), secrets).await.unwrap()
}
