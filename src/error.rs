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
}

impl StatusCode {
    /// The canonical gRPC name, as the README lists it.
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
        }
    }
}

/// Declares [`Reason`] with its wire name and status code, and [`Reason::ALL`], from one table.
macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal, $code:ident;)+) => {
        /// Machine-readable reason codes, sent as `google.rpc.ErrorInfo.reason` (domain `assignment.v1`) and
        /// as the `reason` of a refused bulk item. The README lists every one with its status code.
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
    /// No `x-actor-id` header on a call that acts for a user.
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
    /// No access group lets the organizer view the conversation.
    NoViewAccess => "NO_VIEW_ACCESS", PermissionDenied;
    /// A bulk target's turn fell on a conversation they may not reply to (bulk items only).
    NoAccess => "NO_ACCESS", PermissionDenied;
    /// Organizers see only the access groups they belong to.
    NotAMember => "NOT_A_MEMBER", PermissionDenied;
    /// The conversation does not exist in the campaign.
    ConversationNotFound => "CONVERSATION_NOT_FOUND", NotFound;
    /// The user to assign to does not exist in the campaign.
    AssigneeNotFound => "ASSIGNEE_NOT_FOUND", NotFound;
    /// The user asked about does not exist in the campaign.
    UserNotFound => "USER_NOT_FOUND", NotFound;
    /// An organizer named for an access group does not exist in the campaign.
    OrganizerNotFound => "ORGANIZER_NOT_FOUND", NotFound;
    /// The access group does not exist in the campaign.
    AccessGroupNotFound => "ACCESS_GROUP_NOT_FOUND", NotFound;
    /// Another access group has this name (ignoring case).
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
    /// The server is at its limit of concurrent calls: retry with backoff.
    Overloaded => "OVERLOADED", ResourceExhausted;
    /// The campaign already has its limit of auto-assign triggers waiting: retry with backoff.
    AutoAssignQueueFull => "AUTO_ASSIGN_QUEUE_FULL", ResourceExhausted;
    /// A stream sent no request message for the stream idle timeout.
    StreamIdle => "STREAM_IDLE", DeadlineExceeded;
    /// A conversation id in a bulk stream is malformed (bulk items only).
    InvalidConversationId => "INVALID_CONVERSATION_ID", InvalidArgument;
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request itself is malformed; `field` names the offending field or header.
    #[error("{message}")]
    InvalidArgument { field: String, message: String },
    /// The rules, the state of things or the system refuse the call; the reason decides the status code.
    #[error("{message}")]
    Refused { reason: Reason, message: String },
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

    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self::Refused {
            reason,
            message: message.into(),
        }
    }

    /// The reason of a refusal; `None` for invalid arguments and database faults.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Self::Refused { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    // The errors several use cases raise, each worded once.

    pub fn conversation_not_found(conversation_id: &str) -> Self {
        Self::new(
            Reason::ConversationNotFound,
            format!(
                "conversation {conversation_id:?} does not exist in this campaign; sync it with \
                 DirectoryService.UpsertConversation first"
            ),
        )
    }

    pub fn no_view_access(conversation_id: &str) -> Self {
        Self::new(
            Reason::NoViewAccess,
            format!(
                "no access group lets you view conversation {conversation_id:?}; ask an admin to add you to one"
            ),
        )
    }

    /// `what` completes "only admins can …".
    pub fn admin_required(actor_id: &str, what: &str) -> Self {
        Self::new(
            Reason::AdminRequired,
            format!("only admins can {what}; user {actor_id:?} is an organizer"),
        )
    }

    pub fn user_not_found(user_id: &str) -> Self {
        Self::new(
            Reason::UserNotFound,
            format!("user {user_id:?} is not a user of this campaign"),
        )
    }

    pub fn assignee_not_found(user_id: &str) -> Self {
        Self::new(
            Reason::AssigneeNotFound,
            format!("user {user_id:?} is not a user of this campaign"),
        )
    }

    pub fn assignee_inactive(user_id: &str) -> Self {
        Self::new(
            Reason::AssigneeInactive,
            format!("user {user_id:?} is inactive and cannot be assigned conversations"),
        )
    }

    pub fn access_group_not_found(id: impl fmt::Display) -> Self {
        Self::new(
            Reason::AccessGroupNotFound,
            format!("access group {id} does not exist in this campaign"),
        )
    }

    pub fn access_group_name_taken(name: &str) -> Self {
        Self::new(
            Reason::AccessGroupNameTaken,
            format!(
                "an access group named {name:?} already exists in this campaign; choose another name"
            ),
        )
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
    fn the_readme_documents_every_reason_with_its_status_code() {
        let readme = include_str!("../README.md");
        for reason in Reason::ALL {
            let row = format!(
                "| `{}` | `{}` |",
                reason.as_str(),
                reason.status_code().as_str()
            );
            assert!(
                readme.contains(&row),
                "README.md has no row starting {row:?}"
            );
        }
        // And its reason table documents no reason that does not exist.
        let table = readme
            .split_once("| reason | status code | meaning |")
            .expect("README.md has the reason table")
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
                "README.md documents {name}, which is not a Reason"
            );
        }
    }
}
