//! The private PostgreSQL the service starts when DATABASE_URL is not set.

use std::os::unix::fs::PermissionsExt;

use assignment_service::embedded_pg::{EmbeddedPostgres, THROWAWAY_SETTINGS};
use sqlx::Connection;

#[tokio::test]
async fn outlives_the_thread_that_started_it_keeps_data_and_stops_on_drop() {
    let dir = std::env::temp_dir().join(format!(
        "assignment-service-embedded-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let start = {
        let dir = dir.clone();
        move || EmbeddedPostgres::start(&dir, THROWAWAY_SETTINGS).expect("start")
    };
    // Started from a thread that ends at once, as tokio's blocking pool threads do.
    let cluster = std::thread::spawn(start.clone()).join().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let url = cluster.url("postgres");
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("still running");
    sqlx::query("CREATE TABLE kept (n int)")
        .execute(&mut conn)
        .await
        .unwrap();

    // Only its owner reaches it: a Unix socket in a 0700 directory, and no TCP at all.
    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(listen, "");
    let socket_dir = cluster.socket_dir();
    assert!(socket_dir.starts_with(cluster.data_dir()));
    let mode = std::fs::metadata(socket_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "socket directory mode {mode:o}");
    assert!(
        socket_dir
            .join(format!(".s.PGSQL.{}", cluster.port()))
            .exists()
    );
    let tcp = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port());
    assert!(
        sqlx::PgConnection::connect(&tcp).await.is_err(),
        "TCP is refused"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", cluster.port()))
            .await
            .is_err(),
        "nothing listens on the port over TCP"
    );
    conn.close().await.unwrap();
    drop(cluster);
    assert!(
        sqlx::PgConnection::connect(&url).await.is_err(),
        "stopped on drop"
    );

    // Initialised once: a second start reuses the data directory.
    let again = tokio::task::spawn_blocking(start).await.unwrap();

    // While it runs, a second server on the same directory is refused, not taken for the running one.
    let second = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, THROWAWAY_SETTINGS))
            .await
            .unwrap()
    };
    let Err(refused) = second else {
        panic!("a second server started on a directory in use");
    };
    assert!(
        refused
            .to_string()
            .contains("another server may be using this data directory"),
        "{refused}"
    );
    let mut conn = sqlx::PgConnection::connect(&again.url("postgres"))
        .await
        .unwrap();
    sqlx::query("SELECT * FROM kept")
        .execute(&mut conn)
        .await
        .expect("data kept");
    conn.close().await.unwrap();
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("log"));
}
