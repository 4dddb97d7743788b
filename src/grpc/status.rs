//! The one place where errors become gRPC statuses, with google.rpc details a program can read.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::AppError;

/// `google.rpc.ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "assignment.v1";

impl From<AppError> for Status {
    fn from(err: AppError) -> Self {
        let message = err.to_string();
        let (code, details) = match err {
            AppError::InvalidArgument { field, message } => (
                Code::InvalidArgument,
                ErrorDetails::with_bad_request_violation(field, message),
            ),
            AppError::Unauthenticated { reason, .. } => (Code::Unauthenticated, info(reason)),
            AppError::PermissionDenied { reason, .. } => (Code::PermissionDenied, info(reason)),
            AppError::NotFound { reason, .. } => (Code::NotFound, info(reason)),
            AppError::AlreadyExists { reason, .. } => (Code::AlreadyExists, info(reason)),
            AppError::FailedPrecondition { reason, .. } => (Code::FailedPrecondition, info(reason)),
            AppError::Aborted { reason, .. } => (Code::Aborted, info(reason)),
            AppError::Unavailable { reason, .. } => (Code::Unavailable, info(reason)),
            AppError::Database(db) => return database_status(db),
        };
        Status::with_error_details(code, message, details)
    }
}

fn info(reason: &str) -> ErrorDetails {
    ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new())
}

/// Database trouble: transient faults are UNAVAILABLE or ABORTED (retry), anything else INTERNAL, logged
/// here and never shown to the caller in full.
fn database_status(err: sqlx::Error) -> Status {
    let transient = matches!(
        err,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed
    );
    let code = match &err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    match code.as_deref() {
        _ if transient => {
            tracing::warn!(error = %err, "database unavailable");
            Status::with_error_details(
                Code::Unavailable,
                "the database is unavailable right now; retry with backoff",
                info("DATABASE_UNAVAILABLE"),
            )
        }
        // serialization_failure, deadlock_detected: safe to retry the whole call.
        Some("40001" | "40P01") => Status::with_error_details(
            Code::Aborted,
            "the change collided with a concurrent one; retry",
            info("CONCURRENT_CHANGE"),
        ),
        // query_canceled (statement timeout), admin_shutdown, cannot_connect_now.
        Some("57014" | "57P01" | "57P03") => Status::with_error_details(
            Code::Unavailable,
            "the database did not answer in time; retry with backoff",
            info("DATABASE_UNAVAILABLE"),
        ),
        _ => {
            tracing::error!(error = %err, "unexpected database error");
            Status::internal("internal error; the service logged the details")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_keep_message_code_and_reason() {
        let status = Status::from(AppError::denied("ORGANIZERS_CANNOT_REASSIGN", "no"));
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "no");
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().unwrap().reason,
            "ORGANIZERS_CANNOT_REASSIGN"
        );
    }

    #[test]
    fn invalid_arguments_name_the_field() {
        let status = Status::from(AppError::invalid(
            "conversation_id",
            "conversation_id is required",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violation = &details.bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "conversation_id");
    }

    #[test]
    fn pool_timeouts_are_unavailable() {
        assert_eq!(
            Status::from(AppError::Database(sqlx::Error::PoolTimedOut)).code(),
            Code::Unavailable
        );
    }
}
