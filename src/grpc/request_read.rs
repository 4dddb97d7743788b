//! A bound on how long a call's request may take to arrive once its headers have: the whole body of a call
//! whose request is one message, the first message of a client stream. A caller that opens calls and sends
//! nothing would otherwise hold their concurrency slots until the call timeout.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prost::Message;
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tonic::body::Body;

use super::status::refusal;
use crate::error::Reason;

/// Whether `path`'s requests are a stream of messages (bulk, reflection): only their first is bounded.
fn is_client_streaming(path: &str) -> bool {
    static PATHS: OnceLock<HashSet<String>> = OnceLock::new();
    path.starts_with("/grpc.reflection.")
        || PATHS
            .get_or_init(|| client_streaming_paths(crate::pb::FILE_DESCRIPTOR_SET))
            .contains(path)
}

/// `/package.Service/Method` of every client-streaming method the descriptors declare.
fn client_streaming_paths(descriptors: &[u8]) -> HashSet<String> {
    let set = prost_types::FileDescriptorSet::decode(descriptors).expect("valid descriptors");
    let mut paths = HashSet::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                if method.client_streaming() {
                    paths.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    paths
}

/// Where the first message's length prefix (1 flag byte, 4 length bytes) and bytes stand.
enum FirstMessage {
    Prefix { have: usize, bytes: [u8; 5] },
    Body { missing: u64 },
    Complete,
}

impl FirstMessage {
    fn advance(&mut self, mut data: &[u8]) {
        loop {
            match self {
                FirstMessage::Prefix { have, bytes } => {
                    let take = (5 - *have).min(data.len());
                    bytes[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    data = &data[take..];
                    if *have < 5 {
                        return;
                    }
                    let length = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                    *self = FirstMessage::Body {
                        missing: u64::from(length),
                    };
                }
                FirstMessage::Body { missing } => {
                    let take = (*missing).min(data.len() as u64);
                    *missing -= take;
                    data = &data[take as usize..];
                    if *missing > 0 {
                        return;
                    }
                    *self = FirstMessage::Complete;
                }
                FirstMessage::Complete => return,
            }
        }
    }
}

/// A request body that fails with DEADLINE_EXCEEDED (REQUEST_TOO_SLOW) when what is bounded has not
/// arrived by the deadline; the handler then ends the call and its slot is freed.
pub(super) struct BoundedRead {
    body: Body,
    /// Cleared once what is bounded has arrived.
    deadline: Option<Instant>,
    timeout: Duration,
    /// Only the first message is bounded (a client stream), rather than the whole body.
    first_only: bool,
    first: FirstMessage,
    /// Made only when the body has to wait: most requests arrive with their headers.
    timer: Option<Pin<Box<Sleep>>>,
}

impl BoundedRead {
    /// `request`'s body, due within `timeout` from now.
    pub(super) fn wrap(path: &str, body: Body, timeout: Duration) -> Body {
        Body::new(Self {
            body,
            deadline: Some(Instant::now() + timeout),
            timeout,
            first_only: is_client_streaming(path),
            first: FirstMessage::Prefix {
                have: 0,
                bytes: [0; 5],
            },
            timer: None,
        })
    }

    fn arrived(&mut self) {
        self.deadline = None;
        self.timer = None;
    }

    fn too_slow(&self) -> Status {
        let what = if self.first_only {
            "the stream's first message"
        } else {
            "the whole request"
        };
        refusal(
            Reason::RequestTooSlow,
            format!(
                "{what} did not arrive within {:?} of its headers (the server's --request-read-timeout); \
                 send the request as soon as the call is opened",
                self.timeout
            ),
        )
    }
}

impl http_body::Body for BoundedRead {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                if this.deadline.is_some() {
                    match &frame {
                        Some(Ok(frame)) => match frame.data_ref() {
                            Some(data) => {
                                this.first.advance(data);
                                if this.first_only && matches!(this.first, FirstMessage::Complete) {
                                    this.arrived();
                                }
                            }
                            // Trailers end the body.
                            None => this.arrived(),
                        },
                        Some(Err(_)) | None => this.arrived(),
                    }
                    if this.body.is_end_stream() {
                        this.arrived();
                    }
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let Some(deadline) = this.deadline else {
                    return Poll::Pending;
                };
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let status = this.too_slow();
                this.arrived();
                Poll::Ready(Some(Err(status)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bulk_streams_are_client_streaming_and_unary_calls_are_not() {
        for method in ["BulkAssign", "BulkUnassign", "BulkReassign"] {
            assert!(is_client_streaming(&format!(
                "/assignment.v1.AssignmentService/{method}"
            )));
        }
        assert!(!is_client_streaming(
            "/assignment.v1.AssignmentService/WatchAssignmentEvents"
        ));
        assert!(!is_client_streaming(
            "/assignment.v1.AssignmentService/AssignConversation"
        ));
        assert!(is_client_streaming(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
    }

    #[test]
    fn the_first_message_is_complete_once_its_length_has_arrived() {
        let mut first = FirstMessage::Prefix {
            have: 0,
            bytes: [0; 5],
        };
        first.advance(&[0, 0, 0]);
        first.advance(&[0, 3, b'a']);
        assert!(matches!(first, FirstMessage::Body { missing: 2 }));
        first.advance(b"bc and the next message");
        assert!(matches!(first, FirstMessage::Complete));
        let mut empty = FirstMessage::Prefix {
            have: 0,
            bytes: [0; 5],
        };
        empty.advance(&[0, 0, 0, 0, 0]);
        assert!(matches!(empty, FirstMessage::Complete));
    }
}
