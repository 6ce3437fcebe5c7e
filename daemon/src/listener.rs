//! Where the API is reachable: a Unix socket only this user can use (parent directory 0700
//! when we create it, socket 0600, and each connection's peer uid checked), and optionally
//! loopback TCP guarded by a bearer token.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use subtle::ConstantTimeEq;
use tokio::net::{UnixListener, UnixStream};
use tonic::{Code, Request, Status};

use crate::error::DaemonError;
use crate::status::status;

/// The bound socket file; removed on drop if it is still the one we created.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev_ino: Option<(u64, u64)>,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Only our own inode: a daemon started after us on the same path keeps its socket.
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && Some((meta.dev(), meta.ino())) == self.dev_ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the API socket. Call before any thread starts: the umask that makes the socket 0600
/// from its first moment is process-wide.
pub fn bind_unix(path: &Path) -> Result<(StdUnixListener, SocketFile), DaemonError> {
    let fail = |reason: String| DaemonError::Socket {
        path: path.display().to_string(),
        reason,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| fail(format!("cannot create {}: {e}", parent.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(fail(
                        "another jasperd is already serving on it; stop it or pass another --socket"
                            .into(),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(socket = %path.display(), "removing a stale socket");
                    std::fs::remove_file(path)
                        .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
                }
                Err(e) => return Err(fail(format!("cannot tell whether it is in use: {e}"))),
            }
        }
        Ok(_) => return Err(fail("exists and is not a socket".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    // SAFETY: umask only swaps the process's file-creation mask; no memory is involved.
    let old = unsafe { libc::umask(0o177) };
    let bound = StdUnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| fail(format!("cannot bind: {e}")))?;
    let guard = SocketFile {
        path: path.to_owned(),
        dev_ino: std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino())),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(format!("cannot set mode 0600: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    Ok((listener, guard))
}

/// Accepted connections whose peer runs as this process's effective uid; others are closed
/// at once and logged.
pub fn unix_incoming(listener: UnixListener) -> impl Stream<Item = io::Result<UnixStream>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    futures::stream::unfold(listener, move |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match stream.peer_cred() {
                    Ok(cred) if cred.uid() == euid => return Some((Ok(stream), listener)),
                    Ok(cred) => tracing::warn!(
                        uid = cred.uid(),
                        pid = ?cred.pid(),
                        "refused a connection from another user"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "refused a connection whose peer credentials are unreadable"
                    ),
                },
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Checks `authorization: Bearer <token>` on every TCP call, in constant time.
#[derive(Clone)]
pub struct BearerToken {
    token: Arc<[u8]>,
}

impl BearerToken {
    pub fn new(token: &str) -> Self {
        Self {
            token: token.as_bytes().into(),
        }
    }
}

impl BearerToken {
    /// Whether an `authorization` header value carries the token (compared in constant time).
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(&self.token)))
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(token) if bool::from(token.as_bytes().ct_eq(&self.token)) => Ok(request),
            _ => Err(status(
                Code::Unauthenticated,
                "unauthenticated",
                "a valid `authorization: Bearer <token>` header is required",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn bearer_token_is_required_and_checked() {
        let mut check = BearerToken::new("0123456789abcdef");
        let with = |value: Option<&str>| {
            let mut r = Request::new(());
            if let Some(v) = value {
                r.metadata_mut().insert("authorization", v.parse().unwrap());
            }
            r
        };
        assert!(check.call(with(Some("Bearer 0123456789abcdef"))).is_ok());
        for bad in [
            None,
            Some("Bearer 0123456789abcdeF"),
            Some("Bearer 0123456789abcde"),
            Some("Basic 0123456789abcdef"),
            Some("0123456789abcdef"),
        ] {
            let err = check.call(with(bad)).unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{bad:?}");
        }
    }

    #[test]
    fn socket_is_private_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/jasper/jasperd.sock");
        let (listener, guard) = bind_unix(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // Live: a second daemon is refused.
        let err = bind_unix(&path).unwrap_err();
        assert!(err.to_string().contains("already serving"), "{err}");
        // Stale: the listener is gone but the file stays (as after kill -9).
        drop(listener);
        std::mem::forget(guard);
        let (_listener, guard) = bind_unix(&path).unwrap();
        drop(guard);
        assert!(!path.exists(), "the socket is removed on drop");
        // Not a socket: left alone.
        std::fs::write(&path, "x").unwrap();
        assert!(bind_unix(&path).is_err());
        assert!(path.exists());
    }
}
