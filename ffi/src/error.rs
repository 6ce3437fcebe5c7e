//! The bindings' one error enum: one variant per engine error code, so Kotlin, Swift and
//! Python get typed exceptions (`JasperException.UnknownContact`, `JasperError.UnknownContact`)
//! that carry the same stable `code` as the daemon's gRPC `ErrorInfo` reason.

use jasper_engine::EngineError;

/// Declares `JasperError` from one list of `Variant = "code"`: the variants (each with `code`
/// and `detail`, which the foreign exceptions keep), the variant of a code, and the fields of
/// any variant. The list is the only place a code is named here; `EngineError::code()` says
/// which one an engine error has.
macro_rules! jasper_error {
    ($($(#[doc = $doc:literal])+ $variant:ident = $code:literal,)+) => {
        /// Every failure the engine reports. Each variant carries `code`, the engine's stable
        /// machine-readable code (`unknown_contact`, ...), and `detail`, a human-readable message.
        /// (`detail`, not `message`: Kotlin exceptions already have a `message` property, which the
        /// generated code fills from both fields.)
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
        pub enum JasperError {
            $(
                $(#[doc = $doc])+
                #[error("{detail}")]
                $variant { code: String, detail: String },
            )+
        }

        impl JasperError {
            /// The variant of an engine code, carrying it. A code without a variant (an engine
            /// that gained one before this list did; the tests fail then) keeps its code under
            /// `Protocol`, the engine's catch-all.
            fn new(code: &str, detail: String) -> Self {
                match code {
                    $($code => JasperError::$variant { code: code.to_owned(), detail },)+
                    _ => JasperError::Protocol { code: code.to_owned(), detail },
                }
            }

            fn parts(&self) -> (&str, &str) {
                match self {
                    $(JasperError::$variant { code, detail })|+ => (code, detail),
                }
            }
        }
    };
}

jasper_error! {
    /// No identity yet: create or import one first.
    NoIdentity = "no_identity",
    /// This data directory already has an identity.
    IdentityExists = "identity_exists",
    /// A public or private key that does not parse.
    InvalidKey = "invalid_key",
    /// An argument out of range (empty message, bad name, bad relay address, ...).
    InvalidArgument = "invalid_argument",
    /// A name that is neither a contact nor a key.
    UnknownContact = "unknown_contact",
    /// No conversation, group or contact by that name, id or key.
    UnknownConversation = "unknown_conversation",
    /// No message with that id.
    UnknownMessage = "unknown_message",
    /// No relay with that address.
    UnknownRelay = "unknown_relay",
    /// Another contact already has that name.
    NameTaken = "name_taken",
    /// Content over `EngineConfig.max_message_bytes`.
    MessageTooLarge = "message_too_large",
    /// Only a message's author (or a group's creator) may do that.
    NotAuthor = "not_author",
    /// No relay is known: add one first.
    NoRelays = "no_relays",
    /// The secret store failed, or holds another key than this data directory's identity.
    /// Also what an exception thrown by the app's `SecretStore` becomes.
    KeyStore = "key_store",
    /// The local database failed.
    Storage = "storage",
    /// A protocol-level failure (a key or packet that does not verify).
    Protocol = "protocol",
    /// The engine was shut down.
    ShuttingDown = "shutting_down",
    /// A downloaded attachment failed authentication: its ciphertext was modified.
    AttachmentTampered = "attachment_tampered",
    /// A downloaded attachment ends before its last chunk.
    AttachmentTruncated = "attachment_truncated",
    /// A downloaded attachment was encrypted with another key than its link's.
    AttachmentWrongKey = "attachment_wrong_key",
    /// A decrypted attachment's size or SHA-256 is not what its link states.
    AttachmentMismatch = "attachment_mismatch",
    /// Encrypted attachment data is structurally wrong.
    AttachmentMalformed = "attachment_malformed",
    /// Transparent mode is not enabled on one side (or both) for that contact.
    TransparentOff = "transparent_off",
    /// The direct connection to the contact is down or did not come up.
    TransparentUnavailable = "transparent_unavailable",
    /// No call with that id.
    UnknownCall = "unknown_call",
    /// The call is not in a state that allows this (accepting an outgoing call, audio before
    /// it is answered, hanging up an ended call).
    CallState = "call_state",
    /// A call with this contact is already ringing or active.
    CallBusy = "call_busy",
}

impl JasperError {
    pub(crate) fn shutting_down() -> Self {
        EngineError::ShuttingDown.into()
    }

    /// A key-store failure with the store's own text as the detail (no "key store: " prefix).
    pub(crate) fn key_store(detail: impl Into<String>) -> Self {
        JasperError::new(EngineError::KeyStore(String::new()).code(), detail.into())
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

/// The variant is the one of the engine's code (a refused attachment download has its own codes,
/// told apart by the engine), the detail its message.
impl From<EngineError> for JasperError {
    fn from(e: EngineError) -> Self {
        JasperError::new(e.code(), e.to_string())
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
    use jasper_core::Error as CoreError;

    use super::*;

    /// One engine error of every variant (and every attachment refusal). The match has no
    /// wildcard, so a new `EngineError` variant fails to compile here until it is added to the
    /// list, and the test below then fails until its code has a `JasperError` variant.
    fn one_of_each() -> Vec<EngineError> {
        let all = vec![
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
            EngineError::Protocol(CoreError::AttachmentIo("x".into())),
            EngineError::Protocol(CoreError::AttachmentTampered { chunk: 3 }),
            EngineError::Protocol(CoreError::AttachmentTruncated),
            EngineError::Protocol(CoreError::AttachmentWrongKey),
            EngineError::Protocol(CoreError::AttachmentHashMismatch),
            EngineError::Protocol(CoreError::MalformedAttachment("x".into())),
            EngineError::ShuttingDown,
            EngineError::TransparentOff("x".into()),
            EngineError::TransparentUnavailable("x".into()),
            EngineError::UnknownCall("c".into()),
            EngineError::CallState("ended".into()),
            EngineError::CallBusy,
        ];
        for e in &all {
            match e {
                EngineError::NoIdentity
                | EngineError::IdentityExists
                | EngineError::InvalidKey(_)
                | EngineError::InvalidArgument(_)
                | EngineError::UnknownContact(_)
                | EngineError::UnknownConversation(_)
                | EngineError::UnknownMessage(_)
                | EngineError::UnknownRelay(_)
                | EngineError::NameTaken(_)
                | EngineError::MessageTooLarge { .. }
                | EngineError::NotAuthor(_)
                | EngineError::NoRelays
                | EngineError::KeyStore(_)
                | EngineError::Storage(_)
                | EngineError::Protocol(_)
                | EngineError::ShuttingDown
                | EngineError::TransparentOff(_)
                | EngineError::TransparentUnavailable(_)
                | EngineError::UnknownCall(_)
                | EngineError::CallState(_)
                | EngineError::CallBusy => {}
            }
        }
        all
    }

    /// The variant's name in the foreign languages' terms: `UnknownContact` for
    /// `unknown_contact`.
    fn variant_name(e: &JasperError) -> String {
        let debug = format!("{e:?}");
        debug[..debug.find(' ').unwrap_or(debug.len())].to_owned()
    }

    fn camel(code: &str) -> String {
        code.split('_')
            .map(|w| w[..1].to_uppercase() + &w[1..])
            .collect()
    }

    #[test]
    fn every_engine_error_keeps_its_code_and_message_in_the_variant_of_its_code() {
        for e in one_of_each() {
            let (code, message) = (e.code(), e.to_string());
            let mapped = JasperError::from(e);
            assert_eq!(mapped.error_code(), code);
            assert_eq!(mapped.error_detail(), message);
            assert_eq!(mapped.to_string(), message);
            assert_eq!(variant_name(&mapped), camel(code), "{mapped:?}");
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
    fn a_code_without_a_variant_keeps_its_code() {
        let e = JasperError::new("brand_new", "d".into());
        assert!(matches!(e, JasperError::Protocol { .. }));
        assert_eq!(e.error_code(), "brand_new");
    }

    #[test]
    fn a_foreign_exception_is_a_key_store_error() {
        let e = JasperError::from(uniffi::UnexpectedUniFFICallbackError::new("locked"));
        assert!(matches!(e, JasperError::KeyStore { .. }));
        assert_eq!(e.error_code(), "key_store");
        assert_eq!(e.error_detail(), "locked");
    }
}
