//! Relays: which are known (configured, learned, added), how they perform, and what each is to
//! this identity. `client.rs` speaks the protocol, `selection.rs` ranks relays, `anonymity.rs`
//! keeps the roles apart, `discovery.rs` learns relays and their load.

pub(crate) mod anonymity;
pub mod client;
pub(crate) mod discovery;
pub(crate) mod selection;

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::model::*;
use crate::relays::anonymity::Role;

/// `engine.relays()`: list, add and remove relays; the RX relay; the anonymity report.
#[derive(Clone)]
pub struct Relays {
    pub(crate) engine: Engine,
}

impl Relays {
    pub fn list(&self) -> Result<Vec<RelayInfo>> {
        Ok(self
            .engine
            .inner
            .db
            .relays()?
            .into_iter()
            .map(|r| r.info)
            .collect())
    }

    pub async fn add(&self, address: &str) -> Result<RelayInfo> {
        let address = address.to_owned();
        self.engine
            .off_runtime(move |engine| engine.relays().add_blocking(&address))
            .await
    }

    fn add_blocking(&self, address: &str) -> Result<RelayInfo> {
        let addr = jasper_core::addr::RelayAddr::parse(address.trim())
            .map_err(|e| EngineError::InvalidArgument(format!("relay {address}: {e}")))?;
        self.engine.inner.db.add_relay(&addr.to_string(), "added")?;
        // A new relay may be what a waiting role needs.
        self.engine.inner.wake_outbox.notify_one();
        self.engine.publish_anonymity();
        self.list()?
            .into_iter()
            .find(|r| r.address == addr.to_string())
            .ok_or_else(|| EngineError::UnknownRelay(addr.to_string()))
    }

    pub async fn remove(&self, address: &str) -> Result<()> {
        let address = address.to_owned();
        self.engine
            .off_runtime(move |engine| engine.relays().remove_blocking(&address))
            .await
    }

    fn remove_blocking(&self, address: &str) -> Result<()> {
        let addr = jasper_core::addr::RelayAddr::parse(address.trim())
            .map_err(|e| EngineError::InvalidArgument(format!("relay {address}: {e}")))?;
        if !self.engine.inner.db.remove_relay(&addr.to_string())? {
            return Err(EngineError::UnknownRelay(addr.to_string()));
        }
        self.engine.inner.wake_outbox.notify_one();
        self.engine.publish_anonymity();
        Ok(())
    }

    /// The relay this identity receives on.
    pub fn rx(&self) -> Result<Option<String>> {
        let fp = hex::encode(self.engine.me()?.public_key().fingerprint());
        self.engine.inner.db.assignment(Role::Rx.as_str(), &fp)
    }

    /// Where this identity stands on anonymity: roles, relays needed and known, what waits for
    /// a relay of its own, what is shared (`relays/anonymity.rs`).
    pub fn anonymity(&self) -> Result<AnonymityReport> {
        self.engine.anonymity_report()
    }
}
