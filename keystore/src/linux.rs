//! Linux: the Secret Service over zbus, or the kernel's keyutils, and the session-keyring set-up
//! that keyutils needs in processes started without a login session.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::Arc;

use keyring_core::CredentialStore;
use linux_keyutils::{KeyError, KeyRing, KeyRingIdentifier};

use crate::{KeyStoreError, KeyStoreKind, one_line};

/// Where the kernel says how long an unused persistent keyring lives; absent when the kernel
/// was built without persistent keyrings (keys then die with the session keyring).
const PERSISTENT_EXPIRY: &str = "/proc/sys/kernel/keys/persistent_keyring_expiry";

const KEYUTILS_SESSION_HINT: &str = "this thread has no session keyring of its own: call \
    jasper_keystore::prepare_process_for_keyutils() before any thread starts, or run the program \
    under `keyctl session -`";

pub(crate) fn open_kind(kind: KeyStoreKind) -> Result<Arc<CredentialStore>, KeyStoreError> {
    match kind {
        KeyStoreKind::SecretService => open_secret_service(),
        KeyStoreKind::Keyutils => open_keyutils(),
    }
}

pub(crate) fn open_default() -> Result<(KeyStoreKind, Arc<CredentialStore>), KeyStoreError> {
    let secret_service_reason = match open_secret_service() {
        Ok(store) => {
            tracing::info!(
                store = "secret-service",
                "keys are kept in the Secret Service"
            );
            return Ok((KeyStoreKind::SecretService, store));
        }
        Err(KeyStoreError::Unavailable { reason, .. }) => reason,
        Err(other) => other.to_string(),
    };
    match open_keyutils() {
        Ok(store) => {
            tracing::info!(
                store = "keyutils",
                secret_service = %secret_service_reason,
                "no Secret Service reachable; keys are kept in the kernel keyutils store"
            );
            Ok((KeyStoreKind::Keyutils, store))
        }
        Err(KeyStoreError::Unavailable { kind, reason }) => Err(KeyStoreError::Unavailable {
            kind,
            reason: format!("{reason}; and no Secret Service either: {secret_service_reason}"),
        }),
        Err(other) => Err(other),
    }
}

/// Connects to `org.freedesktop.secrets` on the session bus and opens a D-Bus session with it,
/// so "available" means the service answered, not merely that a bus address is set.
fn open_secret_service() -> Result<Arc<CredentialStore>, KeyStoreError> {
    let store = zbus_secret_service_keyring_store::Store::new().map_err(|e| {
        KeyStoreError::Unavailable {
            kind: KeyStoreKind::SecretService,
            reason: format!(
                "cannot reach org.freedesktop.secrets on the session bus: {}",
                one_line(cause_of(&e))
            ),
        }
    })?;
    Ok(store)
}

fn open_keyutils() -> Result<Arc<CredentialStore>, KeyStoreError> {
    // The store's constructor touches no keyring, so probe one: this is where a container's
    // seccomp profile (Docker's default blocks keyctl) or a kernel without keys shows up.
    KeyRing::from_special_id(KeyRingIdentifier::User, false).map_err(|e| {
        KeyStoreError::Unavailable {
            kind: KeyStoreKind::Keyutils,
            reason: format!(
                "the keyctl system call failed ({e:?}); containers often block it (Docker's \
                 default seccomp profile does)"
            ),
        }
    })?;
    if !Path::new(PERSISTENT_EXPIRY).exists() {
        tracing::warn!(
            store = "keyutils",
            "this kernel has no persistent keyrings: saved keys vanish with the login session"
        );
    }
    let store =
        linux_keyutils_keyring_store::Store::new().map_err(|e| KeyStoreError::Unavailable {
            kind: KeyStoreKind::Keyutils,
            reason: one_line(cause_of(&e)),
        })?;
    Ok(store)
}

pub(crate) fn access_denied_reason(
    kind: KeyStoreKind,
    cause: &(dyn StdError + Send + Sync + 'static),
) -> String {
    match kind {
        KeyStoreKind::SecretService => format!(
            "{} (the collection is locked or needs an interactive prompt; unlock the login \
             keyring)",
            one_line(cause)
        ),
        KeyStoreKind::Keyutils => format!("keyctl refused the operation ({})", one_line(cause)),
    }
}

pub(crate) fn platform_failure(
    kind: KeyStoreKind,
    cause: &(dyn StdError + Send + Sync + 'static),
) -> KeyStoreError {
    if let Some(KeyError::QuotaExceeded) = cause.downcast_ref::<KeyError>() {
        return KeyStoreError::QuotaExceeded {
            kind,
            reason: "the user's key quota (/proc/sys/kernel/keys/maxbytes, 20,000 bytes for \
                     non-root users by default) is used up; delete unused keys"
                .to_owned(),
        };
    }
    KeyStoreError::Backend(format!("{kind}: {}", one_line(cause)))
}

/// The platform error inside a `keyring-core` error, which names the real cause.
fn cause_of(err: &keyring_core::Error) -> String {
    match err {
        keyring_core::Error::PlatformFailure(cause)
        | keyring_core::Error::NoStorageAccess(cause) => cause.to_string(),
        other => other.to_string(),
    }
}

/// Gives the calling thread a session keyring it owns, unless it already has one: a thread
/// without one (handed the shared per-user "user-session" keyring by the kernel), or holding a
/// parent's of another user, joins a fresh anonymous one (`KEYCTL_JOIN_SESSION_KEYRING`, no name).
pub(crate) fn prepare_session_keyring() -> Result<(), KeyStoreError> {
    if has_own_session_keyring()? {
        return Ok(());
    }
    join_anonymous_session_keyring()
}

/// Refuses keyutils work on a thread without a session keyring of its own. There, the kernel
/// adds the key to the user-session keyring but the process does not possess it: the link into
/// the persistent keyring fails after the secret was written, and searches miss existing keys,
/// so `load` would wrongly answer "no key". Checking first fails cleanly and writes nothing.
pub(crate) fn require_own_session_keyring() -> Result<(), KeyStoreError> {
    if has_own_session_keyring()? {
        Ok(())
    } else {
        Err(KeyStoreError::AccessDenied {
            kind: KeyStoreKind::Keyutils,
            reason: KEYUTILS_SESSION_HINT.to_owned(),
        })
    }
}

/// Whether the calling thread's session keyring is its own: not the shared user-session keyring
/// the kernel hands to threads without one, and owned by this user (not a parent's before a
/// change of user).
fn has_own_session_keyring() -> Result<bool, KeyStoreError> {
    let failed = |step: &str, e: KeyError| KeyStoreError::Unavailable {
        kind: KeyStoreKind::Keyutils,
        reason: format!("{step} failed ({e:?})"),
    };
    let session = KeyRing::from_special_id(KeyRingIdentifier::Session, false)
        .map_err(|e| failed("looking up the session keyring", e))?;
    let user_session = KeyRing::from_special_id(KeyRingIdentifier::UserSession, false)
        .map_err(|e| failed("looking up the user-session keyring", e))?;
    if session == user_session {
        return Ok(false);
    }
    let owner = session
        .metadata()
        .map_err(|e| failed("describing the session keyring", e))?
        .get_uid();
    // SAFETY: geteuid has no preconditions and cannot fail.
    Ok(owner == unsafe { libc::geteuid() })
}

fn join_anonymous_session_keyring() -> Result<(), KeyStoreError> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: KEYCTL_JOIN_SESSION_KEYRING takes one pointer argument, and a null pointer asks
    // the kernel for a new anonymous keyring; no memory of ours is read or written.
    let id = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if id < 0 {
        return Err(KeyStoreError::Unavailable {
            kind: KeyStoreKind::Keyutils,
            reason: format!(
                "joining a new session keyring failed: {}",
                std::io::Error::last_os_error()
            ),
        });
    }
    tracing::debug!(
        keyring = id,
        "joined a new anonymous session keyring for keyutils"
    );
    Ok(())
}
