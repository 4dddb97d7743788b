//! The secrets the replicas share through the database (made by the migration `..._service_secrets.sql`).

use super::Conn;
use crate::domain::opaque::Secret;
use crate::error::AppResult;

/// The secret of opaque ids.
pub async fn opaque_ids(conn: &mut Conn) -> AppResult<Secret> {
    let bytes: Vec<u8> =
        sqlx::query_scalar("SELECT secret FROM service_secrets WHERE name = 'opaque_ids'")
            .fetch_one(conn)
            .await?;
    // The table's CHECK keeps it 32 bytes; anything else is a broken database, not a client's fault.
    Secret::from_slice(&bytes).ok_or_else(|| {
        sqlx::Error::ColumnDecode {
            index: "secret".into(),
            source: "the opaque_ids secret is not 32 bytes".into(),
        }
        .into()
    })
}
