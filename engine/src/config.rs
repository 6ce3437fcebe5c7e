//! The engine's one configuration struct, filled by its shell (daemon flags, FFI arguments).

use crate::messages::budget::OpenBudgetConfig;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::AnonymityMode;
use crate::transparent::TransparentConfig;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Holds the SQLite database (never the private key).
    pub data_dir: PathBuf,
    /// Relays to start from (`HOST:PORT`); more are learned through `/sync/servers`.
    pub relays: Vec<String>,
    /// Use loopback/private relay addresses learned from relays (tests, LANs).
    pub allow_private_relays: bool,
    /// Polling interval on relays without the long-poll extension.
    pub poll_interval: Duration,
    /// How long one long-poll asks the RX relay to hold the request (relays cap it at 30 s);
    /// zero turns long-polling off (plain polling every `poll_interval`).
    pub long_poll: Duration,
    /// A sent packet not visible on another relay after this long is re-sent through
    /// another TX relay, and its first relay is marked suspect.
    pub delivery_timeout: Duration,
    /// How often relay lists and load figures are refreshed.
    pub discovery_interval: Duration,
    /// Raise a desktop notification for each incoming message (when a session bus exists).
    pub notifications: bool,
    /// Largest message content accepted from the API, in bytes.
    pub max_message_bytes: usize,
    /// Timeout of one relay request (long-polls add their wait to it).
    pub relay_timeout: Duration,
    /// Base URL of an IPFS node's HTTP RPC API (`http://127.0.0.1:5001`), where attachments
    /// are added and, without a gateway, fetched. Attachments need it.
    pub ipfs_api: Option<String>,
    /// Base URL of an IPFS gateway to fetch attachments from instead of the RPC API.
    pub ipfs_gateway: Option<String>,
    /// Transparent mode (direct WebRTC sessions): STUN servers, bind addresses, timeouts.
    pub transparent: TransparentConfig,
    /// What to do with fewer relays than relay roles: wait (`Strict`, the default) or share
    /// and report it (`Relaxed`).
    pub anonymity: AnonymityMode,
    /// How often the witness relay's recent-hash feed is read to confirm that sent packets
    /// spread. A fixed pace, whether or not anything was sent, so the relay learns nothing
    /// from when it is asked.
    pub witness_interval: Duration,
    /// Each `SENT` copy (and each packet mirrored for this key's other logins) leaves after a
    /// random delay of up to this long, so that it does not enter the mesh in the same second
    /// as the message it copies: a relay or anyone reading the mesh could otherwise pair the
    /// sender's own key with the recipient's by time (docs/threat-model.md). Only this key's
    /// other logins wait for it. Zero sends it at once.
    pub sent_copy_delay: Duration,
    /// Private-key operations the packets of one RX relay may cost us, per minute and at once
    /// (`messages/budget.rs`): a flood of well-formed junk is opened at this pace, no faster.
    pub open_budget: OpenBudgetConfig,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            relays: Vec::new(),
            allow_private_relays: false,
            poll_interval: Duration::from_secs(5),
            long_poll: Duration::from_secs(25),
            delivery_timeout: Duration::from_secs(20),
            discovery_interval: Duration::from_secs(600),
            notifications: true,
            // Leaves room for the envelope inside the 64 KiB inner-message limit.
            max_message_bytes: 48 * 1024,
            relay_timeout: Duration::from_secs(10),
            ipfs_api: None,
            ipfs_gateway: None,
            transparent: TransparentConfig::default(),
            anonymity: AnonymityMode::Strict,
            witness_interval: Duration::from_secs(2),
            sent_copy_delay: Duration::from_secs(30),
            open_budget: OpenBudgetConfig::default(),
        }
    }
}
