//! # jasper-daemon
//!
//! `jasperd` serves the Jasper engine over a local gRPC API (`jasper.v1`, see `proto/`) on a
//! Unix socket, optionally on loopback TCP with a bearer token. A thin shell: every decision is
//! the engine's. Its command line client, `jasper`, is the `jasper-cli` crate, which talks to it
//! through `jasper-client` without linking the engine.

pub mod config;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod secrets;
pub mod server;
pub mod service;
pub mod status;
pub mod transparent;

pub use config::DaemonConfig;
pub use error::DaemonError;
