//! Checks a request body's gRPC framing as it streams in, before tonic decodes it: every message whole,
//! its compressed flag 0 or 1, and exactly one message for an RPC that takes one. tonic would silently
//! drop a unary request's second message and answer a missing or cut-short one with INTERNAL; both are the
//! sender's mistake: INVALID_ARGUMENT (MALFORMED_FRAMING). The bytes pass through unchanged; the messages
//! before a framing error are delivered before it, so a stream answers them first.

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prost::Message;
use tonic::Status;
use tonic::body::Body;

use super::status::refusal;
use crate::error::Reason;

/// A gRPC message's prefix: the compressed flag and a 4-byte big-endian length.
const PREFIX: usize = 5;

/// The paths (`/package.Service/Method`) of the methods whose request is one message, not a stream, from
/// encoded `FileDescriptorSet`s.
pub(super) fn single_message_methods(descriptor_sets: &[&[u8]]) -> HashSet<String> {
    descriptor_sets
        .iter()
        .filter_map(|set| prost_types::FileDescriptorSet::decode(*set).ok())
        .flat_map(|set| set.file)
        .flat_map(|file| {
            let package = file.package().to_owned();
            file.service.into_iter().flat_map(move |service| {
                let prefix = match package.as_str() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                service
                    .method
                    .into_iter()
                    .filter(|method| !method.client_streaming())
                    .map(move |method| format!("/{prefix}/{}", method.name()))
            })
        })
        .collect()
}

/// Where the reader is in the body.
#[derive(Debug, Default)]
struct Framing {
    /// The RPC takes exactly one message.
    single: bool,
    prefix: [u8; PREFIX],
    /// Bytes of the current prefix read so far.
    prefix_read: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
    messages: usize,
}

impl Framing {
    /// Reads `chunk`; on a framing error, how many of its bytes come before the error, and the error.
    fn read(&mut self, chunk: &[u8]) -> Result<(), (usize, Status)> {
        let mut at = 0;
        while at < chunk.len() {
            if self.remaining > 0 {
                let take = self.remaining.min(chunk.len() - at);
                self.remaining -= take;
                at += take;
                continue;
            }
            if self.prefix_read == 0 && self.single && self.messages == 1 {
                return Err((
                    at,
                    malformed(
                        "this RPC takes one request message, and the request sent more; send one \
                         message per call",
                    ),
                ));
            }
            let take = (PREFIX - self.prefix_read).min(chunk.len() - at);
            self.prefix[self.prefix_read..self.prefix_read + take]
                .copy_from_slice(&chunk[at..at + take]);
            self.prefix_read += take;
            if self.prefix_read == PREFIX {
                let flag = self.prefix[0];
                if flag > 1 {
                    // Point at the prefix, so the messages before it are delivered.
                    return Err((
                        (at + take).saturating_sub(PREFIX),
                        malformed(format!(
                            "a message's compressed flag is {flag}; gRPC allows only 0 or 1"
                        )),
                    ));
                }
                let length = u32::from_be_bytes(self.prefix[1..].try_into().expect("4 bytes"));
                self.remaining = length as usize;
                self.prefix_read = 0;
                self.messages += 1;
            }
            at += take;
        }
        Ok(())
    }

    /// At the end of the body: every message whole, and one for a single-message RPC.
    fn finish(&self) -> Result<(), Status> {
        if self.prefix_read > 0 || self.remaining > 0 {
            return Err(malformed(
                "the request body ended inside a message; send each message whole",
            ));
        }
        if self.single && self.messages == 0 {
            return Err(malformed(
                "this RPC takes one request message, and the request sent none",
            ));
        }
        Ok(())
    }
}

fn malformed(message: impl Into<String>) -> Status {
    refusal(Reason::MalformedFraming, message)
}

/// A request body whose framing is checked as it is read.
pub(super) struct FramedBody {
    inner: Body,
    framing: Framing,
    /// A framing error found in a chunk whose first part was passed on: the next thing to report.
    pending: Option<Status>,
    done: bool,
}

impl FramedBody {
    /// `single`: the RPC takes one message.
    pub(super) fn new(inner: Body, single: bool) -> Self {
        Self {
            inner,
            framing: Framing {
                single,
                ..Framing::default()
            },
            pending: None,
            done: false,
        }
    }
}

impl HttpBody for FramedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(status) = this.pending.take() {
            return Poll::Ready(Some(Err(status)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(status)) => {
                this.done = true;
                return Poll::Ready(Some(Err(status)));
            }
            None => {
                this.done = true;
                return Poll::Ready(this.framing.finish().err().map(Err));
            }
        };
        let mut data = match frame.into_data() {
            Ok(data) => data,
            // Trailers.
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        match this.framing.read(&data) {
            Ok(()) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Err((before, status)) => {
                this.done = true;
                if before == 0 {
                    return Poll::Ready(Some(Err(status)));
                }
                this.pending = Some(status);
                Poll::Ready(Some(Ok(Frame::data(data.split_to(before)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // The end is only known once it has been checked.
        self.done && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend((body.len() as u32).to_be_bytes());
        out.extend(body);
        out
    }

    fn framing(single: bool) -> Framing {
        Framing {
            single,
            ..Framing::default()
        }
    }

    /// Reads `chunks` and finishes; the error's offset is within its chunk.
    fn read_all(single: bool, chunks: &[&[u8]]) -> Result<usize, (usize, tonic::Code)> {
        let mut framing = framing(single);
        for chunk in chunks {
            framing
                .read(chunk)
                .map_err(|(at, status)| (at, status.code()))?;
        }
        framing
            .finish()
            .map_err(|status| (usize::MAX, status.code()))?;
        Ok(framing.messages)
    }

    #[test]
    fn whole_messages_in_any_chunking_pass() {
        let two = [message(b"abc"), message(b""), message(&[7; 300])].concat();
        for split in 0..two.len() {
            let (a, b) = two.split_at(split);
            assert_eq!(read_all(false, &[a, b]), Ok(3), "split at {split}");
        }
        assert_eq!(read_all(true, &[&message(b"")]), Ok(1));
        assert_eq!(read_all(false, &[]), Ok(0));
    }

    #[test]
    fn a_second_message_of_a_unary_request_is_refused_where_it_starts() {
        let first = message(b"abc");
        let body = [first.clone(), message(b"d")].concat();
        let invalid = tonic::Code::InvalidArgument;
        assert_eq!(read_all(true, &[&body]), Err((first.len(), invalid)));
        assert_eq!(
            read_all(true, &[&first, &body[first.len()..]]),
            Err((0, invalid))
        );
    }

    #[test]
    fn missing_cut_short_and_badly_flagged_messages_are_refused() {
        let invalid = tonic::Code::InvalidArgument;
        assert_eq!(read_all(true, &[]), Err((usize::MAX, invalid)));
        let whole = message(b"abc");
        assert_eq!(
            read_all(false, &[&whole[..whole.len() - 1]]),
            Err((usize::MAX, invalid))
        );
        assert_eq!(read_all(false, &[&whole[..3]]), Err((usize::MAX, invalid)));
        let mut flagged = message(b"x");
        flagged[0] = 2;
        let body = [whole.clone(), flagged].concat();
        assert_eq!(read_all(false, &[&body]), Err((whole.len(), invalid)));
    }

    #[test]
    fn unary_methods_are_read_from_the_descriptors() {
        let methods = single_message_methods(&[crate::pb::FILE_DESCRIPTOR_SET]);
        assert!(methods.contains("/assignment.v1.AssignmentService/GetConversation"));
        // Server streaming: its request is still one message.
        assert!(methods.contains("/assignment.v1.AssignmentService/WatchAssignmentEvents"));
        assert!(!methods.contains("/assignment.v1.AssignmentService/BulkAssign"));
    }
}
