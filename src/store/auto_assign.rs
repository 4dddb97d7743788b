//! Auto-assignment: a batch of triggers of one campaign in one transaction under the campaign's rotation lock.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::conversations::{COLUMNS, ConversationRow};
use super::{Store, grant_exists};
use crate::domain::rotation::{AutoOutcome, BatchPlan, Decision, TriggerState};
use crate::error::AppResult;
use crate::observability::{AUTO_ASSIGN_BATCH, LOCK_WAIT_SECONDS};

/// One inbound-message trigger. Member data, when given, creates a conversation this service has not seen.
#[derive(Debug, Clone)]
pub struct TriggerInput {
    pub trigger_id: String,
    pub conversation_id: String,
    pub member_id: Option<String>,
    pub member_tags: Vec<String>,
    /// The request id of the call, recorded on the history event.
    pub request_id: Option<String>,
}

/// What became of one trigger of a batch.
#[derive(Debug, Clone)]
pub enum TriggerReply {
    /// Decided, with the conversation as it stands after the batch.
    Done(Decision, ConversationRow),
    /// The conversation does not exist and the trigger carried no member data to create it.
    UnknownConversation,
    /// The trigger id was first delivered for another conversation.
    TriggerReused { first_conversation: String },
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxSettingsRow {
    pub auto_assign_enabled: bool,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Cursor {
    auto_assign_enabled: bool,
    last_auto_assignee_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TriggerRead {
    ord: i64,
    trigger_id: String,
    #[sqlx(flatten)]
    conversation: ConversationRow,
    recorded_outcome: Option<String>,
    recorded_assignee: Option<String>,
    recorded_conversation: Option<String>,
    eligible: Vec<String>,
}

/// Tags travel as one string per conversation; validated tags never contain this control character.
const TAG_SEPARATOR: &str = "\u{1f}";

impl Store {
    pub async fn inbox_settings(&self, campaign_id: &str) -> AppResult<Option<InboxSettingsRow>> {
        Ok(sqlx::query_as(
            "SELECT auto_assign_enabled, updated_at, updated_by FROM inbox_settings WHERE campaign_id = $1",
        )
        .bind(campaign_id)
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn update_inbox_settings(
        &self,
        campaign_id: &str,
        auto_assign_enabled: bool,
        updated_by: &str,
    ) -> AppResult<InboxSettingsRow> {
        Ok(sqlx::query_as(
            "INSERT INTO inbox_settings (campaign_id, auto_assign_enabled, updated_by) VALUES ($1, $2, $3) \
             ON CONFLICT (campaign_id) DO UPDATE \
               SET auto_assign_enabled = EXCLUDED.auto_assign_enabled, updated_by = EXCLUDED.updated_by, \
                   updated_at = now() \
             RETURNING auto_assign_enabled, updated_at, updated_by",
        )
        .bind(campaign_id)
        .bind(auto_assign_enabled)
        .bind(updated_by)
        .fetch_one(self.pool())
        .await?)
    }

    /// Forgets trigger records older than `retention`, a chunk at a time so no statement runs long.
    /// Returns how many were deleted.
    pub async fn prune_triggers(&self, retention: std::time::Duration) -> AppResult<u64> {
        let mut total = 0;
        loop {
            let deleted = sqlx::query(
                "DELETE FROM auto_assign_triggers WHERE (campaign_id, trigger_id) IN ( \
                   SELECT campaign_id, trigger_id FROM auto_assign_triggers \
                    WHERE received_at < now() - make_interval(secs => $1) LIMIT 5000)",
            )
            .bind(retention.as_secs_f64())
            .execute(self.pool())
            .await?
            .rows_affected();
            total += deleted;
            if deleted < 5000 {
                return Ok(total);
            }
        }
    }

    /// Runs a batch of triggers of one campaign: creates unknown conversations, takes the campaign's
    /// rotation lock, reads every conversation (locked) with its eligible organizers, lets `decide` plan the
    /// batch, then writes assignments, history events, the cursor and the trigger records in one statement.
    /// Returns each trigger's answer, in input order.
    pub async fn auto_assign_batch<F>(
        &self,
        campaign_id: &str,
        triggers: &[TriggerInput],
        decide: F,
    ) -> AppResult<Vec<TriggerReply>>
    where
        F: FnOnce(bool, Option<&str>, &[TriggerState]) -> BatchPlan,
    {
        let mut tx = self.begin_replanned().await?;
        create_missing_conversations(&mut tx, campaign_id, triggers).await?;

        // The hot spot: from here to COMMIT every other batch of this campaign waits.
        let waiting = std::time::Instant::now();
        let lock_sql = "SELECT auto_assign_enabled, last_auto_assignee_id FROM inbox_settings \
                        WHERE campaign_id = $1 FOR UPDATE";
        let mut cursor: Option<Cursor> = sqlx::query_as(lock_sql)
            .bind(campaign_id)
            .fetch_optional(&mut *tx)
            .await?;
        if cursor.is_none() {
            // Never configured (auto-assignment off). Create the row so that even these triggers serialise
            // on it: a redelivery racing an admin switching auto-assignment on must see one history.
            sqlx::query(
                "INSERT INTO inbox_settings (campaign_id) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .bind(campaign_id)
            .execute(&mut *tx)
            .await?;
            cursor = sqlx::query_as(lock_sql)
                .bind(campaign_id)
                .fetch_optional(&mut *tx)
                .await?;
        }
        metrics::histogram!(LOCK_WAIT_SECONDS).record(waiting.elapsed().as_secs_f64());
        metrics::histogram!(AUTO_ASSIGN_BATCH).record(triggers.len() as f64);
        let (enabled, last) = cursor.map_or((false, None), |c| {
            (c.auto_assign_enabled, c.last_auto_assignee_id)
        });

        let read_sql = format!(
            "SELECT i.ord, i.trigger_id, {COLUMNS}, \
                    t.outcome AS recorded_outcome, t.assignee_id AS recorded_assignee, \
                    t.conversation_id AS recorded_conversation, \
                    CASE WHEN $4 THEN ARRAY(SELECT u.user_id FROM users u \
                          WHERE u.campaign_id = c.campaign_id AND u.role = 'ORGANIZER' AND u.active AND {} \
                          ORDER BY u.user_id COLLATE \"C\") \
                         ELSE '{{}}'::text[] END AS eligible \
             FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS i(trigger_id, conversation_id, ord) \
             JOIN conversations c ON c.campaign_id = $1 AND c.conversation_id = i.conversation_id \
             LEFT JOIN auto_assign_triggers t ON t.campaign_id = $1 AND t.trigger_id = i.trigger_id \
             ORDER BY c.conversation_id COLLATE \"C\" \
             FOR UPDATE OF c",
            grant_exists("u.user_id", "can_reply"),
        );
        let trigger_ids: Vec<&str> = triggers.iter().map(|t| t.trigger_id.as_str()).collect();
        let conversation_ids: Vec<&str> = triggers
            .iter()
            .map(|t| t.conversation_id.as_str())
            .collect();
        // Rows are locked in byte order of conversation id, as every multi-row locker does, so they never deadlock;
        // the plan then runs in arrival order.
        let mut reads: Vec<TriggerRead> = sqlx::query_as(&read_sql)
            .bind(campaign_id)
            .bind(&trigger_ids)
            .bind(&conversation_ids)
            .bind(enabled)
            .fetch_all(&mut *tx)
            .await?;
        reads.sort_by_key(|read| read.ord);

        // A trigger id already used for another conversation is a caller's mistake: answer it alone.
        let (reads, reused): (Vec<TriggerRead>, Vec<TriggerRead>) =
            reads.into_iter().partition(|read| {
                read.recorded_conversation
                    .as_deref()
                    .is_none_or(|first| first == read.conversation.conversation_id)
            });
        let states: Vec<TriggerState> = reads
            .iter()
            .map(|read| TriggerState {
                trigger_id: read.trigger_id.clone(),
                conversation_id: read.conversation.conversation_id.clone(),
                current_assignee: read.conversation.assignee_id.clone(),
                recorded: read
                    .recorded_outcome
                    .as_deref()
                    .map(|outcome| AutoOutcome::from_db(outcome, read.recorded_assignee.clone())),
                eligible: read.eligible.clone(),
            })
            .collect();
        let plan = decide(enabled, last.as_deref(), &states);

        let request_ids: Vec<Option<&str>> = reads
            .iter()
            .map(|read| triggers[(read.ord - 1) as usize].request_id.as_deref())
            .collect();
        let assigned = write_plan(
            &mut tx,
            campaign_id,
            &states,
            &request_ids,
            &plan,
            last.as_deref(),
        )
        .await?;
        tx.commit().await?;

        // Reply with each conversation as it stands after the batch.
        let mut replies: Vec<TriggerReply> =
            vec![TriggerReply::UnknownConversation; triggers.len()];
        for ((read, decision), state) in reads.into_iter().zip(plan.decisions).zip(&states) {
            let conversation = assigned
                .get(&state.conversation_id)
                .cloned()
                .unwrap_or(read.conversation);
            replies[(read.ord - 1) as usize] = TriggerReply::Done(decision, conversation);
        }
        for read in reused {
            replies[(read.ord - 1) as usize] = TriggerReply::TriggerReused {
                first_conversation: read.recorded_conversation.unwrap_or_default(),
            };
        }
        Ok(replies)
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

/// Creates the conversations named with member data that do not exist yet, in id order so that concurrent
/// batches take their locks in the same order. Runs before the rotation lock, so it never lengthens it.
async fn create_missing_conversations(
    tx: &mut Tx<'_>,
    campaign_id: &str,
    triggers: &[TriggerInput],
) -> AppResult<()> {
    let mut creates: Vec<&TriggerInput> =
        triggers.iter().filter(|t| t.member_id.is_some()).collect();
    if creates.is_empty() {
        return Ok(());
    }
    creates.sort_by(|a, b| a.conversation_id.cmp(&b.conversation_id));
    creates.dedup_by(|a, b| a.conversation_id == b.conversation_id);
    let ids: Vec<&str> = creates.iter().map(|t| t.conversation_id.as_str()).collect();
    let members: Vec<&str> = creates
        .iter()
        .map(|t| t.member_id.as_deref().unwrap_or_default())
        .collect();
    let tags: Vec<String> = creates
        .iter()
        .map(|t| t.member_tags.join(TAG_SEPARATOR))
        .collect();
    sqlx::query(
        "INSERT INTO conversations (campaign_id, conversation_id, member_id, member_tags) \
         SELECT $1, i.conversation_id, i.member_id, string_to_array(i.tags, $5) \
         FROM unnest($2::text[], $3::text[], $4::text[]) AS i(conversation_id, member_id, tags) \
         ON CONFLICT (campaign_id, conversation_id) DO NOTHING",
    )
    .bind(campaign_id)
    .bind(&ids)
    .bind(&members)
    .bind(&tags)
    .bind(TAG_SEPARATOR)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes a planned batch in one statement; returns the conversations it assigned, by id.
async fn write_plan(
    tx: &mut Tx<'_>,
    campaign_id: &str,
    states: &[TriggerState],
    request_ids: &[Option<&str>],
    plan: &BatchPlan,
    old_cursor: Option<&str>,
) -> AppResult<HashMap<String, ConversationRow>> {
    let mut assign_ids = Vec::new();
    let mut assignees = Vec::new();
    let mut assign_request_ids = Vec::new();
    let mut record = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((state, decision), request_id) in states.iter().zip(&plan.decisions).zip(request_ids) {
        if let Some(user) = decision.assigns() {
            assign_ids.push(state.conversation_id.as_str());
            assignees.push(user);
            assign_request_ids.push(*request_id);
        }
        if !decision.duplicate {
            record.0.push(state.trigger_id.as_str());
            record.1.push(state.conversation_id.as_str());
            record.2.push(decision.outcome.as_db());
            record.3.push(decision.outcome.assignee());
        }
    }
    if record.0.is_empty() {
        return Ok(HashMap::new());
    }
    let cursor = plan.cursor.as_deref().filter(|c| Some(*c) != old_cursor);
    let sql = format!(
        "WITH assigned AS ( \
           UPDATE conversations c \
              SET assignee_id = a.assignee_id, assigned_at = now(), assigned_by = NULL, \
                  version = c.version + 1, updated_at = now() \
             FROM unnest($2::text[], $3::text[]) AS a(conversation_id, assignee_id) \
            WHERE c.campaign_id = $1 AND c.conversation_id = a.conversation_id AND c.assignee_id IS NULL \
           RETURNING {COLUMNS} \
         ), events AS ( \
           INSERT INTO assignment_events (campaign_id, conversation_id, action, to_user_id, source, request_id) \
           SELECT $1, a.conversation_id, 'ASSIGN', a.assignee_id, 'AUTO', a.request_id \
             FROM unnest($2::text[], $3::text[], $9::text[]) \
                  WITH ORDINALITY AS a(conversation_id, assignee_id, request_id, ord) \
             JOIN assigned ON assigned.conversation_id = a.conversation_id \
            ORDER BY a.ord \
         ), moved AS ( \
           UPDATE inbox_settings SET last_auto_assignee_id = $4 \
            WHERE campaign_id = $1 AND $4::text IS NOT NULL \
         ), recorded AS ( \
           INSERT INTO auto_assign_triggers (campaign_id, trigger_id, conversation_id, outcome, assignee_id) \
           SELECT $1, r.* FROM unnest($5::text[], $6::text[], $7::text[], $8::text[]) AS r \
           ON CONFLICT (campaign_id, trigger_id) DO NOTHING \
         ) \
         SELECT * FROM assigned"
    );
    let rows: Vec<ConversationRow> = sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(&assign_ids)
        .bind(&assignees)
        .bind(cursor)
        .bind(&record.0)
        .bind(&record.1)
        .bind(&record.2)
        .bind(&record.3)
        .bind(&assign_request_ids)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.conversation_id.clone(), row))
        .collect())
}
