//! Engine errors at the gRPC boundary: each becomes a status with a fitting code, the engine's
//! human message, and a `google.rpc.ErrorInfo` detail (domain `jasper`, reason = the engine's
//! stable `code()`), so clients match on the reason and never parse the message. The client half
//! (a status back into an error with that code) is `jasper_client::ApiError`.

use jasper_engine::EngineError;
use jasper_engine::error::attachment_refusal_code;
use jasper_proto::ERROR_DOMAIN;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

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
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new()),
    )
}

#[cfg(test)]
mod tests {
    use jasper_client::ApiError;

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
}
