//! Accepted connections, as the gRPC server receives them: TLS handshakes run off the accept loop, and
//! every connection must complete its TLS handshake (if any) and send the HTTP/2 preface within the
//! handshake timeout, or it is closed. A connection that says nothing holds no descriptor for long.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`: what every HTTP/2 client sends first.
const PREFACE_LEN: usize = 24;

/// Who is at the other end of a connection; in every request's extensions.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// The client's certificate chain (its own first), under mutual TLS.
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One accepted connection; reads fail once its deadline passes before the HTTP/2 preface arrived.
pub struct Connection {
    transport: Transport,
    preface: Preface,
}

/// The deadline for the first [`PREFACE_LEN`] bytes; its timer is made only if a read has to wait.
struct Preface {
    missing: usize,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Preface {
    fn new(deadline: Instant) -> Self {
        Self {
            missing: PREFACE_LEN,
            deadline,
            timer: None,
        }
    }

    /// Whether the deadline passed with the preface still incomplete; arms the timer while it has not.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.missing == 0 {
            return false;
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).is_ready()
    }

    fn received(&mut self, bytes: usize) {
        self.missing = self.missing.saturating_sub(bytes);
        if self.missing == 0 {
            self.timer = None;
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no TLS handshake and HTTP/2 preface within the handshake timeout",
    )
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = match &mut this.transport {
            Transport::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        };
        match polled {
            Poll::Ready(Ok(())) => {
                this.preface.received(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            // A trickle does not buy time: only a complete preface stops the clock.
            Poll::Pending if this.preface.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.transport {
            Transport::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.transport {
            Transport::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(io) => io.is_write_vectored(),
            Transport::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.transport {
            Transport::Plain(io) => Pin::new(io).poll_flush(cx),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.transport {
            Transport::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        match &self.transport {
            Transport::Plain(io) => Peer {
                addr: io.peer_addr().ok(),
                certificates: None,
            },
            Transport::Tls(io) => {
                let (tcp, session) = io.get_ref();
                Peer {
                    addr: tcp.peer_addr().ok(),
                    certificates: session
                        .peer_certificates()
                        .map(|certs| Arc::new(certs.to_vec())),
                }
            }
        }
    }
}

/// What the accept loop keeps between connections.
struct Accepting {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    timeout: Duration,
    handshakes: JoinSet<Option<Connection>>,
}

/// The connections `listener` accepts, TLS ones once their handshake is done, each due to send its HTTP/2
/// preface within `timeout` of being accepted. Dropping the stream closes the listener.
pub fn incoming(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    timeout: Duration,
) -> impl Stream<Item = io::Result<Connection>> + Send {
    let state = Accepting {
        listener,
        tls,
        timeout,
        handshakes: JoinSet::new(),
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let connection = state.next().await;
        Some((Ok(connection), state))
    })
}

impl Accepting {
    async fn next(&mut self) -> Connection {
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let tcp = match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(err) => {
                            pause_after(err).await;
                            continue;
                        }
                    };
                    // An answer's frames must not wait for the caller to acknowledge the ones before.
                    if let Err(err) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %err, "could not turn Nagle's algorithm off");
                    }
                    let deadline = Instant::now() + self.timeout;
                    let Some(tls) = self.tls.clone() else {
                        return Connection { transport: Transport::Plain(tcp), preface: Preface::new(deadline) };
                    };
                    self.handshakes.spawn(async move {
                        match tokio::time::timeout_at(deadline, tls.accept(tcp)).await {
                            Ok(Ok(io)) => Some(Connection {
                                transport: Transport::Tls(Box::new(io)),
                                preface: Preface::new(deadline),
                            }),
                            Ok(Err(err)) => {
                                tracing::debug!(error = %err, "TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                tracing::debug!("no TLS handshake within the handshake timeout: closed");
                                None
                            }
                        }
                    });
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }
}

/// A failed accept: a connection reset before it was accepted is nothing; anything else (out of file
/// descriptors, say) is logged and waited out for a moment rather than retried in a busy loop.
async fn pause_after(err: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) {
        return;
    }
    tracing::warn!(error = %err, "could not accept a connection; pausing accepts for 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
