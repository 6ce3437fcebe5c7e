//! The OS keyring (`jasper-keystore`) as the engine's [`SecretStore`].

use jasper_engine::SecretStore;
use jasper_keystore::KeyStore;

/// Adapts [`KeyStore`] to the engine's trait. Every call blocks (D-Bus or a syscall); the
/// daemon makes the engine calls that reach it from blocking threads.
pub struct KeyringSecrets {
    store: KeyStore,
}

impl KeyringSecrets {
    pub fn new(store: KeyStore) -> Self {
        Self { store }
    }
}

impl SecretStore for KeyringSecrets {
    fn kind(&self) -> String {
        self.store.kind().to_string()
    }

    fn save(&self, account: &str, secret: &str) -> Result<(), String> {
        self.store.save(account, secret).map_err(|e| e.to_string())
    }

    fn load(&self, account: &str) -> Result<Option<String>, String> {
        self.store.load(account).map_err(|e| e.to_string())
    }

    fn delete(&self, account: &str) -> Result<(), String> {
        self.store.delete(account).map_err(|e| e.to_string())
    }
}
