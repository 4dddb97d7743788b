//! RecordReply: decode, call `service::replies::record_reply`, encode.

use tonic::{Request, Response, Status};

use super::context::caller;
use super::convert;
use crate::pb;
use crate::service::AfterCommit;
use crate::service::replies;
use crate::store::Store;

pub(super) async fn record_reply(
    store: &Store,
    after: &AfterCommit,
    request: Request<pb::RecordReplyRequest>,
) -> Result<Response<pb::RecordReplyResponse>, Status> {
    let caller = caller(&request)?;
    let req = request.into_inner();
    let recorded = replies::record_reply(
        store,
        after,
        &caller,
        &req.conversation_id,
        &req.message_id,
        &req.sender_id,
    )
    .await?;
    Ok(Response::new(pb::RecordReplyResponse {
        conversation: Some(convert::conversation(recorded.conversation)),
        duplicate: recorded.duplicate,
    }))
}
