//! Plain domain types shared by the rules, the use cases, the store and the gRPC layer.
//!
//! Enums stored in PostgreSQL map through `sqlx::Type` as text: a value the code does not know fails to
//! decode (an error), never a silent default.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    Admin,
    Organizer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConversationStatus {
    Open,
    Resolved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssignmentAction {
    Assign,
    Unassign,
    Reassign,
    /// A user's availability changed; the event names the user, not a conversation.
    AvailabilityChanged,
    Resolve,
    Reopen,
    /// Began waiting in the queue.
    Queued,
    /// Left the queue: assigned by any path, or resolved.
    LeftQueue,
    /// The holder did not reply in time and keeps the conversation (the campaign only notifies).
    ReplyOverdue,
    /// An organizer's shift started, or ended, by their schedule; the event names the user.
    ShiftStarted,
    ShiftEnded,
}

/// Whether a user takes automatically assigned conversations now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Availability {
    #[default]
    Available,
    Away,
    Offline,
}

/// Which path made an assignment change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssignmentSource {
    Manual,
    Bulk,
    Auto,
}

/// A user as the rules need to see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub user_id: String,
    pub role: Role,
    pub active: bool,
}

/// An authenticated, active user acting in a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user_id: String,
    pub role: Role,
}

impl Actor {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The actor as a user of the directory (active, or they could not act).
    pub fn as_user(&self) -> UserRef {
        UserRef {
            user_id: self.user_id.clone(),
            role: self.role,
            active: true,
        }
    }
}

/// A user of a campaign's directory.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub user_id: String,
    pub role: Role,
    pub display_name: String,
    pub active: bool,
    pub updated_at: DateTime<Utc>,
    pub availability: Availability,
    /// Their own limit of open conversations for auto-assignment (0 = unlimited); `None`: the campaign's.
    pub capacity: Option<i32>,
}

impl User {
    pub fn to_ref(&self) -> UserRef {
        UserRef {
            user_id: self.user_id.clone(),
            role: self.role,
            active: self.active,
        }
    }
}

/// A member conversation and who holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Conversation {
    pub conversation_id: String,
    pub member_id: String,
    pub member_tags: Vec<String>,
    pub status: ConversationStatus,
    pub assignee_id: Option<String>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub assigned_by: Option<String>,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
    /// Since when the member has waited for a reply: their first message since the last reply (`None`:
    /// nothing unanswered).
    pub awaiting_reply_since: Option<DateTime<Utc>>,
    /// When the holder's reply is due, if a silence timer runs for it (`store::rules::reply_due`).
    pub reply_due_at: Option<DateTime<Utc>>,
    /// Organizers who let this wait lapse: never routed it again until it is answered.
    pub lapsed_by: Vec<String>,
}

/// One change of a conversation's assignee (or of a user's availability), as history records it. Its row
/// id (`event_id` in the table) counts every campaign's events and is never shown: clients get an id made
/// from its feed number (`domain::opaque`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AssignmentEvent {
    /// `None` for availability changes.
    pub conversation_id: Option<String>,
    pub action: AssignmentAction,
    pub from_user_id: Option<String>,
    pub to_user_id: Option<String>,
    pub actor_id: Option<String>,
    pub source: AssignmentSource,
    pub occurred_at: DateTime<Utc>,
    pub request_id: Option<String>,
    /// For availability changes: whose, and what it became.
    pub user_id: Option<String>,
    pub availability: Option<Availability>,
    /// Why an automatic change happened when no trigger caused it.
    pub cause: Option<String>,
    /// Its place in the campaign's feed; `None` for the moment between its commit and its numbering.
    pub seq: Option<i64>,
    /// QUEUED from a trigger: the priority it waits with.
    pub priority: Option<crate::domain::auto_assign::Priority>,
}

/// A value that was changed, or was already as asked.
#[derive(Debug, Clone)]
pub struct Changed<T> {
    pub value: T,
    pub changed: bool,
}
