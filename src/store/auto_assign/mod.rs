//! Auto-assignment's store, one file per stage of a batch: [`lock`] takes the campaigns' auto-assign locks
//! (their settings rows), [`read`] locks the batch's conversations and organizers and reads what the batch
//! decides on, as one snapshot after those locks shows it (and numbers for the feed what it saw),
//! [`write`] writes the planned batch in one statement; [`loads`] folds organizers' load changes and
//! [`retention`] forgets old trigger ids.
//!
//! The big statements live in `sql/*.sql`, a comment per CTE and every bind labelled at the top.

mod loads;
mod lock;
mod read;
mod retention;
mod write;

pub use loads::{campaigns_with_load_changes, fold_loads};
pub use lock::{CampaignTriggers, LockedSettings, lock, lock_campaigns};
pub use read::{BatchReads, CampaignReads, Entry, EntrySource, read_batch};
pub use retention::{prune_replies, prune_triggers};
pub use write::{CampaignWrite, WaitingAfter, Written, write_batch};

/// Tags travel as one string per conversation; validated tags never contain this control character.
const TAG_SEPARATOR: &str = "\u{1f}";
