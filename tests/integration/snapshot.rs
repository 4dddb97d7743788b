//! A checksum of every table of a test schema, to show that a refused call wrote nothing. What the feed's
//! sequencer writes in the background (numbering events committed before) is left out: it is not the
//! call's doing.

use sqlx::PgPool;

/// Each table of the schema with its row count and the md5 of its rows in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(Vec<(String, i64, String)>);

impl Snapshot {
    /// Reads every table of the pool's schema (`current_schema()`: the test's fresh schema).
    pub async fn take(pool: &PgPool) -> Self {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
             ORDER BY tablename",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(
            tables.iter().any(|t| t == "conversations"),
            "the snapshot sees the service's tables: {tables:?}"
        );
        let mut sums = Vec::with_capacity(tables.len());
        for table in tables.into_iter().filter(|t| t != "feed_heads") {
            let row = if table == "assignment_events" {
                "(to_jsonb(t) - 'seq')::text"
            } else {
                "t::text"
            };
            let (rows, md5): (i64, Option<String>) = sqlx::query_as(&format!(
                "SELECT count(*), md5(string_agg({row}, ',' ORDER BY {row})) FROM \"{table}\" t"
            ))
            .fetch_one(pool)
            .await
            .unwrap();
            sums.push((table, rows, md5.unwrap_or_default()));
        }
        Self(sums)
    }

    /// The tables whose rows differ from `before`'s, or `None` when nothing changed.
    pub fn changes_since(&self, before: &Snapshot) -> Option<String> {
        let changed: Vec<String> = self
            .0
            .iter()
            .zip(&before.0)
            .filter(|(now, then)| now != then)
            .map(|((table, rows, _), (_, rows_before, _))| {
                format!("{table} ({rows_before} -> {rows} rows)")
            })
            .collect();
        if changed.is_empty() && self.0.len() == before.0.len() {
            None
        } else {
            Some(changed.join(", "))
        }
    }
}
