//! A real nats-server with JetStream for the relay's tests: a process of its own on a free port, keeping its
//! stream in a directory of its own (file storage), so it can be stopped and started again with what it
//! stored.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use assignment_service::pb;
use async_nats::jetstream;
use prost::Message;

pub struct NatsServer {
    pub port: u16,
    store_dir: std::path::PathBuf,
    child: Option<Child>,
    /// Holds the port while the server is not running, so no other test's server takes it meanwhile.
    reserved: Option<std::net::TcpListener>,
}

impl NatsServer {
    /// Reserves a port and a store directory, without starting the server.
    pub fn unstarted() -> Self {
        let store_dir = std::env::temp_dir().join(format!("relay-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&store_dir).unwrap();
        let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self {
            port: reserved.local_addr().unwrap().port(),
            store_dir,
            child: None,
            reserved: Some(reserved),
        }
    }

    pub async fn start() -> Self {
        let mut server = Self::unstarted();
        server.run().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again), and waits until it accepts connections.
    pub async fn run(&mut self) {
        assert!(self.child.is_none(), "nats-server runs already");
        self.reserved = None;
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .unwrap_or("nats-server");
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&self.store_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (apt-get install nats-server)");
        self.child = Some(child);
        for _ in 0..250 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("nats-server never accepted connections on {}", self.port);
    }

    /// Kills the server (what it stored stays on disk).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // Taken again at once (a just-closed port may linger in TIME_WAIT for clients, not listeners).
            self.reserved = std::net::TcpListener::bind(("127.0.0.1", self.port)).ok();
        }
    }

    /// Every message of `stream`, in stream order: (subject, Nats-Msg-Id, event).
    pub async fn messages(&self, stream: &str) -> Vec<(String, String, pb::AssignmentEvent)> {
        let client = async_nats::connect(self.url()).await.unwrap();
        let context = jetstream::new(client);
        let mut stream = context.get_stream(stream).await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut messages = Vec::new();
        for sequence in 1..=last {
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            let id = message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default();
            let event = pb::AssignmentEvent::decode(message.payload).unwrap();
            messages.push((message.subject.to_string(), id, event));
        }
        messages
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}
