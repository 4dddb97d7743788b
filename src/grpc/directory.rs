//! DirectoryService: the systems of record sync users and conversations in.

use tonic::{Request, Response, Status};

use super::context::campaign_id;
use super::convert;
use crate::domain::validate;
use crate::error::AppError;
use crate::pb::{self, directory_service_server::DirectoryService};
use crate::store::Store;

pub struct DirectoryApi {
    store: Store,
}

impl DirectoryApi {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl DirectoryService for DirectoryApi {
    async fn upsert_user(
        &self,
        request: Request<pb::UpsertUserRequest>,
    ) -> Result<Response<pb::UpsertUserResponse>, Status> {
        let campaign_id = campaign_id(request.metadata())?;
        let req = request.into_inner();
        validate::id("user_id", &req.user_id)?;
        let role = convert::role_from_pb("role", req.role)?;
        let display_name = validate::text(
            "display_name",
            &req.display_name,
            validate::MAX_DISPLAY_NAME_LEN,
            false,
        )?;
        let (row, created) = self
            .store
            .upsert_user(&campaign_id, &req.user_id, role, &display_name)
            .await?;
        Ok(Response::new(pb::UpsertUserResponse {
            user: Some(convert::user(row)),
            created,
        }))
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<Response<pb::DeactivateUserResponse>, Status> {
        let campaign_id = campaign_id(request.metadata())?;
        let req = request.into_inner();
        validate::id("user_id", &req.user_id)?;
        let row = self
            .store
            .deactivate_user(&campaign_id, &req.user_id)
            .await?
            .ok_or_else(|| {
                AppError::not_found(
                    "USER_NOT_FOUND",
                    format!(
                        "user {:?} is not a user of campaign {campaign_id:?}",
                        req.user_id
                    ),
                )
            })?;
        Ok(Response::new(pb::DeactivateUserResponse {
            user: Some(convert::user(row)),
        }))
    }

    async fn upsert_conversation(
        &self,
        request: Request<pb::UpsertConversationRequest>,
    ) -> Result<Response<pb::UpsertConversationResponse>, Status> {
        let campaign_id = campaign_id(request.metadata())?;
        let req = request.into_inner();
        validate::id("conversation_id", &req.conversation_id)?;
        validate::id("member_id", &req.member_id)?;
        let tags = validate::tags("member_tags", &req.member_tags)?;
        let (row, created) = self
            .store
            .upsert_conversation(&campaign_id, &req.conversation_id, &req.member_id, &tags)
            .await?;
        Ok(Response::new(pb::UpsertConversationResponse {
            conversation: Some(convert::conversation(row)),
            created,
        }))
    }
}
