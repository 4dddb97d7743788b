//! Bulk actions: one batch of a stream in one transaction, in a few set-based statements.

use uuid::Uuid;

use super::{ChangeContext, Store, grant_exists};
use crate::domain::bulk::{ItemDecision, ItemOutcome, ItemState};
use crate::error::{AppError, AppResult};

/// The access group a bulk assignment with grant_access records new permissions in. It is created by the
/// first batch that needs it, in that batch's transaction.
#[derive(Debug, Clone)]
pub struct GrantGroup {
    pub id: Uuid,
    pub name: String,
    pub created: bool,
}

#[derive(sqlx::FromRow)]
struct ItemRead {
    ord: i64,
    conversation_id: String,
    assignee_id: Option<String>,
    actor_can_view: bool,
    targets_with_access: Vec<String>,
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

impl Store {
    /// Locks the batch's conversations, lets `decide` plan them, and writes the changes with their `bulk`
    /// history events (and, for grants, the new access group's members and conversations), all or nothing.
    pub async fn bulk_batch<F>(
        &self,
        context: ChangeContext<'_>,
        ids: &[String],
        target_ids: &[String],
        grant_group: &mut Option<GrantGroup>,
        decide: F,
    ) -> AppResult<Vec<ItemDecision>>
    where
        F: FnOnce(&[Option<ItemState>]) -> Vec<ItemDecision>,
    {
        let ChangeContext {
            campaign_id,
            actor_id,
            request_id,
        } = context;
        let mut tx = self.pool().begin().await?;
        let sql = format!(
            "SELECT i.ord, c.conversation_id, c.assignee_id, {} AS actor_can_view, \
                    ARRAY(SELECT t FROM unnest($4::text[]) AS t WHERE {}) AS targets_with_access \
             FROM unnest($2::text[]) WITH ORDINALITY AS i(conversation_id, ord) \
             JOIN conversations c ON c.campaign_id = $1 AND c.conversation_id = i.conversation_id \
             ORDER BY c.conversation_id COLLATE \"C\" \
             FOR UPDATE OF c",
            grant_exists("$3", "can_view"),
            grant_exists("t", "can_reply"),
        );
        let reads: Vec<ItemRead> = sqlx::query_as(&sql)
            .bind(campaign_id)
            .bind(ids)
            .bind(actor_id)
            .bind(target_ids)
            .fetch_all(&mut *tx)
            .await?;
        let mut items: Vec<Option<ItemState>> = vec![None; ids.len()];
        for read in reads {
            items[(read.ord - 1) as usize] = Some(ItemState {
                conversation_id: read.conversation_id,
                current_assignee: read.assignee_id,
                actor_can_view: read.actor_can_view,
                targets_with_access: read.targets_with_access,
            });
        }
        let decisions = decide(&items);
        let needs_group = decisions.iter().any(|d| d.grant);
        let group = match grant_group {
            Some(group) if needs_group => {
                if !group.created {
                    create_grant_group(&mut tx, campaign_id, group).await?;
                }
                Some(group.id)
            }
            _ => None,
        };
        write_decisions(
            &mut tx,
            campaign_id,
            actor_id,
            &decisions,
            group,
            request_id,
        )
        .await?;
        tx.commit().await?;
        if let (Some(group), true) = (grant_group.as_mut(), needs_group) {
            group.created = true;
        }
        Ok(decisions)
    }
}

async fn create_grant_group(
    tx: &mut Tx<'_>,
    campaign_id: &str,
    group: &GrantGroup,
) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO access_groups (campaign_id, access_group_id, name, can_view, can_reply) \
         VALUES ($1, $2, $3, true, true)",
    )
    .bind(campaign_id)
    .bind(group.id)
    .bind(&group.name)
    .execute(&mut **tx)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => AppError::already_exists(
            "ACCESS_GROUP_NAME_TAKEN",
            format!(
                "an access group named {:?} already exists; choose another new_access_group_name",
                group.name
            ),
        ),
        _ => AppError::Database(err),
    })?;
    Ok(())
}

async fn write_decisions(
    tx: &mut Tx<'_>,
    campaign_id: &str,
    actor_id: &str,
    decisions: &[ItemDecision],
    group: Option<Uuid>,
    request_id: Option<&str>,
) -> AppResult<()> {
    let mut changed: Vec<&str> = Vec::new();
    let mut to: Vec<Option<&str>> = Vec::new();
    let mut action: Vec<&str> = Vec::new();
    let mut from: Vec<Option<&str>> = Vec::new();
    let mut granted_users: Vec<&str> = Vec::new();
    let mut granted_conversations: Vec<&str> = Vec::new();
    for decision in decisions {
        let (act, old, new) = match &decision.outcome {
            ItemOutcome::Assigned { to } => ("ASSIGN", None, Some(to.as_str())),
            ItemOutcome::Reassigned { from, to } => {
                ("REASSIGN", Some(from.as_str()), Some(to.as_str()))
            }
            ItemOutcome::Unassigned { from } => ("UNASSIGN", Some(from.as_str()), None),
            _ => continue,
        };
        changed.push(&decision.conversation_id);
        action.push(act);
        from.push(old);
        to.push(new);
        if decision.grant
            && let Some(user) = new
        {
            granted_users.push(user);
            granted_conversations.push(&decision.conversation_id);
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH changed AS ( \
           UPDATE conversations c \
              SET assignee_id = w.to_user, \
                  assigned_at = CASE WHEN w.to_user IS NULL THEN NULL ELSE now() END, \
                  assigned_by = CASE WHEN w.to_user IS NULL THEN NULL ELSE $2::text END, \
                  version = c.version + 1, updated_at = now() \
             FROM unnest($3::text[], $4::text[]) AS w(conversation_id, to_user) \
            WHERE c.campaign_id = $1 AND c.conversation_id = w.conversation_id \
           RETURNING c.conversation_id \
         ), events AS ( \
           INSERT INTO assignment_events \
                  (campaign_id, conversation_id, action, from_user_id, to_user_id, actor_id, source, request_id) \
           SELECT $1, e.conversation_id, e.action, e.from_user, e.to_user, $2, 'BULK', $10 \
             FROM unnest($3::text[], $5::text[], $6::text[], $4::text[]) \
                  WITH ORDINALITY AS e(conversation_id, action, from_user, to_user, ord) \
            ORDER BY e.ord \
         ), members AS ( \
           INSERT INTO access_group_organizers (campaign_id, access_group_id, user_id) \
           SELECT DISTINCT $1, $7::uuid, u FROM unnest($8::text[]) AS u WHERE $7::uuid IS NOT NULL \
           ON CONFLICT DO NOTHING \
         ), scope AS ( \
           INSERT INTO access_group_conversations (campaign_id, access_group_id, conversation_id) \
           SELECT DISTINCT $1, $7::uuid, x FROM unnest($9::text[]) AS x WHERE $7::uuid IS NOT NULL \
           ON CONFLICT DO NOTHING \
         ) \
         SELECT count(*) FROM changed",
    )
    .bind(campaign_id)
    .bind(actor_id)
    .bind(&changed)
    .bind(&to)
    .bind(&action)
    .bind(&from)
    .bind(group)
    .bind(&granted_users)
    .bind(&granted_conversations)
    .bind(request_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
