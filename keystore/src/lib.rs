//! The only place a Jasper private key is kept: the operating system's keyring, never a file.
//!
//! One [`KeyStore`] wraps one `keyring-core` credential store, chosen at start-up (Secret Service
//! or kernel keyutils on Linux, the native stores elsewhere). Entries are addressed by service
//! `jasper` and an account name that the engine derives from its data directory, so several
//! daemons of one user never share an entry. Every call is blocking (D-Bus round trips or
//! syscalls): from async code, run it on a blocking thread.

mod error;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(any(target_os = "macos", target_os = "windows"))]
mod native;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use keyring_core::{CredentialStore, Entry};
use zeroize::Zeroize;

pub use error::KeyStoreError;
use error::one_line;

/// The service name of every entry this crate writes (Secret Service attribute `service`,
/// part of the keyutils key description `keyring:<account>@jasper`).
pub const SERVICE: &str = "jasper";

/// Longest account name accepted: far below every store's limit (keyutils descriptions take
/// 4095 bytes, Windows user names 513 characters), and no data-directory digest needs more.
const MAX_ACCOUNT_BYTES: usize = 256;

/// Which OS store holds the keys. Parsed from and displayed as the `--key-store` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStoreKind {
    /// The freedesktop Secret Service (gnome-keyring, KWallet) on the session D-Bus.
    SecretService,
    /// The Linux kernel key retention service, linked into the user's persistent keyring.
    Keyutils,
    /// The macOS login Keychain.
    #[cfg(target_os = "macos")]
    Keychain,
    /// The Windows Credential Manager.
    #[cfg(target_os = "windows")]
    CredentialManager,
}

impl KeyStoreKind {
    /// The stores this build knows, in the order of their names in messages.
    const ALL: &'static [KeyStoreKind] = &[
        KeyStoreKind::SecretService,
        KeyStoreKind::Keyutils,
        #[cfg(target_os = "macos")]
        KeyStoreKind::Keychain,
        #[cfg(target_os = "windows")]
        KeyStoreKind::CredentialManager,
    ];

    /// The name used on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStoreKind::SecretService => "secret-service",
            KeyStoreKind::Keyutils => "keyutils",
            #[cfg(target_os = "macos")]
            KeyStoreKind::Keychain => "keychain",
            #[cfg(target_os = "windows")]
            KeyStoreKind::CredentialManager => "credential-manager",
        }
    }
}

impl fmt::Display for KeyStoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyStoreKind {
    type Err = KeyStoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| KeyStoreError::UnknownKind {
                given: s.to_owned(),
                expected: Self::ALL
                    .iter()
                    .map(|kind| kind.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// An open OS key store. Cheap to share (`Send + Sync`); every method is a blocking call.
pub struct KeyStore {
    kind: KeyStoreKind,
    store: Arc<CredentialStore>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Opens a key store.
    ///
    /// `None` = default: Secret Service when a session bus with `org.freedesktop.secrets` is
    /// reachable, else keyutils (logged either way). On macOS and Windows the default is the
    /// native store. An explicit choice that is unavailable is an error, never a silent fallback.
    pub fn open(kind: Option<KeyStoreKind>) -> Result<Self, KeyStoreError> {
        let (kind, store) = match kind {
            Some(kind) => (kind, open_kind(kind)?),
            None => open_default()?,
        };
        Ok(Self { kind, store })
    }

    /// The store this handle writes to.
    pub fn kind(&self) -> KeyStoreKind {
        self.kind
    }

    /// Stores `secret` under service `jasper` and `account`, replacing what was there.
    pub fn save(&self, account: &str, secret: &str) -> Result<(), KeyStoreError> {
        if secret.is_empty() {
            return Err(KeyStoreError::EmptySecret);
        }
        let entry = self.entry(account)?;
        // As bytes, not `set_password`: the Windows store would widen a password to UTF-16.
        entry
            .set_secret(secret.as_bytes())
            .map_err(|e| self.map_error(account, e))?;
        tracing::debug!(store = %self.kind, account, "key saved");
        Ok(())
    }

    /// Reads the secret stored for `account`; `None` when there is none.
    pub fn load(&self, account: &str) -> Result<Option<String>, KeyStoreError> {
        let entry = self.entry(account)?;
        match entry.get_secret() {
            Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|e| {
                e.into_bytes().zeroize();
                KeyStoreError::NotText {
                    kind: self.kind,
                    account: account.to_owned(),
                }
            }),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(self.map_error(account, e)),
        }
    }

    /// Removes the entry for `account`. Succeeds when there is none.
    pub fn delete(&self, account: &str) -> Result<(), KeyStoreError> {
        let entry = self.entry(account)?;
        match entry.delete_credential() {
            Ok(()) => {
                tracing::debug!(store = %self.kind, account, "key deleted");
                Ok(())
            }
            Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(self.map_error(account, e)),
        }
    }

    fn entry(&self, account: &str) -> Result<Entry, KeyStoreError> {
        validate_account(account)?;
        #[cfg(target_os = "linux")]
        if self.kind == KeyStoreKind::Keyutils {
            linux::require_own_session_keyring()?;
        }
        let label = format!("Jasper private key ({account})");
        let mut modifiers = HashMap::new();
        // Only the Secret Service takes a label (shown in Seahorse / KWallet); keyutils and the
        // native stores reject modifiers they do not know.
        if self.kind == KeyStoreKind::SecretService {
            modifiers.insert("label", label.as_str());
        }
        Entry::new_in_store_with_modifiers(&self.store, SERVICE, account, &modifiers)
            .map_err(|e| self.map_error(account, e))
    }

    /// Maps a `keyring-core` error to ours. Never formats the variants that carry secret bytes.
    fn map_error(&self, account: &str, err: keyring_core::Error) -> KeyStoreError {
        use keyring_core::Error as E;
        let kind = self.kind;
        match err {
            E::NoStorageAccess(cause) => KeyStoreError::AccessDenied {
                kind,
                reason: access_denied_reason(kind, &*cause),
            },
            E::PlatformFailure(cause) => platform_failure(kind, &*cause),
            E::BadEncoding(mut bytes) | E::BadDataFormat(mut bytes, _) => {
                bytes.zeroize();
                KeyStoreError::NotText {
                    kind,
                    account: account.to_owned(),
                }
            }
            E::TooLong(what, limit) => KeyStoreError::TooLong { kind, what, limit },
            E::Ambiguous(entries) => KeyStoreError::Ambiguous {
                kind,
                account: account.to_owned(),
                count: entries.len(),
            },
            E::Invalid(what, reason) => {
                KeyStoreError::Backend(one_line(format!("{kind}: invalid {what}: {reason}")))
            }
            E::NoEntry => KeyStoreError::Backend(format!(
                "{kind}: the entry for account {account:?} vanished during the operation"
            )),
            other => KeyStoreError::Backend(one_line(format!("{kind}: {other}"))),
        }
    }
}

fn validate_account(account: &str) -> Result<(), KeyStoreError> {
    let reason = if account.is_empty() {
        "it is empty"
    } else if account.len() > MAX_ACCOUNT_BYTES {
        "it is longer than 256 bytes"
    } else if account.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    Err(KeyStoreError::InvalidAccount {
        account: account.chars().take(64).collect(),
        reason,
    })
}

#[cfg(target_os = "linux")]
use linux::{access_denied_reason, open_default, open_kind, platform_failure};
#[cfg(any(target_os = "macos", target_os = "windows"))]
use native::{access_denied_reason, open_default, open_kind, platform_failure};

/// Prepares the process for the keyutils store: makes sure the calling thread has a session
/// keyring of its own, joining a fresh anonymous one when it has none (a service or CI job not
/// started through PAM) or one owned by another user.
///
/// Linux keeps the session keyring per thread and new threads inherit their creator's, so call
/// this at the top of `main`, before any thread or the tokio runtime starts. Idempotent and cheap
/// (two or three syscalls); a no-op where keyutils does not exist. Keys themselves live in the
/// per-user persistent keyring, so a fresh session keyring loses nothing.
pub fn prepare_process_for_keyutils() -> Result<(), KeyStoreError> {
    #[cfg(target_os = "linux")]
    {
        linux::prepare_session_keyring()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
compile_error!("jasper-keystore supports Linux, macOS and Windows only");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_display_their_cli_names() {
        for (name, kind) in [
            ("secret-service", KeyStoreKind::SecretService),
            ("keyutils", KeyStoreKind::Keyutils),
        ] {
            assert_eq!(name.parse::<KeyStoreKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), name);
        }
        let err = "kwallet".parse::<KeyStoreKind>().unwrap_err();
        assert!(
            matches!(&err, KeyStoreError::UnknownKind { given, .. } if given == "kwallet"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("secret-service, keyutils"),
            "{err}"
        );
    }

    #[test]
    fn key_store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<KeyStore>();
        assert_send_sync::<KeyStoreError>();
    }

    #[test]
    fn account_names_are_checked() {
        assert!(validate_account("jasper-3f2a9c").is_ok());
        assert!(validate_account("user@host:/data dir").is_ok());
        for bad in ["", "a\nb", "nul\0", &"x".repeat(257)] {
            assert!(
                matches!(
                    validate_account(bad),
                    Err(KeyStoreError::InvalidAccount { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn lower_layer_messages_become_one_line() {
        assert_eq!(one_line("a\n  b\tc \n"), "a b c");
    }
}
