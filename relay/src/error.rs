//! The relay's error enum. Every variant that can reach a client maps to one HTTP status and
//! one stable `code` in the JSON body `{"error":{"code":"...","message":"..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The request body is not the JSON the endpoint expects.
    #[error("{0}")]
    MalformedRequest(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// An entry of a hash list is not a SHA-256 hash.
    #[error("{0}")]
    InvalidHash(String),
    /// The request is larger than this relay accepts.
    #[error("{0}")]
    TooLarge(String),
    /// A field failed protocol validation (key, hash, base64, size).
    #[error(transparent)]
    Protocol(#[from] jasper_core::Error),
    /// The hash is already stored with a different recipient or signature.
    #[error("hash {0} is already stored with different content")]
    HashConflict(String),
    /// The message has expired (or was expired and is remembered); it will not be stored again.
    #[error("message {0} has expired")]
    Expired(String),
    /// The storage backend failed; nothing was acknowledged.
    #[error("storage unavailable: {0}")]
    Storage(String),
    /// Invalid configuration (start-up only).
    #[error("configuration: {0}")]
    Config(String),
    /// `/sync/reconcile` named a snapshot this relay no longer holds: start over.
    #[error("snapshot {0} is gone (too old, or pushed out by newer ones); ask again without one")]
    SnapshotGone(String),
    /// A mesh-only endpoint called by a relay that is not a peer of this one.
    #[error("{0} is not a peer of this relay")]
    UnknownPeer(String),
    /// The client's budget for this kind of request is spent (`admission.rs`).
    #[error("too many {what} from this address; try again in {} ms", retry_after.as_millis())]
    RateLimited {
        what: &'static str,
        retry_after: std::time::Duration,
    },
    /// The recipient holds as many packets or bytes as this relay keeps for one key.
    #[error(
        "recipient {0} holds as much as this relay keeps for one key; try again when some of it expires"
    )]
    RecipientFull(String),
    /// `/send` must carry a proof-of-work stamp of `bits` (docs/protocol.md, "Stamps").
    #[error("this relay asks a proof-of-work stamp of {bits} bits with /send{detail}")]
    StampRequired { bits: u32, detail: String },
    /// The store holds as much as this relay is configured to keep.
    #[error("this relay's storage is full; try another relay")]
    StorageFull,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("shutting down")]
    ShuttingDown,
}

impl RelayError {
    /// HTTP status and stable code for the JSON error body.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use jasper_core::Error as P;
        match self {
            RelayError::MalformedRequest(_) => (StatusCode::BAD_REQUEST, "malformed_request"),
            RelayError::MissingField(_) => (StatusCode::BAD_REQUEST, "missing_field"),
            RelayError::InvalidHash(_) => (StatusCode::BAD_REQUEST, "invalid_hash"),
            RelayError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            RelayError::Protocol(p) => match p {
                P::InvalidBase64 { .. } => (StatusCode::BAD_REQUEST, "invalid_base64"),
                P::InvalidHash { .. } => (StatusCode::BAD_REQUEST, "invalid_hash"),
                P::EmptyField { .. } => (StatusCode::BAD_REQUEST, "empty_field"),
                P::FieldTooLong { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "field_too_long"),
                P::HashMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch"),
                P::InvalidPublicKey { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_key"),
                P::WrongKeySize { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_key"),
                _ => (StatusCode::BAD_REQUEST, "invalid_request"),
            },
            RelayError::HashConflict(_) => (StatusCode::CONFLICT, "hash_conflict"),
            RelayError::UnknownPeer(_) => (StatusCode::FORBIDDEN, "unknown_peer"),
            RelayError::Expired(_) => (StatusCode::GONE, "expired"),
            RelayError::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
            RelayError::Config(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            RelayError::SnapshotGone(_) => (StatusCode::GONE, "snapshot_gone"),
            RelayError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            RelayError::RecipientFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "recipient_full"),
            RelayError::StorageFull => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
            RelayError::StampRequired { .. } => {
                (StatusCode::PRECONDITION_REQUIRED, "stamp_required")
            }
            RelayError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            RelayError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            RelayError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        }
    }
}

impl IntoResponse for RelayError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(code, error = %self, "request failed");
        } else {
            tracing::debug!(code, error = %self, "request refused");
        }
        let mut body =
            serde_json::json!({ "error": { "code": code, "message": self.to_string() } });
        if let RelayError::StampRequired { bits, .. } = &self {
            // What to compute, in the answer itself (it is in `/status` too).
            body["error"]["bits"] = (*bits).into();
        }
        let mut response = (status, axum::Json(body)).into_response();
        if let RelayError::RateLimited { retry_after, .. } = &self {
            // Whole seconds, rounded up (RFC 9110): never "0", which would invite a retry storm.
            let secs = retry_after.as_millis().div_ceil(1000).max(1);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs as u64),
            );
        }
        response
    }
}

impl From<fjall::Error> for RelayError {
    fn from(e: fjall::Error) -> Self {
        RelayError::Storage(e.to_string())
    }
}

impl From<redis::RedisError> for RelayError {
    fn from(e: redis::RedisError) -> Self {
        RelayError::Storage(e.to_string())
    }
}
