//! Key storage: the app implements `SecretStore` over the platform's secure store (Android
//! Keystore, iOS Keychain) and the engine keeps the identity's private key there, never in its
//! database. This module adapts that foreign trait to the engine's own `SecretStore`.

use std::sync::Arc;

use jasper_engine as engine;

use crate::error::JasperError;

/// Where the identity's private key (PKCS#8 PEM) lives, implemented by the app.
///
/// The engine calls `save`, `load` and `delete` from its own blocking threads (never the app's
/// thread, never its async workers): `load` once at `open`, `save` then `load` (to check the
/// write) when an identity is created or imported. `kind` may run on any thread. `account`
/// names the key of one data directory. Throwing any exception makes the call fail with
/// `JasperError.KeyStore` carrying the exception's text.
#[uniffi::export(with_foreign)]
pub trait SecretStore: Send + Sync {
    /// Short name of the store (`android-keystore`, `ios-keychain`), reported in `IdentityInfo`.
    fn kind(&self) -> String;
    /// Stores `secret` under `account`, replacing what was there.
    fn save(&self, account: String, secret: String) -> Result<(), JasperError>;
    /// The secret under `account`, or none.
    fn load(&self, account: String) -> Result<Option<String>, JasperError>;
    /// Removes the secret under `account` (no error when there is none).
    fn delete(&self, account: String) -> Result<(), JasperError>;
}

/// A `SecretStore` in this process's memory: the identity is gone when the process exits. For
/// tests and throwaway identities; apps pass their platform store.
#[uniffi::export]
pub fn memory_secret_store() -> Arc<dyn SecretStore> {
    Arc::new(MemorySecretStore(engine::EphemeralSecretStore::default()))
}

struct MemorySecretStore(engine::EphemeralSecretStore);

impl SecretStore for MemorySecretStore {
    fn kind(&self) -> String {
        engine::SecretStore::kind(&self.0)
    }
    fn save(&self, account: String, secret: String) -> Result<(), JasperError> {
        engine::SecretStore::save(&self.0, &account, &secret).map_err(JasperError::key_store)
    }
    fn load(&self, account: String) -> Result<Option<String>, JasperError> {
        engine::SecretStore::load(&self.0, &account).map_err(JasperError::key_store)
    }
    fn delete(&self, account: String) -> Result<(), JasperError> {
        engine::SecretStore::delete(&self.0, &account).map_err(JasperError::key_store)
    }
}

/// The app's store as the engine's `SecretStore`: errors become their message, which the engine
/// reports as `key_store` errors.
pub(crate) struct ForeignSecretStore(pub(crate) Arc<dyn SecretStore>);

impl engine::SecretStore for ForeignSecretStore {
    fn kind(&self) -> String {
        self.0.kind()
    }
    fn save(&self, account: &str, secret: &str) -> Result<(), String> {
        self.0
            .save(account.to_owned(), secret.to_owned())
            .map_err(|e| e.error_detail())
    }
    fn load(&self, account: &str) -> Result<Option<String>, String> {
        self.0
            .load(account.to_owned())
            .map_err(|e| e.error_detail())
    }
    fn delete(&self, account: &str) -> Result<(), String> {
        self.0
            .delete(account.to_owned())
            .map_err(|e| e.error_detail())
    }
}
