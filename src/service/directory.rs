//! The directory (DirectoryService): systems of record sync users and conversations in.

use crate::domain::effects::Change;
use crate::domain::model::{Conversation, Role, User};
use crate::domain::validate::{self, Violations};
use crate::error::{AppError, AppResult};
use crate::service::{AfterCommit, SystemCall};
use crate::store::{Store, conversations, users};

/// UpsertUser: creates or updates a user and (re)activates them. Returns the user and whether they were new.
/// `role` is `None` when the request named no valid role.
pub async fn upsert_user(
    store: &Store,
    after: &AfterCommit,
    call: &SystemCall,
    user_id: &str,
    role: Option<Role>,
    display_name: &str,
) -> AppResult<(User, bool)> {
    let mut violations = Violations::default();
    violations.check(validate::id("user_id", user_id));
    if role.is_none() {
        violations.add("role", "role must be ROLE_ADMIN or ROLE_ORGANIZER");
    }
    let display_name = violations.check(validate::display_name(
        "display_name",
        display_name,
        validate::MAX_DISPLAY_NAME_LEN,
    ));
    violations.finish()?;
    let role = role.expect("checked above");
    let mut conn = store.acquire().await?;
    let upserted =
        users::upsert(&mut conn, &call.campaign_id, user_id, role, &display_name).await?;
    after.committed(&call.campaign_id, Change::UserSynced);
    Ok(upserted)
}

/// DeactivateUser: the user stays in history but can no longer act or be assigned.
pub async fn deactivate_user(
    store: &Store,
    after: &AfterCommit,
    call: &SystemCall,
    user_id: &str,
) -> AppResult<User> {
    validate::id("user_id", user_id)?;
    let mut conn = store.acquire().await?;
    let user = users::deactivate(&mut conn, &call.campaign_id, user_id)
        .await?
        .ok_or_else(|| AppError::user_not_found(user_id))?;
    after.committed(&call.campaign_id, Change::UserDeactivated);
    Ok(user)
}

/// UpsertConversation: creates a conversation or updates its member data. Returns it and whether it was new.
pub async fn upsert_conversation(
    store: &Store,
    after: &AfterCommit,
    call: &SystemCall,
    conversation_id: &str,
    member_id: &str,
    member_tags: &[String],
) -> AppResult<(Conversation, bool)> {
    let mut violations = Violations::default();
    violations.check(validate::id("conversation_id", conversation_id));
    violations.check(validate::id("member_id", member_id));
    let tags = violations.check(validate::tags("member_tags", member_tags));
    violations.finish()?;
    let mut conn = store.acquire().await?;
    let upserted = conversations::upsert(
        &mut conn,
        &call.campaign_id,
        conversation_id,
        member_id,
        &tags,
    )
    .await?;
    after.committed(&call.campaign_id, Change::ConversationSynced);
    Ok(upserted)
}
