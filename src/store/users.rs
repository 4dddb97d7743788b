use chrono::{DateTime, Utc};

use super::Store;
use crate::domain::model::{Role, UserRef};
use crate::error::AppResult;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub user_id: String,
    pub role: String,
    pub display_name: String,
    pub active: bool,
    pub updated_at: DateTime<Utc>,
}

impl UserRow {
    pub fn to_ref(&self) -> UserRef {
        UserRef {
            user_id: self.user_id.clone(),
            role: Role::from_db(&self.role),
            active: self.active,
        }
    }
}

const USER_COLUMNS: &str = "user_id, role, display_name, active, updated_at";

impl Store {
    pub async fn find_user(&self, campaign_id: &str, user_id: &str) -> AppResult<Option<UserRow>> {
        let sql =
            format!("SELECT {USER_COLUMNS} FROM users WHERE campaign_id = $1 AND user_id = $2");
        Ok(sqlx::query_as(&sql)
            .bind(campaign_id)
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn find_users(
        &self,
        campaign_id: &str,
        user_ids: &[String],
    ) -> AppResult<Vec<UserRow>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE campaign_id = $1 AND user_id = ANY($2) ORDER BY user_id"
        );
        Ok(sqlx::query_as(&sql)
            .bind(campaign_id)
            .bind(user_ids)
            .fetch_all(self.pool())
            .await?)
    }

    /// Creates or updates a user, (re)activating them. Returns the row and whether it was created.
    pub async fn upsert_user(
        &self,
        campaign_id: &str,
        user_id: &str,
        role: Role,
        display_name: &str,
    ) -> AppResult<(UserRow, bool)> {
        let sql = format!(
            "INSERT INTO users (campaign_id, user_id, role, display_name, active) \
             VALUES ($1, $2, $3, $4, true) \
             ON CONFLICT (campaign_id, user_id) DO UPDATE \
               SET role = EXCLUDED.role, display_name = EXCLUDED.display_name, active = true, updated_at = now() \
             RETURNING {USER_COLUMNS}, (xmax = 0) AS created"
        );
        let (row, created): (UserRow, bool) = sqlx::query_as::<_, UserWithCreated>(&sql)
            .bind(campaign_id)
            .bind(user_id)
            .bind(role.as_db())
            .bind(display_name)
            .fetch_one(self.pool())
            .await
            .map(|r| (r.user, r.created))?;
        Ok((row, created))
    }

    pub async fn deactivate_user(
        &self,
        campaign_id: &str,
        user_id: &str,
    ) -> AppResult<Option<UserRow>> {
        let sql = format!(
            "UPDATE users SET active = false, updated_at = CASE WHEN active THEN now() ELSE updated_at END \
             WHERE campaign_id = $1 AND user_id = $2 RETURNING {USER_COLUMNS}"
        );
        Ok(sqlx::query_as(&sql)
            .bind(campaign_id)
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?)
    }
}

#[derive(sqlx::FromRow)]
struct UserWithCreated {
    #[sqlx(flatten)]
    user: UserRow,
    created: bool,
}
