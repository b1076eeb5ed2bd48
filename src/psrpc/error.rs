//! psrpc's error codes (`errors.go`), the error a call returns or a handler answers with
//! ([`RpcError`]), and this transport's own failures ([`PsrpcError`]).

use std::fmt;

use crate::bus::BusError;

/// `Response.code`: what went wrong, as livekit-server maps it to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Canceled,
    MalformedRequest,
    MalformedResult,
    DeadlineExceeded,
    Unavailable,
    Unknown,
    InvalidArgument,
    NotFound,
    NotAcceptable,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    DataLoss,
    Unauthenticated,
    UnprocessableEntity,
    UpstreamServerError,
    UpstreamClientError,
}

impl ErrorCode {
    /// Every code, in `errors.go` order.
    pub const ALL: [ErrorCode; 22] = [
        Self::Canceled,
        Self::MalformedRequest,
        Self::MalformedResult,
        Self::DeadlineExceeded,
        Self::Unavailable,
        Self::Unknown,
        Self::InvalidArgument,
        Self::NotFound,
        Self::NotAcceptable,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::DataLoss,
        Self::Unauthenticated,
        Self::UnprocessableEntity,
        Self::UpstreamServerError,
        Self::UpstreamClientError,
    ];

    /// The string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canceled => "canceled",
            Self::MalformedRequest => "malformed_request",
            Self::MalformedResult => "malformed_result",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Unavailable => "unavailable",
            Self::Unknown => "unknown",
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::NotAcceptable => "not_acceptable",
            Self::AlreadyExists => "already_exists",
            Self::PermissionDenied => "permission_denied",
            Self::ResourceExhausted => "resource_exhausted",
            Self::FailedPrecondition => "failed_precondition",
            Self::Aborted => "aborted",
            Self::OutOfRange => "out_of_range",
            Self::Unimplemented => "unimplemented",
            Self::Internal => "internal",
            Self::DataLoss => "data_loss",
            Self::Unauthenticated => "unauthenticated",
            Self::UnprocessableEntity => "unprocessable_entity",
            Self::UpstreamServerError => "upstream_server_error",
            Self::UpstreamClientError => "upstream_client_error",
        }
    }

    /// The code of a wire string; `None` for an empty or unknown one.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An RPC's error: what a call returns, and what a handler answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: String,
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// No server claimed the request within the call's timeout (`ErrNoResponse`).
    pub fn no_response() -> Self {
        Self::new(ErrorCode::Unavailable, "no response from servers")
    }

    /// A server claimed the request but did not answer in time (`ErrRequestTimedOut`).
    pub fn timed_out() -> Self {
        Self::new(ErrorCode::DeadlineExceeded, "request timed out")
    }

    /// The error of a `Response` whose `error` is set: an empty or unknown `code` is `unknown`,
    /// as psrpc's `NewErrorFromResponse` has it.
    pub fn from_response(code: &str, error: &str) -> Self {
        Self::new(ErrorCode::parse(code).unwrap_or(ErrorCode::Unknown), error)
    }

    /// Whether livekit-server (and our IOInfo calls) retry a call that failed with this.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::Unavailable | ErrorCode::DeadlineExceeded | ErrorCode::ResourceExhausted
        )
    }
}

/// The transport's own failures.
#[derive(Debug, thiserror::Error)]
pub enum PsrpcError {
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The router task is gone (the connection was dropped).
    #[error("psrpc router stopped")]
    Closed,
}

impl From<PsrpcError> for RpcError {
    fn from(e: PsrpcError) -> Self {
        Self::new(ErrorCode::Internal, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_psrpcs_strings() {
        let wire: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            wire,
            [
                "canceled",
                "malformed_request",
                "malformed_result",
                "deadline_exceeded",
                "unavailable",
                "unknown",
                "invalid_argument",
                "not_found",
                "not_acceptable",
                "already_exists",
                "permission_denied",
                "resource_exhausted",
                "failed_precondition",
                "aborted",
                "out_of_range",
                "unimplemented",
                "internal",
                "data_loss",
                "unauthenticated",
                "unprocessable_entity",
                "upstream_server_error",
                "upstream_client_error",
            ]
        );
    }

    #[test]
    fn codes_round_trip() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
            assert_eq!(c.to_string(), c.as_str());
        }
        assert_eq!(ErrorCode::parse(""), None);
        assert_eq!(ErrorCode::parse("Unavailable"), None);
    }

    #[test]
    fn response_errors_default_to_unknown() {
        assert_eq!(
            RpcError::from_response("not_found", "egress does not exist"),
            RpcError::new(ErrorCode::NotFound, "egress does not exist")
        );
        assert_eq!(RpcError::from_response("", "x").code, ErrorCode::Unknown);
        assert_eq!(
            RpcError::from_response("teapot", "x").code,
            ErrorCode::Unknown
        );
        assert_eq!(
            RpcError::no_response().to_string(),
            "no response from servers (unavailable)"
        );
        assert!(RpcError::timed_out().is_retryable());
        assert!(!RpcError::new(ErrorCode::NotFound, "x").is_retryable());
    }
}
