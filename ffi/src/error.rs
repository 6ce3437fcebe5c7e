//! The bindings' one error enum: one variant per engine error code, so Kotlin, Swift and
//! Python get typed exceptions (`JasperException.UnknownContact`, `JasperError.UnknownContact`)
//! that carry the same stable `code` as the daemon's gRPC `ErrorInfo` reason.

use jasper_core::Error as CoreError;
use jasper_engine::EngineError;

/// Every failure the engine reports. Each variant carries `code`, the engine's stable
/// machine-readable code (`unknown_contact`, ...), and `detail`, a human-readable message.
/// (`detail`, not `message`: Kotlin exceptions already have a `message` property, which the
/// generated code fills from both fields.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum JasperError {
    /// No identity yet: create or import one first.
    #[error("{detail}")]
    NoIdentity { code: String, detail: String },
    /// This data directory already has an identity.
    #[error("{detail}")]
    IdentityExists { code: String, detail: String },
    /// A public or private key that does not parse.
    #[error("{detail}")]
    InvalidKey { code: String, detail: String },
    /// An argument out of range (empty message, bad name, bad relay address, ...).
    #[error("{detail}")]
    InvalidArgument { code: String, detail: String },
    /// A name that is neither a contact nor a key.
    #[error("{detail}")]
    UnknownContact { code: String, detail: String },
    /// No conversation, group or contact by that name, id or key.
    #[error("{detail}")]
    UnknownConversation { code: String, detail: String },
    /// No message with that id.
    #[error("{detail}")]
    UnknownMessage { code: String, detail: String },
    /// No relay with that address.
    #[error("{detail}")]
    UnknownRelay { code: String, detail: String },
    /// Another contact already has that name.
    #[error("{detail}")]
    NameTaken { code: String, detail: String },
    /// Content over `EngineConfig.max_message_bytes`.
    #[error("{detail}")]
    MessageTooLarge { code: String, detail: String },
    /// Only a message's author (or a group's creator) may do that.
    #[error("{detail}")]
    NotAuthor { code: String, detail: String },
    /// No relay is known: add one first.
    #[error("{detail}")]
    NoRelays { code: String, detail: String },
    /// The secret store failed, or holds another key than this data directory's identity.
    /// Also what an exception thrown by the app's `SecretStore` becomes.
    #[error("{detail}")]
    KeyStore { code: String, detail: String },
    /// The local database failed.
    #[error("{detail}")]
    Storage { code: String, detail: String },
    /// A protocol-level failure (a key or packet that does not verify).
    #[error("{detail}")]
    Protocol { code: String, detail: String },
    /// The engine was shut down.
    #[error("{detail}")]
    ShuttingDown { code: String, detail: String },
    /// A downloaded attachment failed authentication: its ciphertext was modified.
    #[error("{detail}")]
    AttachmentTampered { code: String, detail: String },
    /// A downloaded attachment ends before its last chunk.
    #[error("{detail}")]
    AttachmentTruncated { code: String, detail: String },
    /// A downloaded attachment was encrypted with another key than its link's.
    #[error("{detail}")]
    AttachmentWrongKey { code: String, detail: String },
    /// A decrypted attachment's size or SHA-256 is not what its link states.
    #[error("{detail}")]
    AttachmentMismatch { code: String, detail: String },
    /// Encrypted attachment data is structurally wrong.
    #[error("{detail}")]
    AttachmentMalformed { code: String, detail: String },
    /// Transparent mode is not enabled on one side (or both) for that contact.
    #[error("{detail}")]
    TransparentOff { code: String, detail: String },
    /// The direct connection to the contact is down or did not come up.
    #[error("{detail}")]
    TransparentUnavailable { code: String, detail: String },
    /// No call with that id.
    #[error("{detail}")]
    UnknownCall { code: String, detail: String },
    /// The call is not in a state that allows this (accepting an outgoing call, audio before
    /// it is answered, hanging up an ended call).
    #[error("{detail}")]
    CallState { code: String, detail: String },
    /// A call with this contact is already ringing or active.
    #[error("{detail}")]
    CallBusy { code: String, detail: String },
}

impl JasperError {
    pub(crate) fn shutting_down() -> Self {
        EngineError::ShuttingDown.into()
    }

    pub(crate) fn key_store(detail: impl Into<String>) -> Self {
        JasperError::KeyStore {
            code: EngineError::KeyStore(String::new()).code().to_owned(),
            detail: detail.into(),
        }
    }
}

#[uniffi::export]
impl JasperError {
    /// The stable code (`unknown_contact`, ...), whichever the variant: for handlers that log
    /// or forward errors without matching each variant.
    pub fn error_code(&self) -> String {
        self.parts().0.to_owned()
    }

    /// The human-readable message.
    pub fn error_detail(&self) -> String {
        self.parts().1.to_owned()
    }
}

impl JasperError {
    fn parts(&self) -> (&str, &str) {
        use JasperError::*;
        match self {
            NoIdentity { code, detail }
            | IdentityExists { code, detail }
            | InvalidKey { code, detail }
            | InvalidArgument { code, detail }
            | UnknownContact { code, detail }
            | UnknownConversation { code, detail }
            | UnknownMessage { code, detail }
            | UnknownRelay { code, detail }
            | NameTaken { code, detail }
            | MessageTooLarge { code, detail }
            | NotAuthor { code, detail }
            | NoRelays { code, detail }
            | KeyStore { code, detail }
            | Storage { code, detail }
            | Protocol { code, detail }
            | ShuttingDown { code, detail }
            | AttachmentTampered { code, detail }
            | AttachmentTruncated { code, detail }
            | AttachmentWrongKey { code, detail }
            | AttachmentMismatch { code, detail }
            | AttachmentMalformed { code, detail }
            | TransparentOff { code, detail }
            | TransparentUnavailable { code, detail }
            | UnknownCall { code, detail }
            | CallState { code, detail }
            | CallBusy { code, detail } => (code, detail),
        }
    }
}

/// The refusals of a downloaded attachment, as typed exceptions; the code is the engine's.
fn attachment_refusal(e: &CoreError, code: &str, detail: &str) -> Option<JasperError> {
    let (code, detail) = (code.to_owned(), detail.to_owned());
    Some(match e {
        CoreError::AttachmentTampered { .. } => JasperError::AttachmentTampered { code, detail },
        CoreError::AttachmentTruncated => JasperError::AttachmentTruncated { code, detail },
        CoreError::AttachmentWrongKey => JasperError::AttachmentWrongKey { code, detail },
        CoreError::AttachmentHashMismatch | CoreError::AttachmentSizeMismatch { .. } => {
            JasperError::AttachmentMismatch { code, detail }
        }
        CoreError::MalformedAttachment(_) => JasperError::AttachmentMalformed { code, detail },
        _ => return None,
    })
}

impl From<EngineError> for JasperError {
    fn from(e: EngineError) -> Self {
        let detail = e.to_string();
        if let EngineError::Protocol(inner) = &e
            && let Some(refusal) = attachment_refusal(inner, e.code(), &detail)
        {
            return refusal;
        }
        let code = e.code().to_owned();
        match e {
            EngineError::NoIdentity => JasperError::NoIdentity { code, detail },
            EngineError::IdentityExists => JasperError::IdentityExists { code, detail },
            EngineError::InvalidKey(_) => JasperError::InvalidKey { code, detail },
            EngineError::InvalidArgument(_) => JasperError::InvalidArgument { code, detail },
            EngineError::UnknownContact(_) => JasperError::UnknownContact { code, detail },
            EngineError::UnknownConversation(_) => {
                JasperError::UnknownConversation { code, detail }
            }
            EngineError::UnknownMessage(_) => JasperError::UnknownMessage { code, detail },
            EngineError::UnknownRelay(_) => JasperError::UnknownRelay { code, detail },
            EngineError::NameTaken(_) => JasperError::NameTaken { code, detail },
            EngineError::MessageTooLarge { .. } => JasperError::MessageTooLarge { code, detail },
            EngineError::NotAuthor(_) => JasperError::NotAuthor { code, detail },
            EngineError::NoRelays => JasperError::NoRelays { code, detail },
            EngineError::KeyStore(_) => JasperError::KeyStore { code, detail },
            EngineError::Storage(_) => JasperError::Storage { code, detail },
            EngineError::Protocol(_) => JasperError::Protocol { code, detail },
            EngineError::ShuttingDown => JasperError::ShuttingDown { code, detail },
            EngineError::TransparentOff(_) => JasperError::TransparentOff { code, detail },
            EngineError::TransparentUnavailable(_) => {
                JasperError::TransparentUnavailable { code, detail }
            }
            EngineError::UnknownCall(_) => JasperError::UnknownCall { code, detail },
            EngineError::CallState(_) => JasperError::CallState { code, detail },
            EngineError::CallBusy => JasperError::CallBusy { code, detail },
        }
    }
}

/// An exception the app's `SecretStore` threw that is not a `JasperError` (an Android
/// `KeyStoreException`, a Swift `Error`, a Python `OSError`): a key-store failure, with the
/// exception's text as the detail.
impl From<uniffi::UnexpectedUniFFICallbackError> for JasperError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        JasperError::key_store(e.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_error_keeps_its_code_and_message() {
        let cases = [
            EngineError::NoIdentity,
            EngineError::IdentityExists,
            EngineError::InvalidKey("k".into()),
            EngineError::InvalidArgument("a".into()),
            EngineError::UnknownContact("bob".into()),
            EngineError::UnknownConversation("#9".into()),
            EngineError::UnknownMessage("m".into()),
            EngineError::UnknownRelay("r:1".into()),
            EngineError::NameTaken("bob".into()),
            EngineError::MessageTooLarge { len: 2, max: 1 },
            EngineError::NotAuthor("edit"),
            EngineError::NoRelays,
            EngineError::KeyStore("gone".into()),
            EngineError::Storage("disk".into()),
            EngineError::ShuttingDown,
            EngineError::TransparentOff("x".into()),
            EngineError::TransparentUnavailable("x".into()),
            EngineError::UnknownCall("c".into()),
            EngineError::CallState("ended".into()),
            EngineError::CallBusy,
        ];
        for e in cases {
            let (code, message) = (e.code(), e.to_string());
            let mapped = JasperError::from(e);
            assert_eq!(mapped.error_code(), code);
            assert_eq!(mapped.error_detail(), message);
            assert_eq!(mapped.to_string(), message);
        }
        assert!(matches!(
            JasperError::from(EngineError::UnknownContact("bob".into())),
            JasperError::UnknownContact { .. }
        ));
        let tampered = JasperError::from(EngineError::Protocol(CoreError::AttachmentTampered {
            chunk: 3,
        }));
        assert!(matches!(tampered, JasperError::AttachmentTampered { .. }));
        assert_eq!(tampered.error_code(), "attachment_tampered");
        assert_eq!(
            tampered.error_detail(),
            "protocol: attachment chunk 3 was modified"
        );
        let other = JasperError::from(EngineError::Protocol(CoreError::AttachmentIo("x".into())));
        assert_eq!(other.error_code(), "protocol");
    }

    #[test]
    fn a_foreign_exception_is_a_key_store_error() {
        let e = JasperError::from(uniffi::UnexpectedUniFFICallbackError::new("locked"));
        assert_eq!(e.error_code(), "key_store");
        assert_eq!(e.error_detail(), "locked");
    }
}
