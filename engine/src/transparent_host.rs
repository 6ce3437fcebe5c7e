//! The engine's side of transparent mode's [`Host`] interface: what transparent mode may reach
//! of the rest of the client, implemented over the engine's parts. It holds the engine weakly
//! (the engine owns transparent mode, which owns this), so a call after the engine is gone
//! fails with `ShuttingDown` instead of keeping it alive.

use std::sync::Weak;

use jasper_core::protocol::Packet;
use jasper_core::{PrivateKey, PublicKey};

use crate::contacts::parse_key;
use crate::engine::{Engine, Inner};
use crate::error::{EngineError, Result};
use crate::model::EventKind;
use crate::outbox::to_json;
use crate::store::Db;
use crate::transparent::Host;

pub(crate) struct EngineHost(pub(crate) Weak<Inner>);

impl EngineHost {
    fn engine(&self) -> Result<Engine> {
        self.0
            .upgrade()
            .map(|inner| Engine { inner })
            .ok_or(EngineError::ShuttingDown)
    }
}

impl Host for EngineHost {
    fn identity(&self) -> Result<PrivateKey> {
        self.engine()?.me()
    }

    fn contact_key(&self, contact: &str) -> Result<PublicKey> {
        let engine = self.engine()?;
        let key = engine.contacts().resolve_key(contact)?;
        if engine.inner.db.contact_by_key(key.to_text())?.is_none() {
            return Err(EngineError::UnknownContact(contact.to_owned()));
        }
        Ok(key)
    }

    fn contact_name(&self, key: &PublicKey) -> Result<Option<String>> {
        Ok(self
            .engine()?
            .inner
            .db
            .contact_by_key(key.to_text())?
            .map(|c| c.name))
    }

    fn consent(&self, key: &PublicKey) -> Result<(bool, bool)> {
        self.engine()?.inner.db.consent(key.to_text())
    }

    fn set_consent(&self, key: &PublicKey, local: Option<bool>, peer: Option<bool>) -> Result<()> {
        self.engine()?
            .inner
            .db
            .set_consent(key.to_text(), local, peer)
    }

    /// The consent rows' keys, parsed here where they leave the store. Every row was written
    /// with a parsed key (a contact's or a verified signal sender's), so all parse; one that
    /// does not (a damaged database) is skipped rather than failing every status.
    fn consenting_keys(&self) -> Result<Vec<PublicKey>> {
        let texts = self.engine()?.inner.db.consenting_keys()?;
        Ok(texts
            .iter()
            .filter_map(|text| match parse_key(text) {
                Ok(key) => Some(key),
                Err(e) => {
                    tracing::warn!(error = %e, "consent row without a valid key skipped");
                    None
                }
            })
            .collect())
    }

    fn record(&self, kind: EventKind) -> Result<()> {
        self.engine()?.commit(|tx| Db::push_event(tx, &kind))?;
        Ok(())
    }

    fn queue_for(&self, peer: &PublicKey, packets: &[Packet]) -> Result<()> {
        let engine = self.engine()?;
        let peer_fp = hex::encode(peer.fingerprint());
        engine.commit(|tx| {
            for p in packets {
                Db::enqueue(
                    tx,
                    None,
                    false,
                    &p.recipient,
                    &peer_fp,
                    &to_json(p),
                    &p.hash,
                    0,
                )?;
            }
            Ok(())
        })?;
        engine.inner.wake_outbox.notify_one();
        Ok(())
    }

    fn deliver_direct(&self, peer: &PublicKey, packet: &Packet) -> bool {
        self.engine()
            .is_ok_and(|engine| engine.receive_direct(peer, packet))
    }

    fn wake_outbox(&self) {
        if let Ok(engine) = self.engine() {
            engine.inner.wake_outbox.notify_one();
        }
    }

    fn notify(&self, title: &str, body: &str) {
        if let Ok(engine) = self.engine() {
            engine.notify_text(title, body);
        }
    }
}
