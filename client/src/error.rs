//! A failed call as a client sees it. `jasperd` puts a `google.rpc.ErrorInfo` on every error
//! it raises (domain [`ERROR_DOMAIN`], reason = the engine's stable code), so clients match on
//! the reason and never parse the message.

use jasper_proto::ERROR_DOMAIN;
use tonic::{Code, Status};
use tonic_types::StatusExt;

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
            .filter(|info| info.domain == ERROR_DOMAIN && !info.reason.is_empty());
        // A connection the daemon dropped (or that broke) surfaces as UNKNOWN "transport
        // error", or as CANCELLED "operation was canceled" when hyper saw it close before the
        // answer, either way with the cause as source: for callers it is the daemon being
        // unavailable. jasperd's own errors always carry the ErrorInfo, so none is mistaken.
        if info.is_none()
            && matches!(status.code(), Code::Unknown | Code::Cancelled)
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
    use std::collections::HashMap;

    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn plain_statuses_get_a_snake_case_code() {
        let api = ApiError::from_status(&Status::unavailable("connection refused"));
        assert_eq!(api.code, "unavailable");
        let api = ApiError::from_status(&Status::failed_precondition(""));
        assert_eq!(api.code, "failed_precondition");
        assert!(!api.message.is_empty());
    }

    #[test]
    fn a_dropped_connection_is_unavailable_whichever_code_tonic_gives_it() {
        // What the transport hands tonic: an error whose cause tonic recognises (hyper's
        // "operation was canceled" becomes CANCELLED), kept as the status's source.
        #[derive(Debug)]
        struct Transport(Status);
        impl std::fmt::Display for Transport {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connection closed")
            }
        }
        impl std::error::Error for Transport {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        for code in [Code::Unknown, Code::Cancelled] {
            let status = Status::from_error(Box::new(Transport(Status::new(
                code,
                "operation was canceled",
            ))));
            assert_eq!(status.code(), code);
            let api = ApiError::from_status(&status);
            assert_eq!(api.code, "unavailable", "{code:?}");
            assert_eq!(api.grpc_code, Code::Unavailable);
            assert!(api.message.contains("connection closed"), "{}", api.message);
        }
        // The same codes raised by a server, with no transport cause, keep their names.
        assert_eq!(
            ApiError::from_status(&Status::cancelled("stop")).code,
            "cancelled"
        );
        assert_eq!(ApiError::from_status(&Status::unknown("?")).code, "unknown");
    }

    #[test]
    fn the_reason_counts_only_in_jaspers_domain() {
        let with_info = |domain: &str| {
            Status::with_error_details(
                Code::NotFound,
                "no contact bob",
                ErrorDetails::with_error_info("unknown_contact", domain, HashMap::new()),
            )
        };
        let api = ApiError::from_status(&with_info(ERROR_DOMAIN));
        assert_eq!(api.code, "unknown_contact");
        assert_eq!(api.message, "no contact bob");
        assert_eq!(api.grpc_code, Code::NotFound);
        assert_eq!(api.to_string(), "unknown_contact: no contact bob");
        assert!(!api.is_invalid_input());
        let api = ApiError::from_status(&with_info("elsewhere.example"));
        assert_eq!(api.code, "not_found");
    }
}
