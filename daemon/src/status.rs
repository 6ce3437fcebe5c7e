//! Engine errors at the gRPC boundary: each becomes a status with a fitting code, the engine's
//! human message, and a `google.rpc.ErrorInfo` detail (domain `jasper`, reason = the engine's
//! stable `code()`), so clients match on the reason and never parse the message.

use jasper_engine::EngineError;
use jasper_engine::error::attachment_refusal_code;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error this API raises.
pub const DOMAIN: &str = "jasper";

/// The gRPC code of an engine error.
pub fn grpc_code(err: &EngineError) -> Code {
    match err {
        EngineError::InvalidKey(_)
        | EngineError::InvalidArgument(_)
        | EngineError::MessageTooLarge { .. } => Code::InvalidArgument,
        EngineError::UnknownContact(_)
        | EngineError::UnknownConversation(_)
        | EngineError::UnknownMessage(_)
        | EngineError::UnknownRelay(_) => Code::NotFound,
        EngineError::NoIdentity | EngineError::NoRelays => Code::FailedPrecondition,
        EngineError::IdentityExists | EngineError::NameTaken(_) => Code::AlreadyExists,
        EngineError::NotAuthor(_) => Code::PermissionDenied,
        EngineError::UnknownCall(_) => Code::NotFound,
        EngineError::TransparentOff(_) | EngineError::CallState(_) => Code::FailedPrecondition,
        EngineError::CallBusy => Code::AlreadyExists,
        EngineError::TransparentUnavailable(_) => Code::Unavailable,
        EngineError::KeyStore(_) | EngineError::Storage(_) | EngineError::ShuttingDown => {
            Code::Unavailable
        }
        EngineError::Protocol(e) if attachment_refusal_code(e).is_some() => Code::DataLoss,
        EngineError::Protocol(jasper_core::Error::AttachmentIo(_)) => Code::Unavailable,
        EngineError::Protocol(_) => Code::Internal,
    }
}

/// The status for an engine error.
pub fn engine_status(err: &EngineError) -> Status {
    status(grpc_code(err), err.code(), err.to_string())
}

/// A status carrying `reason` as its `ErrorInfo`, for the daemon's own refusals too.
pub fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, DOMAIN, std::collections::HashMap::new()),
    )
}

/// A failed call as a client sees it: the stable reason and the human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The engine's code (`unknown_contact`, `invalid_key`, ...), or for failures outside the
    /// engine (daemon unreachable, bad token) the gRPC code in snake case (`unavailable`).
    pub code: String,
    pub message: String,
    pub grpc_code: Code,
}

impl ApiError {
    pub fn from_status(status: &Status) -> Self {
        let info = status
            .get_details_error_info()
            .filter(|info| info.domain == DOMAIN && !info.reason.is_empty());
        // A connection the daemon dropped (or that broke) surfaces as UNKNOWN "transport
        // error" with the cause as source: for callers it is the daemon being unavailable.
        if info.is_none()
            && status.code() == Code::Unknown
            && let Some(source) = std::error::Error::source(status)
        {
            return Self {
                code: "unavailable".into(),
                message: format!("the connection to jasperd failed: {}", error_chain(source)),
                grpc_code: Code::Unavailable,
            };
        }
        let code = match info {
            Some(info) => info.reason,
            None => snake_case_code(status.code()),
        };
        let message = if status.message().is_empty() {
            status.code().description().to_owned()
        } else {
            status.message().to_owned()
        };
        Self {
            code,
            message,
            grpc_code: status.code(),
        }
    }

    /// Whether the caller sent something invalid (the CLI exits 2 for these).
    pub fn is_invalid_input(&self) -> bool {
        self.grpc_code == Code::InvalidArgument
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// An error and its sources, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn snake_case_code(code: Code) -> String {
    let name = format!("{code:?}");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_carry_their_code_in_error_info() {
        let cases = [
            (EngineError::UnknownContact("bob".into()), Code::NotFound),
            (EngineError::InvalidKey("x".into()), Code::InvalidArgument),
            (
                EngineError::MessageTooLarge { len: 10, max: 5 },
                Code::InvalidArgument,
            ),
            (EngineError::NoIdentity, Code::FailedPrecondition),
            (EngineError::IdentityExists, Code::AlreadyExists),
            (EngineError::NameTaken("a".into()), Code::AlreadyExists),
            (EngineError::NotAuthor("edit"), Code::PermissionDenied),
            (EngineError::Storage("disk".into()), Code::Unavailable),
        ];
        for (err, code) in cases {
            let status = engine_status(&err);
            assert_eq!(status.code(), code, "{err}");
            let api = ApiError::from_status(&status);
            assert_eq!(api.code, err.code());
            assert_eq!(api.message, err.to_string());
        }
    }

    #[test]
    fn plain_statuses_get_a_snake_case_code() {
        let api = ApiError::from_status(&Status::unavailable("connection refused"));
        assert_eq!(api.code, "unavailable");
        let api = ApiError::from_status(&Status::failed_precondition(""));
        assert_eq!(api.code, "failed_precondition");
        assert!(!api.message.is_empty());
    }
}
