//! Reading conversations: one, a page, who may reply, and the assignment history. What an organizer may
//! see is decided by `domain::access::may_view`, here and in every other use case.

use std::time::Duration;

use tokio::time::Instant;

use crate::domain::access::{ReplyDecision, may_view, reply_permission};
use crate::domain::actor::{require_admin, require_self_or_admin};
use crate::domain::model::{Actor, Conversation, ConversationStatus, UserRef};
use crate::domain::opaque::CampaignIds;
use crate::domain::paging;
use crate::domain::validate::{self, Violations};
use crate::error::{AppError, AppResult};
use crate::service::feed::{Delivered, Place};
use crate::service::{ActorCall, Page, authenticate};
use crate::store::conversations::{self, Filter, Viewed};
use crate::store::{Conn, Store, history, users};

/// ListConversations' status filter, as the caller sent it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatusFilter {
    #[default]
    Any,
    Only(ConversationStatus),
    /// A value that is no ConversationStatus.
    Unknown(i32),
}

/// ListConversations' filter, as the caller sent it.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub assignee_id: String,
    pub unassigned: bool,
    pub status: StatusFilter,
    /// Only open conversations whose holder cannot reply to them (admins only).
    pub held_by_unreachable: bool,
    pub page_size: i32,
    pub page_token: String,
}

/// Whether a user may reply to a conversation, and who holds it.
#[derive(Debug, Clone)]
pub struct ReplyCheck {
    pub decision: ReplyDecision,
    pub assignee_id: Option<String>,
}

/// GetConversation.
pub async fn get(
    store: &Store,
    call: &ActorCall,
    conversation_id: &str,
) -> AppResult<Conversation> {
    validate::id("conversation_id", conversation_id)?;
    let mut conn = store.acquire().await?;
    let actor = authenticate(&mut conn, call).await?;
    let viewed = visible(&mut conn, call, &actor.as_user(), conversation_id).await?;
    Ok(viewed.conversation)
}

/// ListConversations: organizers see what they may view (the SQL form of `may_view`), admins everything.
pub async fn list(
    store: &Store,
    call: &ActorCall,
    request: &ListRequest,
) -> AppResult<Page<Conversation>> {
    let mut violations = Violations::default();
    let assignee_id = violations.check(validate::optional_id("assignee_id", &request.assignee_id));
    if assignee_id.is_some() && request.unassigned {
        violations.add(
            "unassigned",
            "set either assignee_id or unassigned, not both: no conversation can match both",
        );
    }
    let status = match request.status {
        StatusFilter::Any => None,
        StatusFilter::Only(status) => Some(status),
        StatusFilter::Unknown(value) => {
            violations.add(
                "status",
                format!("status {value} is not a ConversationStatus"),
            );
            None
        }
    };
    let limit = violations.check(paging::page_size(request.page_size));
    let pages = paging::PageScope::conversations(
        &call.campaign_id,
        assignee_id.as_deref(),
        request.unassigned,
        status,
        request.held_by_unreachable,
    );
    let after = violations.check(pages.after(&request.page_token));
    violations.finish()?;
    let filter = Filter {
        assignee_id,
        unassigned: request.unassigned,
        status,
        held_by_unreachable: request.held_by_unreachable,
    };
    let mut conn = store.acquire().await?;
    let actor = authenticate(&mut conn, call).await?;
    if request.held_by_unreachable {
        // Who may reply to what is an admin's to know.
        require_admin(
            &actor,
            "list conversations held by someone who cannot reply",
        )?;
    }
    let visible_to = (!actor.is_admin()).then_some(actor.user_id.as_str());
    let rows = conversations::list(
        &mut conn,
        &call.campaign_id,
        visible_to,
        &filter,
        after.as_deref(),
        limit + 1,
    )
    .await?;
    Ok(Page::from_rows(rows, limit, |row| {
        pages.token(&row.conversation_id)
    }))
}

/// CheckReplyPermission: about the actor, or (admins only) another user.
pub async fn check_reply_permission(
    store: &Store,
    call: &ActorCall,
    conversation_id: &str,
    user_id: &str,
) -> AppResult<ReplyCheck> {
    let user_id = check_subject_request(conversation_id, user_id)?;
    let mut conn = store.acquire().await?;
    let actor = authenticate(&mut conn, call).await?;
    let subject = subject_user(&mut conn, call, &actor, user_id.as_deref()).await?;
    // Organizers only ask about themselves; one who may not see the conversation learns nothing of it.
    let viewed = if actor.is_admin() {
        view(&mut conn, call, &subject, conversation_id).await?
    } else {
        visible(&mut conn, call, &subject, conversation_id).await?
    };
    let assignee_id = viewed.conversation.assignee_id;
    Ok(ReplyCheck {
        decision: reply_permission(&subject, assignee_id.as_deref(), viewed.grants.reply),
        assignee_id,
    })
}

/// ListAssignmentHistory: of one conversation the actor may view, or of the whole campaign (admins).
pub async fn history(
    store: &Store,
    call: &ActorCall,
    conversation_id: &str,
    page_size: i32,
    page_token: &str,
) -> AppResult<Page<Delivered>> {
    let mut violations = Violations::default();
    let conversation_id =
        violations.check(validate::optional_id("conversation_id", conversation_id));
    let limit = violations.check(paging::page_size(page_size));
    let pages = paging::PageScope::history(&call.campaign_id, conversation_id.as_deref());
    let ids = CampaignIds::new(store.opaque_secret().await?, &call.campaign_id);
    let after = violations.check(pages.after_event(&ids, page_token));
    violations.finish()?;
    let mut conn = store.acquire().await?;
    let actor = authenticate(&mut conn, call).await?;
    match &conversation_id {
        Some(id) => {
            visible(&mut conn, call, &actor.as_user(), id).await?;
        }
        None => require_admin(
            &actor,
            "list the whole campaign's history; pass a conversation_id",
        )?,
    }
    // Read your writes, without writing: the history lists numbered events only, so it first waits for the
    // sequencer its writers woke to number what they committed.
    let newest = history::newest_unnumbered(&mut conn, &call.campaign_id).await?;
    drop(conn);
    if let Some(newest) = newest {
        await_numbering(store, &call.campaign_id, newest).await?;
    }
    let mut conn = store.acquire().await?;
    let rows = history::list(
        &mut conn,
        &call.campaign_id,
        conversation_id.as_deref(),
        after,
        limit + 1,
    )
    .await?;
    // The page token and each event's cursor name an event by its public id: neither counts the events
    // the caller may not see.
    let cursors = paging::PageScope::feed(&call.campaign_id);
    let events = rows
        .into_iter()
        .map(|event| {
            let place = Place::of(&ids, &cursors, event.seq.unwrap_or_default());
            Delivered { event, place }
        })
        .collect();
    Ok(Page::from_rows(events, limit, |row| {
        pages.event_token(row.place.event_id)
    }))
}

/// How long a history read waits for events committed before it to be numbered. Their writers woke the
/// sequencer after committing, so this is milliseconds, unless a writer died before waking it: then the read
/// gives up and lists what is numbered, and the periodic sweep numbers the rest.
const NUMBERING_WAIT: Duration = Duration::from_secs(1);

/// Waits (reading only) until the campaign's events through `newest` (the newest unnumbered one when the
/// call began) are numbered, at most [`NUMBERING_WAIT`], holding no connection between reads. A read never
/// numbers events itself: numbering takes the feed head's lock, a write.
async fn await_numbering(store: &Store, campaign_id: &str, newest: i64) -> AppResult<()> {
    let deadline = Instant::now() + NUMBERING_WAIT;
    let mut pause = Duration::from_millis(1);
    while Instant::now() < deadline {
        tokio::time::sleep(pause).await;
        let mut conn = store.acquire().await?;
        if history::numbered_through(&mut conn, campaign_id, newest).await? {
            return Ok(());
        }
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    tracing::debug!(
        campaign_id,
        "history lists events not numbered yet without them"
    );
    Ok(())
}

/// The conversation with what `user`'s groups grant on it; not found when `user` may not see it.
pub(crate) async fn visible(
    conn: &mut Conn,
    call: &ActorCall,
    user: &UserRef,
    conversation_id: &str,
) -> AppResult<Viewed> {
    let viewed = view(conn, call, user, conversation_id).await?;
    let assignee = viewed.conversation.assignee_id.as_deref();
    if !may_view(user, assignee, viewed.grants) {
        return Err(AppError::conversation_not_found(conversation_id));
    }
    Ok(viewed)
}

/// The conversation with what `user`'s groups grant on it.
pub(crate) async fn view(
    conn: &mut Conn,
    call: &ActorCall,
    user: &UserRef,
    conversation_id: &str,
) -> AppResult<Viewed> {
    conversations::view(conn, &call.campaign_id, conversation_id, &user.user_id)
        .await?
        .ok_or_else(|| AppError::conversation_not_found(conversation_id))
}

/// CheckReplyPermission's and CheckAccess' fields: the conversation, and the user asked about (`None`:
/// the actor).
pub(crate) fn check_subject_request(
    conversation_id: &str,
    user_id: &str,
) -> AppResult<Option<String>> {
    let mut violations = Violations::default();
    violations.check(validate::id("conversation_id", conversation_id));
    let user_id = violations.check(validate::optional_id("user_id", user_id));
    violations.finish()?;
    Ok(user_id)
}

/// The user a permission check is about: the actor by default; only admins may ask about others.
pub(crate) async fn subject_user(
    conn: &mut Conn,
    call: &ActorCall,
    actor: &Actor,
    user_id: Option<&str>,
) -> AppResult<UserRef> {
    let Some(user_id) = user_id else {
        return Ok(actor.as_user());
    };
    require_self_or_admin(actor, user_id)?;
    users::find(conn, &call.campaign_id, user_id)
        .await?
        .map(|user| user.to_ref())
        .ok_or_else(|| AppError::user_not_found(user_id))
}
