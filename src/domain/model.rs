//! Plain domain types shared by the rules, the store and the gRPC layer.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Organizer,
}

impl Role {
    pub fn as_db(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Organizer => "ORGANIZER",
        }
    }

    pub fn from_db(value: &str) -> Self {
        match value {
            "ADMIN" => Role::Admin,
            _ => Role::Organizer,
        }
    }
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversationStatus {
    Open,
    Resolved,
}

impl ConversationStatus {
    pub fn as_db(self) -> &'static str {
        match self {
            ConversationStatus::Open => "OPEN",
            ConversationStatus::Resolved => "RESOLVED",
        }
    }

    pub fn from_db(value: &str) -> Self {
        match value {
            "RESOLVED" => ConversationStatus::Resolved,
            _ => ConversationStatus::Open,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentAction {
    Assign,
    Unassign,
    Reassign,
}

impl AssignmentAction {
    pub fn as_db(self) -> &'static str {
        match self {
            AssignmentAction::Assign => "ASSIGN",
            AssignmentAction::Unassign => "UNASSIGN",
            AssignmentAction::Reassign => "REASSIGN",
        }
    }

    pub fn from_db(value: &str) -> Self {
        match value {
            "UNASSIGN" => AssignmentAction::Unassign,
            "REASSIGN" => AssignmentAction::Reassign,
            _ => AssignmentAction::Assign,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentSource {
    Manual,
    Bulk,
    Auto,
}

impl AssignmentSource {
    pub fn as_db(self) -> &'static str {
        match self {
            AssignmentSource::Manual => "MANUAL",
            AssignmentSource::Bulk => "BULK",
            AssignmentSource::Auto => "AUTO",
        }
    }

    pub fn from_db(value: &str) -> Self {
        match value {
            "BULK" => AssignmentSource::Bulk,
            "AUTO" => AssignmentSource::Auto,
            _ => AssignmentSource::Manual,
        }
    }
}
