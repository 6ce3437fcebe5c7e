//! Where `jasperd` listens unless told otherwise: the daemon binds there and clients look there.

use std::path::{Path, PathBuf};

/// File name of the socket, under `$XDG_RUNTIME_DIR/jasper/` or the data directory.
pub const SOCKET_FILE: &str = "jasperd.sock";

/// The default socket: `$XDG_RUNTIME_DIR/jasper/jasperd.sock`, else `DATA_DIR/jasperd.sock`
/// (the CLI, which knows no data directory, then has none and asks for `--socket`).
pub fn default_socket_path(data_dir: Option<&Path>) -> Option<PathBuf> {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("jasper").join(SOCKET_FILE)),
        None => data_dir.map(|d| d.join(SOCKET_FILE)),
    }
}
