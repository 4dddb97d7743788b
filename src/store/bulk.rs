//! Bulk actions: one batch of a stream in one transaction, in a few set-based statements.

use std::sync::LazyLock;

use uuid::Uuid;

use super::access_groups::name_taken;
use super::rules::{leaves_queue, open_holder, record_load_changes, stamp_after};
use super::{Conn, by_key, by_row_id, grant_exists, row_by_key, scope_covers};
use crate::domain::bulk::{ItemDecision, ItemOutcome, ItemState};
use crate::domain::model::AssignmentAction;
use crate::error::AppResult;

#[derive(sqlx::FromRow)]
struct ItemRead {
    ord: i64,
    conversation_id: String,
    assignee_id: Option<String>,
    actor_group_view: bool,
    targets_with_access: Vec<String>,
}

/// Locks the batch's conversations (in byte order of id, so lockers never deadlock) and reads what the
/// rules need of each. `items[i]` is `None` when `ids[i]` does not exist. Runs in a `begin_keyed`
/// transaction: each conversation is reached by its key, one lookup per id (the ids are sorted first and
/// the conversations are LATERAL to them, so they are locked in that order; a join instead let a plan kept
/// from a small table scan the campaign for every id), and the targets' reply grants are read once for
/// the batch, then matched against each conversation's scope (not looked up per target and row). A target
/// in several covering groups is listed once per group: the rules only ask whether it is listed.
pub async fn lock_batch(
    conn: &mut Conn,
    campaign_id: &str,
    ids: &[String],
    actor_id: &str,
    target_ids: &[String],
) -> AppResult<Vec<Option<ItemState>>> {
    let sql = format!(
        "WITH target_grants AS MATERIALIZED ( \
           SELECT m.user_id, g.campaign_id, g.access_group_id, g.scope_all, g.scope_tags \
             FROM unnest($4::text[]) AS t(user_id) \
             JOIN access_group_organizers m ON m.campaign_id = $1 AND m.user_id = t.user_id \
             JOIN access_groups g ON g.campaign_id = m.campaign_id AND g.access_group_id = m.access_group_id \
            WHERE g.can_reply \
         ) \
         SELECT i.ord, c.conversation_id, c.assignee_id, {} AS actor_group_view, \
                ARRAY(SELECT tg.user_id FROM target_grants tg WHERE {}) AS targets_with_access \
         FROM (SELECT * FROM unnest($2::text[]) WITH ORDINALITY AS i(conversation_id, ord) \
                ORDER BY i.conversation_id COLLATE \"C\", i.ord) AS i \
         CROSS JOIN LATERAL ( \
           SELECT * FROM conversations c WHERE c.campaign_id = $1 AND {} FOR UPDATE) AS c \
         ORDER BY c.conversation_id COLLATE \"C\"",
        grant_exists("$3", "can_view"),
        scope_covers("tg", "c"),
        by_key("c", "i.conversation_id"),
    );
    let reads: Vec<ItemRead> = sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(ids)
        .bind(actor_id)
        .bind(target_ids)
        .fetch_all(conn)
        .await?;
    let mut items: Vec<Option<ItemState>> = vec![None; ids.len()];
    for read in reads {
        items[(read.ord - 1) as usize] = Some(ItemState {
            conversation_id: read.conversation_id,
            current_assignee: read.assignee_id,
            actor_group_view: read.actor_group_view,
            targets_with_access: read.targets_with_access,
        });
    }
    Ok(items)
}

/// Creates the access group a bulk assignment with grant_access records new permissions in (view and
/// reply; its members and conversations are added by [`write_decisions`]).
pub async fn create_grant_group(
    conn: &mut Conn,
    campaign_id: &str,
    id: Uuid,
    name: &str,
) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO access_groups (campaign_id, access_group_id, name, can_view, can_reply) \
         VALUES ($1, $2, $3, true, true)",
    )
    .bind(campaign_id)
    .bind(id)
    .bind(name)
    .execute(conn)
    .await
    .map_err(|err| name_taken(err, name))?;
    Ok(())
}

/// Who makes a bulk change, for its history events.
#[derive(Debug, Clone, Copy)]
pub struct BulkChange<'a> {
    pub campaign_id: &'a str,
    pub actor_id: &'a str,
    pub request_id: Option<&'a str>,
    /// The grant group that records permissions given by `grant` decisions.
    pub grant_group: Option<Uuid>,
}

/// The columns of [`write_decisions`]'s statement: one row per change, in batch order, and the grants.
#[derive(Default)]
struct ChangeColumns<'a> {
    conversations: Vec<&'a str>,
    to: Vec<Option<&'a str>>,
    actions: Vec<AssignmentAction>,
    from: Vec<Option<&'a str>>,
    granted_users: Vec<&'a str>,
    granted_conversations: Vec<&'a str>,
}

impl<'a> ChangeColumns<'a> {
    fn from_decisions(decisions: &'a [ItemDecision]) -> Self {
        let mut columns = Self::default();
        for decision in decisions {
            let (action, old, new) = match &decision.outcome {
                ItemOutcome::Assigned { to } => (AssignmentAction::Assign, None, Some(to.as_str())),
                ItemOutcome::Reassigned { from, to } => (
                    AssignmentAction::Reassign,
                    Some(from.as_str()),
                    Some(to.as_str()),
                ),
                ItemOutcome::Unassigned { from } => {
                    (AssignmentAction::Unassign, Some(from.as_str()), None)
                }
                _ => continue,
            };
            columns.conversations.push(&decision.conversation_id);
            columns.actions.push(action);
            columns.from.push(old);
            columns.to.push(new);
            if decision.grant
                && let Some(user) = new
            {
                columns.granted_users.push(user);
                columns
                    .granted_conversations
                    .push(&decision.conversation_id);
            }
        }
        columns
    }
}

/// [`write_decisions`]'s statement.
///   $1 campaign_id  $2 actor_id  $3 conversations  $4 to_users  $5 actions  $6 from_users
///   $7 grant_group  $8 granted_users  $9 granted_conversations  $10 request_id
static WRITE_DECISIONS: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"WITH
        -- The changes, each conversation found by its key and changed by row id.
        changed AS (
          UPDATE conversations c
             SET assignee_id = w.to_user,
                 assigned_at = CASE WHEN w.to_user IS NULL THEN NULL ELSE now() END,
                 assigned_by = CASE WHEN w.to_user IS NULL THEN NULL ELSE $2::text END,
                 version = c.version + 1, updated_at = now(), clock = {stamp}
            FROM (SELECT w.to_user, w.from_user, w.action, w.ord, x.row_id
                    FROM unnest($3::text[], $4::text[], $6::text[], $5::text[])
                         WITH ORDINALITY AS w(conversation_id, to_user, from_user, action, ord)
                   {conversation_by_key}) AS w
           WHERE {conversation_by_row_id}
          RETURNING c.campaign_id, c.conversation_id, c.assignee_id, c.status, w.from_user, w.action, w.ord,
                    c.clock
        ),
        -- The load moves from the previous assignee (read under the batch's locks) to the new one.
        loads AS ({loads}),
        -- An assigned or reassigned conversation leaves the queue; every decision's event, in batch order.
        {leaves_queue},
        -- A grant makes its targets members of the grant group...
        members AS (
          INSERT INTO access_group_organizers (campaign_id, access_group_id, user_id)
          SELECT DISTINCT $1, $7::uuid, u FROM unnest($8::text[]) AS u WHERE $7::uuid IS NOT NULL
          ON CONFLICT DO NOTHING
        ),
        -- ...and lists the conversations it was given for.
        scope AS (
          INSERT INTO access_group_conversations (campaign_id, access_group_id, conversation_id)
          SELECT DISTINCT $1, $7::uuid, x FROM unnest($9::text[]) AS x WHERE $7::uuid IS NOT NULL
          ON CONFLICT DO NOTHING
        )
        SELECT count(*) FROM changed"#,
        conversation_by_key = row_by_key("conversations", "c", "$1", "w.conversation_id", "", "x"),
        conversation_by_row_id = by_row_id("c", "$1", "w.row_id"),
        // Each change comes after every earlier event about its conversation.
        stamp = stamp_after(&["c.clock"]),
        loads = record_load_changes(&format!(
            "SELECT campaign_id, {}, {} FROM changed",
            open_holder("status", "from_user"),
            open_holder("status", "assignee_id")
        )),
        leaves_queue = leaves_queue(
            "changed",
            "changed.assignee_id IS NOT NULL",
            "SELECT campaign_id, conversation_id, action, from_user, assignee_id, ord, clock FROM changed",
            "$2",
            "'BULK'",
            "$10"
        ),
    )
});

/// Writes a batch's changes with their `bulk` history events and, for grants, the grant group's members
/// and conversations, in one statement (in the batch's `begin_keyed` transaction: rows are found by key, one
/// lookup per item, and changed by row id; a waiting conversation is found by its key, never by scanning the
/// campaign's queue).
pub async fn write_decisions(
    conn: &mut Conn,
    change: BulkChange<'_>,
    decisions: &[ItemDecision],
) -> AppResult<()> {
    let columns = ChangeColumns::from_decisions(decisions);
    if columns.conversations.is_empty() {
        return Ok(());
    }
    sqlx::query(&WRITE_DECISIONS)
        .bind(change.campaign_id) // $1 campaign_id
        .bind(change.actor_id) // $2 actor_id
        .bind(&columns.conversations) // $3 conversations
        .bind(&columns.to) // $4 to_users
        .bind(&columns.actions) // $5 actions
        .bind(&columns.from) // $6 from_users
        .bind(change.grant_group) // $7 grant_group
        .bind(&columns.granted_users) // $8 granted_users
        .bind(&columns.granted_conversations) // $9 granted_conversations
        .bind(change.request_id) // $10 request_id
        .execute(conn)
        .await?;
    Ok(())
}
