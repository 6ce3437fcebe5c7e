//! Records and enums mirroring the engine's model (`jasper_engine::model`) and configuration,
//! field for field; durations cross as milliseconds.

use std::time::Duration;

use jasper_engine as engine;

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
            anonymity: c.anonymity.into(),
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
        out.anonymity = c.anonymity.into();
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

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct IdentityInfo {
    /// Canonical text form of the public key (what contacts add).
    pub public_key: String,
    /// SHA-256 of the DER public key, hex.
    pub fingerprint: String,
    /// The secret store's `kind()`.
    pub key_store: String,
}

impl From<engine::IdentityInfo> for IdentityInfo {
    fn from(i: engine::IdentityInfo) -> Self {
        IdentityInfo {
            public_key: i.public_key,
            fingerprint: i.fingerprint,
            key_store: i.key_store,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Contact {
    pub key: String,
    pub fingerprint: String,
    pub name: String,
    pub avatar: Option<String>,
    /// Unix time in milliseconds.
    pub added_at: i64,
}

impl From<engine::Contact> for Contact {
    fn from(c: engine::Contact) -> Self {
        Contact {
            key: c.key,
            fingerprint: c.fingerprint,
            name: c.name,
            avatar: c.avatar,
            added_at: c.added_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ConversationKind {
    Direct,
    Group,
}

impl From<engine::ConversationKind> for ConversationKind {
    fn from(k: engine::ConversationKind) -> Self {
        match k {
            engine::ConversationKind::Direct => ConversationKind::Direct,
            engine::ConversationKind::Group => ConversationKind::Group,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
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
}

impl From<engine::Conversation> for Conversation {
    fn from(c: engine::Conversation) -> Self {
        Conversation {
            id: c.id,
            kind: c.kind.into(),
            channel_id: c.channel_id,
            name: c.name,
            members: c.members,
            admin: c.admin,
            created_at: c.created_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
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

impl From<engine::MessageState> for MessageState {
    fn from(s: engine::MessageState) -> Self {
        match s {
            engine::MessageState::Queued => MessageState::Queued,
            engine::MessageState::Sent => MessageState::Sent,
            engine::MessageState::Visible => MessageState::Visible,
            engine::MessageState::Unconfirmed => MessageState::Unconfirmed,
            engine::MessageState::Waiting => MessageState::Waiting,
            engine::MessageState::Failed => MessageState::Failed,
            engine::MessageState::Received => MessageState::Received,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Reaction {
    pub reactor: String,
    pub reaction: String,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
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
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
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

impl From<engine::Attachment> for Attachment {
    fn from(a: engine::Attachment) -> Self {
        Attachment {
            name: a.name,
            cid: a.cid,
            key: a.key,
            size: a.size,
            media_type: a.media_type,
            sha256: a.sha256,
            is_image: a.is_image,
        }
    }
}

/// A finished, verified download.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DownloadResult {
    pub path: String,
    pub size: u64,
    /// SHA-256 of the plaintext, hex.
    pub sha256: String,
    pub media_type: String,
}

impl From<engine::DownloadResult> for DownloadResult {
    fn from(d: engine::DownloadResult) -> Self {
        DownloadResult {
            path: d.path,
            size: d.size,
            sha256: d.sha256,
            media_type: d.media_type,
        }
    }
}

impl From<engine::Message> for Message {
    fn from(m: engine::Message) -> Self {
        Message {
            id: m.id,
            conversation_id: m.conversation_id,
            sender: m.sender,
            sender_name: m.sender_name,
            outgoing: m.outgoing,
            kind: m.kind,
            content: m.content,
            timestamp: m.timestamp,
            state: m.state.into(),
            failure: m.failure,
            edited: m.edited,
            deleted: m.deleted,
            reactions: m
                .reactions
                .into_iter()
                .map(|r| Reaction {
                    reactor: r.reactor,
                    reaction: r.reaction,
                })
                .collect(),
            history: m.history,
            attachments: m.attachments.into_iter().map(Into::into).collect(),
        }
    }
}

/// A page of history, oldest first, and the cursor for the page before it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub before: Option<String>,
}

impl From<engine::MessagePage> for MessagePage {
    fn from(p: engine::MessagePage) -> Self {
        MessagePage {
            messages: p.messages.into_iter().map(Into::into).collect(),
            before: p.before,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
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

impl From<engine::RelayInfo> for RelayInfo {
    fn from(r: engine::RelayInfo) -> Self {
        RelayInfo {
            address: r.address,
            origin: r.origin,
            reported_load: r.reported_load,
            latency_ms: r.latency_ms,
            successes: r.successes,
            failures: r.failures,
            forged: r.forged,
            lost: r.lost,
            suspect: r.suspect,
            supports_wait: r.supports_wait,
            roles: r.roles,
        }
    }
}

/// Which TX relay carried the copy of a message for one recipient (none yet: still queued).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MessageRoute {
    pub recipient: String,
    pub relay: Option<String>,
}

/// One entry of the durable event log.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Event {
    /// Position in the log: pass it back as `after_seq` / `from_seq` to resume after it.
    pub seq: u64,
    /// Unix time (ms) when recorded.
    pub at: i64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum AnonymityMode {
    /// Never let one relay see two keys of this identity: a message that would need a shared
    /// relay waits in the outbox (state `Waiting`) until more relays are known. The default.
    Strict,
    /// Share relays when there are too few, and report every shared relay
    /// (`AnonymityReport.shared`).
    Relaxed,
}

impl From<engine::AnonymityMode> for AnonymityMode {
    fn from(m: engine::AnonymityMode) -> Self {
        match m {
            engine::AnonymityMode::Strict => Self::Strict,
            engine::AnonymityMode::Relaxed => Self::Relaxed,
        }
    }
}

impl From<AnonymityMode> for engine::AnonymityMode {
    fn from(m: AnonymityMode) -> Self {
        match m {
            AnonymityMode::Strict => Self::Strict,
            AnonymityMode::Relaxed => Self::Relaxed,
        }
    }
}

/// What a relay is to this identity. Every role carries exactly one key; anonymity means no
/// relay holds two roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RelayRoleKind {
    /// Receives for this identity's own key (long-poll `/fetch`).
    Rx,
    /// Carries this identity's `SENT` copies to its own key (for its other logins).
    TxSelf,
    /// Carries messages to one contact's key.
    TxContact,
}

impl From<engine::RelayRoleKind> for RelayRoleKind {
    fn from(k: engine::RelayRoleKind) -> Self {
        match k {
            engine::RelayRoleKind::Rx => Self::Rx,
            engine::RelayRoleKind::TxSelf => Self::TxSelf,
            engine::RelayRoleKind::TxContact => Self::TxContact,
        }
    }
}

/// One role: which key a relay sees from this identity in it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
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

impl From<engine::RelayRole> for RelayRole {
    fn from(r: engine::RelayRole) -> Self {
        Self {
            kind: r.kind.into(),
            key: r.key,
            name: r.name,
            relay: r.relay,
        }
    }
}

/// A relay that holds more than one role of this identity, so it can link their keys.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SharedRelay {
    pub relay: String,
    /// The roles it holds (two or more): it can tie these keys to one client.
    pub roles: Vec<RelayRole>,
}

impl From<engine::SharedRelay> for SharedRelay {
    fn from(s: engine::SharedRelay) -> Self {
        Self {
            relay: s.relay,
            roles: s.roles.into_iter().map(Into::into).collect(),
        }
    }
}

/// Where this identity stands on anonymity: how many relays its roles need, how many are
/// known, what waits for a relay of its own, and which relays are shared.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
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

impl From<engine::AnonymityReport> for AnonymityReport {
    fn from(r: engine::AnonymityReport) -> Self {
        Self {
            mode: r.mode.into(),
            relays_needed: r.relays_needed,
            relays_known: r.relays_known,
            roles: r.roles.into_iter().map(Into::into).collect(),
            waiting: r.waiting.into_iter().map(Into::into).collect(),
            shared: r.shared.into_iter().map(Into::into).collect(),
            witness: r.witness,
            summary: r.summary,
        }
    }
}

/// Where transparent mode stands with one contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
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

impl From<engine::TransparentState> for TransparentState {
    fn from(s: engine::TransparentState) -> Self {
        match s {
            engine::TransparentState::Off => Self::Off,
            engine::TransparentState::WaitingForPeer => Self::WaitingForPeer,
            engine::TransparentState::Idle => Self::Idle,
            engine::TransparentState::Connecting => Self::Connecting,
            engine::TransparentState::Connected => Self::Connected,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
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

impl From<engine::TransparentStatus> for TransparentStatus {
    fn from(t: engine::TransparentStatus) -> Self {
        Self {
            contact: t.contact,
            contact_name: t.contact_name,
            local_enabled: t.local_enabled,
            peer_enabled: t.peer_enabled,
            state: t.state.into(),
            session_id: t.session_id,
            direct_sent: t.direct_sent,
            direct_received: t.direct_received,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum CallState {
    Ringing,
    Active,
    Ended,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
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

impl From<engine::CallInfo> for CallInfo {
    fn from(c: engine::CallInfo) -> Self {
        Self {
            id: c.id,
            contact: c.contact,
            contact_name: c.contact_name,
            outgoing: c.outgoing,
            state: match c.state {
                engine::CallState::Ringing => CallState::Ringing,
                engine::CallState::Active => CallState::Active,
                engine::CallState::Ended => CallState::Ended,
            },
            end_reason: c.end_reason,
            started_at: c.started_at,
            answered_at: c.answered_at,
            ended_at: c.ended_at,
        }
    }
}

/// One received Opus packet (RFC 7587, 48 kHz clock) with its RTP sequence number (extended
/// to 64 bits) and timestamp, for the app's jitter buffer.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AudioFrame {
    pub opus: Vec<u8>,
    pub sequence: u64,
    pub rtp_timestamp: u32,
}

impl From<engine::Event> for Event {
    fn from(e: engine::Event) -> Self {
        use engine::EventKind as K;
        let kind = match e.kind {
            K::MessageReceived { message } => EventKind::MessageReceived {
                message: message.into(),
            },
            K::MessageSent { message } => EventKind::MessageSent {
                message: message.into(),
            },
            K::MessageUpdated { message } => EventKind::MessageUpdated {
                message: message.into(),
            },
            K::MessageStateChanged {
                conversation_id,
                message_id,
                state,
                failure,
            } => EventKind::MessageStateChanged {
                conversation_id,
                message_id,
                state: state.into(),
                failure,
            },
            K::ConversationUpdated { conversation } => EventKind::ConversationUpdated {
                conversation: conversation.into(),
            },
            K::ContactAdded { contact } => EventKind::ContactAdded {
                contact: contact.into(),
            },
            K::IdentityChanged { identity } => EventKind::IdentityChanged {
                identity: identity.into(),
            },
            K::RelayDiscovered { address } => EventKind::RelayDiscovered { address },
            K::TransparentChanged { status } => EventKind::TransparentChanged {
                status: status.into(),
            },
            K::CallChanged { call } => EventKind::CallChanged { call: call.into() },
            K::AnonymityChanged { report } => EventKind::AnonymityChanged {
                report: report.into(),
            },
        };
        Event {
            seq: e.seq,
            at: e.at,
            kind,
        }
    }
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
