//! The processing side of one bulk stream: reads the client's messages, runs their ids chunk by chunk, one
//! transaction each, and answers each chunk as soon as it commits.
//!
//! While one chunk writes and commits, the next is locked, read and decided on a connection of its own
//! (`BulkRun::prepare`); chunks are written in the order sent. No transaction waits on the client: the next
//! message is taken without waiting while a chunk is prepared (when none has come, that chunk is written
//! first), and a prepared chunk is written before waiting on a reader that fell behind.

use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{Inbound, Outbound, answer, idle_status, summary};
use crate::error::AppError;
use crate::service::bulk::{BulkRun, PreparedBatch, batches, message_ids};

pub(super) struct Pipeline<Req, Resp> {
    pub bulk: BulkRun,
    pub inbound: Streaming<Req>,
    pub idle: Duration,
    pub tx: mpsc::Sender<Result<Resp, Status>>,
    /// A chunk prepared and not yet written.
    pub writing: Option<PreparedBatch>,
}

/// What the client's stream brought next.
enum Next {
    Ids(Vec<String>),
    /// A message without ids.
    Nothing,
    /// Nothing has come yet, and a chunk is prepared: write it before waiting.
    Flush,
    /// The client finished sending.
    End,
    /// The stream ends here: with this error for the client, or without one when the client is gone.
    Stop(Option<Status>),
}

impl<Req, Resp> Pipeline<Req, Resp>
where
    Req: Into<Inbound>,
    Resp: From<Outbound>,
{
    pub async fn run(mut self, first_ids: Vec<String>) {
        let mut next = Some(first_ids);
        loop {
            let step = match next.take() {
                Some(ids) => Next::Ids(ids),
                None => self.next_message().await,
            };
            match step {
                Next::Ids(ids) => {
                    for chunk in batches(&ids) {
                        if !self.advance(Some(chunk)).await {
                            return;
                        }
                    }
                }
                Next::Nothing => {}
                Next::Flush => {
                    if !self.advance(None).await {
                        return;
                    }
                }
                Next::End => {
                    if self.advance(None).await {
                        let _ = self
                            .tx
                            .send(Ok(Outbound::Summary(summary(&self.bulk)).into()))
                            .await;
                    }
                    return;
                }
                // What came before the failure is processed and answered, as it would have been had the
                // failure come later.
                Next::Stop(status) => {
                    if self.advance(None).await
                        && let Some(status) = status
                    {
                        let _ = self.tx.send(Err(status)).await;
                    }
                    return;
                }
            }
        }
    }

    /// The client's next message: taken only if it has already come while a chunk is prepared, awaited
    /// (within the idle limit) otherwise.
    async fn next_message(&mut self) -> Next {
        let received = if self.writing.is_some() {
            match self.inbound.message().now_or_never() {
                Some(received) => received,
                None => return Next::Flush,
            }
        } else {
            tokio::select! {
                // Nobody reads the results any more (the client left, or shutdown cut the call).
                () = self.tx.closed() => return Next::Stop(None),
                received = tokio::time::timeout(self.idle, self.inbound.message()) => match received {
                    Ok(received) => received,
                    Err(_) => return Next::Stop(Some(idle_status(self.idle))),
                },
            }
        };
        match received {
            Ok(Some(message)) => match message.into() {
                Inbound::Conversations(ids) => match message_ids(ids) {
                    Ok(ids) if ids.is_empty() => Next::Nothing,
                    Ok(ids) => Next::Ids(ids),
                    Err(err) => Next::Stop(Some(err.into())),
                },
                Inbound::Options(_) => Next::Stop(Some(
                    AppError::invalid("options", "options may only be sent in the first message")
                        .into(),
                )),
                Inbound::Empty => Next::Nothing,
            },
            Ok(None) => Next::End,
            // A message that is not valid protobuf or badly framed (INVALID_ARGUMENT), one over the size
            // limit (OUT_OF_RANGE), a broken stream: the client is told why the stream ends, after the
            // answers to everything before. (A client that went away reads as the end, or hears nothing.)
            Err(status) => Next::Stop(Some(status)),
        }
    }

    /// Writes the prepared chunk, if any, while preparing `chunk`, if any, and answers the written one: its
    /// results go out as soon as it commits, so whatever happens later, what the client was told is
    /// exactly what was done. False when the stream must end.
    async fn advance(&mut self, chunk: Option<&[String]>) -> bool {
        let (written, prepared) = match (self.writing.take(), chunk) {
            (Some(previous), Some(chunk)) => {
                let (written, prepared) = tokio::join!(previous.write(), self.bulk.prepare(chunk));
                (Some(written), Some(prepared))
            }
            (Some(previous), None) => (Some(previous.write().await), None),
            (None, Some(chunk)) => (None, Some(self.bulk.prepare(chunk).await)),
            (None, None) => (None, None),
        };
        let mut prepared = prepared;
        if let Some(written) = written {
            let mut answers = vec![answer(&mut self.bulk, written)];
            // The reader is behind: commit the chunk prepared meanwhile before waiting on them, so that
            // no row lock waits on the client.
            if answers[0].is_ok()
                && self.tx.capacity() == 0
                && matches!(prepared, Some(Ok(_)))
                && let Some(Ok(next)) = prepared.take()
            {
                let written = next.write().await;
                answers.push(answer(&mut self.bulk, written));
            }
            for answer in answers {
                // A failed write ends the stream; a chunk prepared beside it rolls back unanswered.
                let failed = answer.is_err();
                if self.tx.send(answer).await.is_err() || failed {
                    return false;
                }
            }
        }
        match prepared {
            Some(Ok(prepared)) => {
                self.writing = Some(prepared);
                true
            }
            Some(Err(err)) => {
                let _ = self.tx.send(Err(err.into())).await;
                false
            }
            None => true,
        }
    }
}
