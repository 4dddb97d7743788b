//! One bulk action's run over a stream: targets resolved up front, then batch after batch, each committed
//! whole, with the round-robin and the tally carried across batches. Memory stays flat: a run holds one
//! batch and counters bounded by the number of targets.

use uuid::Uuid;

use crate::domain::bulk::{
    BulkAction, BulkOptions, ItemDecision, ItemOutcome, Rotation, Tally, plan_batch,
    resolve_targets,
};
use crate::domain::model::{Actor, UserRef};
use crate::domain::validate;
use crate::error::{AppError, AppResult};
use crate::observability::BULK_ITEMS;
use crate::store::{ChangeContext, GrantGroup, Store};

fn action_name(action: BulkAction) -> &'static str {
    match action {
        BulkAction::Assign => "assign",
        BulkAction::Unassign => "unassign",
        BulkAction::Reassign => "reassign",
    }
}

/// Conversations per transaction: large enough for set-based SQL to pay off, small enough to keep row
/// locks short.
pub const BATCH_SIZE: usize = 500;

pub struct BulkRun {
    store: Store,
    action: BulkAction,
    campaign_id: String,
    actor: Actor,
    targets: Vec<UserRef>,
    target_ids: Vec<String>,
    grant_access: bool,
    grant_group: Option<GrantGroup>,
    rotation: Rotation,
    tally: Tally,
    request_id: Option<String>,
}

impl BulkRun {
    /// Checks the options against the directory; any problem fails the call before anything is written.
    pub async fn start(
        store: Store,
        action: BulkAction,
        campaign_id: String,
        actor: Actor,
        mut options: BulkOptions,
        access_group_ids: &[Uuid],
        request_id: Option<String>,
    ) -> AppResult<Self> {
        let named = store
            .find_users(&campaign_id, &options.assignee_ids)
            .await?;
        let named: Vec<UserRef> = named.iter().map(|row| row.to_ref()).collect();
        if !access_group_ids.is_empty() {
            let groups = store
                .active_group_organizers(&campaign_id, access_group_ids)
                .await?;
            for id in access_group_ids {
                let (_, organizers) =
                    groups
                        .iter()
                        .find(|(group, _)| group == id)
                        .ok_or_else(|| {
                            AppError::invalid(
                                "options.access_group_ids",
                                format!("access group {id} does not exist in this campaign"),
                            )
                        })?;
                options.group_organizers.extend(organizers.iter().cloned());
            }
        }
        let targets = resolve_targets(action, &actor, &options, &named)?;
        let grant_group = match (&options.new_group_name, options.grant_access) {
            (Some(name), true) => {
                if store.access_group_name_taken(&campaign_id, name).await? {
                    return Err(AppError::already_exists(
                        "ACCESS_GROUP_NAME_TAKEN",
                        format!(
                            "an access group named {name:?} already exists; choose another new_access_group_name"
                        ),
                    ));
                }
                Some(GrantGroup {
                    id: Uuid::new_v4(),
                    name: name.clone(),
                    created: false,
                })
            }
            _ => None,
        };
        Ok(Self {
            store,
            action,
            campaign_id,
            actor,
            target_ids: targets.iter().map(|t| t.user_id.clone()).collect(),
            targets,
            grant_access: options.grant_access,
            grant_group,
            rotation: Rotation::default(),
            tally: Tally::default(),
            request_id,
        })
    }

    /// Processes conversation ids in the order sent, one transaction per [`BATCH_SIZE`] of them; returns one
    /// decision per id, in that order. Malformed ids are refused one by one and never stop the others.
    pub async fn process(&mut self, ids: &[String]) -> AppResult<Vec<ItemDecision>> {
        let mut decisions = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_SIZE) {
            self.refresh_directory().await?;
            type Positioned<'a> = Vec<(usize, &'a String)>;
            let (valid, malformed): (Positioned, Positioned) = chunk
                .iter()
                .enumerate()
                .partition(|(_, id)| validate::id("conversation_id", id).is_ok());
            let valid_ids: Vec<String> = valid.iter().map(|(_, id)| (*id).clone()).collect();
            let (action, actor, targets, grant) =
                (self.action, &self.actor, &self.targets, self.grant_access);
            let rotation = &mut self.rotation;
            let planned = if valid_ids.is_empty() {
                Vec::new()
            } else {
                self.store
                    .bulk_batch(
                        ChangeContext {
                            campaign_id: &self.campaign_id,
                            actor_id: &actor.user_id,
                            request_id: self.request_id.as_deref(),
                        },
                        &valid_ids,
                        &self.target_ids,
                        &mut self.grant_group,
                        |items| {
                            plan_batch(action, actor, targets, grant, rotation, &valid_ids, items)
                        },
                    )
                    .await?
            };
            let mut merged: Vec<Option<ItemDecision>> = vec![None; chunk.len()];
            for ((index, _), decision) in valid.iter().zip(planned) {
                merged[*index] = Some(decision);
            }
            for (index, id) in malformed {
                merged[index] = Some(ItemDecision {
                    conversation_id: id.clone(),
                    outcome: ItemOutcome::Refused {
                        reason: "INVALID_CONVERSATION_ID",
                        message: format!("{id:?} is not a valid conversation id"),
                    },
                    grant: false,
                });
            }
            for decision in merged.into_iter().flatten() {
                self.tally.record(&decision);
                metrics::counter!(BULK_ITEMS, "action" => action_name(self.action), "outcome" => decision.outcome.name())
                    .increment(1);
                decisions.push(decision);
            }
        }
        Ok(decisions)
    }

    /// A long stream re-reads the directory before each transaction: an actor deactivated or demoted
    /// meanwhile stops it, and a deactivated target's turns are refused.
    async fn refresh_directory(&mut self) -> AppResult<()> {
        let mut ids = self.target_ids.clone();
        ids.push(self.actor.user_id.clone());
        let users = self.store.find_users(&self.campaign_id, &ids).await?;
        let now = |id: &str| users.iter().find(|u| u.user_id == id).map(|u| u.to_ref());
        match now(&self.actor.user_id) {
            Some(actor) if actor.active && actor.role == self.actor.role => {}
            _ => {
                return Err(AppError::denied(
                    "ACTOR_CHANGED",
                    "your account was deactivated or its role changed during this bulk action; \
                     conversations already answered stay as reported, the rest were not processed",
                ));
            }
        }
        for target in &mut self.targets {
            target.active = now(&target.user_id).is_some_and(|u| u.active);
        }
        Ok(())
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The access group this run created, if it needed one.
    pub fn created_group(&self) -> Option<Uuid> {
        self.grant_group
            .as_ref()
            .filter(|g| g.created)
            .map(|g| g.id)
    }
}
