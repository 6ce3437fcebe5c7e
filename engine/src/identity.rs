//! This client's identity: its RSA key pair, the private half in the platform's secret store
//! (never in the database), the public half in the database's meta table.

use std::sync::Arc;

use jasper_core::PrivateKey;

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::model::*;
use crate::secrets::SecretStore;
use crate::store::Db;

/// `engine.identity()`: create, import, show and export the key pair.
#[derive(Clone)]
pub struct Identity {
    pub(crate) engine: Engine,
}

impl Identity {
    pub async fn create(&self) -> Result<IdentityInfo> {
        if self.engine.inner.db.meta("public_key")?.is_some() {
            return Err(EngineError::IdentityExists);
        }
        let key = tokio::task::spawn_blocking(PrivateKey::generate)
            .await
            .map_err(|e| EngineError::Storage(format!("key generation task: {e}")))??;
        self.install(key).await
    }

    pub async fn import(&self, pkcs8_pem: &str) -> Result<IdentityInfo> {
        let key = PrivateKey::from_pkcs8_pem(pkcs8_pem)
            .map_err(|e| EngineError::InvalidKey(e.to_string()))?;
        if let Some(existing) = self.engine.inner.db.meta("public_key")? {
            return if existing == key.public_key().to_text() {
                self.info()
            } else {
                Err(EngineError::IdentityExists)
            };
        }
        self.install(key).await
    }

    async fn install(&self, key: PrivateKey) -> Result<IdentityInfo> {
        let pem = key.to_pkcs8_pem();
        let account = self.engine.inner.account.clone();
        let saved = pem.clone();
        // Read it back: a key store that silently drops writes must fail here, not later.
        let back = blocking_secrets(&self.engine.inner.secrets, move |s| {
            s.save(&account, &saved)?;
            s.load(&account)
        })
        .await?;
        if back.as_deref() != Some(pem.as_str()) {
            return Err(EngineError::KeyStore(
                "the key store did not return the key just saved".into(),
            ));
        }
        let public = key.public_key().to_text().to_owned();
        *self.engine.inner.identity.write() = Some(key);
        let info = self.info()?;
        let event = EventKind::IdentityChanged {
            identity: info.clone(),
        };
        // A write like any other: its fsync off the runtime (engine.rs, `off_runtime`).
        self.engine
            .off_runtime(move |engine| {
                engine.commit(|tx| {
                    Db::set_meta(tx, "public_key", &public)?;
                    Db::push_event(tx, &event)?;
                    Ok(())
                })
            })
            .await?;
        self.engine.inner.identity_ready.notify_waiters();
        Ok(info)
    }

    pub fn info(&self) -> Result<IdentityInfo> {
        let key = self.engine.me()?.public_key();
        Ok(IdentityInfo {
            public_key: key.to_text().to_owned(),
            fingerprint: hex::encode(key.fingerprint()),
            key_store: self.engine.inner.secrets.kind(),
        })
    }

    /// The private key as PKCS#8 PEM: only on explicit request.
    pub fn export(&self) -> Result<String> {
        Ok(self.engine.me()?.to_pkcs8_pem())
    }
}

/// Key stores block (D-Bus round trips, some with a runtime of their own): never on a
/// runtime thread.
pub(crate) async fn blocking_secrets<T: Send + 'static>(
    secrets: &Arc<dyn SecretStore>,
    f: impl FnOnce(&dyn SecretStore) -> std::result::Result<T, String> + Send + 'static,
) -> Result<T> {
    let secrets = secrets.clone();
    tokio::task::spawn_blocking(move || f(secrets.as_ref()))
        .await
        .map_err(|e| EngineError::KeyStore(format!("key store task failed: {e}")))?
        .map_err(EngineError::KeyStore)
}
