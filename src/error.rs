//! The one error type of the service and the one list of reason codes. `grpc::status` maps both to
//! `tonic::Status`; every refusal names a [`Reason`], and the reason alone decides the status code.

use std::fmt;

/// The gRPC status code a [`Reason`] is sent with. Kept free of transport types so the domain can use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Aborted,
    Unavailable,
    ResourceExhausted,
    DeadlineExceeded,
    OutOfRange,
}

impl StatusCode {
    /// The canonical gRPC name, as docs/errors.md lists it.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::InvalidArgument => "INVALID_ARGUMENT",
            StatusCode::Unauthenticated => "UNAUTHENTICATED",
            StatusCode::PermissionDenied => "PERMISSION_DENIED",
            StatusCode::NotFound => "NOT_FOUND",
            StatusCode::AlreadyExists => "ALREADY_EXISTS",
            StatusCode::FailedPrecondition => "FAILED_PRECONDITION",
            StatusCode::Aborted => "ABORTED",
            StatusCode::Unavailable => "UNAVAILABLE",
            StatusCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            StatusCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            StatusCode::OutOfRange => "OUT_OF_RANGE",
        }
    }
}

/// Declares [`Reason`] with its wire name and status code, and [`Reason::ALL`], from one table.
macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal, $code:ident;)+) => {
        /// Machine-readable reason codes, sent as `google.rpc.ErrorInfo.reason` (domain `assignment.v1`) and
        /// as the `reason` of a refused bulk item. docs/errors.md lists every one with its status code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $variant,)+
        }

        impl Reason {
            /// Every reason, for documentation checks.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),+];

            /// The wire name, e.g. `CONVERSATION_NOT_FOUND`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)+
                }
            }

            /// The status code every error with this reason carries.
            pub fn status_code(self) -> StatusCode {
                match self {
                    $(Reason::$variant => StatusCode::$code,)+
                }
            }
        }
    };
}

reasons! {
    /// No `x-actor-id` header, or an empty one, on a call that acts for a user.
    ActorMissing => "ACTOR_MISSING", Unauthenticated;
    /// `x-actor-id` names nobody in the campaign's directory.
    ActorUnknown => "ACTOR_UNKNOWN", Unauthenticated;
    /// No or a malformed bearer token.
    TokenMissing => "TOKEN_MISSING", Unauthenticated;
    /// A bearer token that matches no configured token.
    TokenInvalid => "TOKEN_INVALID", Unauthenticated;
    /// No bearer token, and the client certificate is not one the callers file names.
    CertificateUnknown => "CERTIFICATE_UNKNOWN", Unauthenticated;
    /// The actor is deactivated.
    ActorInactive => "ACTOR_INACTIVE", PermissionDenied;
    /// The actor was deactivated or changed role while their bulk stream ran.
    ActorChanged => "ACTOR_CHANGED", PermissionDenied;
    /// Only admins may do this.
    AdminRequired => "ADMIN_REQUIRED", PermissionDenied;
    /// A user-scoped caller called a system RPC.
    SystemScopeRequired => "SYSTEM_SCOPE_REQUIRED", PermissionDenied;
    /// Organizers assign only to themselves.
    OrganizerAssignsSelfOnly => "ORGANIZER_ASSIGNS_SELF_ONLY", PermissionDenied;
    /// Organizers never reassign.
    OrganizersCannotReassign => "ORGANIZERS_CANNOT_REASSIGN", PermissionDenied;
    /// Organizers unassign only conversations assigned to them.
    OrganizerUnassignsOwnOnly => "ORGANIZER_UNASSIGNS_OWN_ONLY", PermissionDenied;
    /// Someone else holds the conversation, so an organizer may not change its status.
    AssignedToOther => "ASSIGNED_TO_OTHER", PermissionDenied;
    /// A bulk target's turn fell on a conversation they may not reply to (bulk items only).
    NoAccess => "NO_ACCESS", PermissionDenied;
    /// Organizers see only the access groups they belong to.
    NotAMember => "NOT_A_MEMBER", PermissionDenied;
    /// A reply was reported from a sender who may not reply to the conversation now (the message says why).
    ReplyNotAllowed => "REPLY_NOT_ALLOWED", PermissionDenied;
    /// The conversation does not exist in the campaign.
    ConversationNotFound => "CONVERSATION_NOT_FOUND", NotFound;
    /// The user to assign to does not exist in the campaign.
    AssigneeNotFound => "ASSIGNEE_NOT_FOUND", NotFound;
    /// The user asked about does not exist in the campaign.
    UserNotFound => "USER_NOT_FOUND", NotFound;
    /// The organizer asked about has no shift schedule.
    ShiftScheduleNotFound => "SHIFT_SCHEDULE_NOT_FOUND", NotFound;
    /// An organizer named for an access group does not exist in the campaign.
    OrganizerNotFound => "ORGANIZER_NOT_FOUND", NotFound;
    /// The access group does not exist in the campaign.
    AccessGroupNotFound => "ACCESS_GROUP_NOT_FOUND", NotFound;
    /// Another access group has this name (ignoring case; names are compared in normal form, so look-alikes
    /// are the same name).
    AccessGroupNameTaken => "ACCESS_GROUP_NAME_TAKEN", AlreadyExists;
    /// The conversation is already assigned to someone else.
    AlreadyAssigned => "ALREADY_ASSIGNED", FailedPrecondition;
    /// The conversation is not assigned to anyone.
    NotAssigned => "NOT_ASSIGNED", FailedPrecondition;
    /// The user to assign to is deactivated.
    AssigneeInactive => "ASSIGNEE_INACTIVE", FailedPrecondition;
    /// An organizer named for an access group is deactivated.
    OrganizerInactive => "ORGANIZER_INACTIVE", FailedPrecondition;
    /// An auto-assign trigger id was first delivered for another conversation.
    TriggerIdReused => "TRIGGER_ID_REUSED", FailedPrecondition;
    /// A reply's message id was first reported for another conversation or sender.
    MessageIdReused => "MESSAGE_ID_REUSED", FailedPrecondition;
    /// `expected_version` is stale: re-read and retry.
    VersionMismatch => "VERSION_MISMATCH", Aborted;
    /// The change collided with a concurrent one (serialization failure or deadlock): retry.
    ConcurrentChange => "CONCURRENT_CHANGE", Aborted;
    /// The database does not answer: retry with backoff.
    DatabaseUnavailable => "DATABASE_UNAVAILABLE", Unavailable;
    /// The auto-assign batch this call joined failed: retry.
    AutoAssignBatchFailed => "AUTO_ASSIGN_BATCH_FAILED", Unavailable;
    /// The server is shutting down: retry on another replica.
    ShuttingDown => "SHUTTING_DOWN", Unavailable;
    /// A WatchAssignmentEvents reader fell too far behind: resume from the last cursor it received.
    FeedReaderTooSlow => "FEED_READER_TOO_SLOW", ResourceExhausted;
    /// A WatchAssignmentEvents cursor older than the feed's retention: re-read the state, watch from now.
    FeedCursorExpired => "FEED_CURSOR_EXPIRED", OutOfRange;
    /// The server is at its limit of concurrent calls: retry with backoff.
    Overloaded => "OVERLOADED", ResourceExhausted;
    /// The calling service, or the actor it acts for, already runs its share of concurrent calls: retry
    /// with backoff.
    FairShareExhausted => "FAIR_SHARE_EXHAUSTED", ResourceExhausted;
    /// The campaign already has its limit of auto-assign triggers waiting: retry with backoff.
    AutoAssignQueueFull => "AUTO_ASSIGN_QUEUE_FULL", ResourceExhausted;
    /// A unary request's body, or a stream's first message, did not arrive within the request read
    /// timeout.
    RequestTooSlow => "REQUEST_TOO_SLOW", DeadlineExceeded;
    /// A stream sent no request message for the stream idle timeout.
    StreamIdle => "STREAM_IDLE", DeadlineExceeded;
    /// A conversation id in a bulk stream is malformed (bulk items only).
    InvalidConversationId => "INVALID_CONVERSATION_ID", InvalidArgument;
    /// A conversation id listed again in one bulk stream: answered at its first listing (bulk items only).
    DuplicateInStream => "DUPLICATE_IN_STREAM", InvalidArgument;
    /// A header that says who is calling or for what (`authorization`, `x-campaign-id`, `x-actor-id`,
    /// `x-request-id`) was sent more than once.
    DuplicateHeader => "DUPLICATE_HEADER", InvalidArgument;
    /// The request's `content-type` is not gRPC's (answered with HTTP 415).
    UnsupportedContentType => "UNSUPPORTED_CONTENT_TYPE", InvalidArgument;
    /// The request body is not gRPC framing the RPC accepts: a unary request without exactly one message,
    /// a message cut short, or a compressed flag other than 0 or 1.
    MalformedFraming => "MALFORMED_FRAMING", InvalidArgument;
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One bad field or header of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub message: String,
}

/// Facts a refusal names (the current assignee, the current version, ...), for programs: sent as
/// `ErrorInfo.metadata`. Only facts the caller may see.
pub type Facts = Vec<(&'static str, String)>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request itself is malformed: every bad field or header, each named.
    #[error("{}", join_messages(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The rules, the state of things or the system refuse the call; the reason decides the status code.
    #[error("{message}")]
    Refused {
        reason: Reason,
        message: String,
        facts: Facts,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

fn join_messages(violations: &[FieldViolation]) -> String {
    let messages: Vec<&str> = violations.iter().map(|v| v.message.as_str()).collect();
    messages.join("; ")
}

impl AppError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self::Refused {
            reason,
            message: message.into(),
            facts: Vec::new(),
        }
    }

    /// Adds a fact the message names, for programs (`ErrorInfo.metadata`).
    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        if let Self::Refused { facts, .. } = &mut self {
            facts.push((key, value.into()));
        }
        self
    }

    /// The reason of a refusal; `None` for invalid arguments and database faults.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Self::Refused { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// The fields an invalid argument names.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Self::InvalidArgument(violations) => {
                violations.iter().map(|v| v.field.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }

    // The errors several use cases raise, each worded once.

    /// Also the answer for a conversation the caller may not view: they learn nothing of it.
    pub fn conversation_not_found(conversation_id: &str) -> Self {
        Self::new(
            Reason::ConversationNotFound,
            format!(
                "conversation {conversation_id:?} does not exist in this campaign, or you may not view \
                 it; sync it with DirectoryService.UpsertConversation, or ask an admin for access"
            ),
        )
        .with("conversation_id", conversation_id)
    }

    /// `what` completes "only admins can …".
    pub fn admin_required(actor_id: &str, what: &str) -> Self {
        Self::new(
            Reason::AdminRequired,
            format!("only admins can {what}; user {actor_id:?} is an organizer"),
        )
    }

    /// While this replica's health check cannot reach the database: said at once, not after waiting for
    /// a connection. `address` never holds the password.
    pub fn database_unreachable(address: &str) -> Self {
        Self::new(
            Reason::DatabaseUnavailable,
            format!(
                "the database at {address} is unreachable from this replica (its health check fails); \
                 retry with backoff, or on another replica"
            ),
        )
    }

    pub fn user_not_found(user_id: &str) -> Self {
        Self::new(
            Reason::UserNotFound,
            format!("user {user_id:?} is not a user of this campaign"),
        )
        .with("user_id", user_id)
    }

    pub fn shift_schedule_not_found(user_id: &str) -> Self {
        Self::new(
            Reason::ShiftScheduleNotFound,
            format!(
                "user {user_id:?} has no shift schedule: they are always on shift (SetShiftSchedule sets one)"
            ),
        )
        .with("user_id", user_id)
    }

    pub fn assignee_not_found(user_id: &str) -> Self {
        Self::new(
            Reason::AssigneeNotFound,
            format!("user {user_id:?} is not a user of this campaign"),
        )
        .with("assignee_id", user_id)
    }

    pub fn assignee_inactive(user_id: &str) -> Self {
        Self::new(
            Reason::AssigneeInactive,
            format!("user {user_id:?} is inactive and cannot be assigned conversations"),
        )
        .with("assignee_id", user_id)
    }

    pub fn access_group_not_found(id: impl fmt::Display) -> Self {
        Self::new(
            Reason::AccessGroupNotFound,
            format!("access group {id} does not exist in this campaign"),
        )
        .with("access_group_id", id.to_string())
    }

    pub fn access_group_name_taken(name: &str) -> Self {
        Self::new(
            Reason::AccessGroupNameTaken,
            format!(
                "an access group named {name:?} already exists in this campaign; choose another name"
            ),
        )
        .with("name", name)
    }
}

pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_unique_and_screaming_snake_case() {
        let mut names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert!(
            names
                .iter()
                .all(|n| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        );
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
    }

    #[test]
    fn the_error_doc_documents_every_reason_with_its_status_code() {
        let doc = include_str!("../docs/errors.md");
        for reason in Reason::ALL {
            let row = format!(
                "| `{}` | `{}` |",
                reason.as_str(),
                reason.status_code().as_str()
            );
            assert!(
                doc.contains(&row),
                "docs/errors.md has no row starting {row:?}"
            );
        }
        // And its reason table documents no reason that does not exist.
        let table = doc
            .split_once("| reason | status code | meaning |")
            .expect("docs/errors.md has the reason table")
            .1;
        let rows = table
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'));
        for row in rows {
            let name = row
                .trim_start_matches("| `")
                .split('`')
                .next()
                .unwrap_or("");
            assert!(
                Reason::ALL.iter().any(|r| r.as_str() == name),
                "docs/errors.md documents {name}, which is not a Reason"
            );
        }
    }
}
