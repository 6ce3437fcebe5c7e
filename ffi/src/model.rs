//! The records and enums the bindings see: the engine's model itself (`jasper-model`, declared
//! to uniffi below), and the few records only the bindings have: `EngineConfig` (durations cross
//! as milliseconds), `MessageRoute` and `AudioFrame`.

use std::time::Duration;

use jasper_engine as engine;
use jasper_model::{
    AnonymityMode, AnonymityReport, Attachment, CallInfo, CallState, Contact, Conversation,
    ConversationKind, DownloadResult, Event, EventKind, IdentityInfo, Message, MessagePage,
    MessageState, Reaction, RelayInfo, RelayRole, RelayRoleKind, SharedRelay, TransparentState,
    TransparentStatus,
};

/// What `JasperEngine.open` takes; start from `default_config(data_dir)` and change fields.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EngineConfig {
    /// Holds the SQLite database (never the private key): the app's private files directory.
    pub data_dir: String,
    /// Relays to start from (`HOST:PORT`); more are learned from them.
    pub relays: Vec<String>,
    /// Use loopback/private relay addresses learned from relays (tests, LANs).
    pub allow_private_relays: bool,
    /// Polling interval on relays without the long-poll extension.
    pub poll_interval_ms: u64,
    /// How long one long-poll asks the RX relay to hold the request; 0 turns long-polling off.
    pub long_poll_ms: u64,
    /// A sent packet not seen on another relay after this long is re-sent through another relay.
    pub delivery_timeout_ms: u64,
    /// How often relay lists and load figures are refreshed.
    pub discovery_interval_ms: u64,
    /// Largest message content accepted, in bytes.
    pub max_message_bytes: u64,
    /// Timeout of one relay request (long-polls add their wait to it).
    pub relay_timeout_ms: u64,
    /// Base URL of an IPFS node's HTTP RPC API (`http://127.0.0.1:5001`), where attachments
    /// are added and, without a gateway, fetched. Attachments need it.
    pub ipfs_api: Option<String>,
    /// Base URL of an IPFS gateway to fetch attachments from instead of the RPC API.
    pub ipfs_gateway: Option<String>,
    /// STUN servers for transparent mode, `stun:HOST[:PORT]` (plain STUN: the WebRTC library
    /// cannot do `stuns:`). Empty: host candidates only.
    pub stun_servers: Vec<String>,
    /// Local UDP addresses for WebRTC host candidates; `0.0.0.0:0` is every non-loopback
    /// interface (the default).
    pub webrtc_bind_addrs: Vec<String>,
    /// What to do with fewer relays than relay roles: `Strict` (the default) holds messages in
    /// state `Waiting` until every key has a relay of its own; `Relaxed` shares relays and
    /// reports what they can link (`anonymity().shared`).
    pub anonymity: AnonymityMode,
    /// How often the witness relay's recent-hash feed is read to confirm that sent packets
    /// spread (a fixed pace, whatever is sent); at least 1. Default 2000.
    pub witness_interval_ms: u64,
    /// Most time a copy for this key's other logins waits, at random, before it leaves, so
    /// that it does not enter the mesh in the same second as the message it copies (a relay
    /// could pair the two keys by time). Default 30000; 0 sends it at once.
    pub sent_copy_delay_ms: u64,
}

impl From<engine::EngineConfig> for EngineConfig {
    fn from(c: engine::EngineConfig) -> Self {
        EngineConfig {
            data_dir: c.data_dir.to_string_lossy().into_owned(),
            relays: c.relays,
            allow_private_relays: c.allow_private_relays,
            poll_interval_ms: millis(c.poll_interval),
            long_poll_ms: millis(c.long_poll),
            delivery_timeout_ms: millis(c.delivery_timeout),
            discovery_interval_ms: millis(c.discovery_interval),
            max_message_bytes: c.max_message_bytes as u64,
            relay_timeout_ms: millis(c.relay_timeout),
            ipfs_api: c.ipfs_api,
            ipfs_gateway: c.ipfs_gateway,
            stun_servers: c.transparent.stun_servers,
            webrtc_bind_addrs: c.transparent.bind_addrs,
            anonymity: c.anonymity,
            witness_interval_ms: millis(c.witness_interval),
            sent_copy_delay_ms: millis(c.sent_copy_delay),
        }
    }
}

impl From<EngineConfig> for engine::EngineConfig {
    fn from(c: EngineConfig) -> Self {
        let mut out = engine::EngineConfig::new(c.data_dir);
        out.relays = c.relays;
        out.allow_private_relays = c.allow_private_relays;
        out.poll_interval = Duration::from_millis(c.poll_interval_ms);
        out.long_poll = Duration::from_millis(c.long_poll_ms);
        out.delivery_timeout = Duration::from_millis(c.delivery_timeout_ms);
        out.discovery_interval = Duration::from_millis(c.discovery_interval_ms);
        out.max_message_bytes = usize::try_from(c.max_message_bytes).unwrap_or(usize::MAX);
        out.relay_timeout = Duration::from_millis(c.relay_timeout_ms);
        out.ipfs_api = c.ipfs_api;
        out.ipfs_gateway = c.ipfs_gateway;
        out.transparent.stun_servers = c.stun_servers;
        if !c.webrtc_bind_addrs.is_empty() {
            out.transparent.bind_addrs = c.webrtc_bind_addrs;
        }
        out.anonymity = c.anonymity;
        out.witness_interval = Duration::from_millis(c.witness_interval_ms);
        out.sent_copy_delay = Duration::from_millis(c.sent_copy_delay_ms);
        // Apps raise their own notifications from events; the engine's are desktop ones.
        out.notifications = false;
        out
    }
}

impl EngineConfig {
    /// What `JasperEngine.open` refuses (`InvalidArgument`), checked before anything is opened.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.witness_interval_ms == 0 {
            return Err("witness_interval_ms must be at least 1".into());
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The engine's defaults for a data directory.
#[uniffi::export]
pub fn default_config(data_dir: String) -> EngineConfig {
    engine::EngineConfig::new(data_dir).into()
}

/// What enabling transparent mode gives up, in words for the user: show it before
/// `set_transparent(contact, true)`.
#[uniffi::export]
pub fn transparent_mode_warning() -> String {
    engine::TRANSPARENT_MODE_WARNING.to_owned()
}

// ---- the engine's model -------------------------------------------------------------------
//
// The records and enums of `jasper-model`, the very types the engine returns, made uniffi types
// of this crate by `#[uniffi::remote]`: it writes the FFI conversions for the type of that name
// in scope (the model's: nothing is defined here) and compiles them against the restated
// definition, so a field or variant that is missing, extra or of another type fails the build.
// Not derived in `jasper-model` behind a feature: that makes the model a second uniffi component
// (`jasper_model`) with bindings of its own, and uniffi 0.32 cannot generate two components into
// one Kotlin package (each file declares the same runtime: `RustBuffer`, `FfiConverter`,
// `UniffiLib`, ...), so Kotlin apps would find the model in another package than the engine.
// The doc comments here are the bindings' docs.

#[uniffi::remote(Record)]
pub struct IdentityInfo {
    /// Canonical text form of the public key (what contacts add).
    pub public_key: String,
    /// SHA-256 of the DER public key, hex.
    pub fingerprint: String,
    /// The secret store's `kind()`.
    pub key_store: String,
}

#[uniffi::remote(Record)]
pub struct Contact {
    pub key: String,
    pub fingerprint: String,
    pub name: String,
    pub avatar: Option<String>,
    /// Unix time in milliseconds.
    pub added_at: i64,
}

#[uniffi::remote(Enum)]
pub enum ConversationKind {
    Direct,
    Group,
}

#[uniffi::remote(Record)]
pub struct Conversation {
    pub id: i64,
    pub kind: ConversationKind,
    /// UUID; for groups it is what identifies the group on the wire.
    pub channel_id: String,
    /// The contact's name (or short key) for a DM, the group's name for a group.
    pub name: String,
    /// Keys of the other participants.
    pub members: Vec<String>,
    /// The group's creator (the only one who may add or remove others).
    pub admin: Option<String>,
    pub created_at: i64,
    /// Messages from others that arrived after this login's read marker (`mark_read`); local
    /// to this login, never sent. Deleted ones don't count. Each change is a
    /// `ConversationUpdated` event (a message stored, an unread one deleted, the marker moved).
    pub unread: u32,
    /// Unix ms of the newest message stored here (its arrival, or its writing when outgoing),
    /// or `created_at` when there is none: what a conversation list sorts by.
    pub last_activity_at: i64,
}

#[uniffi::remote(Enum)]
pub enum MessageState {
    /// Written to the outbox; not yet accepted by a TX relay.
    Queued,
    /// Accepted by the TX relay (every copy, for a group).
    Sent,
    /// Seen on a different relay than the one it was sent through: it is in the mesh.
    Visible,
    /// Accepted by its TX relay, but its spread through the mesh could not be confirmed
    /// without revealing something to a relay (no relay offers the private recent-hash feed,
    /// or it never showed there): it may never reach the recipient. Reason in `failure`.
    Unconfirmed,
    /// Held in the outbox because sending it would make one relay see two keys of this
    /// identity (anonymity `Strict` and too few relays known); reason in `failure`. It goes
    /// out by itself once enough relays are known.
    Waiting,
    /// Given up on (reason in `failure`).
    Failed,
    /// Arrived from someone (or from another login of this identity).
    Received,
}

#[uniffi::remote(Record)]
pub struct Reaction {
    pub reactor: String,
    pub reaction: String,
}

#[uniffi::remote(Record)]
pub struct Message {
    /// The protocol's message id (a UUID chosen by the author).
    pub id: String,
    pub conversation_id: i64,
    pub sender: String,
    pub sender_name: Option<String>,
    /// Written by this identity (on this or another login).
    pub outgoing: bool,
    /// `MESSAGE`, or an unknown type kept verbatim.
    pub kind: String,
    pub content: String,
    /// The author's timestamp (RFC 3339).
    pub timestamp: String,
    pub state: MessageState,
    pub failure: Option<String>,
    pub edited: bool,
    pub deleted: bool,
    pub reactions: Vec<Reaction>,
    /// Earlier contents, oldest first.
    pub history: Vec<String>,
    /// The encrypted attachments linked in `content`, in order.
    pub attachments: Vec<Attachment>,
}

/// A file linked from a message: where its ciphertext is on IPFS and how to open and check it.
#[uniffi::remote(Record)]
pub struct Attachment {
    pub name: String,
    /// CID of the ciphertext.
    pub cid: String,
    /// The file key, base64url without padding (as in the link).
    pub key: String,
    /// Plaintext size in bytes.
    pub size: u64,
    pub media_type: String,
    /// SHA-256 of the plaintext, hex.
    pub sha256: String,
    /// Linked as a Markdown image.
    pub is_image: bool,
}

/// A finished, verified download.
#[uniffi::remote(Record)]
pub struct DownloadResult {
    pub path: String,
    pub size: u64,
    /// SHA-256 of the plaintext, hex.
    pub sha256: String,
    pub media_type: String,
}

/// A page of history, oldest first, and the cursor for the page before it.
#[uniffi::remote(Record)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub before: Option<String>,
}

#[uniffi::remote(Record)]
pub struct RelayInfo {
    pub address: String,
    /// `configured`, `learned` or `added`.
    pub origin: String,
    /// Load the relay reports, if it reports any.
    pub reported_load: Option<f64>,
    /// Our own measurement, exponentially averaged.
    pub latency_ms: Option<f64>,
    pub successes: u64,
    pub failures: u64,
    /// Packets from it that failed to open (forged or corrupted).
    pub forged: u64,
    /// Acknowledged sends that never showed up elsewhere.
    pub lost: u64,
    pub suspect: bool,
    pub supports_wait: bool,
    /// What this identity uses it for: `rx`, or `tx` for some contacts (never which ones).
    pub roles: Vec<String>,
}

/// One entry of the durable event log.
#[uniffi::remote(Record)]
pub struct Event {
    /// Position in the log: pass it back as `after_seq` / `from_seq` to resume after it.
    pub seq: u64,
    /// Unix time (ms) when recorded.
    pub at: i64,
    pub kind: EventKind,
}

#[uniffi::remote(Enum)]
pub enum EventKind {
    MessageReceived {
        message: Message,
    },
    MessageSent {
        message: Message,
    },
    MessageUpdated {
        message: Message,
    },
    MessageStateChanged {
        conversation_id: i64,
        message_id: String,
        state: MessageState,
        failure: Option<String>,
    },
    ConversationUpdated {
        conversation: Conversation,
    },
    ContactAdded {
        contact: Contact,
    },
    IdentityChanged {
        identity: IdentityInfo,
    },
    RelayDiscovered {
        address: String,
    },
    /// Transparent mode with a contact changed (consent on either side, or the session).
    TransparentChanged {
        status: TransparentStatus,
    },
    /// A call rang (an incoming RINGING call is the app's cue to ring), was answered or ended.
    CallChanged {
        call: CallInfo,
    },
    /// The anonymity report changed: relays needed or known, roles waiting for a relay of
    /// their own, or relays shared between keys. Carries the whole new report.
    AnonymityChanged {
        report: AnonymityReport,
    },
}

/// What to do when fewer relays are known than this identity has relay roles.
#[uniffi::remote(Enum)]
pub enum AnonymityMode {
    /// Never let one relay see two keys of this identity: a message that would need a shared
    /// relay waits in the outbox (state `Waiting`) until more relays are known. The default.
    Strict,
    /// Share relays when there are too few, and report every shared relay
    /// (`AnonymityReport.shared`).
    Relaxed,
}

/// What a relay is to this identity. Every role carries exactly one key; anonymity means no
/// relay holds two roles.
#[uniffi::remote(Enum)]
pub enum RelayRoleKind {
    /// Receives for this identity's own key (long-poll `/fetch`).
    Rx,
    /// Carries this identity's `SENT` copies to its own key (for its other logins).
    TxSelf,
    /// Carries messages to one contact's key.
    TxContact,
}

/// One role: which key a relay sees from this identity in it.
#[uniffi::remote(Record)]
pub struct RelayRole {
    pub kind: RelayRoleKind,
    /// The key the relay sees in this role (this identity's own for `Rx` and `TxSelf`).
    pub key: String,
    /// The contact's name, for `TxContact` roles of known contacts.
    pub name: Option<String>,
    /// The relay (`HOST:PORT`) holding the role; none while it waits for one (strict mode),
    /// and none inside `SharedRelay.roles` (the relay is `SharedRelay.relay`).
    pub relay: Option<String>,
}

/// A relay that holds more than one role of this identity, so it can link their keys.
#[uniffi::remote(Record)]
pub struct SharedRelay {
    pub relay: String,
    /// The roles it holds (two or more): it can tie these keys to one client.
    pub roles: Vec<RelayRole>,
}

/// Where this identity stands on anonymity: how many relays its roles need, how many are
/// known, what waits for a relay of its own, and which relays are shared.
#[uniffi::remote(Record)]
pub struct AnonymityReport {
    pub mode: AnonymityMode,
    /// Distinct relays the current roles need: one per role (RX, own copies, each contact
    /// written to).
    pub relays_needed: u32,
    /// Relays known and usable (not removed).
    pub relays_known: u32,
    /// Every role, with its relay (none while waiting).
    pub roles: Vec<RelayRole>,
    /// Roles waiting for a relay of their own: their messages wait in the outbox.
    pub waiting: Vec<RelayRole>,
    /// Relays holding two or more roles (in `Relaxed` mode, or chosen before `Strict` was set).
    pub shared: Vec<SharedRelay>,
    /// The relay whose recent-hash feed confirms that sent packets spread (polled at a fixed
    /// pace, asking for no key and no hash); none when no relay offers the feed, and sent
    /// messages then end `Unconfirmed`.
    pub witness: Option<String>,
    /// One line for people: "private", or what is waiting or shared.
    pub summary: String,
}

/// Where transparent mode stands with one contact.
#[uniffi::remote(Enum)]
pub enum TransparentState {
    /// Not enabled on this side.
    Off,
    /// Enabled here; the contact has not enabled it (as far as we have heard).
    WaitingForPeer,
    /// Both consent; no session (closed on purpose, or between reconnects).
    Idle,
    Connecting,
    /// The data channel is open: messages to this contact go over it.
    Connected,
}

#[uniffi::remote(Record)]
pub struct TransparentStatus {
    pub contact: String,
    pub contact_name: Option<String>,
    pub local_enabled: bool,
    pub peer_enabled: bool,
    pub state: TransparentState,
    pub session_id: Option<String>,
    /// Packets sent over / received on the current session's data channel.
    pub direct_sent: u64,
    pub direct_received: u64,
}

#[uniffi::remote(Enum)]
pub enum CallState {
    Ringing,
    Active,
    Ended,
}

#[uniffi::remote(Record)]
pub struct CallInfo {
    pub id: String,
    pub contact: String,
    pub contact_name: Option<String>,
    pub outgoing: bool,
    pub state: CallState,
    /// hung_up, remote_hung_up, cancelled (the caller hung up while it rang), rejected, busy,
    /// no_answer, connection_lost, transparent_disabled, shutdown.
    pub end_reason: Option<String>,
    /// Unix time in milliseconds.
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
}

// ---- what only the bindings have ----------------------------------------------------------

/// Which TX relay carried the copy of a message for one recipient (none yet: still queued).
// The engine has no type for it: `Outbox::routes` returns (recipient, relay) pairs.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MessageRoute {
    pub recipient: String,
    pub relay: Option<String>,
}

/// One received Opus packet (RFC 7587, 48 kHz clock) with its RTP sequence number (extended
/// to 64 bits) and timestamp, for the app's jitter buffer.
// Not the model's `AudioFrame` (`data`, `duration_us`, ...): a received frame's `duration_us` is
// always 0 (RTP does not carry it), and the bindings name the packet `opus`, as the daemon's
// gRPC `AudioFrame` does.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AudioFrame {
    pub opus: Vec<u8>,
    pub sequence: u64,
    pub rtp_timestamp: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_round_trips_with_the_engines_defaults() {
        let defaults = engine::EngineConfig::new("/data");
        let record = default_config("/data".into());
        assert_eq!(record.long_poll_ms, 25_000);
        let back = engine::EngineConfig::from(record.clone());
        assert_eq!(back.data_dir, defaults.data_dir);
        assert_eq!(back.poll_interval, defaults.poll_interval);
        assert_eq!(back.long_poll, defaults.long_poll);
        assert_eq!(back.delivery_timeout, defaults.delivery_timeout);
        assert_eq!(back.discovery_interval, defaults.discovery_interval);
        assert_eq!(back.max_message_bytes, defaults.max_message_bytes);
        assert_eq!(back.relay_timeout, defaults.relay_timeout);
        assert_eq!(back.anonymity, defaults.anonymity);
        assert_eq!(record.anonymity, AnonymityMode::Strict);
        assert_eq!(back.witness_interval, defaults.witness_interval);
        assert_eq!(record.witness_interval_ms, 2_000);
        assert!(!back.notifications);
        assert_eq!(EngineConfig::from(back), record);
    }

    #[test]
    fn anonymity_settings_cross_both_ways_and_a_zero_witness_interval_is_refused() {
        let mut record = default_config("/data".into());
        record.anonymity = AnonymityMode::Relaxed;
        record.witness_interval_ms = 500;
        assert_eq!(record.validate(), Ok(()));
        let back = engine::EngineConfig::from(record.clone());
        assert_eq!(back.anonymity, engine::AnonymityMode::Relaxed);
        assert_eq!(back.witness_interval, Duration::from_millis(500));
        assert_eq!(EngineConfig::from(back), record);
        record.witness_interval_ms = 0;
        assert!(
            record
                .validate()
                .unwrap_err()
                .contains("witness_interval_ms")
        );
    }
}
