//! # jasper-engine
//!
//! The Jasper client as a library: identity (private key in a [`SecretStore`]), local history
//! in SQLite, relays chosen for anonymity and load, sending through an outbox with delivery
//! checks, receiving by long-poll, groups, several logins of one key, and a durable event log.
//! The daemon (gRPC + CLI) and the mobile bindings are thin shells around [`Engine`].

pub mod anonymity;
pub mod attachments;
pub mod config;
pub mod db;
pub mod engine;
pub mod error;
pub mod ipfs;
pub mod model;
pub mod relay_client;
pub mod secrets;
pub mod selection;
pub mod transparent;
pub mod witness;

pub use config::EngineConfig;
pub use engine::Engine;
pub use error::{EngineError, Result};
pub use model::*;
pub use secrets::{EphemeralSecretStore, SecretStore};
pub use transparent::TransparentConfig;
