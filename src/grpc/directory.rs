//! DirectoryService: each handler decodes the request, calls one use case and encodes the reply.

use tonic::{Request, Response, Status};

use super::context::system_call;
use super::convert;
use crate::pb::{self, directory_service_server::DirectoryService};
use crate::service::{AfterCommit, directory};
use crate::store::Store;

pub struct DirectoryApi {
    store: Store,
    /// Told by the use cases of what they changed.
    after: AfterCommit,
}

impl DirectoryApi {
    pub fn new(store: Store, after: AfterCommit) -> Self {
        Self { store, after }
    }
}

#[tonic::async_trait]
impl DirectoryService for DirectoryApi {
    async fn upsert_user(
        &self,
        request: Request<pb::UpsertUserRequest>,
    ) -> Result<Response<pb::UpsertUserResponse>, Status> {
        let call = system_call(&request)?;
        let req = request.into_inner();
        let role = convert::role_from_pb(req.role);
        let (user, created) = directory::upsert_user(
            &self.store,
            &self.after,
            &call,
            &req.user_id,
            role,
            &req.display_name,
        )
        .await?;
        Ok(Response::new(pb::UpsertUserResponse {
            user: Some(convert::user(user)),
            created,
        }))
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<Response<pb::DeactivateUserResponse>, Status> {
        let call = system_call(&request)?;
        let user_id = request.into_inner().user_id;
        let user = directory::deactivate_user(&self.store, &self.after, &call, &user_id).await?;
        Ok(Response::new(pb::DeactivateUserResponse {
            user: Some(convert::user(user)),
        }))
    }

    async fn upsert_conversation(
        &self,
        request: Request<pb::UpsertConversationRequest>,
    ) -> Result<Response<pb::UpsertConversationResponse>, Status> {
        let call = system_call(&request)?;
        let req = request.into_inner();
        let (conversation, created) = directory::upsert_conversation(
            &self.store,
            &self.after,
            &call,
            &req.conversation_id,
            &req.member_id,
            &req.member_tags,
        )
        .await?;
        Ok(Response::new(pb::UpsertConversationResponse {
            conversation: Some(convert::conversation(conversation)),
            created,
        }))
    }
}
