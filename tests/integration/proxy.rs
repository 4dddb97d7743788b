//! A TCP proxy in front of PostgreSQL that a test can cut, to take the database away from a running server.

use std::net::SocketAddr;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct DatabaseProxy {
    /// The database URL, pointed at the proxy.
    pub url: String,
    stop: watch::Sender<bool>,
}

impl DatabaseProxy {
    /// Proxies the TCP server of `database_url`.
    pub async fn start(database_url: &str) -> Self {
        let options = PgConnectOptions::from_str(database_url).expect("a database URL");
        let target = format!("{}:{}", options.get_host(), options.get_port());
        assert!(
            database_url.contains(&target),
            "the test database URL must name host:port, got {database_url}"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept(listener, target.clone(), stopped));
        Self {
            url: database_url.replacen(&target, &addr.to_string(), 1),
            stop,
        }
    }

    /// Closes the proxy's port and every connection through it: the database is gone for its clients.
    pub fn cut(&self) {
        let _ = self.stop.send(true);
    }
}

async fn accept(listener: TcpListener, target: String, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut inbound, _)) = accepted else { return };
                let target = target.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
            _ = stopped.changed() => return,
        }
    }
}
