//! Discovery: each relay's `/status` (load, extensions) and its server list, refreshed every
//! `discovery_interval`.

use crate::engine::Engine;
use crate::model::*;
use crate::relays::Relays;
use crate::store::Db;

impl Engine {
    pub(crate) async fn discovery(self) {
        loop {
            self.relays().discover_once().await;
            self.inner
                .witness
                .discovered
                .store(true, std::sync::atomic::Ordering::Release);
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.discovery_interval) => {}
                _ = self.inner.stop.cancelled() => return,
            }
        }
    }
}

impl Relays {
    /// Refreshes every relay's load figures, then exchanges server lists with each.
    pub async fn discover_once(&self) {
        let rows = self.engine.inner.db.relays().unwrap_or_default();
        for row in &rows {
            let relay = &row.info.address;
            match self.engine.inner.client.status(relay).await {
                Ok((status, took)) => {
                    let _ =
                        self.engine
                            .inner
                            .db
                            .relay_status(relay, status.load, status.supports_wait);
                    {
                        let mut feed = self.engine.inner.witness.feed_relays.lock();
                        if status.supports_recent {
                            feed.insert(relay.clone());
                        } else {
                            feed.remove(relay);
                        }
                    }
                    let _ = self.engine.inner.db.relay_result(
                        relay,
                        true,
                        Some(took.as_secs_f64() * 1000.0),
                    );
                }
                Err(_) => {
                    let _ = self.engine.inner.db.relay_result(relay, false, None);
                    continue;
                }
            }
            // An empty list: ours is a fingerprint of this client that every relay would get.
            // The relay then answers with every server it knows (all are ones "we lack").
            if let Ok(learned) = self.engine.inner.client.servers(relay, Vec::new()).await {
                for entry in learned {
                    let Ok(addr) = jasper_core::addr::RelayAddr::new(&entry.ip, entry.port) else {
                        continue;
                    };
                    if addr
                        .learnable(self.engine.inner.config.allow_private_relays)
                        .is_err()
                    {
                        continue;
                    }
                    if self
                        .engine
                        .inner
                        .db
                        .add_relay(&addr.to_string(), "learned")
                        .unwrap_or(false)
                    {
                        tracing::info!(relay = %addr, "learned a relay");
                        let _ = self.engine.commit(|tx| {
                            Db::push_event(
                                tx,
                                &EventKind::RelayDiscovered {
                                    address: addr.to_string(),
                                },
                            )?;
                            Ok(())
                        });
                        self.engine.inner.wake_outbox.notify_one();
                    }
                }
            }
        }
        self.engine.publish_anonymity();
    }
}
