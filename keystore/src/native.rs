//! macOS and Windows: the platform's own store. Written against the store crates' documented
//! constructors but never compiled here: the project's machines build Linux only.

use std::error::Error as StdError;
use std::sync::Arc;

use keyring_core::CredentialStore;

use crate::{KeyStoreError, KeyStoreKind, one_line};

#[cfg(target_os = "macos")]
const NATIVE: KeyStoreKind = KeyStoreKind::Keychain;
#[cfg(target_os = "windows")]
const NATIVE: KeyStoreKind = KeyStoreKind::CredentialManager;

pub(crate) fn open_kind(kind: KeyStoreKind) -> Result<Arc<CredentialStore>, KeyStoreError> {
    if kind != NATIVE {
        return Err(KeyStoreError::Unavailable {
            kind,
            reason: format!("only on Linux; this platform's store is {NATIVE}"),
        });
    }
    #[cfg(target_os = "macos")]
    let store = apple_native_keyring_store::keychain::Store::new();
    #[cfg(target_os = "windows")]
    let store = windows_native_keyring_store::Store::new();
    let store: Arc<CredentialStore> = store.map_err(|e| KeyStoreError::Unavailable {
        kind,
        reason: one_line(e),
    })?;
    Ok(store)
}

pub(crate) fn open_default() -> Result<(KeyStoreKind, Arc<CredentialStore>), KeyStoreError> {
    let store = open_kind(NATIVE)?;
    tracing::info!(store = %NATIVE, "keys are kept in the platform's credential store");
    Ok((NATIVE, store))
}

pub(crate) fn access_denied_reason(
    _kind: KeyStoreKind,
    cause: &(dyn StdError + Send + Sync + 'static),
) -> String {
    one_line(cause)
}

pub(crate) fn platform_failure(
    kind: KeyStoreKind,
    cause: &(dyn StdError + Send + Sync + 'static),
) -> KeyStoreError {
    KeyStoreError::Backend(format!("{kind}: {}", one_line(cause)))
}
