//! The engine's one error enum. Each variant has a stable `code()` that the daemon's gRPC
//! status, the CLI's exit output and the mobile bindings' exceptions carry unchanged.

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no identity yet: create or import one first")]
    NoIdentity,
    #[error("an identity already exists in this data directory")]
    IdentityExists,
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("unknown contact: {0}")]
    UnknownContact(String),
    #[error("unknown conversation: {0}")]
    UnknownConversation(String),
    #[error("unknown message: {0}")]
    UnknownMessage(String),
    #[error("unknown relay: {0}")]
    UnknownRelay(String),
    #[error("a contact named {0:?} already exists")]
    NameTaken(String),
    #[error("message is {len} bytes; the limit is {max}")]
    MessageTooLarge { len: usize, max: usize },
    #[error("only the author of a message may {0} it")]
    NotAuthor(&'static str),
    #[error("no relay is known; add one first")]
    NoRelays,
    #[error("key store: {0}")]
    KeyStore(String),
    #[error("local database: {0}")]
    Storage(String),
    #[error("protocol: {0}")]
    Protocol(#[from] jasper_core::Error),
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("transparent mode: {0}")]
    TransparentOff(String),
    #[error("no direct connection: {0}")]
    TransparentUnavailable(String),
    #[error("unknown call: {0}")]
    UnknownCall(String),
    #[error("call: {0}")]
    CallState(String),
    #[error("a call with this contact is already ringing or active")]
    CallBusy,
}

impl EngineError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::NoIdentity => "no_identity",
            EngineError::IdentityExists => "identity_exists",
            EngineError::InvalidKey(_) => "invalid_key",
            EngineError::InvalidArgument(_) => "invalid_argument",
            EngineError::UnknownContact(_) => "unknown_contact",
            EngineError::UnknownConversation(_) => "unknown_conversation",
            EngineError::UnknownMessage(_) => "unknown_message",
            EngineError::UnknownRelay(_) => "unknown_relay",
            EngineError::NameTaken(_) => "name_taken",
            EngineError::MessageTooLarge { .. } => "message_too_large",
            EngineError::NotAuthor(_) => "not_author",
            EngineError::NoRelays => "no_relays",
            EngineError::KeyStore(_) => "key_store",
            EngineError::Storage(_) => "storage",
            EngineError::Protocol(e) => attachment_refusal_code(e).unwrap_or("protocol"),
            EngineError::ShuttingDown => "shutting_down",
            EngineError::TransparentOff(_) => "transparent_off",
            EngineError::TransparentUnavailable(_) => "transparent_unavailable",
            EngineError::UnknownCall(_) => "unknown_call",
            EngineError::CallState(_) => "call_state",
            EngineError::CallBusy => "call_busy",
        }
    }
}

/// The code of a downloaded attachment that failed verification, told apart by how it failed;
/// `None` for every other protocol error.
pub fn attachment_refusal_code(err: &jasper_core::Error) -> Option<&'static str> {
    use jasper_core::Error as E;
    Some(match err {
        E::AttachmentTampered { .. } => "attachment_tampered",
        E::AttachmentTruncated => "attachment_truncated",
        E::AttachmentWrongKey => "attachment_wrong_key",
        E::AttachmentHashMismatch | E::AttachmentSizeMismatch { .. } => "attachment_mismatch",
        E::MalformedAttachment(_) => "attachment_malformed",
        _ => return None,
    })
}

impl From<rusqlite::Error> for EngineError {
    fn from(e: rusqlite::Error) -> Self {
        EngineError::Storage(e.to_string())
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
