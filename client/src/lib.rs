//! # jasper-client
//!
//! What any gRPC client of `jasperd` needs, without the engine: a connection over the daemon's
//! Unix socket, or its loopback TCP listener with the bearer token ([`Client`]); the socket's
//! default path ([`default_socket_path`]); and a failed call decoded into [`ApiError`], whose
//! `code` is the engine's stable reason from the status's `ErrorInfo`. The wire types and their
//! conversions to the model are `jasper-proto`'s, the model is `jasper-model`'s; both are
//! re-exported so that one dependency is enough.

mod connect;
mod error;
mod socket;

pub use connect::{BearerHeader, Client, Transport, connect_tcp, connect_unix};
pub use error::{ApiError, error_chain};
pub use jasper_model as model;
pub use jasper_proto as proto;
pub use socket::{SOCKET_FILE, default_socket_path};
