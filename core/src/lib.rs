//! # jasper-core
//!
//! The Jasper v1.0.0 protocol as a library with no I/O: wire types ([`protocol`]), the packet
//! hash ([`hash`]), RSA-4096 keys in their canonical text form ([`key`]) and the sealed
//! envelope ([`envelope`]), and
//! encrypted attachments with their Markdown links ([`attachment`]). The relay, the daemon and the mobile bindings all build on it.

pub mod addr;
pub mod attachment;
pub mod envelope;
pub mod error;
pub mod hash;
pub mod key;
pub mod protocol;
pub mod reconcile;
pub mod stamp;

pub use envelope::{Opened, open, seal};
pub use error::{Error, Result};
pub use hash::MessageHash;
/// `protocol_version!()` and `version_text!()`: the protocol's version as a literal, and a
/// program's `--version` naming it (defined with the model, which every shell shares).
pub use jasper_model::{protocol_version, version_text};
pub use key::{PrivateKey, PublicKey};
