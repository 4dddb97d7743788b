//! PreviewAutoAssign: who the next conversation would go to, and why each user would not.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;

use crate::domain::actor::require_admin;
use crate::domain::auto_assign::{
    Candidate, InboxSettings, Ineligible, Load, RotationStart, Routing, effective_capacity,
};
use crate::domain::holders::{Unreachable, absent, unreachable};
use crate::domain::model::Role;
use crate::domain::shifts::{DEFAULT_TIME_ZONE, describe};
use crate::domain::validate;
use crate::error::{AppError, AppResult};
use crate::service::{ActorCall, authenticate};
use crate::store::{self, Store, conversations, inbox_settings, preview};

/// What PreviewAutoAssign answers.
#[derive(Debug, Clone)]
pub struct Preview {
    pub next_assignee_id: Option<String>,
    pub settings: Option<InboxSettings>,
    /// Every user of the campaign, by id.
    pub candidates: Vec<Candidate>,
    /// With a conversation: when its holder must reply by, if a silence timer runs.
    pub reply_due_at: Option<chrono::DateTime<chrono::Utc>>,
    /// With a conversation held by someone who cannot answer it: who, and why.
    pub holder_unreachable: Option<(String, Unreachable)>,
}

/// PreviewAutoAssign: admins; reads, decides with the planner's own rules, and changes nothing.
pub async fn preview(store: &Store, call: &ActorCall, conversation_id: &str) -> AppResult<Preview> {
    let conversation_id = validate::optional_id("conversation_id", conversation_id)?;
    let mut conn = store.acquire().await?;
    let actor = authenticate(&mut conn, call).await?;
    require_admin(&actor, "preview auto-assignment")?;
    let conversation = match &conversation_id {
        Some(id) => Some(
            conversations::view(&mut conn, &call.campaign_id, id, &actor.user_id)
                .await?
                .ok_or_else(|| AppError::conversation_not_found(id))?
                .conversation,
        ),
        None => None,
    };
    let lapsed_by = conversation
        .as_ref()
        .map(|c| c.lapsed_by.clone())
        .unwrap_or_default();
    let settings = inbox_settings::get(&mut conn, &call.campaign_id).await?;
    let users = preview::users(&mut conn, &call.campaign_id).await?;
    let open = preview::open_counts(&mut conn, &call.campaign_id).await?;
    let repliers =
        preview::repliers(&mut conn, &call.campaign_id, conversation_id.as_deref()).await?;
    let default_capacity = settings.as_ref().map_or(0, |s| s.default_capacity);
    let time_zone = settings
        .as_ref()
        .map_or(DEFAULT_TIME_ZONE, |s| s.time_zone.as_str());
    let now = Timestamp::now();
    let off_shift: HashMap<String, String> =
        store::shifts::read_campaign(&mut conn, &call.campaign_id, time_zone)
            .await?
            .into_iter()
            .filter_map(|stored| {
                let state = stored.schedule.state_at(now);
                (!state.is_on()).then(|| (stored.user_id, describe(&state, time_zone)))
            })
            .collect();
    let holder_unreachable = conversation
        .as_ref()
        .and_then(|c| c.assignee_id.as_deref())
        .and_then(|holder| users.iter().find(|u| u.user_id == holder))
        .and_then(|holder| {
            let why = unreachable(&holder.to_ref(), repliers.contains(&holder.user_id)).or_else(
                || {
                    let organizer = holder.role == Role::Organizer;
                    organizer
                        .then(|| {
                            absent(
                                holder.availability,
                                !off_shift.contains_key(&holder.user_id),
                            )
                        })
                        .flatten()
                },
            )?;
            Some((holder.user_id.clone(), why))
        });
    let candidates: Vec<Candidate> = users
        .into_iter()
        .map(|user| Candidate {
            may_reply: repliers.contains(&user.user_id),
            load: Load {
                open: open.get(&user.user_id).copied().unwrap_or(0),
                capacity: effective_capacity(user.capacity, default_capacity),
            },
            lapsed: lapsed_by.contains(&user.user_id),
            off_shift: off_shift.get(&user.user_id).cloned(),
            user_id: user.user_id,
            role: user.role,
            active: user.active,
            availability: user.availability,
        })
        .collect();
    let start = match settings
        .as_ref()
        .map(|s| s.rotation_start)
        .unwrap_or_default()
    {
        RotationStart::LastAssigned => preview::last_assigned(&mut conn, &call.campaign_id).await?,
        RotationStart::LastAutoAssigned => {
            preview::last_auto_assigned(&mut conn, &call.campaign_id).await?
        }
    };
    let enabled = settings.as_ref().is_some_and(|s| s.auto_assign_enabled);
    // Everyone eligible but for their load goes to the planner's own pick, which weighs the loads.
    let mut eligible: Vec<String> = candidates
        .iter()
        .filter(|c| c.reasons().iter().all(|r| *r == Ineligible::AtCapacity))
        .map(|c| c.user_id.clone())
        .collect();
    eligible.sort();
    let mut routing = Routing {
        mode: settings
            .as_ref()
            .map(|s| s.routing_mode)
            .unwrap_or_default(),
        loads: Some(
            candidates
                .iter()
                .map(|c| (c.user_id.clone(), c.load))
                .collect(),
        ),
        // The off-shift are not among the eligible above.
        off_shift: HashSet::new(),
    };
    let next_assignee_id = enabled
        .then(|| routing.pick(&eligible, start.as_deref()).map(str::to_owned))
        .flatten();
    Ok(Preview {
        next_assignee_id,
        settings,
        candidates,
        reply_due_at: conversation.and_then(|c| c.reply_due_at),
        holder_unreachable,
    })
}
