//! A campaign's inbox settings: auto-assignment on or off, and how it routes. (The same row is the
//! campaign's auto-assign lock, taken only by `store::auto_assign::lock`.)

use super::Conn;
use crate::domain::auto_assign::{InboxSettings, SettingsChange};
use crate::error::AppResult;

const SETTINGS: &str = "auto_assign_enabled, updated_at, updated_by, default_capacity, routing_mode, \
                        rotation_start, on_unavailable, reply_within_seconds, on_reply_overdue, \
                        max_overdue_reassignments, priority_step_seconds, on_unreachable_holder, \
                        time_zone";

pub async fn get(conn: &mut Conn, campaign_id: &str) -> AppResult<Option<InboxSettings>> {
    let sql = format!("SELECT {SETTINGS} FROM inbox_settings WHERE campaign_id = $1");
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .fetch_optional(conn)
        .await?)
}

/// Applies the fields `change` sets to the campaign's row, which the caller holds locked
/// (`store::auto_assign::lock` made it if the campaign had none). A new row starts from the defaults of the
/// table's columns (the migrations): they are stated there and nowhere else in SQL
/// (`tests/integration/store_rules.rs` checks the domain's agree).
pub async fn update(
    conn: &mut Conn,
    campaign_id: &str,
    change: SettingsChange,
    updated_by: &str,
) -> AppResult<InboxSettings> {
    let sql = format!(
        "UPDATE inbox_settings s \
            SET auto_assign_enabled = coalesce($2, s.auto_assign_enabled), \
                default_capacity = coalesce($3, s.default_capacity), \
                routing_mode = coalesce($4, s.routing_mode), \
                rotation_start = coalesce($5, s.rotation_start), \
                on_unavailable = coalesce($7, s.on_unavailable), \
                reply_within_seconds = CASE WHEN $8 THEN $9 ELSE s.reply_within_seconds END, \
                on_reply_overdue = coalesce($10, s.on_reply_overdue), \
                max_overdue_reassignments = coalesce($11, s.max_overdue_reassignments), \
                priority_step_seconds = coalesce($12, s.priority_step_seconds), \
                on_unreachable_holder = coalesce($13, s.on_unreachable_holder), \
                time_zone = coalesce($14, s.time_zone), \
                updated_by = $6, updated_at = now() \
          WHERE s.campaign_id = $1 \
         RETURNING {SETTINGS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(change.auto_assign_enabled)
        .bind(change.default_capacity)
        .bind(change.routing_mode)
        .bind(change.rotation_start)
        .bind(updated_by)
        .bind(change.on_unavailable)
        .bind(change.reply_within_seconds.is_some())
        .bind(change.reply_within_seconds.flatten())
        .bind(change.on_reply_overdue)
        .bind(change.max_overdue_reassignments)
        .bind(change.priority_step_seconds)
        .bind(change.on_unreachable_holder)
        .bind(change.time_zone)
        .fetch_one(conn)
        .await?)
}
