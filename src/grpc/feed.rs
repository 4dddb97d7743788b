//! WatchAssignmentEvents: decodes who watches, runs the feed's watcher (`service::feed`), and encodes its
//! events.

use std::pin::Pin;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::context::caller;
use super::convert;
use crate::pb;
use crate::service::feed::{self, Feed, WatchRequest};
use crate::store::Store;

pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchAssignmentEventsResponse, Status>> + Send>>;

/// A user acting (`x-actor-id`) or else a system caller; a user-scoped token must name its actor.
pub(super) async fn watch(
    store: &Store,
    hub: &Feed,
    request: Request<pb::WatchAssignmentEventsRequest>,
) -> Result<Response<WatchStream>, Status> {
    let watcher = caller(&request)?;
    let req = request.into_inner();
    let watch = WatchRequest {
        cursor: req.cursor,
        conversation_ids: req.conversation_ids,
        assignee_id: req.assignee_id,
    };
    let (events, run) = feed::watch(store, hub, watcher, watch).await?;
    tokio::spawn(run);
    let stream = ReceiverStream::new(events).map(|delivered| {
        delivered
            .map(|d| pb::WatchAssignmentEventsResponse {
                event: Some(convert::event(d)),
            })
            .map_err(Status::from)
    });
    Ok(Response::new(Box::pin(stream)))
}
