//! Shift schedules: SetShiftSchedule, GetShiftSchedule, DeleteShiftSchedule, and the boundary worker that
//! acts when a shift starts (drain the queue) or ends (`on_unavailable`). Whether someone is on shift is
//! never stored as a status: it is computed from the schedule whenever a decision needs it
//! (`shifts_now`); what is stored is the state the feed last recorded, so each start and end is recorded
//! once, before any routing decision relies on it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use jiff::Timestamp;

use crate::domain::auto_assign::OnUnavailable;
use crate::domain::effects::Change;
use crate::domain::model::Role;
use crate::domain::shifts::{
    self, DEFAULT_TIME_ZONE, ExceptionInput, Schedule, ShiftState, WindowInput,
};
use crate::domain::validate::Violations;
use crate::error::{AppError, AppResult};
use crate::observability::{SHIFT_BOUNDARIES, SHIFT_BOUNDARY_LATENESS_SECONDS};
use crate::service::agenda::Agenda;
use crate::service::{AfterCommit, Caller, lock_setter, user_meant};
use crate::store::auto_assign::LockedSettings;
use crate::store::notices::{self, Notice};
use crate::store::shifts::{self as stored, ShiftChange, StoredSchedule};
use crate::store::waiting::Requeue;
use crate::store::{Conn, Store, auto_assign, inbox_settings, users, waiting};

/// Why an ended shift's conversations went back to the queue (their UNASSIGN and QUEUED events).
pub const SHIFT_ENDED: &str = "SHIFT_ENDED";

/// An organizer's schedule and where it has them now.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub user_id: String,
    pub schedule: Schedule,
    pub state: ShiftState,
}

impl ScheduleView {
    /// "off shift until Mon 09:00 America/Chicago".
    pub fn status(&self) -> String {
        shifts::describe(&self.state, &self.schedule.time_zone)
    }

    /// When the state next changes.
    pub fn changes_at(&self) -> Option<DateTime<Utc>> {
        self.state.until().map(shifts::to_utc)
    }
}

/// Who the schedules of a campaign have off shift now, and the starts and ends the feed has not recorded
/// yet. The one place a decision learns who is on shift (`Routing::off_shift`).
#[derive(Debug, Clone, Default)]
pub struct ShiftsNow {
    pub off_shift: HashSet<String>,
    pub unrecorded: Vec<ShiftChange>,
}

/// Each schedule's state at `at`, against the state the feed last recorded.
pub fn shifts_now(schedules: &[StoredSchedule], at: Timestamp) -> ShiftsNow {
    let mut now = ShiftsNow::default();
    for stored in schedules {
        let on_shift = stored.schedule.state_at(at).is_on();
        if !on_shift {
            now.off_shift.insert(stored.user_id.clone());
        }
        if on_shift != stored.on_shift {
            now.unrecorded.push(ShiftChange {
                user_id: stored.user_id.clone(),
                on_shift,
            });
        }
    }
    now
}

/// Reads the schedules of a campaign whose lock the caller holds, and records the starts and ends that
/// passed since the feed last did (before the caller's own events, so the feed replays its decisions).
/// Returns who is off shift now.
pub async fn record_passed(
    conn: &mut Conn,
    campaign_id: &str,
    settings: &LockedSettings,
) -> AppResult<HashSet<String>> {
    if !settings.has_shifts {
        return Ok(HashSet::new());
    }
    let schedules = stored::read_campaign(conn, campaign_id, &settings.time_zone).await?;
    let now = shifts_now(&schedules, Timestamp::now());
    stored::record(conn, campaign_id, &now.unrecorded, None, None).await?;
    Ok(now.off_shift)
}

/// SetShiftSchedule: replaces `user_id`'s schedule (empty: the caller's). Under the campaign's lock, so
/// every decision sees the schedule before or after, never half; a shift that this ends now applies
/// `on_unavailable` in the same transaction.
pub async fn set_schedule(
    store: &Store,
    after: &AfterCommit,
    setter: &Caller,
    user_id: &str,
    weekly: &[WindowInput],
    exceptions: &[ExceptionInput],
) -> AppResult<ScheduleView> {
    let target_id = target(setter, user_id)?;
    let schema = store.schema().await?;
    let mut tx = store.begin().await?;
    // The campaign's lock first, then the conversations a shift's end returns, then the users: the lock
    // order of SetAvailability (ARCHITECTURE.md).
    let settings = auto_assign::lock(&mut tx, setter.campaign_id()).await?;
    let schedule = shifts::parse(&settings.time_zone, weekly, exceptions).map_err(invalid)?;
    let state = schedule.state_at(Timestamp::now());
    let before = stored::read_one(
        &mut tx,
        setter.campaign_id(),
        &target_id,
        &settings.time_zone,
    )
    .await?;
    // Without a schedule an organizer is on shift.
    let was_on = before.as_ref().is_none_or(|b| b.on_shift);
    let ends = was_on && !state.is_on();
    let returned = if ends && settings.on_unavailable == OnUnavailable::ReturnToQueue {
        waiting::lock_returnable(&mut tx, setter.campaign_id(), &target_id).await?
    } else {
        Vec::new()
    };
    let target = users::lock(&mut tx, setter.campaign_id(), &target_id).await?;
    let actor = lock_setter(&mut tx, setter, &target_id, "shift schedule").await?;
    let target = target.ok_or_else(|| AppError::user_not_found(&target_id))?;
    if target.role != Role::Organizer {
        return Err(only_organizers(&target_id));
    }
    stored::replace(
        &mut tx,
        setter.campaign_id(),
        &target_id,
        &schedule,
        state.is_on(),
        state.until().map(shifts::to_utc),
    )
    .await?;
    let actor_id = actor.as_ref().map(|a| a.user_id.as_str());
    if was_on != state.is_on() {
        record_by(&mut tx, setter, actor_id, &target_id, state.is_on()).await?;
    }
    return_conversations(
        &mut tx,
        setter.campaign_id(),
        &returned,
        actor_id,
        setter.request_id(),
    )
    .await?;
    // Its next boundary may be another: every replica's agenda reads it again.
    let changed = [Notice::TimedWorkChanged(setter.campaign_id())];
    notices::commit_notifying(tx, schema, &changed).await?;
    after.committed(setter.campaign_id(), Change::ShiftsChanged);
    Ok(ScheduleView {
        user_id: target_id,
        schedule,
        state,
    })
}

/// GetShiftSchedule: an organizer's own, or anyone's for an admin or a system caller.
pub async fn get_schedule(
    store: &Store,
    caller: &Caller,
    user_id: &str,
) -> AppResult<ScheduleView> {
    let target_id = target(caller, user_id)?;
    let mut conn = store.acquire().await?;
    if let Caller::Actor(call) = caller {
        let actor = crate::service::authenticate(&mut conn, call).await?;
        crate::domain::actor::require_self_or_admin(&actor, &target_id).map_err(|_| {
            AppError::new(
                crate::error::Reason::AdminRequired,
                format!(
                    "organizers can only read their own shift schedule, not that of user {target_id:?}"
                ),
            )
        })?;
    }
    let time_zone = inbox_settings::get(&mut conn, caller.campaign_id())
        .await?
        .map_or_else(|| DEFAULT_TIME_ZONE.to_owned(), |s| s.time_zone);
    let found = stored::read_one(&mut conn, caller.campaign_id(), &target_id, &time_zone)
        .await?
        .ok_or_else(|| AppError::shift_schedule_not_found(&target_id))?;
    let state = found.schedule.state_at(Timestamp::now());
    Ok(ScheduleView {
        user_id: target_id,
        schedule: found.schedule,
        state,
    })
}

/// DeleteShiftSchedule: from now on the organizer is always on shift (a SHIFT_STARTED if they were off).
/// Whether they had a schedule.
pub async fn delete_schedule(
    store: &Store,
    after: &AfterCommit,
    setter: &Caller,
    user_id: &str,
) -> AppResult<bool> {
    let target_id = target(setter, user_id)?;
    let schema = store.schema().await?;
    let mut tx = store.begin().await?;
    let settings = auto_assign::lock(&mut tx, setter.campaign_id()).await?;
    let target = users::lock(&mut tx, setter.campaign_id(), &target_id).await?;
    let actor = lock_setter(&mut tx, setter, &target_id, "shift schedule").await?;
    target.ok_or_else(|| AppError::user_not_found(&target_id))?;
    let before = stored::read_one(
        &mut tx,
        setter.campaign_id(),
        &target_id,
        &settings.time_zone,
    )
    .await?;
    let deleted = stored::delete(&mut tx, setter.campaign_id(), &target_id).await?;
    if before.is_some_and(|b| !b.on_shift) {
        let actor_id = actor.as_ref().map(|a| a.user_id.as_str());
        record_by(&mut tx, setter, actor_id, &target_id, true).await?;
    }
    // A boundary may be gone: every replica's agenda reads the campaign again.
    let changed = [Notice::TimedWorkChanged(setter.campaign_id())];
    notices::commit_notifying(tx, schema, if deleted { &changed } else { &[] }).await?;
    if deleted {
        after.committed(setter.campaign_id(), Change::ShiftsChanged);
    }
    Ok(deleted)
}

/// One pass of the boundary worker: each campaign this replica's agenda has a shift start or end due in has
/// it acted on, in a transaction of its own (one that fails is logged and left to the next pass), and is
/// read into the agenda again. Every replica runs passes; a boundary is acted on once, under its campaign's
/// lock. Returns how many boundaries were.
pub async fn pass_due_boundaries(
    store: &Store,
    after: &AfterCommit,
    agenda: &Agenda,
) -> AppResult<usize> {
    let mut passed = 0;
    for campaign_id in agenda.due(store, Utc::now()).await? {
        // Acted on or not, its next boundary is read again.
        agenda.touch(&campaign_id);
        match pass_campaign(store, &campaign_id).await {
            Ok(0) => {}
            Ok(n) => {
                passed += n;
                after.committed(&campaign_id, Change::ShiftsChanged);
            }
            Err(err) => {
                tracing::warn!(campaign_id, error = %err, "could not act on a campaign's shift boundaries");
            }
        }
    }
    Ok(passed)
}

/// Acts on the campaign's due boundaries: records the starts and ends the feed has not (a batch may have
/// recorded them first), returns the conversations of those whose shift ended (per `on_unavailable`), and
/// sets when each schedule next changes.
#[tracing::instrument(name = "db.transaction", skip_all, fields(campaign_id))]
async fn pass_campaign(store: &Store, campaign_id: &str) -> AppResult<usize> {
    let mut tx = store.begin().await?;
    let settings = auto_assign::lock(&mut tx, campaign_id).await?;
    let due: HashMap<String, DateTime<Utc>> = stored::lock_due(&mut tx, campaign_id)
        .await?
        .into_iter()
        .collect();
    if due.is_empty() {
        // Another replica acted on them first.
        tx.commit().await?;
        return Ok(0);
    }
    let schedules: Vec<StoredSchedule> =
        stored::read_campaign(&mut tx, campaign_id, &settings.time_zone)
            .await?
            .into_iter()
            .filter(|s| due.contains_key(&s.user_id))
            .collect();
    let at = Timestamp::now();
    let now = shifts_now(&schedules, at);
    stored::record(&mut tx, campaign_id, &now.unrecorded, None, None).await?;
    let mut passed = Vec::with_capacity(schedules.len());
    for schedule in &schedules {
        let state = schedule.schedule.state_at(at);
        // A shift that ended at this boundary (not one re-checked while off, nor one that ended and
        // started again since: that organizer is on shift now).
        let boundary = due[&schedule.user_id];
        let before = shifts::from_utc(boundary)
            .checked_sub(jiff::SignedDuration::from_nanos(1))
            .is_ok_and(|t| schedule.schedule.state_at(t).is_on());
        let ended = before && !state.is_on();
        if ended && settings.on_unavailable == OnUnavailable::ReturnToQueue {
            let held = waiting::lock_returnable(&mut tx, campaign_id, &schedule.user_id).await?;
            return_conversations(&mut tx, campaign_id, &held, None, None).await?;
        }
        stored::set_next_change(
            &mut tx,
            campaign_id,
            &schedule.user_id,
            state.until().map(shifts::to_utc),
        )
        .await?;
        passed.push((state.is_on(), boundary));
    }
    tx.commit().await?;
    let done = Utc::now();
    for (on, boundary) in &passed {
        let state = if *on { "on" } else { "off" };
        metrics::counter!(SHIFT_BOUNDARIES, "state" => state).increment(1);
        let late = (done - *boundary).num_milliseconds().max(0) as f64 / 1e3;
        metrics::histogram!(SHIFT_BOUNDARY_LATENESS_SECONDS).record(late);
    }
    Ok(passed.len())
}

/// Records that `user_id`'s shift started (`on_shift`) or ended, by the call `setter` made for `actor_id`.
async fn record_by(
    conn: &mut Conn,
    setter: &Caller,
    actor_id: Option<&str>,
    user_id: &str,
    on_shift: bool,
) -> AppResult<()> {
    let change = ShiftChange {
        user_id: user_id.to_owned(),
        on_shift,
    };
    stored::record(
        conn,
        setter.campaign_id(),
        &[change],
        actor_id,
        setter.request_id(),
    )
    .await
}

/// An ended shift's open conversations, locked by the caller, back to the front of the queue.
async fn return_conversations(
    conn: &mut Conn,
    campaign_id: &str,
    held: &[String],
    actor_id: Option<&str>,
    request_id: Option<&str>,
) -> AppResult<()> {
    if held.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = held.iter().map(String::as_str).collect();
    let requeue = Requeue {
        conversation_ids: &ids,
        cause: SHIFT_ENDED,
        record_lapse: false,
        stop_timing: false,
        actor_id,
        request_id,
    };
    waiting::requeue(conn, campaign_id, requeue).await?;
    Ok(())
}

/// The user a call is about: `user_id`, or the acting user's own when empty.
fn target(caller: &Caller, user_id: &str) -> AppResult<String> {
    let mut violations = Violations::default();
    let target = user_meant(&mut violations, caller, user_id);
    violations.finish()?;
    Ok(target)
}

fn invalid(errors: Vec<(String, String)>) -> AppError {
    let mut violations = Violations::default();
    for (field, message) in errors {
        violations.add(field, message);
    }
    violations
        .finish()
        .expect_err("a schedule is refused with at least one error")
}

fn only_organizers(user_id: &str) -> AppError {
    let mut violations = Violations::default();
    violations.add(
        "user_id",
        format!("user {user_id:?} is an admin: only organizers have shift schedules"),
    );
    violations.finish().expect_err("one violation was added")
}
