//! The engine: everything a Jasper client does, behind one object. Shells (the gRPC daemon,
//! the CLI through it, the mobile bindings) call its methods and read its event stream.
//!
//! Background tasks: the receiver long-polls this identity's RX relay and applies what it
//! opens; the sender drains the outbox through per-recipient TX relays (roles in
//! `anonymity.rs`); the witness reads a relay's recent-hash feed to see that each packet
//! reached the mesh (`witness.rs`); discovery refreshes relay lists and load figures.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::Stream;
use jasper_core::protocol::{InnerMessage, MessageKind, Packet, timestamp_now};
use jasper_core::{PrivateKey, PublicKey};
use rusqlite::Transaction;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::anonymity::{AnonymityState, Role};
use crate::config::EngineConfig;
use crate::db::{self, Db, OutboxState, now_ms};
use crate::error::{EngineError, Result};
use crate::model::*;
use crate::relay_client::{RelayClient, RelayFailure};
use crate::transparent::Hub;
use crate::transparent::wire::TYPE_RTC;
use crate::witness::WitnessState;

pub use crate::secrets::SecretStore;

/// Inner-message type of the copy of everything this identity sends, addressed to itself so
/// its other logins see the same history. Content: [`SentCopy`] as JSON.
pub const TYPE_SENT: &str = "SENT";
/// Inner-message type of group membership changes. Content: [`GroupOp`] as JSON.
pub const TYPE_GROUP: &str = "GROUP";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentCopy {
    /// The peer of a DM; empty for group traffic (the channel identifies the group).
    pub to: Vec<String>,
    /// The original inner message.
    pub message: InnerMessage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupOp {
    /// `create`, `add`, `remove` or `leave`.
    pub op: String,
    pub name: String,
    /// create: every member (admin included); add/remove: those added or removed.
    pub members: Vec<String>,
}

/// A group `create` lists every member's key (~740 bytes each) and must fit in one sealed
/// inner message (64 KiB) even inside its `SENT` copy.
pub const MAX_GROUP_MEMBERS: usize = 64;
pub(crate) const SUSPECT_FOR_MS: i64 = 30 * 60 * 1000;
const MAX_SEND_ATTEMPTS: i64 = 40;

#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: EngineConfig,
    pub(crate) db: Db,
    secrets: Arc<dyn SecretStore>,
    account: String,
    identity: RwLock<Option<PrivateKey>>,
    pub(crate) client: RelayClient,
    pub(crate) anonymity: AnonymityState,
    pub(crate) witness: WitnessState,
    latest_event: watch::Sender<u64>,
    pub(crate) wake_outbox: Notify,
    pub(crate) identity_ready: Notify,
    pub(crate) stop: CancellationToken,
    pub(crate) transparent: Hub,
}

/// Where a packet came from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Fetched from this RX relay.
    Relay(&'a str),
    /// Received on the data channel of this contact's transparent session.
    Direct(&'a str),
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
                        db::short_key(&public),
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
        let inner = Arc::new(Inner {
            client: RelayClient::new(config.relay_timeout),
            anonymity: AnonymityState::default(),
            witness: WitnessState::default(),
            transparent: Hub::new(config.transparent.clone()),
            config,
            db,
            secrets,
            account,
            identity: RwLock::new(identity),
            latest_event: watch::channel(latest).0,
            wake_outbox: Notify::new(),
            identity_ready: Notify::new(),
            stop: CancellationToken::new(),
        });
        let engine = Engine { inner };
        tokio::spawn(engine.clone().receiver());
        tokio::spawn(engine.clone().sender());
        tokio::spawn(engine.clone().discovery());
        tokio::spawn(engine.clone().witness());
        tokio::spawn(engine.clone().run_transparent());
        Ok(engine)
    }

    /// Stops the background tasks. Everything acknowledged is already on disk.
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub(crate) fn me(&self) -> Result<PrivateKey> {
        self.inner
            .identity
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(EngineError::NoIdentity)
    }

    /// Commits `f` and publishes the events it recorded.
    pub(crate) fn commit<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let out = self.inner.db.tx(f)?;
        if let Ok(seq) = self.inner.db.last_event_seq() {
            self.inner.latest_event.send_replace(seq);
        }
        Ok(out)
    }

    // ---- identity -----------------------------------------------------------------------

    pub async fn create_identity(&self) -> Result<IdentityInfo> {
        if self.inner.db.meta("public_key")?.is_some() {
            return Err(EngineError::IdentityExists);
        }
        let key = tokio::task::spawn_blocking(PrivateKey::generate)
            .await
            .map_err(|e| EngineError::Storage(format!("key generation task: {e}")))??;
        self.install_identity(key).await
    }

    pub async fn import_identity(&self, pkcs8_pem: &str) -> Result<IdentityInfo> {
        let key = PrivateKey::from_pkcs8_pem(pkcs8_pem)
            .map_err(|e| EngineError::InvalidKey(e.to_string()))?;
        if let Some(existing) = self.inner.db.meta("public_key")? {
            return if existing == key.public_key().to_text() {
                self.identity()
            } else {
                Err(EngineError::IdentityExists)
            };
        }
        self.install_identity(key).await
    }

    async fn install_identity(&self, key: PrivateKey) -> Result<IdentityInfo> {
        let pem = key.to_pkcs8_pem();
        let account = self.inner.account.clone();
        let saved = pem.clone();
        // Read it back: a key store that silently drops writes must fail here, not later.
        let back = blocking_secrets(&self.inner.secrets, move |s| {
            s.save(&account, &saved)?;
            s.load(&account)
        })
        .await?;
        if back.as_deref() != Some(pem.as_str()) {
            return Err(EngineError::KeyStore(
                "the key store did not return the key just saved".into(),
            ));
        }
        let public = key.public_key().to_text().to_owned();
        *self
            .inner
            .identity
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(key);
        let info = self.identity()?;
        self.commit(|tx| {
            Db::set_meta(tx, "public_key", &public)?;
            Db::push_event(
                tx,
                &EventKind::IdentityChanged {
                    identity: info.clone(),
                },
            )?;
            Ok(())
        })?;
        self.inner.identity_ready.notify_waiters();
        Ok(info)
    }

    pub fn identity(&self) -> Result<IdentityInfo> {
        let key = self.me()?.public_key();
        Ok(IdentityInfo {
            public_key: key.to_text().to_owned(),
            fingerprint: hex::encode(key.fingerprint()),
            key_store: self.inner.secrets.kind(),
        })
    }

    /// The private key as PKCS#8 PEM: only on explicit request.
    pub fn export_identity(&self) -> Result<String> {
        Ok(self.me()?.to_pkcs8_pem())
    }

    // ---- contacts -----------------------------------------------------------------------

    pub fn add_contact(&self, key: &str, name: &str, avatar: Option<String>) -> Result<Contact> {
        let key =
            PublicKey::from_text(key.trim()).map_err(|e| EngineError::InvalidKey(e.to_string()))?;
        let name = name.trim();
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(EngineError::InvalidArgument(
                "a contact name is 1-200 printable characters".into(),
            ));
        }
        if let Some(existing) = self.inner.db.contact_by_name(name)?
            && existing.key != key.to_text()
        {
            return Err(EngineError::NameTaken(name.to_owned()));
        }
        let contact = Contact {
            key: key.to_text().to_owned(),
            fingerprint: hex::encode(key.fingerprint()),
            name: name.to_owned(),
            avatar,
            added_at: now_ms(),
        };
        self.commit(|tx| {
            tx.execute(
                "INSERT INTO contacts(key, fingerprint, name, avatar, added_at) VALUES(?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(key) DO UPDATE SET name = ?3, avatar = ?4",
                rusqlite::params![contact.key, contact.fingerprint, contact.name, contact.avatar, contact.added_at],
            )?;
            Db::push_event(tx, &EventKind::ContactAdded { contact: contact.clone() })?;
            Ok(())
        })?;
        Ok(contact)
    }

    pub fn contacts(&self) -> Result<Vec<Contact>> {
        self.inner.db.contacts()
    }

    /// A contact by name, or any valid key (known or not).
    pub fn resolve_key(&self, name_or_key: &str) -> Result<String> {
        if let Some(c) = self.inner.db.contact_by_name(name_or_key)? {
            return Ok(c.key);
        }
        match PublicKey::from_text(name_or_key.trim()) {
            Ok(k) => Ok(k.to_text().to_owned()),
            Err(_) if name_or_key.len() > 200 => Err(EngineError::InvalidKey(format!(
                "{name_or_key:.40}... is not a contact name nor a valid key"
            ))),
            Err(_) => Err(EngineError::UnknownContact(name_or_key.to_owned())),
        }
    }

    // ---- conversations ------------------------------------------------------------------

    pub fn conversations(&self) -> Result<Vec<Conversation>> {
        self.inner.db.conversations()
    }

    pub fn conversation(&self, id: i64) -> Result<Conversation> {
        Db::conversation(&self.inner.db.lock(), id)?
            .ok_or_else(|| EngineError::UnknownConversation(id.to_string()))
    }

    /// A conversation by `#id`, group name, contact name or key (a DM is created for a key).
    pub fn resolve_conversation(&self, target: &str) -> Result<Conversation> {
        if let Some(id) = target.strip_prefix('#').and_then(|s| s.parse::<i64>().ok()) {
            return self.conversation(id);
        }
        if let Some(id) = self.inner.db.group_by_name(target)? {
            return self.conversation(id);
        }
        let key = self.resolve_key(target).map_err(|e| match e {
            EngineError::UnknownContact(t) => EngineError::UnknownConversation(t),
            other => other,
        })?;
        if key == self.me()?.public_key().to_text() {
            return Err(EngineError::InvalidArgument(
                "that is this identity's own key".into(),
            ));
        }
        let id = self.commit(|tx| {
            let (id, created) = Db::ensure_direct(tx, &key)?;
            if created {
                let conversation = Db::conversation(tx, id)?
                    .ok_or_else(|| EngineError::UnknownConversation(id.to_string()))?;
                Db::push_event(tx, &EventKind::ConversationUpdated { conversation })?;
            }
            Ok(id)
        })?;
        self.conversation(id)
    }

    pub fn messages(
        &self,
        target: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<MessagePage> {
        let conversation = self.resolve_conversation(target)?;
        self.inner
            .db
            .messages_page(conversation.id, before, limit.clamp(1, 500))
    }

    pub fn message(&self, msg_id: &str) -> Result<Message> {
        let conn = self.inner.db.lock();
        let (rowid, _) = Db::find_message(&conn, msg_id)?
            .ok_or_else(|| EngineError::UnknownMessage(msg_id.to_owned()))?;
        Db::message(&conn, rowid)
    }

    // ---- sending ------------------------------------------------------------------------

    fn check_content(&self, content: &str) -> Result<()> {
        let max = self.inner.config.max_message_bytes;
        if content.len() > max {
            return Err(EngineError::MessageTooLarge {
                len: content.len(),
                max,
            });
        }
        Ok(())
    }

    /// Seals `inner` to `recipients` plus a self-copy, and writes message, outbox and event in
    /// one transaction (`apply` runs inside it, to update local state atomically).
    fn post<T>(
        &self,
        recipients: &[String],
        inner: InnerMessage,
        apply: impl FnOnce(&Transaction<'_>) -> Result<(Option<i64>, T)>,
    ) -> Result<T> {
        let me = self.me()?;
        let keys: Vec<PublicKey> = recipients
            .iter()
            .map(|k| PublicKey::from_text(k).map_err(|e| EngineError::InvalidKey(e.to_string())))
            .collect::<Result<_>>()?;
        let packets = if keys.is_empty() {
            Vec::new()
        } else {
            jasper_core::seal(&me, &keys, &inner)?
        };
        // Group traffic is identified by its channel (and group operations list their members),
        // so only DM copies name the peer: this keeps a large group's copies small.
        let group_traffic = inner.kind.as_str() == TYPE_GROUP || {
            let conn = self.inner.db.lock();
            match Db::conversation_by_channel(&conn, &inner.channel_id)? {
                Some(id) => is_group(&conn, id)?,
                None => false,
            }
        };
        let copy = InnerMessage {
            sender: me.public_key().to_text().to_owned(),
            channel_id: inner.channel_id.clone(),
            kind: MessageKind::Other(TYPE_SENT.into()),
            content: serde_json::to_string(&SentCopy {
                to: if group_traffic {
                    Vec::new()
                } else {
                    recipients.to_vec()
                },
                message: inner,
            })
            .expect("serialises"),
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: timestamp_now(),
        };
        let self_packets = jasper_core::seal(&me, &[me.public_key()], &copy)?;
        let out = self.commit(|tx| {
            let (rowid, out) = apply(tx)?;
            for (p, key) in packets.iter().zip(&keys) {
                Db::enqueue(
                    tx,
                    rowid,
                    false,
                    &p.recipient,
                    &hex::encode(key.fingerprint()),
                    &to_json(p),
                    &p.hash,
                    0,
                )?;
            }
            for p in &self_packets {
                Db::enqueue(
                    tx,
                    rowid,
                    true,
                    &p.recipient,
                    &hex::encode(me.public_key().fingerprint()),
                    &to_json(p),
                    &p.hash,
                    self.sent_copy_not_before(),
                )?;
                // Our own copy will come back from the RX relay: it is already applied here.
                tx.execute(
                    "INSERT OR IGNORE INTO seen_hashes(hash, at) VALUES(?1, ?2)",
                    rusqlite::params![p.hash, now_ms()],
                )?;
            }
            Ok(out)
        })?;
        self.inner.wake_outbox.notify_one();
        Ok(out)
    }

    /// When a copy for this key's other logins may leave: a uniformly random time within
    /// `sent_copy_delay` from now, so that it does not enter the mesh with what it copies.
    fn sent_copy_not_before(&self) -> i64 {
        let max = self.inner.config.sent_copy_delay.as_millis() as i64;
        if max == 0 {
            return 0;
        }
        now_ms() + rand::Rng::random_range(&mut rand::rng(), 0..=max)
    }

    fn new_inner(
        &self,
        channel_id: &str,
        kind: MessageKind,
        content: &str,
        id: Option<&str>,
    ) -> Result<InnerMessage> {
        Ok(InnerMessage {
            sender: self.me()?.public_key().to_text().to_owned(),
            channel_id: channel_id.to_owned(),
            kind,
            content: content.to_owned(),
            id: id
                .map(str::to_owned)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            timestamp: timestamp_now(),
        })
    }

    /// Sends a text message to a conversation (`#id`, group name, contact name or key).
    pub fn send(&self, target: &str, content: &str) -> Result<Message> {
        self.check_content(content)?;
        if content.is_empty() {
            return Err(EngineError::InvalidArgument(
                "a message cannot be empty".into(),
            ));
        }
        let conversation = self.resolve_conversation(target)?;
        let inner = self.new_inner(
            &conversation.channel_id,
            MessageKind::Message,
            content,
            None,
        )?;
        let me_text = inner.sender.clone();
        let recipients: Vec<String> = conversation
            .members
            .iter()
            .filter(|k| **k != me_text)
            .cloned()
            .collect();
        if recipients.is_empty() {
            return Err(EngineError::InvalidArgument(
                "this conversation has no other members".into(),
            ));
        }
        let (msg_id, timestamp) = (inner.id.clone(), inner.timestamp.clone());
        self.post(&recipients, inner, |tx| {
            let rowid = Db::insert_message(
                tx,
                conversation.id,
                &msg_id,
                &me_text,
                true,
                "MESSAGE",
                content,
                &timestamp,
                MessageState::Queued,
            )?
            .ok_or_else(|| EngineError::Storage("message id collision".into()))?;
            let message = Db::message(tx, rowid)?;
            Db::push_event(
                tx,
                &EventKind::MessageSent {
                    message: message.clone(),
                },
            )?;
            Ok((Some(rowid), message))
        })
    }

    fn own_message(
        &self,
        msg_id: &str,
        action: &'static str,
    ) -> Result<(i64, Conversation, Message)> {
        let me = self.me()?.public_key().to_text().to_owned();
        let (rowid, conversation_id) = Db::find_message(&self.inner.db.lock(), msg_id)?
            .ok_or_else(|| EngineError::UnknownMessage(msg_id.to_owned()))?;
        let message = Db::message(&self.inner.db.lock(), rowid)?;
        if action != "react" && message.sender != me {
            return Err(EngineError::NotAuthor(action));
        }
        if message.deleted {
            return Err(EngineError::UnknownMessage(format!("{msg_id} was deleted")));
        }
        Ok((rowid, self.conversation(conversation_id)?, message))
    }

    pub fn edit(&self, msg_id: &str, content: &str) -> Result<Message> {
        self.check_content(content)?;
        if content.is_empty() {
            return Err(EngineError::InvalidArgument(
                "an edit cannot be empty; delete the message instead".into(),
            ));
        }
        let (rowid, conversation, _) = self.own_message(msg_id, "edit")?;
        let inner = self.new_inner(
            &conversation.channel_id,
            MessageKind::Edit,
            content,
            Some(msg_id),
        )?;
        self.post(&conversation.members, inner, |tx| {
            apply_edit(tx, rowid, content)?;
            let message = Db::message(tx, rowid)?;
            Db::push_event(
                tx,
                &EventKind::MessageUpdated {
                    message: message.clone(),
                },
            )?;
            Ok((None, message))
        })
    }

    pub fn delete(&self, msg_id: &str) -> Result<Message> {
        let (rowid, conversation, _) = self.own_message(msg_id, "delete")?;
        let inner = self.new_inner(
            &conversation.channel_id,
            MessageKind::Delete,
            "",
            Some(msg_id),
        )?;
        self.post(&conversation.members, inner, |tx| {
            apply_delete(tx, rowid)?;
            let message = Db::message(tx, rowid)?;
            Db::push_event(
                tx,
                &EventKind::MessageUpdated {
                    message: message.clone(),
                },
            )?;
            Ok((None, message))
        })
    }

    pub fn react(&self, msg_id: &str, reaction: &str) -> Result<Message> {
        if !valid_reaction(reaction) {
            return Err(EngineError::InvalidArgument(format!(
                "{reaction:?} is not a reaction of the form :name:"
            )));
        }
        let (rowid, conversation, _) = self.own_message(msg_id, "react")?;
        let me = self.me()?.public_key().to_text().to_owned();
        let inner = self.new_inner(
            &conversation.channel_id,
            MessageKind::React,
            reaction,
            Some(msg_id),
        )?;
        self.post(&conversation.members, inner, |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO reactions(message_rowid, reactor, reaction, at) VALUES(?1, ?2, ?3, ?4)",
                rusqlite::params![rowid, me, reaction, now_ms()],
            )?;
            let message = Db::message(tx, rowid)?;
            Db::push_event(tx, &EventKind::MessageUpdated { message: message.clone() })?;
            Ok((None, message))
        })
    }

    // ---- groups -------------------------------------------------------------------------

    pub fn create_group(&self, name: &str, members: &[String]) -> Result<Conversation> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(EngineError::InvalidArgument(
                "a group name is 1-200 characters".into(),
            ));
        }
        let me = self.me()?.public_key().to_text().to_owned();
        let mut keys: Vec<String> = members
            .iter()
            .map(|m| self.resolve_key(m))
            .collect::<Result<_>>()?;
        keys.retain(|k| *k != me);
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Err(EngineError::InvalidArgument(
                "a group needs at least one other member".into(),
            ));
        }
        if keys.len() > MAX_GROUP_MEMBERS {
            return Err(EngineError::InvalidArgument(format!(
                "a group has at most {MAX_GROUP_MEMBERS} members"
            )));
        }
        let channel_id = uuid::Uuid::new_v4().to_string();
        let mut everyone = keys.clone();
        everyone.push(me.clone());
        let op = GroupOp {
            op: "create".into(),
            name: name.to_owned(),
            members: everyone,
        };
        let inner = self.new_inner(
            &channel_id,
            MessageKind::Other(TYPE_GROUP.into()),
            &serde_json::to_string(&op).expect("serialises"),
            None,
        )?;
        let id = self.post(&keys, inner, |tx| {
            let id = apply_group_op(tx, &channel_id, &me, &me, &op)?
                .ok_or_else(|| EngineError::Storage("group not created".into()))?;
            Ok((None, id))
        })?;
        self.conversation(id)
    }

    /// Adds (`add = true`) or removes members; only the group's creator may.
    pub fn change_group(&self, group: &str, members: &[String], add: bool) -> Result<Conversation> {
        let conversation = self.resolve_conversation(group)?;
        if conversation.kind != ConversationKind::Group {
            return Err(EngineError::InvalidArgument(format!(
                "{group} is not a group"
            )));
        }
        let me = self.me()?.public_key().to_text().to_owned();
        if conversation.admin.as_deref() != Some(me.as_str()) {
            return Err(EngineError::NotAuthor("change the members of"));
        }
        let keys: Vec<String> = members
            .iter()
            .map(|m| self.resolve_key(m))
            .collect::<Result<_>>()?;
        if add && conversation.members.len() + keys.len() > MAX_GROUP_MEMBERS {
            return Err(EngineError::InvalidArgument(format!(
                "a group has at most {MAX_GROUP_MEMBERS} members"
            )));
        }
        let op = GroupOp {
            op: if add { "add" } else { "remove" }.into(),
            name: conversation.name.clone(),
            members: keys.clone(),
        };
        // Everyone involved hears of it: current members and those added or removed.
        let mut audience: Vec<String> = conversation
            .members
            .iter()
            .chain(keys.iter())
            .filter(|k| **k != me)
            .cloned()
            .collect();
        audience.sort();
        audience.dedup();
        let inner = self.new_inner(
            &conversation.channel_id,
            MessageKind::Other(TYPE_GROUP.into()),
            &serde_json::to_string(&op).expect("serialises"),
            None,
        )?;
        let channel = conversation.channel_id.clone();
        self.post(&audience, inner, |tx| {
            Ok((None, apply_group_op(tx, &channel, &me, &me, &op)?))
        })?;
        // New members need the whole list: send them a full `create` as well.
        if add {
            let updated = self.conversation(conversation.id)?;
            let mut everyone = updated.members.clone();
            everyone.push(me.clone());
            let full = GroupOp {
                op: "create".into(),
                name: updated.name.clone(),
                members: everyone,
            };
            let inner = self.new_inner(
                &channel,
                MessageKind::Other(TYPE_GROUP.into()),
                &serde_json::to_string(&full).expect("serialises"),
                None,
            )?;
            self.post(&keys, inner, |_| Ok((None, ())))?;
        }
        self.conversation(conversation.id)
    }

    // ---- relays -------------------------------------------------------------------------

    pub fn relays(&self) -> Result<Vec<RelayInfo>> {
        Ok(self
            .inner
            .db
            .relays()?
            .into_iter()
            .map(|r| r.info)
            .collect())
    }

    pub fn add_relay(&self, address: &str) -> Result<RelayInfo> {
        let addr = jasper_core::addr::RelayAddr::parse(address.trim())
            .map_err(|e| EngineError::InvalidArgument(format!("relay {address}: {e}")))?;
        self.inner.db.add_relay(&addr.to_string(), "added")?;
        // A new relay may be what a waiting role needs.
        self.inner.wake_outbox.notify_one();
        self.publish_anonymity();
        self.relays()?
            .into_iter()
            .find(|r| r.address == addr.to_string())
            .ok_or_else(|| EngineError::UnknownRelay(addr.to_string()))
    }

    pub fn remove_relay(&self, address: &str) -> Result<()> {
        let addr = jasper_core::addr::RelayAddr::parse(address.trim())
            .map_err(|e| EngineError::InvalidArgument(format!("relay {address}: {e}")))?;
        if !self.inner.db.remove_relay(&addr.to_string())? {
            return Err(EngineError::UnknownRelay(addr.to_string()));
        }
        self.inner.wake_outbox.notify_one();
        self.publish_anonymity();
        Ok(())
    }

    /// The TX relays that carried a message's copies (recipient key, relay), for inspection.
    pub fn message_routes(&self, msg_id: &str) -> Result<Vec<(String, Option<String>)>> {
        let (rowid, _) = Db::find_message(&self.inner.db.lock(), msg_id)?
            .ok_or_else(|| EngineError::UnknownMessage(msg_id.to_owned()))?;
        self.inner.db.outbox_tx_relays(rowid)
    }

    /// The relay this identity receives on.
    pub fn rx_relay(&self) -> Result<Option<String>> {
        let fp = hex::encode(self.me()?.public_key().fingerprint());
        self.inner.db.assignment(Role::Rx.as_str(), &fp)
    }

    // ---- events -------------------------------------------------------------------------

    /// Events after `from_seq`, then live ones, forever (until the engine stops). Nothing is
    /// lost across disconnects: the log is durable and a resumed stream re-reads it.
    pub fn subscribe(&self, from_seq: u64) -> impl Stream<Item = Result<Event>> + Send + 'static {
        let engine = self.clone();
        let latest = self.inner.latest_event.subscribe();
        futures::stream::unfold(
            (engine, latest, from_seq, std::collections::VecDeque::new()),
            |(engine, mut latest, mut after, mut buffer)| async move {
                loop {
                    if let Some(e) = buffer.pop_front() {
                        let e: Event = e;
                        after = e.seq;
                        return Some((Ok(e), (engine, latest, after, buffer)));
                    }
                    match engine.events_after(after, 256).await {
                        Ok(events) if !events.is_empty() => buffer.extend(events),
                        Ok(_) => {
                            tokio::select! {
                                changed = latest.changed() => if changed.is_err() { return None },
                                _ = engine.inner.stop.cancelled() => return None,
                            }
                        }
                        Err(e) => return Some((Err(e), (engine, latest, after, buffer))),
                    }
                }
            },
        )
    }

    /// Reads the event log off the runtime threads (a long backlog is a real SQLite scan).
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.inner.db.events_after(after, limit))
            .await
            .map_err(|e| EngineError::Storage(format!("event read task failed: {e}")))?
    }

    /// The next event after `after_seq`, waiting up to `timeout` (pull style, for bindings).
    pub async fn next_event(&self, after_seq: u64, timeout: Duration) -> Result<Option<Event>> {
        let mut latest = self.inner.latest_event.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.events_after(after_seq, 1).await?.into_iter().next() {
                return Ok(Some(e));
            }
            tokio::select! {
                _ = latest.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = self.inner.stop.cancelled() => return Err(EngineError::ShuttingDown),
            }
        }
    }

    // ---- background: receiving ----------------------------------------------------------

    async fn receiver(self) {
        loop {
            let me = match self.me() {
                Ok(me) => me,
                Err(_) => {
                    tokio::select! {
                        _ = self.inner.identity_ready.notified() => continue,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = self.inner.stop.cancelled() => return,
                    }
                }
            };
            let delay = match self.receive_once(&me).await {
                Ok(true) => Duration::ZERO,
                Ok(false) => self.inner.config.poll_interval,
                Err(d) => d,
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.inner.stop.cancelled() => return,
            }
        }
    }

    /// One fetch from the RX relay. `Ok(true)` when the next fetch may follow at once
    /// (long-poll relay), `Ok(false)` to wait the poll interval, `Err(backoff)` on failure.
    async fn receive_once(&self, me: &PrivateKey) -> std::result::Result<bool, Duration> {
        let fp = hex::encode(me.public_key().fingerprint());
        let my_key = me.public_key();
        let relay = match self.assigned(Role::Rx, &fp, my_key.to_text(), None) {
            Ok(Some(r)) => r,
            _ => return Err(Duration::from_secs(1)),
        };
        let supports_wait = self
            .inner
            .db
            .relays()
            .ok()
            .and_then(|rs| rs.into_iter().find(|r| r.info.address == relay))
            .is_some_and(|r| r.info.supports_wait);
        let since = self.inner.db.rx_cursor(&relay, &fp).ok().flatten();
        let wait = if supports_wait {
            self.inner.config.long_poll
        } else {
            Duration::ZERO
        };
        let fetched = tokio::select! {
            f = self.inner.client.fetch_for(&relay, my_key.to_text(), since, wait) => f,
            _ = self.inner.stop.cancelled() => return Err(Duration::ZERO),
        };
        match fetched {
            Ok(fetched) => {
                let _ = self.inner.db.relay_result(&relay, true, None);
                for packet in &fetched.packets {
                    self.receive_packet(me, Source::Relay(&relay), packet);
                }
                if let Some(c) = fetched.cursor {
                    let _ = self.inner.db.set_rx_cursor(&relay, &fp, c);
                }
                // A zero long-poll setting means plain polling even where the relay could wait.
                Ok(supports_wait && !wait.is_zero())
            }
            Err(e) => {
                tracing::warn!(relay, error = %e, "fetch from RX relay failed");
                let _ = self.inner.db.relay_result(&relay, false, None);
                self.maybe_move(Role::Rx, &fp, my_key.to_text(), &relay);
                Err(Duration::from_secs(2))
            }
        }
    }

    /// A packet received on a contact's data channel: `true` once it is applied (or was
    /// already), which the sender takes as delivery; `false` if it is refused.
    pub(crate) fn receive_direct(&self, peer: &str, packet: &Packet) -> bool {
        let Ok(me) = self.me() else { return false };
        if PublicKey::from_text(&packet.recipient)
            .map(|k| k.to_text().to_owned())
            .ok()
            .as_deref()
            != Some(me.public_key().to_text())
        {
            tracing::warn!("a packet for another key arrived on a data channel: refused");
            return false;
        }
        if let Err(e) = packet.check_fields(&Default::default()) {
            tracing::warn!(error = %e, "malformed packet on a data channel: refused");
            return false;
        }
        self.receive_packet(&me, Source::Direct(peer), packet)
    }

    /// Opens, verifies and applies one packet; `false` when it was refused.
    fn receive_packet(&self, me: &PrivateKey, source: Source<'_>, packet: &Packet) -> bool {
        let hash = packet.hash.to_ascii_lowercase();
        if self.inner.db.was_seen(&hash).unwrap_or(false) {
            return true;
        }
        let opened = match jasper_core::open(me, packet) {
            Ok(o) => o,
            Err(e) => match source {
                Source::Relay(relay) => {
                    tracing::warn!(relay, hash, error = %e, "dropping a packet that does not open");
                    let _ = self.inner.db.mark_seen(&hash);
                    let _ = self
                        .inner
                        .db
                        .relay_suspect(relay, "forged", now_ms() + SUSPECT_FOR_MS);
                    return false;
                }
                Source::Direct(_) => {
                    tracing::warn!(hash, error = %e, "a packet on a data channel does not open");
                    return false;
                }
            },
        };
        let sender = opened.sender.to_text().to_owned();
        if let Source::Direct(peer) = source
            && sender != peer
        {
            // The channel carries the contact's own packets only.
            tracing::warn!(hash, "a data channel carried another key's packet: refused");
            return false;
        }
        let me_text = me.public_key().to_text().to_owned();
        if opened.message.kind.as_str() == TYPE_RTC {
            // Handled once: only the call that marks it seen acts on it.
            if self.inner.db.mark_seen(&hash).unwrap_or(false) && sender != me_text {
                self.handle_signal(&sender, &opened.message.content);
            }
            return true;
        }
        let result = self.commit(|tx| {
            if tx.execute(
                "INSERT OR IGNORE INTO seen_hashes(hash, at) VALUES(?1, ?2)",
                rusqlite::params![hash, now_ms()],
            )? == 0
            {
                return Ok(None);
            }
            if let Source::Direct(_) = source {
                // A data channel reaches this login only; the same packet goes to this key
                // through the relays too, for the other logins (docs/protocol.md, "Other
                // logins of the recipient"). In this transaction: applied means mirrored.
                Db::enqueue(
                    tx,
                    None,
                    true,
                    &packet.recipient,
                    &hex::encode(me.public_key().fingerprint()),
                    &to_json(packet),
                    &hash,
                    self.sent_copy_not_before(),
                )?;
            }
            if sender == me_text {
                if opened.message.kind.as_str() != TYPE_SENT {
                    return Ok(None);
                }
                let copy: SentCopy =
                    serde_json::from_str(&opened.message.content).map_err(|e| {
                        EngineError::Protocol(jasper_core::Error::MalformedMessage(format!(
                            "SENT copy: {e}"
                        )))
                    })?;
                if copy.message.sender != me_text {
                    return Ok(None);
                }
                apply_incoming(tx, &me_text, &copy.message, Some(&copy.to))
            } else {
                apply_incoming(tx, &me_text, &opened.message, None)
            }
        });
        if matches!(source, Source::Direct(_)) {
            self.inner.wake_outbox.notify_one();
        }
        match result {
            Ok(Some(message)) => {
                self.notify_desktop(&message);
                true
            }
            Ok(None) => true,
            Err(EngineError::Storage(e)) => {
                // Not applied, not marked seen: a later fetch or re-send applies it.
                tracing::warn!(hash, error = e, "could not store an incoming message");
                false
            }
            Err(e) => {
                tracing::warn!(hash, error = %e, "could not apply an incoming message");
                true
            }
        }
    }

    fn notify_desktop(&self, message: &Message) {
        if message.outgoing {
            return;
        }
        let title = message
            .sender_name
            .clone()
            .unwrap_or_else(|| db::short_key(&message.sender));
        let body: String = message.content.chars().take(200).collect();
        self.notify_text(&title, &body);
    }

    /// Raises a desktop notification when enabled and a session bus exists.
    pub(crate) fn notify_text(&self, title: &str, body: &str) {
        let wanted = self.inner.config.notifications
            && std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some();
        #[cfg(feature = "notifications")]
        if wanted {
            let (title, body) = (title.to_owned(), body.to_owned());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = notify_rust::Notification::new()
                    .appname("Jasper")
                    .summary(&title)
                    .body(&body)
                    .show()
                {
                    tracing::debug!(error = %e, "desktop notification failed");
                }
            });
        }
        #[cfg(not(feature = "notifications"))]
        let _ = (wanted, title, body);
    }

    // ---- background: sending -----------------------------------------------------------

    async fn sender(self) {
        // The first copies go out once the witness reads its feed, so that they are covered.
        self.witness_ready().await;
        loop {
            let now = now_ms();
            let items = self.inner.db.due_outbox(now, 64).unwrap_or_default();
            let mut work = Vec::new();
            for item in items {
                let engine = self.clone();
                work.push(tokio::spawn(
                    async move { engine.process_outbox(item).await },
                ));
            }
            for w in work {
                let _ = w.await;
            }
            let next = self.inner.db.next_outbox_due().ok().flatten();
            let wait = match next {
                Some(at) if at <= now_ms() => Duration::from_millis(10),
                Some(at) => Duration::from_millis((at - now_ms()).clamp(10, 5_000) as u64),
                None => Duration::from_secs(5),
            };
            tokio::select! {
                _ = self.inner.wake_outbox.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.stop.cancelled() => return,
            }
        }
    }

    async fn process_outbox(&self, item: db::OutboxItem) {
        let now = now_ms();
        if item.attempts >= MAX_SEND_ATTEMPTS {
            self.finish_outbox(
                &item,
                OutboxState::Failed,
                Some("gave up after repeated failures"),
            );
            return;
        }
        if !item.self_copy && self.try_direct(&item.recipient, &item.packet).await {
            // Delivered to the contact's device itself: more than "visible on the mesh".
            let _ = self.inner.db.outbox_delivered_direct(item.id);
            self.refresh_message_state(item.message_rowid);
            return;
        }
        let relay = match self.tx_relay_for(&item.recipient_fp, &item.recipient) {
            Ok(Some(relay)) => relay,
            Ok(None) if !self.inner.db.relays().unwrap_or_default().is_empty() => {
                // Every known relay has seen another key of ours (strict): wait, without
                // counting an attempt. A new relay wakes the outbox.
                let why = self.waiting_reason();
                let _ = self.inner.db.outbox_wait(item.id, now + 5_000, &why);
                if !item.self_copy {
                    self.refresh_message_state(item.message_rowid);
                }
                return;
            }
            _ => {
                let _ = self
                    .inner
                    .db
                    .outbox_retry(item.id, now_ms() + 2_000, "no relay known");
                return;
            }
        };
        match self.inner.client.send(&relay, &item.packet).await {
            Ok(took) => {
                let _ = self
                    .inner
                    .db
                    .relay_result(&relay, true, Some(took.as_secs_f64() * 1000.0));
                // The witness task takes it from here (witness.rs).
                let _ = self.inner.db.outbox_accepted(item.id, &relay, now);
                self.refresh_message_state(item.message_rowid);
            }
            Err(RelayFailure::Rejected { status, message }) => {
                let _ = self.inner.db.relay_result(&relay, false, None);
                self.finish_outbox(
                    &item,
                    OutboxState::Failed,
                    Some(&format!(
                        "relay {relay} rejected the packet ({status}): {message}"
                    )),
                );
            }
            Err(RelayFailure::Transient(e)) => {
                tracing::info!(relay, error = %e, "send failed; will retry");
                let _ = self.inner.db.relay_result(&relay, false, None);
                self.maybe_move(Role::Tx, &item.recipient_fp, &item.recipient, &relay);
                let backoff = 500i64 << item.attempts.min(7);
                let _ = self
                    .inner
                    .db
                    .outbox_retry(item.id, now_ms() + backoff.min(60_000), &e);
            }
        }
    }

    fn finish_outbox(&self, item: &db::OutboxItem, state: OutboxState, error: Option<&str>) {
        let _ = self.inner.db.outbox_settle(item.id, state, error);
        self.refresh_message_state(item.message_rowid);
    }

    /// Aggregates the copies' states into the message's state; emits an event on change.
    pub(crate) fn refresh_message_state(&self, rowid: Option<i64>) {
        let Some(rowid) = rowid else { return };
        let _ = self.commit(|tx| {
            let copies = Db::copy_states(tx, rowid)?;
            if copies.is_empty() {
                return Ok(());
            }
            let (state, failure) = aggregate_state(&copies);
            if Db::set_message_state(tx, rowid, &state, failure.as_deref())? {
                let m = Db::message(tx, rowid)?;
                Db::push_event(
                    tx,
                    &EventKind::MessageStateChanged {
                        conversation_id: m.conversation_id,
                        message_id: m.id,
                        state,
                        failure,
                    },
                )?;
            }
            Ok(())
        });
    }

    // ---- background: discovery ----------------------------------------------------------

    async fn discovery(self) {
        loop {
            self.discover_once().await;
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

    /// Refreshes every relay's load figures, then exchanges server lists with each.
    pub async fn discover_once(&self) {
        let rows = self.inner.db.relays().unwrap_or_default();
        for row in &rows {
            let relay = &row.info.address;
            match self.inner.client.status(relay).await {
                Ok((status, took)) => {
                    let _ = self
                        .inner
                        .db
                        .relay_status(relay, status.load, status.supports_wait);
                    {
                        let mut feed = self
                            .inner
                            .witness
                            .feed_relays
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        if status.supports_recent {
                            feed.insert(relay.clone());
                        } else {
                            feed.remove(relay);
                        }
                    }
                    let _ =
                        self.inner
                            .db
                            .relay_result(relay, true, Some(took.as_secs_f64() * 1000.0));
                }
                Err(_) => {
                    let _ = self.inner.db.relay_result(relay, false, None);
                    continue;
                }
            }
            // An empty list: ours is a fingerprint of this client that every relay would get.
            // The relay then answers with every server it knows (all are ones "we lack").
            if let Ok(learned) = self.inner.client.servers(relay, Vec::new()).await {
                for entry in learned {
                    let Ok(addr) = jasper_core::addr::RelayAddr::new(&entry.ip, entry.port) else {
                        continue;
                    };
                    if addr
                        .learnable(self.inner.config.allow_private_relays)
                        .is_err()
                    {
                        continue;
                    }
                    if self
                        .inner
                        .db
                        .add_relay(&addr.to_string(), "learned")
                        .unwrap_or(false)
                    {
                        tracing::info!(relay = %addr, "learned a relay");
                        let _ = self.commit(|tx| {
                            Db::push_event(
                                tx,
                                &EventKind::RelayDiscovered {
                                    address: addr.to_string(),
                                },
                            )?;
                            Ok(())
                        });
                        self.inner.wake_outbox.notify_one();
                    }
                }
            }
        }
        self.publish_anonymity();
    }
}

/// Key stores block (D-Bus round trips, some with a runtime of their own): never on a
/// runtime thread.
async fn blocking_secrets<T: Send + 'static>(
    secrets: &Arc<dyn SecretStore>,
    f: impl FnOnce(&dyn SecretStore) -> std::result::Result<T, String> + Send + 'static,
) -> Result<T> {
    let secrets = secrets.clone();
    tokio::task::spawn_blocking(move || f(secrets.as_ref()))
        .await
        .map_err(|e| EngineError::KeyStore(format!("key store task failed: {e}")))?
        .map_err(EngineError::KeyStore)
}

/// A message's state from its copies' outbox states (with their last errors): the worst wins,
/// in the order failed, waiting, queued, sent (accepted, not yet confirmed), unconfirmed,
/// visible.
fn aggregate_state(copies: &[(OutboxState, Option<String>)]) -> (MessageState, Option<String>) {
    let reason = |state: OutboxState| {
        copies
            .iter()
            .find(|(s, _)| *s == state)
            .map(|(_, why)| why.clone())
    };
    if let Some(why) = reason(OutboxState::Failed) {
        return (MessageState::Failed, why);
    }
    if let Some(why) = reason(OutboxState::Waiting) {
        return (MessageState::Waiting, why);
    }
    if reason(OutboxState::Pending).is_some() {
        return (MessageState::Queued, None);
    }
    if reason(OutboxState::Accepted).is_some() {
        return (MessageState::Sent, None);
    }
    if let Some(why) = reason(OutboxState::Unconfirmed) {
        return (MessageState::Unconfirmed, why);
    }
    (MessageState::Visible, None)
}

pub(crate) fn to_json(p: &Packet) -> String {
    serde_json::to_string(p).expect("packet serialises")
}

fn valid_reaction(r: &str) -> bool {
    r.len() >= 3
        && r.len() <= 64
        && r.starts_with(':')
        && r.ends_with(':')
        && r[1..r.len() - 1]
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '+')
}

fn apply_edit(tx: &Transaction<'_>, rowid: i64, content: &str) -> Result<()> {
    tx.execute("INSERT INTO edits(message_rowid, content, replaced_at) SELECT rowid, content, ?2 FROM messages WHERE rowid = ?1", rusqlite::params![rowid, now_ms()])?;
    tx.execute(
        "UPDATE messages SET content = ?2, edited = 1 WHERE rowid = ?1",
        rusqlite::params![rowid, content],
    )?;
    Ok(())
}

fn apply_delete(tx: &Transaction<'_>, rowid: i64) -> Result<()> {
    tx.execute("DELETE FROM edits WHERE message_rowid = ?1", [rowid])?;
    tx.execute(
        "UPDATE messages SET content = '', deleted = 1 WHERE rowid = ?1",
        [rowid],
    )?;
    Ok(())
}

/// Applies a group operation by `sender` (the creator for everything but `leave`). Returns
/// the conversation id when it exists afterwards.
fn apply_group_op(
    tx: &Transaction<'_>,
    channel_id: &str,
    me: &str,
    sender: &str,
    op: &GroupOp,
) -> Result<Option<i64>> {
    let existing = Db::conversation_by_channel(tx, channel_id)?;
    let admin: Option<String> = match existing {
        Some(id) => tx.query_row("SELECT admin FROM conversations WHERE id = ?1", [id], |r| {
            r.get(0)
        })?,
        None => None,
    };
    let keys: Vec<String> = op
        .members
        .iter()
        .filter_map(|k| PublicKey::from_text(k).ok().map(|k| k.to_text().to_owned()))
        .collect();
    let id = match (op.op.as_str(), existing) {
        ("create", None) => {
            if !keys.iter().any(|k| k == me) && sender != me {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO conversations(kind, channel_id, name, admin, created_at) VALUES('group', ?1, ?2, ?3, ?4)",
                rusqlite::params![channel_id, op.name, sender, now_ms()],
            )?;
            let id = tx.last_insert_rowid();
            for k in keys.iter().filter(|k| *k != me) {
                tx.execute(
                    "INSERT OR IGNORE INTO members(conversation_id, key) VALUES(?1, ?2)",
                    rusqlite::params![id, k],
                )?;
            }
            id
        }
        ("create", Some(id)) | ("add", Some(id)) if admin.as_deref() == Some(sender) => {
            for k in keys.iter().filter(|k| *k != me) {
                tx.execute(
                    "INSERT OR IGNORE INTO members(conversation_id, key) VALUES(?1, ?2)",
                    rusqlite::params![id, k],
                )?;
            }
            if op.op == "create" {
                tx.execute(
                    "UPDATE conversations SET name = ?2 WHERE id = ?1",
                    rusqlite::params![id, op.name],
                )?;
            }
            id
        }
        ("remove", Some(id)) if admin.as_deref() == Some(sender) => {
            for k in &keys {
                tx.execute(
                    "DELETE FROM members WHERE conversation_id = ?1 AND key = ?2",
                    rusqlite::params![id, k],
                )?;
            }
            id
        }
        ("leave", Some(id)) => {
            tx.execute(
                "DELETE FROM members WHERE conversation_id = ?1 AND key = ?2",
                rusqlite::params![id, sender],
            )?;
            id
        }
        _ => {
            tracing::warn!(
                op = op.op,
                "group operation refused (unknown group or not its creator)"
            );
            return Ok(None);
        }
    };
    if let Some(conversation) = Db::conversation(tx, id)? {
        Db::push_event(tx, &EventKind::ConversationUpdated { conversation })?;
    }
    Ok(Some(id))
}

/// Applies an opened inner message. `own_copy_to` is set for this identity's own messages
/// arriving from another login (with the recipients of the original). Returns a newly
/// received message, for notifications.
fn apply_incoming(
    tx: &Transaction<'_>,
    me: &str,
    m: &InnerMessage,
    own_copy_to: Option<&Vec<String>>,
) -> Result<Option<Message>> {
    let sender = m.sender.as_str();
    if m.kind.as_str() == TYPE_GROUP {
        let op: GroupOp = serde_json::from_str(&m.content).map_err(|e| {
            EngineError::Protocol(jasper_core::Error::MalformedMessage(format!("GROUP: {e}")))
        })?;
        apply_group_op(tx, &m.channel_id, me, sender, &op)?;
        return Ok(None);
    }
    // Which conversation: a known group (the sender must be in it), else the DM.
    let conversation_id = match Db::conversation_by_channel(tx, &m.channel_id)? {
        Some(id) if is_group(tx, id)? => {
            let member: bool = sender == me
                || tx
                    .query_row(
                        "SELECT 1 FROM members WHERE conversation_id = ?1 AND key = ?2",
                        rusqlite::params![id, sender],
                        |_| Ok(()),
                    )
                    .optional_bool()?;
            if !member {
                tracing::warn!("message for a group from a non-member dropped");
                return Ok(None);
            }
            id
        }
        _ => {
            let peer = match own_copy_to {
                Some(to) if to.len() == 1 => to[0].clone(),
                Some(_) => {
                    tracing::debug!("own group message for an unknown group dropped");
                    return Ok(None);
                }
                None => sender.to_owned(),
            };
            let (id, created) = Db::ensure_direct(tx, &peer)?;
            if created && let Some(conversation) = Db::conversation(tx, id)? {
                Db::push_event(tx, &EventKind::ConversationUpdated { conversation })?;
            }
            id
        }
    };
    let outgoing = sender == me;
    let target = || Db::message_rowid(tx, conversation_id, &m.id);
    match &m.kind {
        MessageKind::Edit | MessageKind::Delete => {
            let Some(rowid) = target()? else {
                tracing::debug!(id = m.id, "edit or delete of an unknown message ignored");
                return Ok(None);
            };
            let author: String = tx.query_row(
                "SELECT sender FROM messages WHERE rowid = ?1",
                [rowid],
                |r| r.get(0),
            )?;
            if author != sender {
                tracing::warn!(
                    id = m.id,
                    "edit or delete by someone other than the author refused"
                );
                return Ok(None);
            }
            if m.kind == MessageKind::Edit {
                apply_edit(tx, rowid, &m.content)?;
            } else {
                apply_delete(tx, rowid)?;
            }
            let message = Db::message(tx, rowid)?;
            Db::push_event(tx, &EventKind::MessageUpdated { message })?;
            Ok(None)
        }
        MessageKind::React => {
            let Some(rowid) = target()? else {
                return Ok(None);
            };
            if !valid_reaction(&m.content) {
                return Ok(None);
            }
            tx.execute(
                "INSERT OR IGNORE INTO reactions(message_rowid, reactor, reaction, at) VALUES(?1, ?2, ?3, ?4)",
                rusqlite::params![rowid, sender, m.content, now_ms()],
            )?;
            let message = Db::message(tx, rowid)?;
            Db::push_event(tx, &EventKind::MessageUpdated { message })?;
            Ok(None)
        }
        kind => {
            let state = if outgoing {
                MessageState::Sent
            } else {
                MessageState::Received
            };
            let Some(rowid) = Db::insert_message(
                tx,
                conversation_id,
                &m.id,
                sender,
                outgoing,
                kind.as_str(),
                &m.content,
                &m.timestamp,
                state,
            )?
            else {
                return Ok(None);
            };
            let message = Db::message(tx, rowid)?;
            Db::push_event(
                tx,
                &EventKind::MessageReceived {
                    message: message.clone(),
                },
            )?;
            Ok(Some(message))
        }
    }
}

fn is_group(tx: &rusqlite::Connection, id: i64) -> Result<bool> {
    let kind: String = tx.query_row("SELECT kind FROM conversations WHERE id = ?1", [id], |r| {
        r.get(0)
    })?;
    Ok(kind == "group")
}

trait OptionalBool {
    fn optional_bool(self) -> Result<bool>;
}

impl OptionalBool for rusqlite::Result<()> {
    fn optional_bool(self) -> Result<bool> {
        match self {
            Ok(()) => Ok(true),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
