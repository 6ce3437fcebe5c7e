//! The one error type of the key store. Each variant names what went wrong so the engine can map
//! it to a stable API code; messages are one line and never contain secret material.

use crate::KeyStoreKind;

/// Everything that can go wrong while opening a key store or saving, loading or deleting a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The store cannot be used by this process: no session bus or no Secret Service on it,
    /// keyutils blocked (a container's seccomp profile), or a store of another platform.
    #[error("the {kind} key store is unavailable: {reason}")]
    Unavailable { kind: KeyStoreKind, reason: String },

    /// The store is there but refused the operation: a locked Secret Service collection, or a
    /// keyutils session keyring this process does not own.
    #[error("the {kind} key store denied access: {reason}")]
    AccessDenied { kind: KeyStoreKind, reason: String },

    /// Saving would exceed the user's quota in the store (keyutils: 20,000 bytes for non-root).
    #[error("the {kind} key store is over its quota: {reason}")]
    QuotaExceeded { kind: KeyStoreKind, reason: String },

    /// The secret or the account name is longer than the store accepts.
    #[error("the {what} is too long for the {kind} key store (at most {limit} bytes)")]
    TooLong {
        kind: KeyStoreKind,
        what: String,
        limit: u32,
    },

    /// The account name is empty, too long or contains control characters.
    #[error("invalid key store account name {account:?}: {reason}")]
    InvalidAccount {
        account: String,
        reason: &'static str,
    },

    /// An empty secret was given to `save` (keyutils cannot store one, so no store takes one).
    #[error("the secret to store must not be empty")]
    EmptySecret,

    /// The stored entry is not UTF-8 text (it was written by something else).
    #[error("the {kind} entry for account {account:?} is not UTF-8 text")]
    NotText { kind: KeyStoreKind, account: String },

    /// More than one entry matches the account (Secret Service items written by something else
    /// with the same attributes); nothing is read or changed until the user removes the extra.
    #[error("the {kind} key store holds {count} entries for account {account:?}; expected one")]
    Ambiguous {
        kind: KeyStoreKind,
        account: String,
        count: usize,
    },

    /// A key store name that is not one of this platform's stores.
    #[error("unknown key store {given:?}; expected one of: {expected}")]
    UnknownKind { given: String, expected: String },

    /// Any other failure of the underlying store; the text names the store and the cause.
    #[error("key store failure: {0}")]
    Backend(String),
}

/// Collapses a lower layer's message into one line, so every error stays a one-liner in logs
/// and API responses whatever D-Bus or the kernel reported.
pub(crate) fn one_line(text: impl std::fmt::Display) -> String {
    text.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
