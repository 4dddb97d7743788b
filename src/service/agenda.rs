//! This replica's agenda of timed work (silence timers, shift boundaries): each campaign that has some, and
//! when it is next due, so the workers find due campaigns in memory rather than by reading every campaign's
//! rows on each tick (on a distributed PostgreSQL, a query of every shard; docs/scaling.md).
//!
//! Every replica keeps the whole agenda. It learns of changes from the notifications every replica hears,
//! raised with the commit that made them (`service::notices`): a campaign named in one is *stale*, and the
//! next pass reads its next due time again, for the stale campaigns only, by their keys. Everything is read
//! again at start, after the listener reconnects (what it may have missed), and every sweep interval (a
//! safety net; nothing is known to need it). The agenda is only a hint: work is done under its campaign's
//! lock, on facts read after it, so a stale entry costs a look, never a wrong decision.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::error::AppResult;
use crate::store::{self, Campaigns, Store};

/// A kind of timed work an agenda holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimedWork {
    ReplyTimers,
    ShiftBoundaries,
}

/// One kind's agenda. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Agenda {
    work: TimedWork,
    /// `--single-campaign-transactions`: each campaign read in a statement of its own.
    single_campaign: bool,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Each campaign's next due time, as last read.
    due: HashMap<String, DateTime<Utc>>,
    /// Campaigns whose next due time may have changed since it was read.
    stale: Touched,
}

/// What a pass reads again.
#[derive(Debug, PartialEq, Eq)]
pub enum Stale {
    All,
    Some(Vec<String>),
}

/// Campaigns named by notifications since the last look, or all of them (at start, after the listener
/// reconnects: notifications may have been missed).
#[derive(Default)]
struct Touched {
    campaigns: HashSet<String>,
    all: bool,
}

impl Touched {
    fn everything() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    fn touch(&mut self, campaign_id: &str) {
        if !self.all {
            self.campaigns.insert(campaign_id.to_owned());
        }
    }

    fn touch_all(&mut self) {
        self.all = true;
        self.campaigns.clear();
    }

    fn take(&mut self) -> Option<Stale> {
        if std::mem::take(&mut self.all) {
            self.campaigns.clear();
            return Some(Stale::All);
        }
        if self.campaigns.is_empty() {
            return None;
        }
        Some(Stale::Some(self.campaigns.drain().collect()))
    }

    fn restore(&mut self, stale: Stale) {
        match stale {
            Stale::All => self.touch_all(),
            Stale::Some(ids) => ids.iter().for_each(|id| self.touch(id)),
        }
    }
}

impl Agenda {
    /// An agenda that knows nothing yet: its first pass reads everything.
    pub fn new(work: TimedWork, single_campaign: bool) -> Self {
        let state = State {
            stale: Touched::everything(),
            ..State::default()
        };
        Self {
            work,
            single_campaign,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The campaign's timed work may have changed: read it again before the next pass.
    pub fn touch(&self, campaign_id: &str) {
        self.state
            .lock()
            .expect("agenda lock")
            .stale
            .touch(campaign_id);
    }

    /// Anything may have changed (notifications may have been missed): read everything again.
    pub fn touch_all(&self) {
        self.state.lock().expect("agenda lock").stale.touch_all();
    }

    /// Reads again what is stale, then returns the campaigns with work due at `now`, most overdue first.
    /// A read that fails leaves what it was to read stale.
    pub async fn due(&self, store: &Store, now: DateTime<Utc>) -> AppResult<Vec<String>> {
        if let Some(stale) = self.take_stale() {
            let read = match store.acquire().await {
                Ok(mut conn) => self.read(&mut conn, &stale).await,
                Err(err) => Err(err),
            };
            match read {
                Ok(next) => self.learn(&stale, next),
                Err(err) => {
                    self.restore(stale);
                    return Err(err);
                }
            }
        }
        Ok(self.due_at(now))
    }

    async fn read(
        &self,
        conn: &mut store::Conn,
        stale: &Stale,
    ) -> AppResult<Vec<(String, DateTime<Utc>)>> {
        let reads: Vec<Campaigns> = match stale {
            Stale::All => vec![Campaigns::Every],
            Stale::Some(ids) if self.single_campaign => {
                ids.chunks(1).map(Campaigns::Named).collect()
            }
            Stale::Some(ids) => vec![Campaigns::Named(ids)],
        };
        let mut next = Vec::new();
        for campaigns in reads {
            next.extend(match self.work {
                TimedWork::ReplyTimers => store::replies::next_due(conn, campaigns).await?,
                TimedWork::ShiftBoundaries => store::shifts::next_due(conn, campaigns).await?,
            });
        }
        Ok(next)
    }

    fn take_stale(&self) -> Option<Stale> {
        self.state.lock().expect("agenda lock").stale.take()
    }

    fn restore(&self, stale: Stale) {
        self.state.lock().expect("agenda lock").stale.restore(stale);
    }

    /// Takes in what a read of `stale` found: the due times of those that have work; the others have none.
    /// Campaigns touched since the read began stay stale.
    fn learn(&self, stale: &Stale, next: Vec<(String, DateTime<Utc>)>) {
        let mut state = self.state.lock().expect("agenda lock");
        match stale {
            Stale::All => state.due.clear(),
            Stale::Some(ids) => ids.iter().for_each(|id| {
                state.due.remove(id);
            }),
        }
        state.due.extend(next);
    }

    fn due_at(&self, now: DateTime<Utc>) -> Vec<String> {
        let state = self.state.lock().expect("agenda lock");
        let mut due: Vec<(&DateTime<Utc>, &String)> = state
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, at)| (at, id))
            .collect();
        due.sort();
        due.into_iter().map(|(_, id)| id.clone()).collect()
    }
}

/// The campaigns whose feed head moved since the relay last looked (`relay::Relay::run` claims those), or
/// all of them: at start and after the listener reconnects. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct HeadsMoved(Arc<Mutex<Touched>>);

impl Default for HeadsMoved {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Touched::everything())))
    }
}

impl HeadsMoved {
    /// The campaign's head moved (or its relay must look at it again).
    pub fn mark(&self, campaign_id: &str) {
        self.0.lock().expect("heads lock").touch(campaign_id);
    }

    fn mark_all(&self) {
        self.0.lock().expect("heads lock").touch_all();
    }

    /// The heads that moved since the last call: none, some, or possibly all.
    pub fn take(&self) -> Option<Stale> {
        self.0.lock().expect("heads lock").take()
    }

    /// Hands back what a look did not get to (it looks again next time).
    pub fn restore(&self, moved: Stale) {
        self.0.lock().expect("heads lock").restore(moved);
    }
}

/// The agendas of every kind of timed work, and the relay's flag, as the listener feeds them. Cheap to
/// clone.
#[derive(Clone)]
pub struct Agendas {
    pub reply_timers: Agenda,
    pub shift_boundaries: Agenda,
    pub heads_moved: HeadsMoved,
}

impl Agendas {
    /// Agendas that know nothing yet; under `single_campaign`, each campaign is read in a statement of its
    /// own.
    pub fn new(single_campaign: bool) -> Self {
        Self {
            reply_timers: Agenda::new(TimedWork::ReplyTimers, single_campaign),
            shift_boundaries: Agenda::new(TimedWork::ShiftBoundaries, single_campaign),
            heads_moved: HeadsMoved::default(),
        }
    }

    /// The campaign's feed head moved: its events may have started silence timers (an assignment does), and
    /// they are the relay's to publish.
    pub fn head_moved(&self, campaign_id: &str) {
        self.reply_timers.touch(campaign_id);
        self.heads_moved.mark(campaign_id);
    }

    /// A change no event records may have started or moved the campaign's timed work.
    pub fn timed_work_changed(&self, campaign_id: &str) {
        self.reply_timers.touch(campaign_id);
        self.shift_boundaries.touch(campaign_id);
    }

    /// Anything may have changed: read everything again (and the relay looks).
    pub fn touch_all(&self) {
        self.reply_timers.touch_all();
        self.shift_boundaries.touch_all();
        self.heads_moved.mark_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
    }

    fn known(agenda: &Agenda, entries: &[(&str, i64)]) {
        let stale = agenda.take_stale().expect("a new agenda reads everything");
        assert_eq!(stale, Stale::All);
        let next = entries
            .iter()
            .map(|(id, s)| (id.to_string(), at(*s)))
            .collect();
        agenda.learn(&stale, next);
    }

    #[test]
    fn due_campaigns_come_most_overdue_first_and_future_ones_wait() {
        let agenda = Agenda::new(TimedWork::ReplyTimers, false);
        known(&agenda, &[("c1", 20), ("c2", 10), ("c3", 40)]);
        assert_eq!(agenda.due_at(at(30)), ["c2", "c1"]);
        assert_eq!(
            agenda.take_stale(),
            None,
            "nothing changed: nothing to read"
        );
    }

    #[test]
    fn a_touched_campaign_is_read_again_alone_and_dropped_if_it_has_no_work_left() {
        let agenda = Agenda::new(TimedWork::ReplyTimers, false);
        known(&agenda, &[("c1", 20), ("c2", 10)]);
        agenda.touch("c2");
        let stale = agenda.take_stale().unwrap();
        assert_eq!(stale, Stale::Some(vec!["c2".to_owned()]));
        agenda.learn(&stale, Vec::new());
        assert_eq!(agenda.due_at(at(30)), ["c1"]);
    }

    #[test]
    fn a_touch_during_a_read_is_read_again_after_it() {
        let agenda = Agenda::new(TimedWork::ShiftBoundaries, false);
        known(&agenda, &[("c1", 20)]);
        agenda.touch("c1");
        let stale = agenda.take_stale().unwrap();
        // A change commits while the read is on its way: the read may have missed it.
        agenda.touch("c1");
        agenda.learn(&stale, vec![("c1".to_owned(), at(50))]);
        assert_eq!(
            agenda.take_stale(),
            Some(Stale::Some(vec!["c1".to_owned()]))
        );
    }

    #[test]
    fn a_failed_read_leaves_its_campaigns_stale() {
        let agenda = Agenda::new(TimedWork::ReplyTimers, false);
        let stale = agenda.take_stale().unwrap();
        agenda.restore(stale);
        assert_eq!(agenda.take_stale(), Some(Stale::All));
        agenda.learn(&Stale::All, Vec::new());
        agenda.touch("c9");
        let stale = agenda.take_stale().unwrap();
        agenda.restore(stale);
        assert_eq!(
            agenda.take_stale(),
            Some(Stale::Some(vec!["c9".to_owned()]))
        );
    }

    #[test]
    fn the_relay_looks_at_everything_at_start_then_at_the_campaigns_whose_heads_moved() {
        let agendas = Agendas::new(false);
        let heads = &agendas.heads_moved;
        assert_eq!(heads.take(), Some(Stale::All), "at start");
        assert_eq!(heads.take(), None);
        agendas.head_moved("c1");
        agendas.head_moved("c1");
        let Some(Stale::Some(mut moved)) = heads.take() else {
            panic!("the moved heads")
        };
        assert_eq!(moved, ["c1"], "once per campaign, however often it moved");
        agendas.head_moved("c2");
        heads.restore(Stale::Some(vec!["c1".to_owned()]));
        let Some(Stale::Some(again)) = heads.take() else {
            panic!("the moved heads")
        };
        moved = again;
        moved.sort();
        assert_eq!(
            moved,
            ["c1", "c2"],
            "what a look did not get to, and what moved since"
        );
        agendas.head_moved("c3");
        agendas.touch_all();
        agendas.head_moved("c4");
        assert_eq!(
            heads.take(),
            Some(Stale::All),
            "after the listener reconnects"
        );
    }

    #[test]
    fn touching_everything_replaces_what_was_known() {
        let agenda = Agenda::new(TimedWork::ReplyTimers, false);
        known(&agenda, &[("c1", 20), ("c2", 10)]);
        agenda.touch_all();
        known(&agenda, &[("c3", 5)]);
        assert_eq!(agenda.due_at(at(30)), ["c3"]);
    }
}
