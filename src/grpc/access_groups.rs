//! AccessGroupService: each handler decodes the request, calls one use case and encodes the reply.

use tonic::{Request, Response, Status};

use super::context::actor_call;
use super::convert;
use crate::pb::{self, access_group_service_server::AccessGroupService};
use crate::service::{AfterCommit, access_groups};
use crate::store::Store;

pub struct AccessGroupApi {
    store: Store,
    /// Told by the use cases of what they changed.
    after: AfterCommit,
}

impl AccessGroupApi {
    pub fn new(store: Store, after: AfterCommit) -> Self {
        Self { store, after }
    }
}

#[tonic::async_trait]
impl AccessGroupService for AccessGroupApi {
    async fn create_access_group(
        &self,
        request: Request<pb::CreateAccessGroupRequest>,
    ) -> Result<Response<pb::CreateAccessGroupResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let group = access_groups::create(
            &self.store,
            &self.after,
            &call,
            &req.name,
            convert::permissions(req.permissions.unwrap_or_default()),
            convert::scope(req.scope.unwrap_or_default()),
            &req.organizer_ids,
        )
        .await?;
        Ok(Response::new(pb::CreateAccessGroupResponse {
            access_group: Some(convert::access_group(group)),
        }))
    }

    async fn get_access_group(
        &self,
        request: Request<pb::GetAccessGroupRequest>,
    ) -> Result<Response<pb::GetAccessGroupResponse>, Status> {
        let call = actor_call(&request)?;
        let id = request.into_inner().access_group_id;
        let group = access_groups::get(&self.store, &call, &id).await?;
        Ok(Response::new(pb::GetAccessGroupResponse {
            access_group: Some(convert::access_group(group)),
        }))
    }

    async fn list_access_groups(
        &self,
        request: Request<pb::ListAccessGroupsRequest>,
    ) -> Result<Response<pb::ListAccessGroupsResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let page = access_groups::list(
            &self.store,
            &call,
            &req.organizer_id,
            req.page_size,
            &req.page_token,
        )
        .await?;
        Ok(Response::new(pb::ListAccessGroupsResponse {
            access_groups: page.items.into_iter().map(convert::access_group).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_access_group(
        &self,
        request: Request<pb::UpdateAccessGroupRequest>,
    ) -> Result<Response<pb::UpdateAccessGroupResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let group = access_groups::update(
            &self.store,
            &self.after,
            &call,
            &req.access_group_id,
            req.name.as_deref(),
            req.permissions.map(convert::permissions),
            req.scope.map(convert::scope),
        )
        .await?;
        Ok(Response::new(pb::UpdateAccessGroupResponse {
            access_group: Some(convert::access_group(group)),
        }))
    }

    async fn delete_access_group(
        &self,
        request: Request<pb::DeleteAccessGroupRequest>,
    ) -> Result<Response<pb::DeleteAccessGroupResponse>, Status> {
        let call = actor_call(&request)?;
        let id = request.into_inner().access_group_id;
        access_groups::delete(&self.store, &self.after, &call, &id).await?;
        Ok(Response::new(pb::DeleteAccessGroupResponse {}))
    }

    async fn add_organizers(
        &self,
        request: Request<pb::AddOrganizersRequest>,
    ) -> Result<Response<pb::AddOrganizersResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let group = access_groups::change_members(
            &self.store,
            &self.after,
            &call,
            &req.access_group_id,
            &req.organizer_ids,
            true,
        )
        .await?;
        Ok(Response::new(pb::AddOrganizersResponse {
            access_group: Some(convert::access_group(group)),
        }))
    }

    async fn remove_organizers(
        &self,
        request: Request<pb::RemoveOrganizersRequest>,
    ) -> Result<Response<pb::RemoveOrganizersResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let group = access_groups::change_members(
            &self.store,
            &self.after,
            &call,
            &req.access_group_id,
            &req.organizer_ids,
            false,
        )
        .await?;
        Ok(Response::new(pb::RemoveOrganizersResponse {
            access_group: Some(convert::access_group(group)),
        }))
    }

    async fn check_access(
        &self,
        request: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::CheckAccessResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let check =
            access_groups::check_access(&self.store, &call, &req.conversation_id, &req.user_id)
                .await?;
        Ok(Response::new(pb::CheckAccessResponse {
            can_view: check.can_view,
            can_reply: check.can_reply,
            is_admin: check.is_admin,
            grants: check.grants.into_iter().map(convert::grant).collect(),
        }))
    }

    async fn list_eligible_assignees(
        &self,
        request: Request<pb::ListEligibleAssigneesRequest>,
    ) -> Result<Response<pb::ListEligibleAssigneesResponse>, Status> {
        let call = actor_call(&request)?;
        let req = request.into_inner();
        let groups = access_groups::list_eligible_assignees(
            &self.store,
            &call,
            &req.conversation_ids,
            req.all_access_groups,
        )
        .await?;
        Ok(Response::new(pb::ListEligibleAssigneesResponse {
            access_groups: groups
                .into_iter()
                .map(|eligible| pb::EligibleAccessGroup {
                    access_group_id: eligible.group.access_group_id.to_string(),
                    name: eligible.group.name,
                    organizer_ids: eligible.group.organizer_ids,
                    covers_selection: eligible.covers_selection,
                })
                .collect(),
        }))
    }
}
