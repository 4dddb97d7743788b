//! Streaming bulk assign, unassign and reassign: decode the stream, run each batch through the use case
//! (`service::bulk::BulkRun`), and stream back results per batch and a summary.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::context::actor_call;
use super::status::refusal;
use crate::domain::bulk::{BulkAction, ItemDecision, ItemOutcome};
use crate::error::{AppError, AppResult, Reason};
use crate::pb;
use crate::service::AfterCommit;
use crate::service::bulk::{BulkRun, OptionsRequest, message_ids};
use crate::store::Store;

mod pipeline;

use pipeline::Pipeline;

pub type BulkStream<T> = ReceiverStream<Result<T, Status>>;

/// A decoded message of any of the three request streams.
pub(super) enum Inbound {
    Options(pb::BulkAssignOptions),
    Conversations(Vec<String>),
    Empty,
}

/// The assign and reassign request streams have the same shape.
macro_rules! inbound_with_options {
    ($request:ty, $payload:path) => {
        impl From<$request> for Inbound {
            fn from(request: $request) -> Self {
                use $payload as Payload;
                match request.payload {
                    Some(Payload::Options(options)) => Inbound::Options(options),
                    Some(Payload::Conversations(batch)) => {
                        Inbound::Conversations(batch.conversation_ids)
                    }
                    None => Inbound::Empty,
                }
            }
        }
    };
}

inbound_with_options!(pb::BulkAssignRequest, pb::bulk_assign_request::Payload);
inbound_with_options!(pb::BulkReassignRequest, pb::bulk_reassign_request::Payload);

impl From<pb::BulkUnassignRequest> for Inbound {
    fn from(request: pb::BulkUnassignRequest) -> Self {
        match request.conversations {
            Some(batch) => Inbound::Conversations(batch.conversation_ids),
            None => Inbound::Empty,
        }
    }
}

/// What the server streams back, before it is wrapped in each RPC's response type.
pub(super) enum Outbound {
    Results(pb::BulkResults),
    Summary(pb::BulkSummary),
}

/// The three response streams have the same shape.
macro_rules! outbound_into {
    ($response:ty, $payload:path) => {
        impl From<Outbound> for $response {
            fn from(out: Outbound) -> Self {
                use $payload as Payload;
                let payload = match out {
                    Outbound::Results(results) => Payload::Results(results),
                    Outbound::Summary(summary) => Payload::Summary(summary),
                };
                Self {
                    payload: Some(payload),
                }
            }
        }
    };
}

outbound_into!(pb::BulkAssignResponse, pb::bulk_assign_response::Payload);
outbound_into!(
    pb::BulkReassignResponse,
    pb::bulk_reassign_response::Payload
);
outbound_into!(
    pb::BulkUnassignResponse,
    pb::bulk_unassign_response::Payload
);

/// The status that ends a stream which sent nothing for `idle`: its slot goes to someone else.
fn idle_status(idle: Duration) -> Status {
    refusal(
        Reason::StreamIdle,
        format!(
            "no request message for {idle:?} (the server's --stream-idle-timeout); send the next \
             conversations sooner, or close the stream when done"
        ),
    )
}

/// A written chunk's answer for the client: its decisions, counted into the run; or the error that ends the
/// stream.
fn answer<Resp: From<Outbound>>(
    bulk: &mut BulkRun,
    written: AppResult<Vec<ItemDecision>>,
) -> Result<Resp, Status> {
    let decisions = written?;
    bulk.record(&decisions);
    Ok(Outbound::Results(pb::BulkResults {
        items: decisions.into_iter().map(item_result).collect(),
    })
    .into())
}

/// Reads the options (or, for unassign, the first batch), checks them, and returns the response stream;
/// the rest of the request stream is processed by a task feeding that stream. A stream that sends no
/// message for `idle` is ended with DEADLINE_EXCEEDED (STREAM_IDLE).
pub(super) async fn run<Req, Resp>(
    store: &Store,
    action: BulkAction,
    idle: Duration,
    after: AfterCommit,
    request: Request<Streaming<Req>>,
) -> Result<Response<BulkStream<Resp>>, Status>
where
    Req: Into<Inbound> + Send + 'static,
    Resp: From<Outbound> + Send + 'static,
{
    let call = actor_call(&request)?;
    let mut inbound = request.into_inner();
    let first = tokio::time::timeout(idle, inbound.message())
        .await
        .map_err(|_| idle_status(idle))??
        .map(Into::into);
    let (options, first_ids) = match (action, first) {
        (BulkAction::Unassign, Some(Inbound::Conversations(ids))) => {
            (OptionsRequest::default(), message_ids(ids)?)
        }
        (BulkAction::Unassign, _) => {
            return Err(AppError::invalid("conversations", "send conversation ids").into());
        }
        (_, Some(Inbound::Options(options))) => {
            let options = OptionsRequest {
                assignee_ids: options.assignee_ids,
                access_group_ids: options.access_group_ids,
                grant_access: options.grant_access,
                new_access_group_name: options.new_access_group_name,
            };
            (options, Vec::new())
        }
        _ => {
            return Err(AppError::invalid(
                "options",
                "the first message of a bulk assign or reassign must carry its options",
            )
            .into());
        }
    };
    let bulk = BulkRun::start(store.clone(), after, call, action, options).await?;

    // A short queue: a slow reader slows the processing instead of growing the server's memory.
    let (tx, rx) = mpsc::channel::<Result<Resp, Status>>(2);
    let pipeline = Pipeline {
        bulk,
        inbound,
        idle,
        tx,
        writing: None,
    };
    tokio::spawn(pipeline.run(first_ids));
    Ok(Response::new(ReceiverStream::new(rx)))
}

fn item_result(decision: ItemDecision) -> pb::BulkItemResult {
    use pb::BulkItemOutcome as O;
    let (reason, message) = decision
        .outcome
        .refusal(&decision.conversation_id)
        .map(|(reason, message)| (reason.as_str().to_owned(), message))
        .unwrap_or_default();
    let (outcome, assignee) = match decision.outcome {
        ItemOutcome::Assigned { to } => (O::Assigned, Some(to)),
        ItemOutcome::Reassigned { to, .. } => (O::Reassigned, Some(to)),
        ItemOutcome::Unassigned { .. } => (O::Unassigned, None),
        ItemOutcome::Unchanged { assignee } => (O::Unchanged, assignee),
        ItemOutcome::Duplicate => (O::Unchanged, None),
        ItemOutcome::Refused { .. } => (O::Refused, None),
        ItemOutcome::NotFound => (O::NotFound, None),
    };
    pb::BulkItemResult {
        conversation_id: decision.conversation_id,
        outcome: outcome.into(),
        assignee_id: assignee,
        reason,
        message,
        access_granted: decision.grant,
    }
}

fn summary(bulk: &BulkRun) -> pb::BulkSummary {
    let tally = bulk.tally();
    let count = |n: u64| n as i64;
    pb::BulkSummary {
        received: count(tally.received),
        assigned: count(tally.assigned),
        reassigned: count(tally.reassigned),
        unassigned: count(tally.unassigned),
        unchanged: count(tally.unchanged),
        refused: count(tally.refused),
        not_found: count(tally.not_found),
        per_assignee: tally
            .per_assignee
            .iter()
            .map(|(user, n)| (user.clone(), count(*n)))
            .collect(),
        created_access_group_id: bulk.created_group().map(|id| id.to_string()),
    }
}
