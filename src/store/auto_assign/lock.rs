//! The lock stage: a batch's campaigns, their settings rows, after creating what the triggers bring (its
//! entries' conversations and the campaigns' organizers are locked by the read: `read_batch`).

use std::collections::HashMap;
use std::sync::LazyLock;

use super::TAG_SEPARATOR;
use crate::domain::auto_assign::{OnUnavailable, RotationStart, RoutingMode, Trigger};
use crate::domain::holders::OnUnreachableHolder;
use crate::domain::replies::ReplySettings;
use crate::error::{AppError, AppResult};
use crate::store::Conn;

/// The campaign's locked `inbox_settings` row: its auto-assign lock, held until the transaction ends, and
/// what it guards (the settings a batch decides by, the round-robin cursor among them).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedSettings {
    pub auto_assign_enabled: bool,
    /// Whether conversations may be waiting (see the `has_waiting` column).
    pub has_waiting: bool,
    /// The organizer most recently auto-assigned.
    pub last_auto_assignee_id: Option<String>,
    pub default_capacity: i32,
    pub routing_mode: RoutingMode,
    pub rotation_start: RotationStart,
    /// What becomes of an organizer's conversations when they go away.
    pub on_unavailable: OnUnavailable,
    /// How many seconds of waiting a priority level is worth in the queue.
    pub priority_step_seconds: i32,
    /// The silence timer's settings.
    #[sqlx(flatten)]
    pub replies: ReplySettings,
    /// What becomes of a conversation whose holder can no longer answer it.
    pub on_unreachable_holder: OnUnreachableHolder,
    /// The IANA time zone shift schedules are read in.
    pub time_zone: String,
    /// Whether any organizer of the campaign has a shift schedule.
    pub has_shifts: bool,
}

/// One campaign's triggers in a batch.
#[derive(Debug, Clone, Copy)]
pub struct CampaignTriggers<'a> {
    pub campaign_id: &'a str,
    pub triggers: &'a [Trigger],
}

/// Takes the campaign's auto-assign lock, the one way every use case takes it (a batch takes several
/// campaigns' at once, the same way: [`lock_campaigns`]), making its settings row on first use.
pub async fn lock(conn: &mut Conn, campaign_id: &str) -> AppResult<LockedSettings> {
    let mut locked = lock_campaigns(conn, &[campaign_id], &[], false).await?;
    locked
        .remove(campaign_id)
        .ok_or_else(|| missing_settings(campaign_id))
}

/// The columns of a locked settings row ([`LockedSettings`] and its campaign).
const SETTINGS_COLUMNS: &str = "campaign_id, auto_assign_enabled, has_waiting, last_auto_assignee_id, \
     default_capacity, routing_mode, rotation_start, on_unavailable, priority_step_seconds, \
     reply_within_seconds, on_reply_overdue, max_overdue_reassignments, on_unreachable_holder, \
     time_zone, has_shifts";

static LOCK_CAMPAIGNS: LazyLock<String> = LazyLock::new(|| {
    include_str!("sql/lock_campaigns.sql").replace("{settings_columns}", SETTINGS_COLUMNS)
});

/// Takes the auto-assign locks of `campaign_ids` (their settings rows, in byte order of id, so batches of
/// several campaigns never deadlock): from here to the end of the transaction every other batch of these
/// campaigns waits. A campaign never configured gets its row. First, in the same statement, creates the
/// conversations the parts' triggers name with member data. With `feed_heads`, it also locks the campaigns'
/// feed heads, so the batch can number the campaigns' events (see `read_batch` and `write_batch`).
pub async fn lock_campaigns(
    conn: &mut Conn,
    campaign_ids: &[&str],
    parts: &[CampaignTriggers<'_>],
    feed_heads: bool,
) -> AppResult<HashMap<String, LockedSettings>> {
    let created = NewConversations::from_parts(parts);
    let mut heads: Vec<&str> = if feed_heads {
        campaign_ids.to_vec()
    } else {
        Vec::new()
    };
    heads.sort_unstable();
    let mut rows: Vec<LockedSettingsRow> = sqlx::query_as(&LOCK_CAMPAIGNS)
        .bind(campaign_ids) // $1 campaign_ids
        .bind(&created.campaigns) // $2 new_campaigns
        .bind(&created.ids) // $3 new_ids
        .bind(&created.members) // $4 new_members
        .bind(&created.tags) // $5 new_tags
        .bind(TAG_SEPARATOR) // $6 tag_separator
        .bind(&heads) // $7 feed_heads
        .fetch_all(&mut *conn)
        .await?;
    if rows.len() < campaign_ids.len() {
        // Settings rows made by that statement were not in its snapshot: lock them now (first use only).
        rows = sqlx::query_as(&format!(
            "SELECT {SETTINGS_COLUMNS} FROM inbox_settings WHERE campaign_id = ANY($1) \
                  ORDER BY campaign_id COLLATE \"C\" FOR UPDATE"
        ))
        .bind(campaign_ids) // $1 campaign_ids
        .fetch_all(&mut *conn)
        .await?;
    }
    Ok(rows
        .into_iter()
        .map(|row| (row.campaign_id, row.settings))
        .collect())
}

/// The columns of the conversations a batch's triggers may create, one row each, in (campaign, id) order.
#[derive(Default)]
struct NewConversations<'a> {
    campaigns: Vec<&'a str>,
    ids: Vec<&'a str>,
    members: Vec<&'a str>,
    tags: Vec<String>,
}

impl<'a> NewConversations<'a> {
    fn from_parts(parts: &[CampaignTriggers<'a>]) -> Self {
        let mut creates: Vec<(&str, &Trigger)> = parts
            .iter()
            .flat_map(|part| part.triggers.iter().map(move |t| (part.campaign_id, t)))
            .filter(|(_, t)| t.member_id.is_some())
            .collect();
        creates.sort_by(|a, b| (a.0, &a.1.conversation_id).cmp(&(b.0, &b.1.conversation_id)));
        creates.dedup_by(|a, b| a.0 == b.0 && a.1.conversation_id == b.1.conversation_id);
        let mut columns = Self::default();
        for (campaign_id, trigger) in creates {
            columns.campaigns.push(campaign_id);
            columns.ids.push(&trigger.conversation_id);
            columns
                .members
                .push(trigger.member_id.as_deref().unwrap_or_default());
            columns.tags.push(trigger.member_tags.join(TAG_SEPARATOR));
        }
        columns
    }
}

#[derive(sqlx::FromRow)]
struct LockedSettingsRow {
    campaign_id: String,
    #[sqlx(flatten)]
    settings: LockedSettings,
}

/// `lock_campaigns` makes every row it locks: only a broken database could leave one out.
fn missing_settings(campaign_id: &str) -> AppError {
    AppError::Database(sqlx::Error::Decode(
        format!("no inbox_settings row for campaign {campaign_id:?} after creating it").into(),
    ))
}
