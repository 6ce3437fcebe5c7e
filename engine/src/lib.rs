//! # jasper-engine
//!
//! The Jasper client as a library: identity (private key in a [`SecretStore`]), local history
//! in SQLite, relays chosen for anonymity and load, sending through an outbox with delivery
//! checks, receiving by long-poll, groups, several logins of one key, and a durable event log.
//! The daemon (gRPC + CLI) and the mobile bindings are thin shells around [`Engine`], whose
//! parts are reached through handles: [`Engine::messages`], [`Engine::relays`], ...

pub mod attachments;
pub mod config;
pub mod contacts;
pub mod conversations;
pub mod engine;
pub mod error;
pub mod events;
pub mod groups;
pub mod identity;
pub mod messages;
pub mod model;
mod notifications;
pub mod outbox;
pub mod relays;
pub mod secrets;
pub mod store;
pub mod transparent;
mod transparent_host;

pub use attachments::Attachments;
pub use config::EngineConfig;
pub use contacts::Contacts;
pub use conversations::Conversations;
pub use engine::Engine;
pub use error::{EngineError, Result};
pub use events::Events;
pub use groups::{Groups, MAX_GROUP_MEMBERS};
pub use identity::Identity;
pub use messages::Messages;
pub use model::*;
pub use outbox::Outbox;
pub use relays::Relays;
pub use secrets::{EphemeralSecretStore, SecretStore};
pub use transparent::{Calls, Transparent, TransparentConfig};
