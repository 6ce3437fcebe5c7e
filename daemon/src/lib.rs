//! # jasper-daemon
//!
//! `jasperd` serves the Jasper engine over a local gRPC API (`jasper.v1`, see `proto/`) on a
//! Unix socket, optionally on loopback TCP with a bearer token; `jasper` is its command line
//! client. Both are thin shells: every decision is the engine's.

pub mod cli;
pub mod client;
pub mod config;
pub mod convert;
pub mod error;
pub mod listener;
pub mod secrets;
pub mod server;
pub mod service;
pub mod status;
pub mod transparent;

pub use config::DaemonConfig;
pub use error::DaemonError;
pub use status::ApiError;
