//! The engine: everything a Jasper client does, as narrow parts reached through handles
//! (`engine.messages()`, `engine.relays()`, `engine.transparent()`, ...). Each part lives in its
//! own module and owns its state; this file holds what they share (the store, the identity,
//! the relay client, the stop signal) and starts the background tasks:
//!
//! - the receiver long-polls this identity's RX relay and applies what opens (`messages/receive.rs`);
//! - the sender drains the outbox through per-recipient TX relays (`outbox/`, roles in
//!   `relays/anonymity.rs`);
//! - the witness reads a relay's recent-hash feed to see that each packet reached the mesh
//!   (`outbox/witness.rs`);
//! - discovery refreshes relay lists and load figures (`relays/discovery.rs`);
//! - transparent mode runs its sessions and calls (`transparent/`).

use crate::messages::budget::OpenBudget;
use std::sync::Arc;

use jasper_core::PrivateKey;
use parking_lot::RwLock;
use sha2::Digest;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::attachments::Attachments;
use crate::config::EngineConfig;
use crate::contacts::Contacts;
use crate::conversations::Conversations;
use crate::error::{EngineError, Result};
use crate::events::Events;
use crate::groups::Groups;
use crate::identity::{Identity, blocking_secrets};
use crate::messages::Messages;
use crate::outbox::Outbox;
use crate::outbox::witness::WitnessState;
use crate::relays::Relays;
use crate::relays::anonymity::AnonymityState;
use crate::relays::client::RelayClient;
use crate::secrets::SecretStore;
use crate::store::{self, Db, Tx};
use crate::transparent::{Calls, Core as TransparentCore, Transparent};
use crate::transparent_host::EngineHost;

/// How long a relay that served a forged packet or lost an accepted one is avoided.
pub(crate) const SUSPECT_FOR_MS: i64 = 30 * 60 * 1000;

/// A Jasper client. Cheap to clone (one shared state); every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: EngineConfig,
    pub(crate) db: Db,
    pub(crate) secrets: Arc<dyn SecretStore>,
    /// The secret store's entry for this data directory's private key.
    pub(crate) account: String,
    pub(crate) identity: RwLock<Option<PrivateKey>>,
    pub(crate) client: RelayClient,
    pub(crate) anonymity: AnonymityState,
    pub(crate) witness: WitnessState,
    pub(crate) latest_event: watch::Sender<u64>,
    pub(crate) wake_outbox: Notify,
    pub(crate) identity_ready: Notify,
    pub(crate) stop: CancellationToken,
    pub(crate) transparent: Arc<TransparentCore>,
    /// What packets from each RX relay may cost in private-key operations.
    pub(crate) open_budget: OpenBudget,
}

impl Engine {
    /// Opens the data directory, loads the identity (if any) from the secret store and starts
    /// the background tasks on the current tokio runtime.
    pub async fn open(config: EngineConfig, secrets: Arc<dyn SecretStore>) -> Result<Engine> {
        config
            .transparent
            .validate()
            .map_err(EngineError::InvalidArgument)?;
        let db = Db::open(&config.data_dir)?;
        let canonical =
            std::fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
        let account = format!(
            "identity-{}",
            &hex::encode(sha2::Sha256::digest(canonical.to_string_lossy().as_bytes()))[..24]
        );
        for relay in &config.relays {
            let addr = jasper_core::addr::RelayAddr::parse(relay)
                .map_err(|e| EngineError::InvalidArgument(format!("relay {relay}: {e}")))?;
            db.add_relay(&addr.to_string(), "configured")?;
        }
        let identity = match db.meta("public_key")? {
            None => None,
            Some(public) => {
                let pem = blocking_secrets(&secrets, {
                    let account = account.clone();
                    move |s| s.load(&account)
                })
                .await?
                .ok_or_else(|| {
                    EngineError::KeyStore(format!(
                        "the private key for {} is missing from the {} store",
                        store::short_key(&public),
                        secrets.kind()
                    ))
                })?;
                let key = PrivateKey::from_pkcs8_pem(&pem)?;
                if key.public_key().to_text() != public {
                    return Err(EngineError::KeyStore(
                        "the key store holds a different key than this data directory's identity"
                            .into(),
                    ));
                }
                Some(key)
            }
        };
        let latest = db.last_event_seq()?;
        let stop = CancellationToken::new();
        let transparent_config = config.transparent.clone();
        // Transparent mode reaches the engine through a weak handle of its own (its Host).
        let inner = Arc::new_cyclic(|weak| Inner {
            client: RelayClient::new(config.relay_timeout),
            anonymity: AnonymityState::default(),
            witness: WitnessState::default(),
            open_budget: OpenBudget::default(),
            transparent: Arc::new(TransparentCore::new(
                transparent_config,
                Box::new(EngineHost(weak.clone())),
                stop.clone(),
            )),
            config,
            db,
            secrets,
            account,
            identity: RwLock::new(identity),
            latest_event: watch::channel(latest).0,
            wake_outbox: Notify::new(),
            identity_ready: Notify::new(),
            stop,
        });
        let engine = Engine { inner };
        tokio::spawn(engine.clone().receiver());
        tokio::spawn(engine.clone().sender());
        tokio::spawn(engine.clone().discovery());
        tokio::spawn(engine.clone().witness());
        tokio::spawn(engine.inner.transparent.clone().run());
        Ok(engine)
    }

    /// Stops the background tasks. Everything acknowledged is already on disk.
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    // ---- the parts ----------------------------------------------------------------------

    /// Create, import, show and export this client's key pair.
    pub fn identity(&self) -> Identity {
        Identity {
            engine: self.clone(),
        }
    }

    /// Add, list and resolve contacts.
    pub fn contacts(&self) -> Contacts {
        Contacts {
            engine: self.clone(),
        }
    }

    /// List and resolve conversations; page through their history.
    pub fn conversations(&self) -> Conversations {
        Conversations {
            engine: self.clone(),
        }
    }

    /// Send, edit, delete and react to messages.
    pub fn messages(&self) -> Messages {
        Messages {
            engine: self.clone(),
        }
    }

    /// Create groups and change their members.
    pub fn groups(&self) -> Groups {
        Groups {
            engine: self.clone(),
        }
    }

    /// Where each message's copies went.
    pub fn outbox(&self) -> Outbox {
        Outbox {
            engine: self.clone(),
        }
    }

    /// Known relays, the RX relay and the anonymity report.
    pub fn relays(&self) -> Relays {
        Relays {
            engine: self.clone(),
        }
    }

    /// The durable event log.
    pub fn events(&self) -> Events {
        Events {
            engine: self.clone(),
        }
    }

    /// Encrypted attachments on IPFS.
    pub fn attachments(&self) -> Attachments {
        Attachments {
            engine: self.clone(),
        }
    }

    /// Direct WebRTC sessions with contacts (consent on both sides).
    pub fn transparent(&self) -> Transparent {
        Transparent {
            core: self.inner.transparent.clone(),
        }
    }

    /// Audio calls over transparent sessions.
    pub fn calls(&self) -> Calls {
        Calls {
            core: self.inner.transparent.clone(),
        }
    }

    // ---- what the parts share -----------------------------------------------------------

    pub(crate) fn me(&self) -> Result<PrivateKey> {
        self.inner
            .identity
            .read()
            .clone()
            .ok_or(EngineError::NoIdentity)
    }

    /// Runs a write (SQLite commit with its fsync, RSA sealing) on a blocking thread, so that
    /// no caller's thread or runtime worker stalls on it: every write of the API is `async`
    /// and goes through here, whichever shell calls it. Reads stay synchronous (indexed
    /// SQLite reads, no fsync).
    pub(crate) async fn off_runtime<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| EngineError::Storage(format!("write task failed: {e}")))?
    }

    /// Commits `f` and publishes the events it recorded.
    pub(crate) fn commit<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let out = self.inner.db.tx(f)?;
        if let Ok(seq) = self.inner.db.last_event_seq() {
            self.inner.latest_event.send_replace(seq);
        }
        Ok(out)
    }
}
