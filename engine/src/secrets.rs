//! Where the private key lives. The daemon passes the OS keyring (`jasper-keystore`); mobile
//! apps pass the platform's secure store through the bindings.

use std::collections::HashMap;

use parking_lot::Mutex;

/// A place to keep the identity's private key (PKCS#8 PEM). Calls may block (D-Bus round
/// trips): the engine makes them off its runtime threads.
pub trait SecretStore: Send + Sync {
    /// Short name of the store, e.g. `secret-service`.
    fn kind(&self) -> String;
    fn save(&self, account: &str, secret: &str) -> Result<(), String>;
    fn load(&self, account: &str) -> Result<Option<String>, String>;
    fn delete(&self, account: &str) -> Result<(), String>;
}

/// Keeps secrets in this process's memory only: nothing reaches a disk or a keyring, and the
/// identity is gone when the process exits. For tests, benchmarks and throwaway identities.
#[derive(Default)]
pub struct EphemeralSecretStore(Mutex<HashMap<String, String>>);

impl SecretStore for EphemeralSecretStore {
    fn kind(&self) -> String {
        "ephemeral".into()
    }
    fn save(&self, account: &str, secret: &str) -> Result<(), String> {
        self.0.lock().insert(account.to_owned(), secret.to_owned());
        Ok(())
    }
    fn load(&self, account: &str) -> Result<Option<String>, String> {
        Ok(self.0.lock().get(account).cloned())
    }
    fn delete(&self, account: &str) -> Result<(), String> {
        self.0.lock().remove(account);
        Ok(())
    }
}
