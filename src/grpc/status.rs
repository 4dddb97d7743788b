//! The one place where errors become gRPC statuses, with google.rpc details a program can read.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::error::{AppError, Facts, Reason, StatusCode};
use crate::store::{self, DatabaseFault};

/// `google.rpc.ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "assignment.v1";

impl From<AppError> for Status {
    fn from(err: AppError) -> Self {
        match err {
            AppError::InvalidArgument(violations) => {
                let message = AppError::InvalidArgument(violations.clone()).to_string();
                let violations: Vec<FieldViolation> = violations
                    .into_iter()
                    .map(|v| FieldViolation::new(v.field, v.message))
                    .collect();
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request(violations),
                )
            }
            AppError::Refused {
                reason,
                message,
                facts,
            } => refusal_with(reason, message, facts),
            AppError::Database(db) => database_status(db),
        }
    }
}

/// A status with the code `reason` implies and an `ErrorInfo` naming it.
pub fn refusal(reason: Reason, message: impl Into<String>) -> Status {
    refusal_with(reason, message.into(), Facts::new())
}

/// A refusal about one request header: its reason's code and `ErrorInfo` (the header in its metadata), and
/// a `BadRequest` violation naming the header, as every other bad header gets.
pub fn header_refusal(reason: Reason, header: &str, message: impl Into<String>) -> Status {
    let message = message.into();
    let metadata = HashMap::from([("header".to_owned(), header.to_owned())]);
    let mut details = ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
    details.add_bad_request_violation(header, message.clone());
    Status::with_error_details(code(reason.status_code()), message, details)
}

/// [`refusal`], with the facts the message names as `ErrorInfo.metadata`.
fn refusal_with(reason: Reason, message: String, facts: Facts) -> Status {
    let metadata: HashMap<String, String> = facts
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    Status::with_error_details(
        code(reason.status_code()),
        message,
        ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, metadata),
    )
}

fn code(code: StatusCode) -> Code {
    match code {
        StatusCode::InvalidArgument => Code::InvalidArgument,
        StatusCode::Unauthenticated => Code::Unauthenticated,
        StatusCode::PermissionDenied => Code::PermissionDenied,
        StatusCode::NotFound => Code::NotFound,
        StatusCode::AlreadyExists => Code::AlreadyExists,
        StatusCode::FailedPrecondition => Code::FailedPrecondition,
        StatusCode::Aborted => Code::Aborted,
        StatusCode::Unavailable => Code::Unavailable,
        StatusCode::ResourceExhausted => Code::ResourceExhausted,
        StatusCode::DeadlineExceeded => Code::DeadlineExceeded,
        StatusCode::OutOfRange => Code::OutOfRange,
    }
}

/// Database trouble: transient faults are UNAVAILABLE or ABORTED (retry), anything else INTERNAL. The
/// error itself is never shown to the caller; it goes on the call's log line (see [`note`]).
fn database_status(err: sqlx::Error) -> Status {
    match store::fault(&err) {
        DatabaseFault::Unavailable => {
            note(&err);
            refusal(
                Reason::DatabaseUnavailable,
                "the database is unavailable right now; retry with backoff",
            )
        }
        DatabaseFault::TimedOut => refusal(
            Reason::DatabaseUnavailable,
            "the database did not answer in time; retry with backoff",
        ),
        DatabaseFault::Conflict => refusal(
            Reason::ConcurrentChange,
            "the change collided with a concurrent one; retry",
        ),
        DatabaseFault::Internal => {
            note(&err);
            Status::internal("internal error; the service logged the details")
        }
    }
}

/// Puts a database error on the call's span, so the call's one `call failed` line carries it (one line
/// per failure, not two). Outside a call's span (a stream's later message) it is logged here instead.
fn note(err: &sqlx::Error) {
    let span = tracing::Span::current();
    if span.has_field("error") {
        span.record("error", tracing::field::display(err));
    } else {
        tracing::warn!(error = %err, "database error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_message_and_reason_and_take_the_reasons_code() {
        let status = Status::from(AppError::new(Reason::OrganizersCannotReassign, "no"));
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "no");
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().unwrap().reason,
            "ORGANIZERS_CANNOT_REASSIGN"
        );
        for reason in Reason::ALL {
            let status = Status::from(AppError::new(*reason, "x"));
            assert_eq!(
                format!("{:?}", status.code()).to_uppercase(),
                reason.status_code().as_str().replace('_', "")
            );
        }
    }

    #[test]
    fn facts_travel_as_error_info_metadata() {
        let status = Status::from(AppError::assignee_inactive("o1"));
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(
            info.metadata.get("assignee_id").map(String::as_str),
            Some("o1")
        );
    }

    #[test]
    fn every_invalid_field_is_a_violation() {
        let err = AppError::InvalidArgument(vec![
            crate::error::FieldViolation {
                field: "a".into(),
                message: "a is bad".into(),
            },
            crate::error::FieldViolation {
                field: "b".into(),
                message: "b is bad".into(),
            },
        ]);
        let status = Status::from(err);
        assert_eq!(status.message(), "a is bad; b is bad");
        let details = status.get_error_details();
        let fields: Vec<&str> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, vec!["a", "b"]);
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
    fn header_refusals_carry_the_reason_and_name_the_header() {
        let status = header_refusal(Reason::DuplicateHeader, "x-actor-id", "twice");
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "DUPLICATE_HEADER");
        assert_eq!(info.metadata["header"], "x-actor-id");
        let violation = &details.bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "x-actor-id");
    }

    #[test]
    fn pool_timeouts_are_unavailable() {
        assert_eq!(
            Status::from(AppError::Database(sqlx::Error::PoolTimedOut)).code(),
            Code::Unavailable
        );
    }
}
