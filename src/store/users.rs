//! The campaign directory's users.

use super::Conn;
use super::rules::{Event, stamp_after};
use crate::domain::model::{Availability, Role, User};
use crate::error::AppResult;

const COLUMNS: &str = "user_id, role, display_name, active, updated_at, availability, capacity";

pub async fn find(conn: &mut Conn, campaign_id: &str, user_id: &str) -> AppResult<Option<User>> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE campaign_id = $1 AND user_id = $2");
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await?)
}

/// The users of `user_ids` that exist, by id.
pub async fn find_many(
    conn: &mut Conn,
    campaign_id: &str,
    user_ids: &[String],
) -> AppResult<Vec<User>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM users WHERE campaign_id = $1 AND user_id = ANY($2) ORDER BY user_id"
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(user_ids)
        .fetch_all(conn)
        .await?)
}

/// The users of `user_ids` that exist, read with `FOR SHARE`: until the transaction ends, a concurrent
/// change of their role or active flag waits, and one that committed first is what this reads.
pub async fn lock_many(
    conn: &mut Conn,
    campaign_id: &str,
    user_ids: &[&str],
) -> AppResult<Vec<User>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM users WHERE campaign_id = $1 AND user_id = ANY($2) \
         ORDER BY user_id COLLATE \"C\" FOR SHARE"
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(user_ids)
        .fetch_all(conn)
        .await?)
}

/// Creates or updates a user, (re)activating them. Returns the user and whether they were created.
pub async fn upsert(
    conn: &mut Conn,
    campaign_id: &str,
    user_id: &str,
    role: Role,
    display_name: &str,
) -> AppResult<(User, bool)> {
    let sql = format!(
        "INSERT INTO users (campaign_id, user_id, role, display_name, active) \
         VALUES ($1, $2, $3, $4, true) \
         ON CONFLICT (campaign_id, user_id) DO UPDATE \
           SET role = EXCLUDED.role, display_name = EXCLUDED.display_name, active = true, updated_at = now() \
         RETURNING {COLUMNS}, (xmax = 0) AS created"
    );
    let row: UserWithCreated = sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(user_id)
        .bind(role)
        .bind(display_name)
        .fetch_one(conn)
        .await?;
    Ok((row.user, row.created))
}

/// Deactivates a user; `None` when there is no such user.
pub async fn deactivate(
    conn: &mut Conn,
    campaign_id: &str,
    user_id: &str,
) -> AppResult<Option<User>> {
    let sql = format!(
        "UPDATE users SET active = false, updated_at = CASE WHEN active THEN now() ELSE updated_at END \
         WHERE campaign_id = $1 AND user_id = $2 RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await?)
}

#[derive(sqlx::FromRow)]
struct UserWithCreated {
    #[sqlx(flatten)]
    user: User,
    created: bool,
}

/// Locks one user for a change of their own row (`FOR UPDATE`); `None` when there is no such user.
pub async fn lock(conn: &mut Conn, campaign_id: &str, user_id: &str) -> AppResult<Option<User>> {
    let sql =
        format!("SELECT {COLUMNS} FROM users WHERE campaign_id = $1 AND user_id = $2 FOR UPDATE");
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await?)
}

/// Sets a user's availability and records the change in history, in one statement.
pub async fn set_availability(
    conn: &mut Conn,
    campaign_id: &str,
    user_id: &str,
    availability: Availability,
    actor_id: Option<&str>,
    request_id: Option<&str>,
) -> AppResult<User> {
    let event = Event {
        user_id: "user_id",
        availability: "availability",
        stamp: "clock",
        ..Event::of(
            "campaign_id",
            "'AVAILABILITY_CHANGED'",
            "$4",
            "'MANUAL'",
            "$5",
        )
    };
    let sql = format!(
        "WITH updated AS ( \
           UPDATE users u SET availability = $3, updated_at = now(), clock = {} \
            WHERE u.campaign_id = $1 AND u.user_id = $2 RETURNING * \
         ), event AS ({}) \
         SELECT {COLUMNS} FROM updated",
        // After every earlier event about the user.
        stamp_after(&["u.clock"]),
        event.insert("FROM updated")
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(user_id)
        .bind(availability)
        .bind(actor_id)
        .bind(request_id)
        .fetch_one(conn)
        .await?)
}

/// Sets (or, with `None`, clears) an organizer's own capacity.
pub async fn set_capacity(
    conn: &mut Conn,
    campaign_id: &str,
    user_id: &str,
    capacity: Option<i32>,
) -> AppResult<User> {
    let sql = format!(
        "UPDATE users SET capacity = $3, updated_at = now() \
         WHERE campaign_id = $1 AND user_id = $2 RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(campaign_id)
        .bind(user_id)
        .bind(capacity)
        .fetch_one(conn)
        .await?)
}
