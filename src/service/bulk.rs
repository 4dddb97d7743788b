//! Bulk assign, unassign and reassign (BulkAssign, BulkUnassign, BulkReassign): targets resolved up front,
//! then batch after batch, each one transaction committed whole, with the round-robin turns, the ids
//! answered and the tally carried across batches. A run holds at most two batches (one writing, the next
//! prepared), counters bounded by the targets, and the distinct ids it answered (so that a repeat is
//! answered once).

use uuid::Uuid;

use crate::domain::bulk::{
    BulkAction, BulkOptions, ItemDecision, StreamState, Tally, plan_batch, resolve_targets,
};
use crate::domain::effects::Change;
use crate::domain::model::{Actor, UserRef};
use crate::domain::validate::{self, Violations};
use crate::error::{AppError, AppResult, Reason};
use crate::observability::BULK_ITEMS;
use crate::service::{ActorCall, AfterCommit, authenticate};
use crate::store::bulk::BulkChange;
use crate::store::{Conn, Store, Tx, access_groups, bulk, users};

/// Conversations per transaction: large enough for set-based SQL to pay off, small enough to keep row
/// locks short.
pub const BATCH_SIZE: usize = 500;

/// Most conversation ids in one message of a stream.
pub const MAX_IDS_PER_MESSAGE: usize = 5_000;

/// Most access groups named as targets.
const MAX_TARGET_GROUPS: usize = 100;

/// A bulk request's options, as the caller sent them.
#[derive(Debug, Clone, Default)]
pub struct OptionsRequest {
    pub assignee_ids: Vec<String>,
    pub access_group_ids: Vec<String>,
    pub grant_access: bool,
    pub new_access_group_name: String,
}

/// The conversation ids of one message, refused whole when there are too many.
pub fn message_ids(ids: Vec<String>) -> AppResult<Vec<String>> {
    if ids.len() > MAX_IDS_PER_MESSAGE {
        return Err(AppError::invalid(
            "conversations.conversation_ids",
            format!(
                "a message carries {} conversation ids; send at most {MAX_IDS_PER_MESSAGE} per message",
                ids.len()
            ),
        ));
    }
    Ok(ids)
}

/// A message's ids cut into the chunks [`BulkRun::prepare`] takes, one transaction each.
pub fn batches(ids: &[String]) -> std::slice::Chunks<'_, String> {
    ids.chunks(BATCH_SIZE)
}

/// The access group a run with grant_access records new permissions in, created by the first batch that
/// needs it, in that batch's transaction.
#[derive(Debug, Clone)]
struct GrantGroup {
    id: Uuid,
    name: String,
    /// A batch that creates it has been prepared (it is written before any later batch).
    claimed: bool,
    /// That batch committed.
    created: bool,
}

pub struct BulkRun {
    store: Store,
    /// Told of each batch's commit.
    after: AfterCommit,
    call: ActorCall,
    action: BulkAction,
    actor: Actor,
    targets: Vec<UserRef>,
    target_ids: Vec<String>,
    grant_access: bool,
    grant_group: Option<GrantGroup>,
    state: StreamState,
    tally: Tally,
}

impl BulkRun {
    /// Checks the options against the directory; any problem fails the call before anything is written.
    pub async fn start(
        store: Store,
        after: AfterCommit,
        call: ActorCall,
        action: BulkAction,
        request: OptionsRequest,
    ) -> AppResult<Self> {
        let (mut options, group_ids) = validate_options(request)?;
        let mut conn = store.acquire().await?;
        let actor = authenticate(&mut conn, &call).await?;
        let named = users::find_many(&mut conn, &call.campaign_id, &options.assignee_ids).await?;
        let named: Vec<UserRef> = named.iter().map(|user| user.to_ref()).collect();
        if !group_ids.is_empty() {
            let groups =
                access_groups::active_group_organizers(&mut conn, &call.campaign_id, &group_ids)
                    .await?;
            for id in &group_ids {
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
                if access_groups::is_name_taken(&mut conn, &call.campaign_id, name).await? {
                    return Err(AppError::access_group_name_taken(name));
                }
                Some(GrantGroup {
                    id: Uuid::new_v4(),
                    name: name.clone(),
                    claimed: false,
                    created: false,
                })
            }
            _ => None,
        };
        Ok(Self {
            store,
            after,
            call,
            action,
            actor,
            target_ids: targets.iter().map(|t| t.user_id.clone()).collect(),
            targets,
            grant_access: options.grant_access,
            grant_group,
            state: StreamState::default(),
            tally: Tally::default(),
        })
    }

    /// Begins one batch's transaction (at most [`BATCH_SIZE`] ids) with kept plans (`Store::begin_keyed`: a
    /// plan that scanned the campaign's conversations per batch grew with the campaign, not the batch),
    /// locks and reads its conversations and the directory, and decides every id, carrying the round-robin
    /// turns and the ids answered on to the next batch. Nothing is written yet: the batch holds its row locks
    /// until [`PreparedBatch::write`], and the next batch may be prepared meanwhile (its rows are others',
    /// or wait for this one's commit), as long as batches are written in the order prepared. Malformed ids
    /// are refused one by one and never stop the others.
    #[tracing::instrument(name = "bulk.chunk", skip_all, fields(size = ids.len()))]
    pub async fn prepare(&mut self, ids: &[String]) -> AppResult<PreparedBatch> {
        debug_assert!(ids.len() <= BATCH_SIZE);
        type Positioned<'a> = Vec<(usize, &'a String)>;
        let (valid, malformed): (Positioned, Positioned) = ids
            .iter()
            .enumerate()
            .partition(|(_, id)| validate::id("conversation_id", id).is_ok());
        let valid_ids: Vec<String> = valid.iter().map(|(_, id)| (*id).clone()).collect();

        let mut tx = self.store.begin_keyed().await?;
        let items = bulk::lock_batch(
            &mut tx,
            &self.call.campaign_id,
            &valid_ids,
            &self.actor.user_id,
            &self.target_ids,
        )
        .await?;
        self.refresh_directory(&mut tx).await?;
        let planned = plan_batch(
            self.action,
            &self.actor,
            &self.targets,
            self.grant_access,
            &mut self.state,
            &valid_ids,
            &items,
        );
        let mut create_group = None;
        let grant_group = match self.grant_group.as_mut() {
            Some(group) if planned.iter().any(|d| d.grant) => {
                if !group.claimed {
                    group.claimed = true;
                    create_group = Some(group.name.clone());
                }
                Some(group.id)
            }
            _ => None,
        };
        Ok(PreparedBatch {
            tx,
            after: self.after.clone(),
            change: self.action.into(),
            campaign_id: self.call.campaign_id.clone(),
            actor_id: self.actor.user_id.clone(),
            request_id: self.call.request_id.clone(),
            grant_group,
            create_group,
            planned,
            valid: valid.into_iter().map(|(index, _)| index).collect(),
            malformed: malformed
                .into_iter()
                .map(|(index, id)| (index, id.clone()))
                .collect(),
            len: ids.len(),
        })
    }

    /// Counts a written batch's decisions into the run's tally and metrics.
    pub fn record(&mut self, decisions: &[ItemDecision]) {
        if let Some(group) = self.grant_group.as_mut()
            && decisions.iter().any(|d| d.grant)
        {
            group.created = true;
        }
        for decision in decisions {
            self.tally.record(decision);
            metrics::counter!(BULK_ITEMS, "action" => self.action.name(), "outcome" => decision.outcome.name())
                .increment(1);
        }
    }

    /// In each batch's transaction, after its conversations are locked, the actor and the targets are read
    /// again under share locks: an actor deactivated or demoted meanwhile stops the stream, a deactivated
    /// target's turns are refused, and neither can change until the batch commits.
    async fn refresh_directory(&mut self, conn: &mut Conn) -> AppResult<()> {
        let mut ids: Vec<&str> = self.target_ids.iter().map(String::as_str).collect();
        ids.push(&self.actor.user_id);
        let users = users::lock_many(conn, &self.call.campaign_id, &ids).await?;
        let now = |id: &str| users.iter().find(|u| u.user_id == id).map(|u| u.to_ref());
        match now(&self.actor.user_id) {
            Some(actor) if actor.active && actor.role == self.actor.role => {}
            _ => {
                return Err(AppError::new(
                    Reason::ActorChanged,
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

/// A batch locked, read and decided by [`BulkRun::prepare`], not yet written: its transaction holds the
/// batch's row locks and share locks on the actor and the targets.
pub struct PreparedBatch {
    tx: Tx,
    after: AfterCommit,
    /// What each batch of the run changes, for what follows its commit.
    change: Change,
    campaign_id: String,
    actor_id: String,
    request_id: Option<String>,
    /// The grant group that records permissions given by this batch's grants.
    grant_group: Option<Uuid>,
    /// The name of the grant group, when this batch creates it.
    create_group: Option<String>,
    /// One decision per valid id, in the order sent.
    planned: Vec<ItemDecision>,
    /// Where each valid id stood in the batch.
    valid: Vec<usize>,
    malformed: Vec<(usize, String)>,
    len: usize,
}

impl PreparedBatch {
    /// Writes the batch's changes, commits, and starts what follows the commit; returns one decision per
    /// id, in the order sent. Count them with [`BulkRun::record`].
    #[tracing::instrument(name = "bulk.write", skip_all, fields(size = self.len))]
    pub async fn write(mut self) -> AppResult<Vec<ItemDecision>> {
        if let (Some(id), Some(name)) = (self.grant_group, &self.create_group) {
            bulk::create_grant_group(&mut self.tx, &self.campaign_id, id, name).await?;
        }
        let change = BulkChange {
            campaign_id: &self.campaign_id,
            actor_id: &self.actor_id,
            request_id: self.request_id.as_deref(),
            grant_group: self.grant_group,
        };
        bulk::write_decisions(&mut self.tx, change, &self.planned).await?;
        self.tx.commit().await?;
        self.after.committed(&self.campaign_id, self.change);

        let mut merged: Vec<Option<ItemDecision>> = vec![None; self.len];
        for (index, decision) in self.valid.into_iter().zip(self.planned) {
            merged[index] = Some(decision);
        }
        for (index, id) in self.malformed {
            merged[index] = Some(ItemDecision::malformed(&id));
        }
        Ok(merged.into_iter().flatten().collect())
    }
}

/// Checks the options' shape; the directory is consulted by [`BulkRun::start`].
fn validate_options(request: OptionsRequest) -> AppResult<(BulkOptions, Vec<Uuid>)> {
    let mut violations = Violations::default();
    let assignee_ids = violations.check(validate::distinct_id_list(
        "options.assignee_ids",
        &request.assignee_ids,
        validate::MAX_IDS_PER_REQUEST,
    ));
    let group_ids = violations.check(
        validate::id_list(
            "options.access_group_ids",
            &request.access_group_ids,
            MAX_TARGET_GROUPS,
        )
        .and_then(|ids| {
            ids.iter()
                .map(|id| {
                    Uuid::parse_str(id).map_err(|_| {
                        AppError::invalid(
                            "options.access_group_ids",
                            format!("access group id {id:?} is not a UUID"),
                        )
                    })
                })
                .collect::<AppResult<Vec<_>>>()
        }),
    );
    let name = violations.check(validate::text(
        "options.new_access_group_name",
        &request.new_access_group_name,
        validate::MAX_GROUP_NAME_LEN,
        false,
    ));
    violations.finish()?;
    let options = BulkOptions {
        assignee_ids,
        group_organizers: Vec::new(),
        grant_access: request.grant_access,
        new_group_name: (!name.is_empty()).then_some(name),
    };
    Ok((options, group_ids))
}
