//! Shift schedules: each organizer's windows (`shift_windows`), the shift state last recorded in the feed
//! and when the schedule next changes it (`shift_schedules`). Whoever reads or writes them for a decision
//! holds the campaign's auto-assign lock, so a schedule cannot change between a read and the decision.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc};
use jiff::civil::{Date, Time, Weekday};

use super::rules::{Event, stamp_after};
use super::{Campaigns, Conn, next_due_of};
use crate::domain::shifts::{Schedule, ScheduleException, ShiftWindow};
use crate::error::AppResult;

/// An organizer's stored schedule, read in the campaign's time zone.
#[derive(Debug, Clone)]
pub struct StoredSchedule {
    pub user_id: String,
    /// The state the feed last recorded (SHIFT_STARTED or SHIFT_ENDED, or the one set with the schedule).
    pub on_shift: bool,
    pub schedule: Schedule,
}

/// One row of `shift_windows`, with its schedule's.
#[derive(sqlx::FromRow)]
struct WindowRow {
    user_id: String,
    on_shift: bool,
    weekday: Option<i16>,
    on_date: Option<NaiveDate>,
    starts: Option<NaiveTime>,
    ends: Option<NaiveTime>,
}

/// The schedules of the campaign's organizers who have one, by user id.
pub async fn read_campaign(
    conn: &mut Conn,
    campaign_id: &str,
    time_zone: &str,
) -> AppResult<Vec<StoredSchedule>> {
    let rows: Vec<WindowRow> = sqlx::query_as(
        "SELECT s.user_id, s.on_shift, w.weekday, w.on_date, w.starts, w.ends \
           FROM shift_schedules s \
           LEFT JOIN shift_windows w ON w.campaign_id = s.campaign_id AND w.user_id = s.user_id \
          WHERE s.campaign_id = $1 \
          ORDER BY s.user_id COLLATE \"C\", w.place",
    )
    .bind(campaign_id)
    .fetch_all(conn)
    .await?;
    Ok(fold(rows, time_zone))
}

/// One organizer's schedule, if they have one.
pub async fn read_one(
    conn: &mut Conn,
    campaign_id: &str,
    user_id: &str,
    time_zone: &str,
) -> AppResult<Option<StoredSchedule>> {
    let rows: Vec<WindowRow> = sqlx::query_as(
        "SELECT s.user_id, s.on_shift, w.weekday, w.on_date, w.starts, w.ends \
           FROM shift_schedules s \
           LEFT JOIN shift_windows w ON w.campaign_id = s.campaign_id AND w.user_id = s.user_id \
          WHERE s.campaign_id = $1 AND s.user_id = $2 \
          ORDER BY w.place",
    )
    .bind(campaign_id)
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(fold(rows, time_zone).into_iter().next())
}

/// Rows in user order (a schedule without windows comes as one row without one) into schedules.
fn fold(rows: Vec<WindowRow>, time_zone: &str) -> Vec<StoredSchedule> {
    let mut schedules: Vec<StoredSchedule> = Vec::new();
    for row in rows {
        if schedules.last().is_none_or(|s| s.user_id != row.user_id) {
            schedules.push(StoredSchedule {
                user_id: row.user_id.clone(),
                on_shift: row.on_shift,
                schedule: Schedule {
                    time_zone: time_zone.to_owned(),
                    ..Schedule::default()
                },
            });
        }
        let schedule = &mut schedules.last_mut().expect("pushed above").schedule;
        match (row.weekday, row.on_date, row.starts, row.ends) {
            (Some(day), _, Some(start), Some(end)) => schedule.weekly.push(ShiftWindow {
                weekday: weekday_from_iso(day),
                start: time_from_db(start),
                end: time_from_db(end),
            }),
            (None, Some(date), Some(start), Some(end)) => {
                schedule.exceptions.push(ScheduleException::Works {
                    date: date_from_db(date),
                    start: time_from_db(start),
                    end: time_from_db(end),
                })
            }
            (None, Some(date), None, None) => schedule.exceptions.push(ScheduleException::Off {
                date: date_from_db(date),
            }),
            // The schedule's row without windows (LEFT JOIN), or a shape the table's checks forbid.
            _ => {}
        }
    }
    schedules
}

/// Replaces the organizer's schedule (windows in the order given) and records `on_shift` as the state
/// stated from now, changing next at `next_change_at`; marks the campaign as one with schedules.
pub async fn replace(
    conn: &mut Conn,
    campaign_id: &str,
    user_id: &str,
    schedule: &Schedule,
    on_shift: bool,
    next_change_at: Option<DateTime<Utc>>,
) -> AppResult<()> {
    let mut weekdays: Vec<Option<i16>> = Vec::new();
    let mut dates: Vec<Option<NaiveDate>> = Vec::new();
    let mut starts: Vec<Option<NaiveTime>> = Vec::new();
    let mut ends: Vec<Option<NaiveTime>> = Vec::new();
    for window in &schedule.weekly {
        weekdays.push(Some(window.weekday.to_monday_one_offset().into()));
        dates.push(None);
        starts.push(Some(time_to_db(window.start)));
        ends.push(Some(time_to_db(window.end)));
    }
    for exception in &schedule.exceptions {
        weekdays.push(None);
        dates.push(Some(date_to_db(exception.date())));
        let (start, end) = match *exception {
            ScheduleException::Off { .. } => (None, None),
            ScheduleException::Works { start, end, .. } => {
                (Some(time_to_db(start)), Some(time_to_db(end)))
            }
        };
        starts.push(start);
        ends.push(end);
    }
    sqlx::query(
        "WITH flagged AS ( \
           UPDATE inbox_settings SET has_shifts = true WHERE campaign_id = $1 AND NOT has_shifts \
         ), upserted AS ( \
           INSERT INTO shift_schedules (campaign_id, user_id, on_shift, next_change_at) \
           VALUES ($1, $2, $3, $4) \
           ON CONFLICT (campaign_id, user_id) DO UPDATE \
              SET on_shift = EXCLUDED.on_shift, next_change_at = EXCLUDED.next_change_at, \
                  updated_at = now() \
           RETURNING campaign_id, user_id \
         ), cleared AS ( \
           DELETE FROM shift_windows w USING upserted u \
            WHERE w.campaign_id = u.campaign_id AND w.user_id = u.user_id \
         ) \
         SELECT 1",
    )
    .bind(campaign_id) // $1
    .bind(user_id) // $2
    .bind(on_shift) // $3
    .bind(next_change_at) // $4
    .execute(&mut *conn)
    .await?;
    // The windows after the schedule's row exists (a foreign key) and its old windows are gone.
    sqlx::query(
        "INSERT INTO shift_windows (campaign_id, user_id, place, weekday, on_date, starts, ends) \
         SELECT $1, $2, w.place - 1, w.weekday, w.on_date, w.starts, w.ends \
           FROM unnest($3::int2[], $4::date[], $5::time[], $6::time[]) \
                WITH ORDINALITY AS w(weekday, on_date, starts, ends, place)",
    )
    .bind(campaign_id) // $1
    .bind(user_id) // $2
    .bind(&weekdays) // $3
    .bind(&dates) // $4
    .bind(&starts) // $5
    .bind(&ends) // $6
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes the organizer's schedule; whether they had one. The campaign keeps `has_shifts` while any
/// organizer has one.
pub async fn delete(conn: &mut Conn, campaign_id: &str, user_id: &str) -> AppResult<bool> {
    let deleted: Option<bool> = sqlx::query_scalar(
        "WITH deleted AS ( \
           DELETE FROM shift_schedules WHERE campaign_id = $1 AND user_id = $2 RETURNING 1 \
         ), unflagged AS ( \
           UPDATE inbox_settings s SET has_shifts = false \
            WHERE s.campaign_id = $1 AND EXISTS (SELECT 1 FROM deleted) \
              AND NOT EXISTS (SELECT 1 FROM shift_schedules o \
                               WHERE o.campaign_id = $1 AND o.user_id <> $2) \
         ) \
         SELECT EXISTS (SELECT 1 FROM deleted)",
    )
    .bind(campaign_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(deleted.unwrap_or(false))
}

/// A shift state to record: the organizer's shift started (`on_shift`) or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftChange {
    pub user_id: String,
    pub on_shift: bool,
}

/// Records shift starts and ends: a SHIFT_STARTED or SHIFT_ENDED event each (unnumbered: a batch numbers
/// it before its own events, as everything its read saw) and the state as the one recorded. One statement.
pub async fn record(
    conn: &mut Conn,
    campaign_id: &str,
    changes: &[ShiftChange],
    actor_id: Option<&str>,
    request_id: Option<&str>,
) -> AppResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let users: Vec<&str> = changes.iter().map(|c| c.user_id.as_str()).collect();
    let states: Vec<bool> = changes.iter().map(|c| c.on_shift).collect();
    let event = Event {
        user_id: "u.user_id",
        stamp: "k.stamp",
        ..Event::of(
            "$1",
            "CASE WHEN u.on_shift THEN 'SHIFT_STARTED' ELSE 'SHIFT_ENDED' END",
            "$4",
            "'AUTO'",
            "$5",
        )
    };
    let sql = format!(
        "WITH u AS MATERIALIZED ( \
           SELECT * FROM unnest($2::text[], $3::bool[]) WITH ORDINALITY AS u(user_id, on_shift, ord) \
         ), updated AS ( \
           UPDATE shift_schedules s SET on_shift = u.on_shift FROM u \
            WHERE s.campaign_id = $1 AND s.user_id = u.user_id \
         ), clock AS ( \
           UPDATE inbox_settings s SET event_clock = {} WHERE s.campaign_id = $1 \
           RETURNING s.event_clock AS stamp \
         ), events AS ({}) \
         SELECT 1",
        // Shift events are about the campaign's shifts, kept under its lock (which the caller holds): they
        // come after every earlier event about them, or about the queue.
        stamp_after(&["s.event_clock"]),
        event.insert("FROM u CROSS JOIN clock k ORDER BY u.ord")
    );
    sqlx::query(&sql)
        .bind(campaign_id) // $1
        .bind(&users) // $2
        .bind(&states) // $3
        .bind(actor_id) // $4
        .bind(request_id) // $5
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets when the organizer's schedule next changes their shift (NULL: no change known).
pub async fn set_next_change(
    conn: &mut Conn,
    campaign_id: &str,
    user_id: &str,
    next_change_at: Option<DateTime<Utc>>,
) -> AppResult<()> {
    sqlx::query(
        "UPDATE shift_schedules SET next_change_at = $3 WHERE campaign_id = $1 AND user_id = $2",
    )
    .bind(campaign_id)
    .bind(user_id)
    .bind(next_change_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes every schedule of the campaign due now, so the boundary worker works out its next change again
/// (the campaign's time zone changed).
pub async fn recheck_all(conn: &mut Conn, campaign_id: &str) -> AppResult<()> {
    sqlx::query("UPDATE shift_schedules SET next_change_at = now() WHERE campaign_id = $1")
        .bind(campaign_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// When each campaign's next shift boundary is due (past or future; a campaign with none has no row), for
/// the campaigns named or, for an agenda's full read, every one. A hint for this replica's agenda
/// (`service::agenda`), read without a lock.
pub async fn next_due(
    conn: &mut Conn,
    campaigns: Campaigns<'_>,
) -> AppResult<Vec<(String, DateTime<Utc>)>> {
    let sql = next_due_sql(&campaigns.condition("campaign_id", 1));
    next_due_of(conn, &sql, campaigns).await
}

/// Each campaign's earliest boundary, among the schedules `campaigns` (an SQL condition) admits.
fn next_due_sql(campaigns: &str) -> String {
    format!(
        "SELECT campaign_id, min(next_change_at) FROM shift_schedules \
          /* a boundary known, in the campaigns asked about */ \
          WHERE next_change_at IS NOT NULL AND {campaigns} \
          GROUP BY campaign_id"
    )
}

/// Locks the campaign's schedules whose boundary is due now (the caller holds the campaign's lock, so they
/// are read as they are after any concurrent change); their user ids and boundaries.
pub async fn lock_due(
    conn: &mut Conn,
    campaign_id: &str,
) -> AppResult<Vec<(String, DateTime<Utc>)>> {
    Ok(sqlx::query_as(
        "SELECT user_id, next_change_at FROM shift_schedules \
          WHERE campaign_id = $1 AND next_change_at IS NOT NULL AND next_change_at <= now() \
          ORDER BY user_id COLLATE \"C\" FOR UPDATE",
    )
    .bind(campaign_id)
    .fetch_all(conn)
    .await?)
}

fn weekday_from_iso(day: i16) -> Weekday {
    Weekday::from_monday_one_offset(day as i8).unwrap_or(Weekday::Monday)
}

fn time_from_db(t: NaiveTime) -> Time {
    Time::new(
        t.hour() as i8,
        t.minute() as i8,
        t.second() as i8,
        t.nanosecond().min(999_999_999) as i32,
    )
    .unwrap_or(Time::midnight())
}

fn time_to_db(t: Time) -> NaiveTime {
    NaiveTime::from_hms_nano_opt(
        t.hour() as u32,
        t.minute() as u32,
        t.second() as u32,
        t.subsec_nanosecond() as u32,
    )
    .unwrap_or(NaiveTime::MIN)
}

fn date_from_db(d: NaiveDate) -> Date {
    Date::new(d.year() as i16, d.month() as i8, d.day() as i8).unwrap_or(Date::MIN)
}

fn date_to_db(d: Date) -> NaiveDate {
    NaiveDate::from_ymd_opt(d.year().into(), d.month() as u32, d.day() as u32)
        .unwrap_or(NaiveDate::MIN)
}
