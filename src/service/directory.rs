//! The directory (DirectoryService): systems of record sync users and conversations in.

use crate::domain::effects::Change;
use crate::domain::holders::OnUnreachableHolder;
use crate::domain::model::{Conversation, Role, User};
use crate::domain::validate::{self, Violations};
use crate::error::{AppError, AppResult};
use crate::service::holders::return_unreachable;
use crate::service::{AfterCommit, SystemCall};
use crate::store::holders::Held;
use crate::store::{Store, auto_assign, conversations, users, waiting};

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

/// DeactivateUser: the user stays in history but can no longer act or be assigned. The open conversations
/// they hold go back to the queue, if the campaign says so (`on_unreachable_holder`).
#[tracing::instrument(name = "db.transaction", skip_all)]
pub async fn deactivate_user(
    store: &Store,
    after: &AfterCommit,
    call: &SystemCall,
    user_id: &str,
) -> AppResult<User> {
    validate::id("user_id", user_id)?;
    let mut tx = store.begin().await?;
    // The lock order: the campaign's lock, their conversations, then their own row.
    let settings = auto_assign::lock(&mut tx, &call.campaign_id).await?;
    if settings.on_unreachable_holder == OnUnreachableHolder::ReturnToQueue {
        waiting::lock_returnable(&mut tx, &call.campaign_id, user_id).await?;
    }
    let user = users::deactivate(&mut tx, &call.campaign_id, user_id)
        .await?
        .ok_or_else(|| AppError::user_not_found(user_id))?;
    let holder = [user_id];
    let returned = return_unreachable(
        &mut tx,
        &call.campaign_id,
        &settings,
        Held::By(&holder),
        None,
        call.request_id.as_deref(),
    )
    .await?;
    tx.commit().await?;
    after.committed(&call.campaign_id, Change::UserDeactivated);
    after.returned_unreachable(&call.campaign_id, returned);
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
    let mut tx = store.begin().await?;
    // New tags may take its holder's reply access away: the campaign's lock first, as everywhere.
    let settings = auto_assign::lock(&mut tx, &call.campaign_id).await?;
    let upserted = conversations::upsert(
        &mut tx,
        &call.campaign_id,
        conversation_id,
        member_id,
        &tags,
    )
    .await?;
    let returned = return_unreachable(
        &mut tx,
        &call.campaign_id,
        &settings,
        Held::Conversation(conversation_id),
        None,
        call.request_id.as_deref(),
    )
    .await?;
    tx.commit().await?;
    after.committed(&call.campaign_id, Change::ConversationSynced);
    after.returned_unreachable(&call.campaign_id, returned);
    Ok(upserted)
}
