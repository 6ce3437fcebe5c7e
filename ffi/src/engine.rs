//! `JasperEngine`: the engine as one uniffi object. Every method translates arguments, calls
//! `jasper_engine::Engine` and translates the result; async ones run on the ffi runtime.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jasper_engine::Engine;
use jasper_model::{
    AnonymityReport, CallInfo, Contact, Conversation, DownloadResult, Event, IdentityInfo, Message,
    MessagePage, RelayInfo, TransparentStatus,
};

use crate::error::JasperError;
use crate::events::{DownloadListener, EventListener, Subscription};
use crate::model::{AudioFrame, EngineConfig, MessageRoute};
use crate::secrets::{ForeignSecretStore, SecretStore};
use crate::{on_runtime, runtime};

type Result<T, E = JasperError> = std::result::Result<T, E>;

/// One identity's client: its local history, relays, outbox and event log. Open one per data
/// directory; the engine runs in the background until `shutdown` (or until this object is
/// destroyed).
///
/// Methods that are not `async` read or write the local database and return quickly; they
/// never wait on the network (sending is queued, then done in the background).
#[derive(uniffi::Object)]
pub struct JasperEngine {
    engine: Engine,
}

#[uniffi::export]
impl JasperEngine {
    /// Opens `config.data_dir` (created if missing), loads the identity's private key from
    /// `secret_store` if this directory has an identity, and starts receiving and sending.
    #[uniffi::constructor]
    pub async fn open(
        config: EngineConfig,
        secret_store: Arc<dyn SecretStore>,
    ) -> Result<Arc<Self>> {
        config.validate().map_err(|detail| {
            JasperError::from(jasper_engine::EngineError::InvalidArgument(detail))
        })?;
        let config = jasper_engine::EngineConfig::from(config);
        let secrets = Arc::new(ForeignSecretStore(secret_store));
        let engine = on_runtime(async move { Ok(Engine::open(config, secrets).await?) }).await?;
        Ok(Arc::new(JasperEngine { engine }))
    }

    /// Stops the background tasks; calls after it fail with `ShuttingDown` or see no new
    /// events. Everything already acknowledged is on disk.
    pub fn shutdown(&self) {
        self.engine.shutdown();
    }

    /// The configuration this engine runs with.
    pub fn config(&self) -> EngineConfig {
        self.engine.config().clone().into()
    }

    // ---- identity -----------------------------------------------------------------------

    /// Generates a new RSA-4096 identity (a few seconds) and saves its private key in the
    /// secret store. Fails with `IdentityExists` when the directory has one.
    pub async fn create_identity(&self) -> Result<IdentityInfo> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.identity().create().await?) }).await
    }

    /// Installs an identity exported from another login (PKCS#8 PEM).
    pub async fn import_identity(&self, pkcs8_pem: String) -> Result<IdentityInfo> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.identity().import(&pkcs8_pem).await?) }).await
    }

    pub fn identity(&self) -> Result<IdentityInfo> {
        Ok(self.engine.identity().info()?)
    }

    /// The private key as PKCS#8 PEM, for moving the identity to another login. The only way
    /// the key leaves the engine other than through the app's `SecretStore`.
    pub fn export_identity(&self) -> Result<String> {
        Ok(self.engine.identity().export()?)
    }

    // ---- contacts -----------------------------------------------------------------------

    /// Adds (or renames) a contact by its public key (the text form from `identity()`).
    pub async fn add_contact(
        &self,
        key: String,
        name: String,
        avatar: Option<String>,
    ) -> Result<Contact> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.contacts().add(&key, &name, avatar).await?) }).await
    }

    pub fn contacts(&self) -> Result<Vec<Contact>> {
        Ok(self.engine.contacts().list()?)
    }

    // ---- conversations ------------------------------------------------------------------

    pub fn conversations(&self) -> Result<Vec<Conversation>> {
        Ok(self.engine.conversations().list()?)
    }

    pub fn conversation(&self, id: i64) -> Result<Conversation> {
        Ok(self.engine.conversations().get(id)?)
    }

    /// A conversation by `#id`, group name, contact name or key (a DM is created for a key).
    pub fn resolve_conversation(&self, target: String) -> Result<Conversation> {
        Ok(self.engine.conversations().resolve(&target)?)
    }

    /// Moves the read marker of the conversation `target` names forward to the message
    /// `through` (`UnknownMessage` if it is not in that conversation), or to its newest message
    /// when `None`; never back. When it moves, a `ConversationUpdated` event carries the new
    /// unread count. Returns the conversation.
    pub fn mark_read(&self, target: String, through: Option<String>) -> Result<Conversation> {
        Ok(self
            .engine
            .conversations()
            .mark_read(&target, through.as_deref())?)
    }

    /// A page of a conversation's history, oldest first; pass `before` from the previous page
    /// to go further back. `limit` is clamped to 1..=500.
    pub fn messages(
        &self,
        target: String,
        before: Option<String>,
        limit: u32,
    ) -> Result<MessagePage> {
        Ok(self
            .engine
            .conversations()
            .messages(&target, before.as_deref(), limit as usize)?)
    }

    pub fn message(&self, message_id: String) -> Result<Message> {
        Ok(self.engine.messages().get(&message_id)?)
    }

    // ---- messages -----------------------------------------------------------------------

    /// Queues a text message to a conversation (`#id`, group name, contact name or key) and
    /// returns it in state `Queued`; its progress arrives as `MessageStateChanged` events.
    pub async fn send(&self, target: String, content: String) -> Result<Message> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.messages().send(&target, &content).await?) }).await
    }

    /// Sends a text message to a group (by name or `#id`); `InvalidArgument` when the target
    /// is not a group, so a contact of the same name never receives it.
    pub async fn send_to_group(&self, group: String, content: String) -> Result<Message> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.groups().send(&group, &content).await?) }).await
    }

    /// Replaces the content of a message this identity wrote.
    pub async fn edit(&self, message_id: String, content: String) -> Result<Message> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.messages().edit(&message_id, &content).await?) }).await
    }

    /// Deletes a message this identity wrote, for everyone in the conversation.
    pub async fn delete(&self, message_id: String) -> Result<Message> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.messages().delete(&message_id).await?) }).await
    }

    /// Reacts to a message (`:name:`); reacting again with the same one takes it back.
    pub async fn react(&self, message_id: String, reaction: String) -> Result<Message> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.messages().react(&message_id, &reaction).await?) }).await
    }

    // ---- attachments --------------------------------------------------------------------

    /// Encrypts the file at `file_path` with a fresh key, adds the ciphertext to IPFS
    /// (`EngineConfig.ipfs_api`) and sends `text` followed by the attachment's link. The file
    /// itself never reaches a relay.
    pub async fn send_with_attachment(
        &self,
        target: String,
        text: String,
        file_path: String,
    ) -> Result<Message> {
        let engine = self.engine.clone();
        on_runtime(async move {
            let sent = engine
                .attachments()
                .send(&target, &text, Path::new(&file_path))
                .await?;
            Ok(sent)
        })
        .await
    }

    /// Fetches attachment `index` of a message from IPFS, decrypts and verifies it, and writes
    /// it to `dest_path` only when every check passed: a modified, truncated or wrongly keyed
    /// file fails with the matching `Attachment*` error and leaves nothing behind. `progress`,
    /// when given, hears of the ciphertext bytes received.
    pub async fn download(
        &self,
        message_id: String,
        index: u32,
        dest_path: String,
        progress: Option<Box<dyn DownloadListener>>,
    ) -> Result<DownloadResult> {
        let engine = self.engine.clone();
        on_runtime(async move {
            let (tx, forwarding) = match progress {
                Some(listener) => {
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    (
                        Some(tx),
                        Some(tokio::spawn(forward_progress(rx, listener.into()))),
                    )
                }
                None => (None, None),
            };
            let result = engine
                .attachments()
                .download(
                    &message_id,
                    index as usize,
                    Path::new(&dest_path),
                    move |p| {
                        if let Some(tx) = &tx {
                            let _ = tx.send(p);
                        }
                    },
                )
                .await;
            // Every progress call has been made before the download's result is returned.
            if let Some(forwarding) = forwarding {
                let _ = forwarding.await;
            }
            Ok(result?)
        })
        .await
    }

    // ---- groups -------------------------------------------------------------------------

    /// Creates a group with `members` (contact names or keys); this identity is its admin.
    pub async fn create_group(&self, name: String, members: Vec<String>) -> Result<Conversation> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.groups().create(&name, &members).await?) }).await
    }

    pub async fn add_group_members(
        &self,
        group: String,
        members: Vec<String>,
    ) -> Result<Conversation> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.groups().change(&group, &members, true).await?) }).await
    }

    pub async fn remove_group_members(
        &self,
        group: String,
        members: Vec<String>,
    ) -> Result<Conversation> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.groups().change(&group, &members, false).await?) }).await
    }

    // ---- relays -------------------------------------------------------------------------

    pub fn relays(&self) -> Result<Vec<RelayInfo>> {
        Ok(self.engine.relays().list()?)
    }

    pub async fn add_relay(&self, address: String) -> Result<RelayInfo> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.relays().add(&address).await?) }).await
    }

    pub async fn remove_relay(&self, address: String) -> Result<()> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.relays().remove(&address).await?) }).await
    }

    /// Where this identity stands on anonymity: relays needed and known, every role's relay,
    /// what waits for a relay of its own (its messages stay `Waiting`), which relays are
    /// shared, and the witness relay. Changes also arrive as `AnonymityChanged` events.
    pub fn anonymity(&self) -> Result<AnonymityReport> {
        Ok(self.engine.relays().anonymity()?)
    }

    /// The relay this identity receives on, once chosen.
    pub fn rx_relay(&self) -> Result<Option<String>> {
        Ok(self.engine.relays().rx()?)
    }

    /// The TX relays that carried a message's copies, per recipient.
    pub fn message_routes(&self, message_id: String) -> Result<Vec<MessageRoute>> {
        Ok(self
            .engine
            .outbox()
            .routes(&message_id)?
            .into_iter()
            .map(|(recipient, relay)| MessageRoute { recipient, relay })
            .collect())
    }

    /// Refreshes relay lists and load figures now (apps call it when brought to the
    /// foreground; it also runs every `discovery_interval_ms`).
    pub async fn refresh_relays(&self) -> Result<()> {
        let engine = self.engine.clone();
        on_runtime(async move {
            engine.relays().discover_once().await;
            Ok(())
        })
        .await
    }

    // ---- transparent mode and calls ------------------------------------------------------

    /// Enables or disables transparent mode for a contact (this login). Show
    /// `transparent_mode_warning()` first: the contact and the STUN operators learn the
    /// device's IP address. Once both sides have enabled it a session comes up by itself.
    pub async fn set_transparent(
        &self,
        contact: String,
        enabled: bool,
    ) -> Result<TransparentStatus> {
        let engine = self.engine.clone();
        // On the ffi runtime: enabling may start a session, which runs there.
        on_runtime(async move { Ok(engine.transparent().set(&contact, enabled).await?) }).await
    }

    pub fn transparent_status(&self, contact: String) -> Result<TransparentStatus> {
        Ok(self.engine.transparent().status(&contact)?)
    }

    /// Every contact where either side enabled transparent mode.
    pub fn transparent_statuses(&self) -> Result<Vec<TransparentStatus>> {
        Ok(self.engine.transparent().statuses()?)
    }

    /// Brings the session up (after `close_transparent_session`, or to wait for it), waiting
    /// up to `wait_ms` for the data channel.
    pub async fn open_transparent_session(
        &self,
        contact: String,
        wait_ms: u64,
    ) -> Result<TransparentStatus> {
        let engine = self.engine.clone();
        on_runtime(async move {
            Ok(engine
                .transparent()
                .connect(&contact, Duration::from_millis(wait_ms))
                .await?)
        })
        .await
    }

    /// Closes the session on purpose: messages use the relays until either side opens it.
    pub async fn close_transparent_session(&self, contact: String) -> Result<TransparentStatus> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.transparent().disconnect(&contact).await?) }).await
    }

    /// Rings a contact (both sides need transparent mode; the session is brought up first if
    /// it is down).
    pub async fn start_call(&self, contact: String) -> Result<CallInfo> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.calls().start(&contact).await?) }).await
    }

    pub async fn accept_call(&self, call_id: String) -> Result<CallInfo> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.calls().accept(&call_id).await?) }).await
    }

    pub async fn reject_call(&self, call_id: String) -> Result<CallInfo> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.calls().reject(&call_id).await?) }).await
    }

    pub async fn hang_up(&self, call_id: String) -> Result<CallInfo> {
        let engine = self.engine.clone();
        on_runtime(async move { Ok(engine.calls().hang_up(&call_id).await?) }).await
    }

    /// Live calls first, then recently ended ones.
    pub fn calls(&self) -> Vec<CallInfo> {
        self.engine.calls().list()
    }

    /// Sends one Opus packet (1..=1200 bytes) lasting `duration_us` (a multiple of 2500 µs up
    /// to 120 ms) into an active call: the microphone side of the app.
    pub async fn send_audio_frame(
        &self,
        call_id: String,
        opus: Vec<u8>,
        duration_us: u32,
    ) -> Result<()> {
        let engine = self.engine.clone();
        on_runtime(async move {
            Ok(engine
                .calls()
                .send_audio(&call_id, opus, duration_us)
                .await?)
        })
        .await
    }

    /// The next frame the contact sent, waiting up to `timeout_ms` (none when the wait ends):
    /// the speaker side of the app. Fails with `CallState` once the call has ended and every
    /// frame is read. Each call is the call's newest audio reader, as a gRPC `Audio` stream
    /// is: a wait still pending elsewhere for the same call ends (`CallState`) rather than
    /// the two splitting the frames.
    pub async fn next_audio_frame(
        &self,
        call_id: String,
        timeout_ms: u64,
    ) -> Result<Option<AudioFrame>> {
        let engine = self.engine.clone();
        on_runtime(async move {
            let frame = engine
                .calls()
                .audio_reader(&call_id)?
                .next(Duration::from_millis(timeout_ms))
                .await?;
            Ok(frame.map(|f| AudioFrame {
                opus: f.data,
                sequence: f.sequence,
                rtp_timestamp: f.rtp_timestamp,
            }))
        })
        .await
    }

    // ---- events -------------------------------------------------------------------------

    /// The seq of the newest event recorded (0 while the log is empty). An app starting up
    /// reads it, then loads what it shows, then pulls or subscribes from it: nothing recorded
    /// in between is missed (events repeated after the snapshot carry whole objects).
    pub fn latest_event_seq(&self) -> u64 {
        self.engine.events().latest_seq()
    }

    /// Pull style: the first event after `after_seq`, waiting up to `timeout_ms` for one
    /// (none when the wait ends). Pass the last `seq` handled to resume, also after a restart:
    /// the log is durable.
    pub async fn next_event(&self, after_seq: u64, timeout_ms: u64) -> Result<Option<Event>> {
        let engine = self.engine.clone();
        on_runtime(async move {
            let event = engine
                .events()
                .next(after_seq, Duration::from_millis(timeout_ms))
                .await?;
            Ok(event)
        })
        .await
    }

    /// Listener style: calls `listener.on_event` with every event after `from_seq`, in order,
    /// then with live ones, until the returned `Subscription` is cancelled or destroyed, or
    /// the engine shuts down. Keep the subscription for as long as events are wanted.
    pub fn subscribe(&self, from_seq: u64, listener: Box<dyn EventListener>) -> Arc<Subscription> {
        let _runtime = runtime().enter();
        Subscription::start(&self.engine, from_seq, listener.into())
    }
}

/// Hands download progress to the app's listener, in order, off the async workers. Ends when
/// the download drops its sender.
async fn forward_progress(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<jasper_engine::DownloadProgress>,
    listener: Arc<dyn DownloadListener>,
) {
    while let Some(p) = rx.recv().await {
        let listener = listener.clone();
        let _ =
            tokio::task::spawn_blocking(move || listener.on_progress(p.received, p.total)).await;
    }
}

impl Drop for JasperEngine {
    fn drop(&mut self) {
        self.engine.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc;

    use futures::executor::block_on;

    use super::*;
    use crate::model::default_config;
    use crate::secrets::memory_secret_store;
    use jasper_model::EventKind;

    struct Forward(Mutex<mpsc::Sender<Event>>);

    impl EventListener for Forward {
        fn on_event(&self, event: Event) {
            if let Ok(tx) = self.0.lock() {
                let _ = tx.send(event);
            }
        }
    }

    /// The whole path a binding takes, without relays: async calls through the ffi runtime from
    /// a thread outside it, both event styles, cancelling, typed errors.
    #[test]
    fn events_reach_both_styles_in_order_and_stop_when_cancelled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = default_config(dir.path().display().to_string());
        let engine = block_on(JasperEngine::open(config, memory_secret_store())).expect("open");
        assert!(matches!(
            engine.identity(),
            Err(JasperError::NoIdentity { .. })
        ));

        // The engine's background tasks publish `AnonymityChanged` whenever the report
        // changes (here: an identity without relays), between the events this test causes.
        let anonymity = |e: &Event| matches!(e.kind, EventKind::AnonymityChanged { .. });
        let (tx, rx) = mpsc::channel();
        let subscription = engine.subscribe(0, Box::new(Forward(Mutex::new(tx))));
        let wait = Duration::from_secs(10);
        let listened = || loop {
            let e = rx.recv_timeout(wait).expect("listener event");
            if !anonymity(&e) {
                return e;
            }
        };
        let pull_after = |mut seq: u64, timeout_ms: u64| loop {
            match block_on(engine.next_event(seq, timeout_ms)).expect("pull") {
                Some(e) if anonymity(&e) => seq = e.seq,
                other => return other,
            }
        };
        let me = block_on(engine.create_identity()).expect("identity");
        let first = listened();
        assert_eq!(first.seq, 1);
        assert!(matches!(&first.kind, EventKind::IdentityChanged { identity } if *identity == me));
        assert_eq!(pull_after(0, 0).expect("an event"), first);

        block_on(engine.add_contact(me.public_key.clone(), "me".into(), None)).expect("contact");
        let second = listened();
        assert!(second.seq > first.seq);
        assert!(matches!(second.kind, EventKind::ContactAdded { .. }));
        assert!(pull_after(second.seq, 50).is_none());

        subscription.cancel();
        block_on(engine.add_contact(me.public_key.clone(), "myself".into(), None)).expect("rename");
        let renamed = pull_after(second.seq, 5_000).expect("the rename's event");
        assert!(matches!(renamed.kind, EventKind::ContactAdded { .. }));
        // Nothing after the cancel reaches the listener (an event already on its way may).
        let late: Vec<Event> = rx.try_iter().collect();
        std::thread::sleep(Duration::from_millis(300));
        let late: Vec<Event> = late.into_iter().chain(rx.try_iter()).collect();
        assert!(late.iter().all(|e| e.seq < renamed.seq), "{late:?}");
        assert!(subscription.last_seq() >= second.seq);
        assert!(subscription.last_seq() < renamed.seq);

        engine.shutdown();
        assert!(matches!(
            block_on(engine.next_event(1 << 40, 5_000)),
            Err(JasperError::ShuttingDown { .. })
        ));
    }
}
