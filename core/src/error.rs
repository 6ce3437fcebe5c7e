//! The one error type of the protocol core. Each variant names what was wrong, so the
//! relay, the daemon and the bindings can map it to a stable code without parsing text.

/// Everything that can go wrong while parsing, validating, sealing or opening Jasper data.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// A field that must be base64 (standard alphabet, padded) is not.
    #[error("{field} is not valid base64 (standard alphabet, with padding)")]
    InvalidBase64 { field: &'static str },

    /// A hash is not 64 hexadecimal characters.
    #[error("{field} is not a SHA-256 hash (64 hexadecimal characters)")]
    InvalidHash { field: &'static str },

    /// The `hash` field is not the SHA-256 of the `message` field.
    #[error("hash {claimed} does not match the SHA-256 of the message ({actual})")]
    HashMismatch { claimed: String, actual: String },

    /// A public key is not in the canonical text form (base64 of the DER SubjectPublicKeyInfo).
    #[error("{field} is not a public key in canonical form: {reason}")]
    InvalidPublicKey { field: &'static str, reason: String },

    /// A key is RSA but not 4096 bits long.
    #[error("{field} is a {bits}-bit RSA key; Jasper keys are RSA-4096")]
    WrongKeySize { field: &'static str, bits: usize },

    /// A private key could not be parsed or generated.
    #[error("invalid private key: {0}")]
    InvalidPrivateKey(String),

    /// A field is empty where content is required.
    #[error("{field} must not be empty")]
    EmptyField { field: &'static str },

    /// A field is longer than the protocol allows.
    #[error("{field} is {len} bytes, more than the limit of {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },

    /// The inner message is not the JSON object the spec describes.
    #[error("inner message is malformed: {0}")]
    MalformedMessage(String),

    /// A sealed envelope is structurally wrong (truncated, unknown version, bad lengths).
    #[error("envelope is malformed: {0}")]
    MalformedEnvelope(String),

    /// The envelope was not encrypted to this key, or was tampered with.
    #[error("envelope cannot be decrypted with this key (not addressed to it, or tampered with)")]
    DecryptionFailed,

    /// The envelope decrypted but its signature does not verify against the claimed sender.
    #[error("signature does not verify for the claimed sender")]
    BadSignature,

    /// The signature is valid but the sender did not address this message to this recipient.
    #[error("the sender did not address this message to this recipient (forwarded packet)")]
    NotAddressedToRecipient,

    /// The packet's `recipient` field names another key than the one trying to open it.
    #[error("packet is addressed to another key")]
    WrongRecipient,

    /// The inner message's `sender` is not the key that is sealing it.
    #[error("the inner message's sender is not the sealing key")]
    SenderMismatch,

    /// More distinct recipients than one signature may cover.
    #[error("{count} recipients, more than the limit of {max}")]
    TooManyRecipients { count: usize, max: usize },

    /// An attachment link is not in the format of docs/protocol.md, "Attachments".
    #[error("attachment link is invalid: {0}")]
    InvalidAttachmentLink(String),

    /// Encrypted attachment data is structurally wrong (not one, unknown version, bad chunk size).
    #[error("encrypted attachment is malformed: {0}")]
    MalformedAttachment(String),

    /// The attachment's header says it was encrypted with another key than the link's.
    #[error("the attachment was encrypted with another key")]
    AttachmentWrongKey,

    /// A chunk of the attachment fails authentication (modified, or moved from elsewhere).
    #[error("attachment chunk {chunk} was modified")]
    AttachmentTampered { chunk: u64 },

    /// The attachment ends before its last chunk (chunks were cut off).
    #[error("attachment is truncated")]
    AttachmentTruncated,

    /// The decrypted attachment is not the size the link states.
    #[error("attachment is {actual} bytes, the link says {expected}")]
    AttachmentSizeMismatch { expected: u64, actual: u64 },

    /// The decrypted attachment's SHA-256 is not the link's.
    #[error("attachment does not match the SHA-256 in its link")]
    AttachmentHashMismatch,

    /// Reading or writing attachment data failed.
    #[error("attachment I/O failed: {0}")]
    AttachmentIo(String),

    /// The system's cryptographic library failed (random source, key generation).
    #[error("cryptographic failure: {0}")]
    Crypto(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
