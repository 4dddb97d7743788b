//! When an organizer is on shift: a weekly schedule in an IANA time zone plus
//! dated exceptions, turned into absolute instants. Pure rules, no I/O. (The
//! schedules are stored by `store::shifts` and routed by in `service::shifts` and the auto-assign batch:
//! `docs/never-stuck.md`.)
//!
//! Rules (all local times are in the schedule's zone):
//! - A window runs from `start` on its date to `end` the same date, or the
//!   next date when `end <= start` (overnight). `start == end` is a
//!   zero-length window: [`Schedule::validate`] rejects it and the
//!   computations ignore it. A 24-hour shift is two touching windows.
//! - Local times become instants with jiff's `Disambiguation::Compatible`:
//!   a time inside a spring-forward gap moves later by the length of the gap
//!   (02:30 in Chicago on 2026-03-08 is 03:30 CDT), and a time that occurs
//!   twice at fall back takes the earlier instant. Ends follow the same rule,
//!   so 01:00–03:00 lasts 3 real hours on a fall-back night and 1 hour on a
//!   spring-forward night. Each end moves on its own: 02:00–02:45 on that
//!   Chicago night runs 03:00–03:45 CDT, while 02:30–03:00 (moved start not
//!   before its end) does not happen that day.
//! - An exception for a date replaces the weekly windows that *start* on that
//!   date; an overnight window that started the day before still runs into
//!   it. Several `Works` on one date are a split shift; if a date is both
//!   `Off` and `Works` (rejected by `validate`), `Off` wins.
//! - Overlapping or touching windows merge into one shift: Mon 22:00–00:00
//!   and Tue 00:00–06:00 are one shift from Mon 22:00 to Tue 06:00.
//! - Intervals are half-open `[start, end)`: on at the start, off at the end.
//! - The next change is searched at least 8 days past the instant, and past
//!   the last exception that is not before it; `until: None` means no change
//!   was found within that horizon (an empty schedule, or a 24/7 one).
//! - A schedule whose zone is unknown (rejected by `validate`) is never on.

use std::collections::BTreeMap;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp, ToSpan};

/// Days searched past an instant (or past the last exception) for the next change.
const HORIZON_DAYS: i64 = 8;
const DAY_NANOS: i64 = 86_400_000_000_000;
const WEEK_NANOS: i64 = 7 * DAY_NANOS;

/// One weekly working window, in the campaign's local time. `end <= start`
/// means it ends the next day (overnight shift); `end == start` is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShiftWindow {
    pub weekday: Weekday,
    pub start: Time,
    pub end: Time,
}

/// A dated exception in local time: the whole date off (leave, holiday) or
/// worked only in these windows instead of the weekly ones that start that
/// date. `end <= start` means the worked window ends the next day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleException {
    Off { date: Date },
    Works { date: Date, start: Time, end: Time },
}

impl ScheduleException {
    /// The local date the exception applies to.
    pub fn date(&self) -> Date {
        match *self {
            ScheduleException::Off { date } | ScheduleException::Works { date, .. } => date,
        }
    }
}

/// An organizer's working schedule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// IANA time zone name, e.g. `America/Chicago`.
    pub time_zone: String,
    pub weekly: Vec<ShiftWindow>,
    pub exceptions: Vec<ScheduleException>,
}

/// Whether an organizer is on shift, and until when (the next change; `None`
/// when no change lies within the search horizon).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShiftState {
    On { until: Option<Timestamp> },
    Off { until: Option<Timestamp> },
}

impl ShiftState {
    /// True when on shift.
    pub fn is_on(&self) -> bool {
        matches!(self, ShiftState::On { .. })
    }

    /// The instant of the next change, if one was found.
    pub fn until(&self) -> Option<Timestamp> {
        match *self {
            ShiftState::On { until } | ShiftState::Off { until } => until,
        }
    }
}

/// Where a local window comes from, to name it in validation messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Weekly(usize),
    Exception(usize),
}

impl Source {
    fn field(self) -> String {
        match self {
            Source::Weekly(i) => format!("weekly[{i}]"),
            Source::Exception(i) => format!("exceptions[{i}]"),
        }
    }
}

/// A window on a given date, in local civil time.
type LocalWindow = (Source, DateTime, DateTime);

/// Exceptions by date: `None` means off, `Some` the windows worked instead.
type DayRules = BTreeMap<Date, Option<Vec<(usize, Time, Time)>>>;

impl Schedule {
    /// Checks what a person could get wrong; each error is `(field, message)`.
    pub fn validate(&self) -> Result<(), Vec<(String, String)>> {
        let mut errors = Vec::new();
        if let Err(msg) = zone_check(&self.time_zone) {
            errors.push(("time_zone".to_string(), msg));
        }
        self.check_weekly(&mut errors);
        self.check_exceptions(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// On or off shift at `at`, and until when.
    pub fn state_at(&self, at: Timestamp) -> ShiftState {
        let Ok(tz) = TimeZone::get(&self.time_zone) else {
            return ShiftState::Off { until: None };
        };
        let today = at.to_zoned(tz.clone()).date();
        let last_exception = self
            .exceptions
            .iter()
            .map(|e| e.date())
            .filter(|d| *d >= today)
            .max();
        let last_day = add_days(last_exception.unwrap_or(today), HORIZON_DAYS + 3);
        let walk = ShiftWalk::new(self, tz, add_days(today, -2), last_day);
        for shift in walk {
            if shift.end <= at {
                continue;
            }
            return if shift.start <= at {
                ShiftState::On {
                    until: shift.end_known.then_some(shift.end),
                }
            } else {
                ShiftState::Off {
                    until: shift.start_known.then_some(shift.start),
                }
            };
        }
        ShiftState::Off { until: None }
    }

    /// Windows as absolute intervals [start, end) overlapping [from, to): the
    /// one definition of "on shift". Sorted and merged (no two overlap or
    /// touch); a shift running on more than 8 days before `from` or after `to`
    /// is cut at the first or last window found.
    pub fn intervals(&self, from: Timestamp, to: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let Ok(tz) = TimeZone::get(&self.time_zone) else {
            return Vec::new();
        };
        if from >= to {
            return Vec::new();
        }
        let first_day = add_days(from.to_zoned(tz.clone()).date(), -(HORIZON_DAYS + 2));
        let last_day = add_days(to.to_zoned(tz.clone()).date(), HORIZON_DAYS + 3);
        ShiftWalk::new(self, tz, first_day, last_day)
            .skip_while(|s| s.end <= from)
            .take_while(|s| s.start < to)
            .map(|s| (s.start, s.end))
            .collect()
    }

    fn day_rules(&self) -> DayRules {
        let mut rules = DayRules::new();
        for (i, exception) in self.exceptions.iter().enumerate() {
            let slot = rules
                .entry(exception.date())
                .or_insert_with(|| Some(Vec::new()));
            match (*exception, slot) {
                (ScheduleException::Off { .. }, slot) => *slot = None,
                (ScheduleException::Works { start, end, .. }, Some(list)) => {
                    list.push((i, start, end))
                }
                (ScheduleException::Works { .. }, None) => {}
            }
        }
        rules
    }

    /// Non-empty local windows starting on `date`, exceptions applied.
    fn local_windows(&self, rules: &DayRules, date: Date) -> Vec<LocalWindow> {
        let raw: Vec<(Source, Time, Time)> = match rules.get(&date) {
            Some(None) => Vec::new(),
            Some(Some(list)) => list
                .iter()
                .map(|&(i, s, e)| (Source::Exception(i), s, e))
                .collect(),
            None => (self.weekly.iter().enumerate())
                .filter(|(_, w)| w.weekday == date.weekday())
                .map(|(i, w)| (Source::Weekly(i), w.start, w.end))
                .collect(),
        };
        raw.into_iter()
            .filter_map(|(source, start, end)| {
                let (s, e) = local_span(date, start, end)?;
                Some((source, s, e))
            })
            .collect()
    }

    fn check_weekly(&self, errors: &mut Vec<(String, String)>) {
        let spans: Vec<(i64, i64)> = self
            .weekly
            .iter()
            .map(|w| {
                let start =
                    i64::from(w.weekday.to_monday_zero_offset()) * DAY_NANOS + day_nanos(w.start);
                let len = (day_nanos(w.end) - day_nanos(w.start)).rem_euclid(DAY_NANOS);
                (start, len)
            })
            .collect();
        for (j, w) in self.weekly.iter().enumerate() {
            let field = Source::Weekly(j).field();
            if w.start == w.end {
                errors.push((field, zero_length(&window_label(w))));
                continue;
            }
            let (b, lb) = spans[j];
            let hit = (0..j).find(|&i| {
                let (a, la) = spans[i];
                la > 0
                    && ((b - a).rem_euclid(WEEK_NANOS) < la || (a - b).rem_euclid(WEEK_NANOS) < lb)
            });
            if let Some(i) = hit {
                let msg = format!(
                    "window {} overlaps weekly[{i}] ({}); shorten or remove one",
                    window_label(w),
                    window_label(&self.weekly[i])
                );
                errors.push((field, msg));
            }
        }
    }

    fn check_exceptions(&self, errors: &mut Vec<(String, String)>) {
        let rules = self.day_rules();
        let mut seen: BTreeMap<Date, (usize, bool)> = BTreeMap::new();
        for (j, exception) in self.exceptions.iter().enumerate() {
            let field = Source::Exception(j).field();
            let date = exception.date();
            let is_off = matches!(exception, ScheduleException::Off { .. });
            if let Some(&(i, was_off)) = seen.get(&date) {
                if is_off || was_off {
                    let msg =
                        format!("{date} already has an exception (exceptions[{i}]); keep only one");
                    errors.push((field, msg));
                    continue;
                }
            } else {
                seen.insert(date, (j, is_off));
            }
            let ScheduleException::Works { start, end, .. } = *exception else {
                continue;
            };
            let label = format!("{date} {}–{}", hm(start), hm(end));
            let Some((s, e)) = local_span(date, start, end) else {
                errors.push((field, zero_length(&label)));
                continue;
            };
            let days = [add_days(date, -1), date, add_days(date, 1)];
            let clash = days
                .iter()
                .flat_map(|d| self.local_windows(&rules, *d))
                .filter(|(src, ..)| {
                    matches!(*src, Source::Weekly(_))
                        || matches!(*src, Source::Exception(k) if k < j)
                })
                .find(|&(_, os, oe)| os < e && s < oe);
            if let Some((other, ..)) = clash {
                let msg = format!(
                    "worked window {label} overlaps {}; shorten or remove one",
                    other.field()
                );
                errors.push((field, msg));
            }
        }
    }
}

/// One merged shift found by [`ShiftWalk`]; the flags say whether a window
/// beyond the search horizon could still move the start or end.
struct Shift {
    start: Timestamp,
    end: Timestamp,
    start_known: bool,
    end_known: bool,
}

/// Yields merged shifts in time order, generating windows a local day at a
/// time: enough days ahead that no later window could start before the edge.
struct ShiftWalk<'a> {
    schedule: &'a Schedule,
    tz: TimeZone,
    rules: DayRules,
    next_day: Option<Date>,
    last_day: Date,
    /// Generated, not yet yielded; sorted by start, latest first.
    pending: Vec<(Timestamp, Timestamp)>,
}

impl<'a> ShiftWalk<'a> {
    fn new(schedule: &'a Schedule, tz: TimeZone, first_day: Date, last_day: Date) -> Self {
        let rules = schedule.day_rules();
        Self {
            schedule,
            tz,
            rules,
            next_day: Some(first_day),
            last_day,
            pending: Vec::new(),
        }
    }

    /// True when no window starting on an ungenerated day can start at or before `t`.
    fn settled(&self, t: Timestamp) -> bool {
        self.next_day.is_none_or(|d| earliest_instant(d) > t)
    }

    /// Generates the next day's windows; false once past the horizon.
    fn generate_day(&mut self) -> bool {
        let Some(day) = self.next_day.filter(|d| *d <= self.last_day) else {
            return false;
        };
        for (_, s, e) in self.schedule.local_windows(&self.rules, day) {
            // A start moved out of a gap can land at or after the end: no window.
            if let (Some(s), Some(e)) = (resolve(&self.tz, s), resolve(&self.tz, e))
                && s < e
            {
                self.pending.push((s, e));
            }
        }
        self.pending.sort_by(|a, b| b.cmp(a));
        self.next_day = day.tomorrow().ok();
        true
    }
}

impl Iterator for ShiftWalk<'_> {
    type Item = Shift;

    fn next(&mut self) -> Option<Shift> {
        while !self.pending.last().is_some_and(|p| self.settled(p.0)) && self.generate_day() {}
        let (start, mut end) = self.pending.pop()?;
        let start_known = self.settled(start);
        loop {
            while !self.settled(end) && self.generate_day() {}
            let before = end;
            while let Some(&(_, e)) = self.pending.last().filter(|p| p.0 <= end) {
                self.pending.pop();
                end = end.max(e);
            }
            if end == before {
                break;
            }
        }
        Some(Shift {
            start,
            end,
            start_known,
            end_known: self.settled(end),
        })
    }
}

/// "off shift until Mon 09:00 America/Chicago" / "on shift until Fri 17:00
/// America/Chicago": the local time of the change in `time_zone` (UTC if the
/// name is unknown); just "off shift" / "on shift" when no change is known.
/// The weekday alone names the date, so a change a week or more away reads
/// like one within the week.
pub fn describe(state: &ShiftState, time_zone: &str) -> String {
    let word = if state.is_on() { "on" } else { "off" };
    let Some(until) = state.until() else {
        return format!("{word} shift");
    };
    let (tz, name) = match TimeZone::get(time_zone) {
        Ok(tz) => (tz, time_zone),
        Err(_) => (TimeZone::UTC, "UTC"),
    };
    format!(
        "{word} shift until {} {name}",
        until.to_zoned(tz).strftime("%a %H:%M")
    )
}

/// An instant as the rest of the service holds it.
pub fn to_utc(at: Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(at.as_second(), at.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

/// An instant of the rest of the service, for the schedule computations.
pub fn from_utc(at: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp::new(at.timestamp(), at.timestamp_subsec_nanos() as i32)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The time zone of a campaign that never set one.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// Whether `name` is an IANA time zone this service knows; the message says what to send instead.
pub fn check_time_zone(name: &str) -> Result<(), String> {
    zone_check(name)
}

fn zone_check(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err(
            "time zone is required: use an IANA name such as \"America/Chicago\"".to_string(),
        );
    }
    TimeZone::get(name).map(|_| ()).map_err(|_| {
        format!("unknown time zone \"{name}\": use an IANA name such as \"America/Chicago\" or \"Europe/Berlin\"")
    })
}

/// Civil start and end of a window starting on `date`; `None` if zero-length.
fn local_span(date: Date, start: Time, end: Time) -> Option<(DateTime, DateTime)> {
    if start == end {
        return None;
    }
    let end_date = if end > start {
        date
    } else {
        date.tomorrow().ok()?
    };
    Some((date.to_datetime(start), end_date.to_datetime(end)))
}

/// Local time to instant, `Disambiguation::Compatible` (see module docs).
fn resolve(tz: &TimeZone, local: DateTime) -> Option<Timestamp> {
    tz.to_ambiguous_timestamp(local).compatible().ok()
}

/// A bound below every instant of a local time on or after `day` in any zone:
/// offsets stay within ±26 hours.
fn earliest_instant(day: Date) -> Timestamp {
    let midnight_utc = Offset::UTC.to_timestamp(day.to_datetime(Time::midnight()));
    midnight_utc.map_or(Timestamp::MIN, |t| {
        t.saturating_sub(SignedDuration::from_hours(26))
            .expect("no calendar units")
    })
}

fn add_days(date: Date, days: i64) -> Date {
    date.saturating_add(days.days())
}

fn day_nanos(t: Time) -> i64 {
    t.duration_since(Time::midnight()).as_nanos() as i64
}

fn hm(t: Time) -> String {
    t.strftime("%H:%M").to_string()
}

fn window_label(w: &ShiftWindow) -> String {
    let day = Date::constant(2024, 1, 1)
        .saturating_add(i64::from(w.weekday.to_monday_zero_offset()).days());
    format!("{} {}–{}", day.strftime("%a"), hm(w.start), hm(w.end))
}

fn zero_length(label: &str) -> String {
    format!(
        "window {label} has zero length: make the end differ from the start \
         (an end earlier than the start means the shift ends the next day)"
    )
}

mod input;
pub use input::{ExceptionInput, MAX_WINDOWS, WindowInput, parse};

#[cfg(test)]
mod tests;
