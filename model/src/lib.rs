//! # jasper-model
//!
//! What the Jasper engine hands to its shells (gRPC daemon, CLI, mobile bindings): plain data
//! with serde, and nothing else. It is its own crate so that a client of `jasperd` (the `jasper`
//! CLI, bots) can use the same types, and print the same JSON, without linking the engine.

use serde::{Deserialize, Serialize};

/// The version of the Jasper protocol this workspace speaks, as a literal, for `concat!` in
/// the programs' `--version` texts (`jasper`, `jasperd`, `jasper-relay`).
#[macro_export]
macro_rules! protocol_version {
    () => {
        "1.0.0"
    };
}

/// The version of the Jasper protocol this workspace speaks (the spec it implements, which
/// `GET /status` names too).
pub const PROTOCOL_VERSION: &str = protocol_version!();

/// `--version` of a program of this workspace: its own version and the protocol's.
#[macro_export]
macro_rules! version_text {
    () => {
        concat!(
            env!("CARGO_PKG_VERSION"),
            " (Jasper protocol ",
            $crate::protocol_version!(),
            ")"
        )
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    /// Canonical text form of the public key (what contacts add).
    pub public_key: String,
    /// SHA-256 of the DER public key, hex.
    pub fingerprint: String,
    /// Which key store holds the private key (`secret-service`, `keyutils`).
    pub key_store: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub key: String,
    pub fingerprint: String,
    pub name: String,
    pub avatar: Option<String>,
    pub added_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Messages from others that arrived after this login's read marker
    /// (`conversations().mark_read`); local to this login, never sent. Deleted ones don't count.
    /// Each change is a `ConversationUpdated` event (a message stored, an unread one deleted,
    /// the marker moved).
    /// (Defaulted: the event log holds conversations recorded before read state existed.)
    #[serde(default)]
    pub unread: u32,
    /// Unix ms of the newest message stored here (its arrival, or its writing when outgoing),
    /// or `created_at` when there is none: what a conversation list sorts by. (Defaulted to 0
    /// in events recorded before it existed.)
    #[serde(default)]
    pub last_activity_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// identity (anonymity `strict` and too few relays known); reason in `failure`. It goes
    /// out by itself once enough relays are known.
    Waiting,
    /// Given up on (reason in `failure`).
    Failed,
    /// Arrived from someone (or from another login of this identity).
    Received,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub reactor: String,
    pub reaction: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The protocol's message id (a UUID chosen by the author).
    pub id: String,
    pub conversation_id: i64,
    pub sender: String,
    pub sender_name: Option<String>,
    /// Written by this identity (on this or another login).
    pub outgoing: bool,
    /// MESSAGE, or an unknown type kept verbatim.
    pub kind: String,
    pub content: String,
    /// The author's timestamp (RFC 3339): histories are ordered by it, then by id.
    pub timestamp: String,
    pub state: MessageState,
    pub failure: Option<String>,
    pub edited: bool,
    pub deleted: bool,
    pub reactions: Vec<Reaction>,
    /// Earlier contents, oldest first.
    pub history: Vec<String>,
    /// The encrypted attachments linked in `content`, in order (docs/protocol.md, "Attachments").
    pub attachments: Vec<Attachment>,
}

/// A file linked from a message: where its ciphertext is on IPFS and how to open and check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// Progress of `Engine::download` (jasper-engine): ciphertext bytes received of the expected total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadProgress {
    pub received: u64,
    pub total: u64,
}

/// A finished, verified download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadResult {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub media_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayInfo {
    pub address: String,
    /// `configured`, `learned` or `added`.
    pub origin: String,
    /// Load the relay reports (requests in flight + parked long-polls/100), if it reports any.
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the durable event log; `Subscribe(from_seq)` resumes after it.
    pub seq: u64,
    /// Unix time (ms) when recorded.
    pub at: i64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
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
    /// Transparent mode for a contact changed: consent on either side, or the session.
    TransparentChanged {
        status: TransparentStatus,
    },
    /// A call rang, was answered, or ended.
    CallChanged {
        call: CallInfo,
    },
    /// The anonymity report changed: relays needed or known, keys waiting for a relay of
    /// their own, or relays shared between keys (see [`AnonymityReport`]).
    AnonymityChanged {
        report: AnonymityReport,
    },
}

/// What to do when fewer relays are known than this identity has relay roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnonymityMode {
    /// Never let one relay see two keys of this identity: a message that would need a shared
    /// relay waits in the outbox (state `waiting`) until more relays are known.
    #[default]
    Strict,
    /// Share relays when there are too few, and report every shared assignment (what it links
    /// is in [`AnonymityReport::shared`]).
    Relaxed,
}

impl AnonymityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AnonymityMode::Strict => "strict",
            AnonymityMode::Relaxed => "relaxed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "strict" => Some(AnonymityMode::Strict),
            "relaxed" => Some(AnonymityMode::Relaxed),
            _ => None,
        }
    }
}

/// What a relay is to this identity. Every role carries exactly one key; anonymity means no
/// relay holds two roles (docs/threat-model.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayRoleKind {
    /// Receives for this identity's own key (long-poll `/fetch {recipient}`).
    Rx,
    /// Sends this identity's `SENT` copies to its own key (for its other logins).
    TxSelf,
    /// Sends to one contact's key.
    TxContact,
}

impl RelayRoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RelayRoleKind::Rx => "rx",
            RelayRoleKind::TxSelf => "tx_self",
            RelayRoleKind::TxContact => "tx_contact",
        }
    }
}

/// One role: which key a relay sees from this identity in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRole {
    pub kind: RelayRoleKind,
    /// The key the relay sees in this role (this identity's own for `rx` and `tx_self`).
    pub key: String,
    /// The contact's name, for `tx_contact` roles of known contacts.
    pub name: Option<String>,
    /// The relay holding the role; `None` while it waits for one (strict mode).
    pub relay: Option<String>,
}

/// A relay that holds more than one role of this identity, so it can link their keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedRelay {
    pub relay: String,
    /// The roles it holds (two or more): it can tie these keys to one client.
    pub roles: Vec<RelayRole>,
}

/// Where this identity stands on anonymity: how many relays its roles need, how many are
/// known, what waits for a relay of its own, and which relays are shared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnonymityReport {
    pub mode: AnonymityMode,
    /// Distinct relays the current roles need: one per role (RX, own copies, each contact
    /// written to).
    pub relays_needed: u32,
    /// Relays known and usable (not removed).
    pub relays_known: u32,
    /// Every role, with its relay (or none while waiting).
    pub roles: Vec<RelayRole>,
    /// Roles waiting for a relay of their own: their messages wait in the outbox.
    pub waiting: Vec<RelayRole>,
    /// Relays holding two or more roles (only in `relaxed` mode, or chosen before `strict`).
    pub shared: Vec<SharedRelay>,
    /// The relay whose recent-hash feed confirms that sent packets spread (polled at a fixed
    /// pace, asking for no key and no hash); `None` when no relay offers the feed, and sent
    /// messages then end `unconfirmed`.
    pub witness: Option<String>,
    /// One line for people: "private", or what is waiting or shared.
    pub summary: String,
}

/// Where transparent mode stands with one contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransparentState {
    /// Not enabled here.
    Off,
    /// Enabled here; the contact has not enabled it (or we have not heard so yet).
    WaitingForPeer,
    /// Both sides consent, but no session is up (closed on purpose, or between retries).
    Idle,
    /// Signaling or ICE/DTLS in progress.
    Connecting,
    /// The data channel is open: messages to this contact go over it.
    Connected,
}

/// Transparent mode with one contact, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransparentStatus {
    pub contact: String,
    pub contact_name: Option<String>,
    /// This login consents to talk to the contact directly.
    pub local_enabled: bool,
    /// The contact said it consents too.
    pub peer_enabled: bool,
    pub state: TransparentState,
    pub session_id: Option<String>,
    /// Packets sent over / received from the data channel by this process.
    pub direct_sent: u64,
    pub direct_received: u64,
}

/// What enabling transparent mode gives up, for frontends to show before they enable it.
pub const TRANSPARENT_MODE_WARNING: &str = "Transparent mode connects this device directly to the contact over WebRTC. \
The contact learns your IP addresses and can tie them to your public key (as you can theirs), and \
the operator of each STUN server in use sees your address and can see that your two addresses \
talk to each other. Both sides must enable it. Messages stay end-to-end encrypted and signed \
exactly as on the relay path; when the direct connection is down they go through the relays as \
usual.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Invited; waiting for the callee to accept or reject.
    Ringing,
    /// Accepted: audio flows both ways.
    Active,
    Ended,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    pub id: String,
    pub contact: String,
    pub contact_name: Option<String>,
    pub outgoing: bool,
    pub state: CallState,
    /// Why it ended: `hung_up`, `remote_hung_up`, `cancelled` (the caller hung up while it
    /// rang), `rejected`, `busy`, `no_answer`, `connection_lost`, `transparent_disabled`,
    /// `shutdown`.
    pub end_reason: Option<String>,
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
}

/// One frame of call audio: a single Opus packet (RFC 7587). Frames to send give their
/// `duration_us`; received frames carry the RTP sequence number (extended to 64 bits) and
/// timestamp instead (their `duration_us` is 0: RTP does not carry it), so a frontend's jitter
/// buffer can reorder and time them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    pub data: Vec<u8>,
    pub duration_us: u32,
    pub sequence: u64,
    pub rtp_timestamp: u32,
}

/// A page of history, oldest first, and the cursor for the page before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub before: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `jasper watch --json` prints events in this form, and scripts match on it.
    #[test]
    fn events_serialize_tagged_by_their_snake_case_type() {
        let event = Event {
            seq: 7,
            at: 1000,
            kind: EventKind::MessageStateChanged {
                conversation_id: 3,
                message_id: "m".into(),
                state: MessageState::Unconfirmed,
                failure: None,
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["seq"], 7);
        assert_eq!(json["kind"]["type"], "message_state_changed");
        assert_eq!(json["kind"]["state"], "unconfirmed");
        assert!(json["kind"]["failure"].is_null());
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
    }

    #[test]
    fn anonymity_modes_parse_as_they_print() {
        for mode in [AnonymityMode::Strict, AnonymityMode::Relaxed] {
            assert_eq!(AnonymityMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(
            AnonymityMode::parse(" Relaxed "),
            Some(AnonymityMode::Relaxed)
        );
        assert_eq!(AnonymityMode::parse("loose"), None);
    }
}
