//! The one error type of the service. `grpc::status` maps it to `tonic::Status`.

/// Machine-readable reason codes, sent as `google.rpc.ErrorInfo.reason`.
pub type Reason = &'static str;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request itself is malformed; `field` names the offending field or header.
    #[error("{message}")]
    InvalidArgument { field: String, message: String },
    #[error("{message}")]
    Unauthenticated { reason: Reason, message: String },
    #[error("{message}")]
    PermissionDenied { reason: Reason, message: String },
    #[error("{message}")]
    NotFound { reason: Reason, message: String },
    #[error("{message}")]
    AlreadyExists { reason: Reason, message: String },
    /// The system is not in the state the request needs (e.g. already assigned to someone else).
    #[error("{message}")]
    FailedPrecondition { reason: Reason, message: String },
    /// A compare-and-set lost: the caller should re-read and retry.
    #[error("{message}")]
    Aborted { reason: Reason, message: String },
    /// A transient failure: the caller may retry.
    #[error("{message}")]
    Unavailable { reason: Reason, message: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl AppError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn denied(reason: Reason, message: impl Into<String>) -> Self {
        Self::PermissionDenied {
            reason,
            message: message.into(),
        }
    }

    pub fn not_found(reason: Reason, message: impl Into<String>) -> Self {
        Self::NotFound {
            reason,
            message: message.into(),
        }
    }

    pub fn precondition(reason: Reason, message: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            reason,
            message: message.into(),
        }
    }

    pub fn already_exists(reason: Reason, message: impl Into<String>) -> Self {
        Self::AlreadyExists {
            reason,
            message: message.into(),
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;
