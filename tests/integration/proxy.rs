//! A TCP proxy in front of PostgreSQL that a test can cut, to take the database away from a running server,
//! and restore. While cut, its port still accepts connections but never answers (a host gone silent), and
//! every connection through it is closed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;

pub struct DatabaseProxy {
    /// The database URL, pointed at the proxy.
    pub url: String,
    /// The proxy's `host:port`.
    pub addr: SocketAddr,
    /// Whether the proxy passes traffic (false: cut).
    open: watch::Sender<bool>,
}

/// Where the proxied server listens: TCP, or a Unix socket (the private cluster).
#[derive(Clone)]
enum Target {
    Tcp(String),
    Socket(PathBuf),
}

impl DatabaseProxy {
    /// Proxies the server of `database_url`, on TCP or on a Unix socket.
    pub async fn start(database_url: &str) -> Self {
        let options = PgConnectOptions::from_str(database_url).expect("a database URL");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (target, url) = match options.get_socket() {
            Some(dir) => {
                // The same URL over TCP to the proxy: its socket directory and port dropped from the query.
                let query = database_url.split_once('?').map_or("", |(_, q)| q);
                let rest: Vec<&str> = query
                    .split('&')
                    .filter(|p| !p.starts_with("host=") && !p.starts_with("port="))
                    .collect();
                let url = format!(
                    "postgres://{}@{addr}/{}?{}",
                    options.get_username(),
                    options.get_database().unwrap_or("postgres"),
                    rest.join("&")
                );
                let socket = dir.join(format!(".s.PGSQL.{}", options.get_port()));
                (Target::Socket(socket), url)
            }
            None => {
                let target = format!("{}:{}", options.get_host(), options.get_port());
                assert!(
                    database_url.contains(&target),
                    "the test database URL must name host:port, got {database_url}"
                );
                let url = database_url.replacen(&target, &addr.to_string(), 1);
                (Target::Tcp(target), url)
            }
        };
        let (open, opened) = watch::channel(true);
        tokio::spawn(accept(listener, target, opened));
        Self { url, addr, open }
    }

    /// Closes every connection through the proxy, and leaves new ones unanswered: the database is gone
    /// for its clients.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Passes new connections through again: the database is back.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

async fn accept(listener: TcpListener, target: Target, open: watch::Receiver<bool>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            return;
        };
        let mut open = open.clone();
        let target = target.clone();
        tokio::spawn(async move {
            if !*open.borrow_and_update() {
                // Silent until restored, then closed: the client's connect never completes meanwhile.
                let _ = open.wait_for(|open| *open).await;
                return;
            }
            match target {
                Target::Tcp(addr) => {
                    if let Ok(outbound) = TcpStream::connect(&addr).await {
                        pipe(inbound, outbound, open).await;
                    }
                }
                Target::Socket(path) => {
                    if let Ok(outbound) = UnixStream::connect(&path).await {
                        pipe(inbound, outbound, open).await;
                    }
                }
            }
        });
    }
}

async fn pipe(
    mut inbound: TcpStream,
    mut outbound: impl AsyncRead + AsyncWrite + Unpin,
    mut open: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = open.wait_for(|open| !*open) => {}
    }
}
