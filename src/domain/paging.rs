//! Page sizes and opaque page tokens for the List RPCs.
//!
//! A token carries the list it pages, fingerprints of the campaign and of the filter it was issued for,
//! the last key of the previous page, and a checksum. Tokens are not secret and not signed: a client can
//! forge one, so decoding checks everything and validates the key as strictly as the list's own ids, and a
//! forged key can at worst start a page at another position the caller may see anyway. Keys that would
//! count what the caller may not see (feed numbers, queue keys) travel in their opaque form
//! (`domain::opaque`): a client can neither read a count from them nor forge a place by its number.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::domain::model::ConversationStatus;
use crate::domain::opaque::CampaignIds;
use crate::domain::validate;
use crate::error::{AppError, AppResult};

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 500;

/// 0 means the default; larger than the maximum is capped; negative is an error.
pub fn page_size(requested: i32) -> AppResult<i64> {
    match i64::from(requested) {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(AppError::invalid(
            "page_size",
            format!("page_size must not be negative (got {n})"),
        )),
        n => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

/// Bytes of each fingerprint and of the checksum: enough to catch any mistake, short enough to stay small.
const DIGEST_LEN: usize = 8;
/// version, list, campaign fingerprint, filter fingerprint.
const HEADER_LEN: usize = 2 + 2 * DIGEST_LEN;
/// No key this service issues comes near this; it bounds the work a forged token can cause.
const MAX_KEY_BYTES: usize = 1024;
const MAX_TOKEN_CHARS: usize = (HEADER_LEN + MAX_KEY_BYTES + DIGEST_LEN).div_ceil(3) * 4;

/// The paged lists; a token of one is refused by the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Conversations,
    AssignmentHistory,
    AccessGroups,
    WaitingConversations,
    /// Cursors of WatchAssignmentEvents.
    Feed,
}

impl List {
    pub const ALL: [List; 5] = [
        List::Conversations,
        List::AssignmentHistory,
        List::AccessGroups,
        List::WaitingConversations,
        List::Feed,
    ];

    /// The layout version of the list's tokens; a token of another version is refused like a malformed
    /// one. Version 2 carries the feed's and the queue's keys opaque (version 1 had them in clear, so a
    /// client could count, and forge a place by its number); the other lists' keys did not change.
    fn version(self) -> u8 {
        match self {
            List::Conversations | List::AccessGroups => 1,
            List::AssignmentHistory | List::WaitingConversations | List::Feed => 2,
        }
    }

    fn tag(self) -> u8 {
        match self {
            List::Conversations => 1,
            List::AssignmentHistory => 2,
            List::AccessGroups => 3,
            List::WaitingConversations => 4,
            List::Feed => 5,
        }
    }

    /// The RPC that returns this list, for error messages.
    pub fn rpc(self) -> &'static str {
        match self {
            List::Conversations => "ListConversations",
            List::AssignmentHistory => "ListAssignmentHistory",
            List::AccessGroups => "ListAccessGroups",
            List::WaitingConversations => "ListWaitingConversations",
            List::Feed => "WatchAssignmentEvents",
        }
    }

    /// Whether `key` could be the last key of a page of this list: keys reach SQL, so only what the
    /// list itself could hold passes.
    pub fn is_valid_key(self, key: &str) -> bool {
        match self {
            List::Conversations => validate::id("page_token", key).is_ok(),
            // Event ids (`CampaignIds::event_id`), in the one form `i64::to_string` writes, so a key
            // decodes to one position only.
            List::AssignmentHistory | List::Feed => key
                .parse::<i64>()
                .is_ok_and(|id| id >= 0 && id.to_string() == key),
            // Queue keys in their opaque form (`CampaignIds::queue_token_key`): any i64.
            List::WaitingConversations => key
                .parse::<i64>()
                .is_ok_and(|position| position.to_string() == key),
            // `lower(name)` of a group name: no bound on characters beyond the name's own rules, except
            // those that were never allowed (names made before bidi and invisible characters were refused
            // must still page). `lower` may lengthen a name, hence the margin.
            List::AccessGroups => {
                !key.is_empty()
                    && key.chars().count() <= 4 * validate::MAX_GROUP_NAME_LEN
                    && !key.chars().any(char::is_control)
            }
        }
    }
}

/// Where a page token is valid: one list, in one campaign, with one filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageScope {
    list: List,
    campaign: [u8; DIGEST_LEN],
    filter: [u8; DIGEST_LEN],
}

impl PageScope {
    /// `filter` names every filter field with its value (`None` when not set), in a fixed order.
    pub fn new(list: List, campaign_id: &str, filter: &[(&str, Option<&str>)]) -> Self {
        let mut campaign = Sha256::new();
        hash_field(&mut campaign, "campaign_id", Some(campaign_id));
        let mut hasher = Sha256::new();
        for (name, value) in filter {
            hash_field(&mut hasher, name, *value);
        }
        Self {
            list,
            campaign: truncated(campaign),
            filter: truncated(hasher),
        }
    }

    /// ListConversations: filtered by assignee, unassigned, status and held by an unreachable holder.
    pub fn conversations(
        campaign_id: &str,
        assignee_id: Option<&str>,
        unassigned: bool,
        status: Option<ConversationStatus>,
        held_by_unreachable: bool,
    ) -> Self {
        let status = status.map(|s| match s {
            ConversationStatus::Open => "OPEN",
            ConversationStatus::Resolved => "RESOLVED",
        });
        let unassigned = if unassigned { "true" } else { "false" };
        Self::new(
            List::Conversations,
            campaign_id,
            &[
                ("assignee_id", assignee_id),
                ("unassigned", Some(unassigned)),
                ("status", status),
                ("held_by_unreachable", held_by_unreachable.then_some("true")),
            ],
        )
    }

    /// ListAssignmentHistory: of one conversation, or (`None`) of the campaign.
    pub fn history(campaign_id: &str, conversation_id: Option<&str>) -> Self {
        Self::new(
            List::AssignmentHistory,
            campaign_id,
            &[("conversation_id", conversation_id)],
        )
    }

    /// ListAccessGroups: the groups of one organizer (as resolved for the caller), or all of them.
    pub fn access_groups(campaign_id: &str, organizer_id: Option<&str>) -> Self {
        Self::new(
            List::AccessGroups,
            campaign_id,
            &[("organizer_id", organizer_id)],
        )
    }

    /// WatchAssignmentEvents' cursors: a place in one campaign's feed, whatever the filter.
    pub fn feed(campaign_id: &str) -> Self {
        Self::new(List::Feed, campaign_id, &[])
    }

    /// ListWaitingConversations: as seen by one organizer, or (`None`) by an admin.
    pub fn waiting(campaign_id: &str, visible_to: Option<&str>) -> Self {
        Self::new(
            List::WaitingConversations,
            campaign_id,
            &[("visible_to", visible_to)],
        )
    }

    /// The token of the page after the one ending at `last_key`.
    pub fn token(&self, last_key: &str) -> String {
        let mut bytes = Vec::with_capacity(HEADER_LEN + last_key.len() + DIGEST_LEN);
        bytes.push(self.list.version());
        bytes.push(self.list.tag());
        bytes.extend_from_slice(&self.campaign);
        bytes.extend_from_slice(&self.filter);
        bytes.extend_from_slice(last_key.as_bytes());
        let checksum = checksum(&bytes);
        bytes.extend_from_slice(&checksum);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The last key of the previous page, or `None` for the first page (an empty token).
    pub fn after(&self, token: &str) -> AppResult<Option<String>> {
        if token.is_empty() {
            return Ok(None);
        }
        if token.len() > MAX_TOKEN_CHARS {
            return Err(malformed());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
        if bytes.len() < HEADER_LEN + DIGEST_LEN {
            return Err(malformed());
        }
        let (body, sum) = bytes.split_at(bytes.len() - DIGEST_LEN);
        if checksum(body) != sum {
            return Err(malformed());
        }
        let list = List::ALL
            .into_iter()
            .find(|list| list.tag() == body[1] && list.version() == body[0])
            .ok_or_else(malformed)?;
        if list != self.list {
            return Err(invalid(&format!(
                "was issued by {}, not {}",
                list.rpc(),
                self.list.rpc()
            )));
        }
        if body[2..2 + DIGEST_LEN] != self.campaign {
            return Err(invalid("was issued for another campaign"));
        }
        if body[2 + DIGEST_LEN..HEADER_LEN] != self.filter {
            return Err(invalid("was issued for another filter"));
        }
        let key = std::str::from_utf8(&body[HEADER_LEN..]).map_err(|_| malformed())?;
        if !self.list.is_valid_key(key) {
            return Err(malformed());
        }
        Ok(Some(key.to_owned()))
    }

    /// A number key of the previous page (an event id, a queue key in its opaque form).
    fn after_number(&self, token: &str) -> AppResult<Option<i64>> {
        // The key was checked to be a number, so this parse cannot fail; map it rather than panic.
        self.after(token)?
            .map(|key| key.parse::<i64>().map_err(|_| malformed()))
            .transpose()
    }

    /// The token (or feed cursor) after the campaign's event of public id `event_id`
    /// ([`CampaignIds::event_id`]).
    pub fn event_token(&self, event_id: i64) -> String {
        self.token(&event_id.to_string())
    }

    /// The feed number of the event a ListAssignmentHistory token or feed cursor was issued after, or
    /// `None` for the first page. A key no event id of the campaign maps to is malformed.
    pub fn after_event(&self, ids: &CampaignIds, token: &str) -> AppResult<Option<i64>> {
        self.after_number(token)?
            .map(|id| ids.seq(id).ok_or_else(malformed))
            .transpose()
    }

    /// The token of the page after the one ending at queue key `position`.
    pub fn queue_token(&self, ids: &CampaignIds, position: i64) -> String {
        self.token(&ids.queue_token_key(position).to_string())
    }

    /// The last queue key of the previous page, or `None` for the first page.
    pub fn after_position(&self, ids: &CampaignIds, token: &str) -> AppResult<Option<i64>> {
        Ok(self.after_number(token)?.map(|key| ids.queue_position(key)))
    }
}

fn malformed() -> AppError {
    invalid("is not a token this service issued (it is malformed or truncated)")
}

fn invalid(problem: &str) -> AppError {
    AppError::invalid(
        "page_token",
        format!(
            "page_token {problem}; pass the next_page_token of the previous page unchanged, with the \
             same filter, or leave page_token empty to start from the first page"
        ),
    )
}

/// Length-prefixed, so no two different filters hash the same input.
fn hash_field(hasher: &mut Sha256, name: &str, value: Option<&str>) {
    hasher.update((name.len() as u64).to_be_bytes());
    hasher.update(name.as_bytes());
    match value {
        None => hasher.update([0]),
        Some(value) => {
            hasher.update([1]);
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        }
    }
}

fn truncated(hasher: Sha256) -> [u8; DIGEST_LEN] {
    let digest = hasher.finalize();
    let mut out = [0; DIGEST_LEN];
    out.copy_from_slice(&digest[..DIGEST_LEN]);
    out
}

fn checksum(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    truncated(Sha256::new_with_prefix(bytes))
}

#[cfg(test)]
mod tests;
