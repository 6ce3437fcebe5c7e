//! The daemon's own failures (start-up and serving); API call failures are engine errors,
//! mapped to gRPC statuses in [`crate::status`].

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A bad flag, environment variable or TOML setting.
    #[error("configuration: {0}")]
    Config(String),
    /// The socket could not be prepared or bound, or another daemon is live on it.
    #[error("socket {path}: {reason}")]
    Socket { path: String, reason: String },
    #[error("key store: {0}")]
    KeyStore(#[from] jasper_keystore::KeyStoreError),
    #[error("engine: {0}")]
    Engine(#[from] jasper_engine::EngineError),
    #[error("serving: {0}")]
    Serve(String),
}

impl DaemonError {
    /// Exit status of `jasperd`: 2 for configuration mistakes, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) => 2,
            _ => 1,
        }
    }
}
