//! AccessGroupService: admins manage groups; anyone may ask what access they have.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::assignment::{conversation_not_found, next_token, subject_user};
use super::context::Caller;
use super::convert;
use crate::domain::access_group::{check_organizers, check_permissions, normalize_scope};
use crate::domain::actor::require_admin;
use crate::domain::model::Role;
use crate::domain::{paging, validate};
use crate::error::{AppError, AppResult};
use crate::pb::{self, access_group_service_server::AccessGroupService};
use crate::store::{AccessGroupRow, GroupChanges, NewGroup, Store};

pub struct AccessGroupApi {
    store: Store,
}

fn group_id(value: &str) -> AppResult<Uuid> {
    if value.is_empty() {
        return Err(AppError::invalid(
            "access_group_id",
            "access_group_id is required",
        ));
    }
    Uuid::parse_str(value).map_err(|_| {
        AppError::invalid(
            "access_group_id",
            format!(
                "access_group_id {value:?} is not a UUID; use the id CreateAccessGroup returned"
            ),
        )
    })
}

fn group_not_found(id: Uuid) -> AppError {
    AppError::not_found(
        "ACCESS_GROUP_NOT_FOUND",
        format!("access group {id} does not exist in this campaign"),
    )
}

impl AccessGroupApi {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn admin<T>(&self, request: &Request<T>, what: &str) -> AppResult<Caller> {
        let caller = Caller::from_request(&self.store, request).await?;
        require_admin(&caller.actor, what)?;
        Ok(caller)
    }

    /// Validates organizer ids against the directory.
    async fn organizers(&self, campaign_id: &str, ids: &[String]) -> AppResult<Vec<String>> {
        let ids = validate::id_list("organizer_ids", ids, validate::MAX_IDS_PER_REQUEST)?;
        let found = self.store.find_users(campaign_id, &ids).await?;
        let found: Vec<_> = found.iter().map(|row| row.to_ref()).collect();
        check_organizers(&ids, &found)?;
        Ok(ids)
    }

    /// Every explicitly listed conversation must exist.
    async fn check_conversations_exist(&self, campaign_id: &str, ids: &[String]) -> AppResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let missing = self.store.missing_conversations(campaign_id, ids).await?;
        if missing.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
        Err(AppError::not_found(
            "CONVERSATION_NOT_FOUND",
            format!(
                "{} listed conversation(s) do not exist in this campaign: {}{}",
                missing.len(),
                shown.join(", "),
                if missing.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            ),
        ))
    }
}

fn reply(row: AccessGroupRow) -> Option<pb::AccessGroup> {
    Some(convert::access_group(row))
}

#[tonic::async_trait]
impl AccessGroupService for AccessGroupApi {
    async fn create_access_group(
        &self,
        request: Request<pb::CreateAccessGroupRequest>,
    ) -> Result<Response<pb::CreateAccessGroupResponse>, Status> {
        let caller = self.admin(&request, "create access groups").await?;
        let req = request.into_inner();
        let name = validate::text("name", &req.name, validate::MAX_GROUP_NAME_LEN, true)?;
        let permissions = convert::permissions(req.permissions.unwrap_or_default());
        check_permissions("permissions", permissions)?;
        let scope = normalize_scope("scope", convert::scope(req.scope.unwrap_or_default()))?;
        let organizer_ids = self
            .organizers(&caller.campaign_id, &req.organizer_ids)
            .await?;
        self.check_conversations_exist(&caller.campaign_id, &scope.conversation_ids)
            .await?;
        let group = NewGroup {
            name,
            permissions,
            scope,
            organizer_ids,
        };
        let row = self
            .store
            .create_access_group(&caller.campaign_id, &group)
            .await?;
        Ok(Response::new(pb::CreateAccessGroupResponse {
            access_group: reply(row),
        }))
    }

    async fn get_access_group(
        &self,
        request: Request<pb::GetAccessGroupRequest>,
    ) -> Result<Response<pb::GetAccessGroupResponse>, Status> {
        let caller = Caller::from_request(&self.store, &request).await?;
        let id = group_id(&request.get_ref().access_group_id)?;
        let row = self
            .store
            .get_access_group(&caller.campaign_id, id)
            .await?
            .ok_or_else(|| group_not_found(id))?;
        if caller.actor.role == Role::Organizer
            && !row.organizer_ids.contains(&caller.actor.user_id)
        {
            return Err(AppError::denied(
                "NOT_A_MEMBER",
                format!("organizers can only see the access groups they belong to, and you are not in {id}"),
            )
            .into());
        }
        Ok(Response::new(pb::GetAccessGroupResponse {
            access_group: reply(row),
        }))
    }

    async fn list_access_groups(
        &self,
        request: Request<pb::ListAccessGroupsRequest>,
    ) -> Result<Response<pb::ListAccessGroupsResponse>, Status> {
        const TOKEN_KIND: &str = "access_groups";
        let caller = Caller::from_request(&self.store, &request).await?;
        let req = request.into_inner();
        let mut member = validate::optional_id("organizer_id", &req.organizer_id)?;
        if caller.actor.role == Role::Organizer {
            match &member {
                Some(id) if id != &caller.actor.user_id => {
                    return Err(AppError::denied(
                        "ADMIN_REQUIRED",
                        "organizers can only list their own access groups; leave organizer_id empty",
                    )
                    .into());
                }
                _ => member = Some(caller.actor.user_id.clone()),
            }
        }
        let limit = paging::page_size(req.page_size)?;
        let after = paging::decode_token(TOKEN_KIND, &req.page_token)?;
        let mut rows = self
            .store
            .list_access_groups(
                &caller.campaign_id,
                member.as_deref(),
                after.as_deref(),
                limit + 1,
            )
            .await?;
        let next_page_token = next_token(&mut rows, limit, |row| {
            paging::encode_token(TOKEN_KIND, &row.name_key)
        });
        Ok(Response::new(pb::ListAccessGroupsResponse {
            access_groups: rows.into_iter().map(convert::access_group).collect(),
            next_page_token,
        }))
    }

    async fn update_access_group(
        &self,
        request: Request<pb::UpdateAccessGroupRequest>,
    ) -> Result<Response<pb::UpdateAccessGroupResponse>, Status> {
        let caller = self.admin(&request, "change access groups").await?;
        let req = request.into_inner();
        let id = group_id(&req.access_group_id)?;
        let name = req
            .name
            .map(|name| validate::text("name", &name, validate::MAX_GROUP_NAME_LEN, true))
            .transpose()?;
        let permissions = req.permissions.map(convert::permissions);
        if let Some(permissions) = permissions {
            check_permissions("permissions", permissions)?;
        }
        let scope = req
            .scope
            .map(|scope| normalize_scope("scope", convert::scope(scope)))
            .transpose()?;
        if let Some(scope) = &scope {
            self.check_conversations_exist(&caller.campaign_id, &scope.conversation_ids)
                .await?;
        }
        let changes = GroupChanges {
            name,
            permissions,
            scope,
        };
        let row = self
            .store
            .update_access_group(&caller.campaign_id, id, &changes)
            .await?
            .ok_or_else(|| group_not_found(id))?;
        Ok(Response::new(pb::UpdateAccessGroupResponse {
            access_group: reply(row),
        }))
    }

    async fn delete_access_group(
        &self,
        request: Request<pb::DeleteAccessGroupRequest>,
    ) -> Result<Response<pb::DeleteAccessGroupResponse>, Status> {
        let caller = self.admin(&request, "delete access groups").await?;
        let id = group_id(&request.get_ref().access_group_id)?;
        if !self
            .store
            .delete_access_group(&caller.campaign_id, id)
            .await?
        {
            return Err(group_not_found(id).into());
        }
        Ok(Response::new(pb::DeleteAccessGroupResponse {}))
    }

    async fn add_organizers(
        &self,
        request: Request<pb::AddOrganizersRequest>,
    ) -> Result<Response<pb::AddOrganizersResponse>, Status> {
        let caller = self.admin(&request, "change access group members").await?;
        let req = request.into_inner();
        let id = group_id(&req.access_group_id)?;
        let ids = self
            .organizers(&caller.campaign_id, &req.organizer_ids)
            .await?;
        let row = self
            .store
            .change_group_members(&caller.campaign_id, id, &ids, true)
            .await?
            .ok_or_else(|| group_not_found(id))?;
        Ok(Response::new(pb::AddOrganizersResponse {
            access_group: reply(row),
        }))
    }

    async fn remove_organizers(
        &self,
        request: Request<pb::RemoveOrganizersRequest>,
    ) -> Result<Response<pb::RemoveOrganizersResponse>, Status> {
        let caller = self.admin(&request, "change access group members").await?;
        let req = request.into_inner();
        let id = group_id(&req.access_group_id)?;
        // Removing needs no directory check: a departed user must still be removable.
        let ids = validate::id_list(
            "organizer_ids",
            &req.organizer_ids,
            validate::MAX_IDS_PER_REQUEST,
        )?;
        let row = self
            .store
            .change_group_members(&caller.campaign_id, id, &ids, false)
            .await?
            .ok_or_else(|| group_not_found(id))?;
        Ok(Response::new(pb::RemoveOrganizersResponse {
            access_group: reply(row),
        }))
    }

    async fn check_access(
        &self,
        request: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::CheckAccessResponse>, Status> {
        let caller = Caller::from_request(&self.store, &request).await?;
        let req = request.into_inner();
        validate::id("conversation_id", &req.conversation_id)?;
        let user = subject_user(&self.store, &caller, &req.user_id).await?;
        let viewed = self
            .store
            .view_conversation(&caller.campaign_id, &req.conversation_id, &user.user_id)
            .await?
            .ok_or_else(|| conversation_not_found(&req.conversation_id, &caller.campaign_id))?;
        let is_admin = user.role == Role::Admin && user.active;
        let grants = if user.active {
            self.store
                .grants(&caller.campaign_id, &user.user_id, &req.conversation_id)
                .await?
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::CheckAccessResponse {
            can_view: is_admin || (user.active && viewed.group_view),
            can_reply: is_admin || (user.active && viewed.group_reply),
            is_admin,
            grants: grants.into_iter().map(convert::grant).collect(),
        }))
    }

    async fn list_eligible_assignees(
        &self,
        request: Request<pb::ListEligibleAssigneesRequest>,
    ) -> Result<Response<pb::ListEligibleAssigneesResponse>, Status> {
        let caller = self
            .admin(&request, "list eligible assignees for bulk actions")
            .await?;
        let req = request.into_inner();
        let ids = validate::id_list(
            "conversation_ids",
            &req.conversation_ids,
            validate::MAX_SCOPE_CONVERSATIONS,
        )?;
        if ids.is_empty() {
            return Err(
                AppError::invalid("conversation_ids", "select at least one conversation").into(),
            );
        }
        self.check_conversations_exist(&caller.campaign_id, &ids)
            .await?;
        let selected = ids.len() as i64;
        let groups = self
            .store
            .groups_covering(&caller.campaign_id, &ids)
            .await?;
        let access_groups = groups
            .into_iter()
            .map(|row| pb::EligibleAccessGroup {
                access_group_id: row.access_group_id.to_string(),
                name: row.name,
                organizer_ids: row.organizer_ids,
                covers_selection: row.covered == selected,
            })
            .filter(|group| req.all_access_groups || group.covers_selection)
            .collect();
        Ok(Response::new(pb::ListEligibleAssigneesResponse {
            access_groups,
        }))
    }
}
