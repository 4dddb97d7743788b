//! Shift schedules through the service: set, read and refused with every mistake named; an organizer off
//! shift is passed over and the preview says until when; a shift's start drains the queue and its end
//! applies `on_unavailable`, each recorded once in history across replicas.

use std::time::{Duration, Instant};

use assignment_service::pb;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::harness::*;

fn weekly(weekday: pb::Weekday, start: &str, end: &str) -> pb::ShiftWindow {
    pb::ShiftWindow {
        weekday: weekday.into(),
        start: start.into(),
        end: end.into(),
    }
}

fn works(date: &str, start: &str, end: &str) -> pb::ShiftException {
    pb::ShiftException {
        date: date.into(),
        off: false,
        start: start.into(),
        end: end.into(),
    }
}

async fn set_schedule(
    app: &TestApp,
    actor: &str,
    user_id: &str,
    weekly: Vec<pb::ShiftWindow>,
    exceptions: Vec<pb::ShiftException>,
) -> Result<pb::ShiftSchedule, Status> {
    let request = pb::SetShiftScheduleRequest {
        user_id: user_id.into(),
        weekly,
        exceptions,
    };
    let response = app
        .assignments()
        .await
        .set_shift_schedule(as_actor(actor, request))
        .await?;
    Ok(response.into_inner().schedule.expect("a schedule"))
}

async fn get_schedule(
    app: &TestApp,
    actor: &str,
    user_id: &str,
) -> Result<pb::ShiftSchedule, Status> {
    let request = pb::GetShiftScheduleRequest {
        user_id: user_id.into(),
    };
    let response = app
        .assignments()
        .await
        .get_shift_schedule(as_actor(actor, request))
        .await?;
    Ok(response.into_inner().schedule.expect("a schedule"))
}

fn fields(status: &Status) -> Vec<String> {
    let details = status.get_error_details();
    let mut fields: Vec<String> = details
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    fields.sort();
    fields
}

/// The campaign's SHIFT_STARTED and SHIFT_ENDED events in feed order, as (user, started).
async fn shift_events(app: &TestApp) -> Vec<(String, bool)> {
    app.campaign_history(500)
        .await
        .into_iter()
        .filter_map(|e| match e.action() {
            pb::AssignmentAction::ShiftStarted => Some((e.user_id, true)),
            pb::AssignmentAction::ShiftEnded => Some((e.user_id, false)),
            _ => None,
        })
        .collect()
}

async fn campaign_with(organizers: &[&str]) -> TestApp {
    let app = TestApp::start_configured(&NO_SWEEP).await;
    app.admin("admin").await;
    for organizer in organizers {
        app.organizer(organizer).await;
    }
    app.group("admin", "Everyone", organizers, true, scope_all())
        .await;
    app.enable_auto_assign().await;
    app
}

#[tokio::test]
async fn a_schedule_is_set_read_deleted_and_refused_with_every_mistake_named() {
    let app = campaign_with(&["o1", "o2"]).await;
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            time_zone: Some("America/Chicago".into()),
            ..Default::default()
        },
    )
    .await;

    // Every mistake at once, each by its field; nothing is stored.
    let refused = set_schedule(
        &app,
        "admin",
        "o1",
        vec![
            weekly(pb::Weekday::Monday, "9am", "17:00"),
            weekly(pb::Weekday::Unspecified, "09:00", "17:00"),
        ],
        vec![works("24/12/2026", "10:00", "12:00")],
    )
    .await;
    let status = expect_code(refused, Code::InvalidArgument);
    assert_eq!(
        fields(&status),
        ["exceptions[0].date", "weekly[0].start", "weekly[1].weekday"]
    );
    let overlapping = set_schedule(
        &app,
        "admin",
        "o1",
        vec![
            weekly(pb::Weekday::Monday, "09:00", "17:00"),
            weekly(pb::Weekday::Monday, "16:00", "18:00"),
        ],
        vec![],
    )
    .await;
    let status = expect_code(overlapping, Code::InvalidArgument);
    assert_eq!(fields(&status), ["weekly[1]"]);
    assert!(status.message().contains("overlaps"), "{status:?}");
    assert_eq!(app.count("shift_schedules").await, 0);
    assert_eq!(app.count("assignment_events").await, 0);

    // Who may: an organizer their own, an admin anyone's; only organizers have schedules.
    let other = set_schedule(&app, "o2", "o1", vec![], vec![]).await;
    assert_eq!(
        reason(&expect_code(other, Code::PermissionDenied)),
        "ADMIN_REQUIRED"
    );
    let admin = set_schedule(&app, "admin", "admin", vec![], vec![]).await;
    assert_eq!(
        fields(&expect_code(admin, Code::InvalidArgument)),
        ["user_id"]
    );
    let nobody = set_schedule(&app, "admin", "ghost", vec![], vec![]).await;
    assert_eq!(
        reason(&expect_code(nobody, Code::NotFound)),
        "USER_NOT_FOUND"
    );
    let mut client = app.assignments().await;
    let none = get_schedule(&app, "o1", "").await;
    assert_eq!(
        reason(&expect_code(none, Code::NotFound)),
        "SHIFT_SCHEDULE_NOT_FOUND"
    );

    // An organizer sets their own; it reads back as set, in the campaign's zone.
    let set = set_schedule(
        &app,
        "o1",
        "",
        vec![
            weekly(pb::Weekday::Monday, "09:00", "17:00"),
            weekly(pb::Weekday::Friday, "22:00", "06:00"),
        ],
        vec![
            pb::ShiftException {
                date: "2026-12-24".into(),
                off: true,
                ..Default::default()
            },
            works("2026-12-26", "10:00", "12:30:15"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(set.user_id, "o1");
    assert_eq!(set.time_zone, "America/Chicago");
    let got = get_schedule(&app, "admin", "o1").await.unwrap();
    assert_eq!(got.weekly, set.weekly);
    assert_eq!(got.exceptions, set.exceptions);
    assert_eq!(got.exceptions[1].end, "12:30:15");
    assert_eq!(got.on_shift, set.on_shift);
    assert!(got.status.ends_with("America/Chicago"), "{got:?}");

    // A time zone the service does not know is refused by name.
    let zone = client
        .update_inbox_settings(as_actor(
            "admin",
            pb::UpdateInboxSettingsRequest {
                time_zone: Some("Mars/Olympus".into()),
                ..Default::default()
            },
        ))
        .await;
    let status = expect_code(zone, Code::InvalidArgument);
    assert_eq!(fields(&status), ["time_zone"]);
    assert!(status.message().contains("IANA"), "{status:?}");

    // Deleted: always on shift again, and a second delete finds nothing.
    for expected in [true, false] {
        let deleted = client
            .delete_shift_schedule(as_actor(
                "admin",
                pb::DeleteShiftScheduleRequest {
                    user_id: "o1".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .deleted;
        assert_eq!(deleted, expected);
    }
    assert_eq!(app.count("shift_schedules").await, 0);
    assert_eq!(app.count("shift_windows").await, 0);
}

#[tokio::test]
async fn an_organizer_off_shift_is_passed_over_and_the_preview_says_until_when() {
    let app = campaign_with(&["o1", "o2"]).await;
    let zone = "America/Chicago";
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            time_zone: Some(zone.into()),
            ..Default::default()
        },
    )
    .await;
    // o1 works 09:00–10:00 three days from now, local time: off shift until then.
    let day = Timestamp::now()
        .to_zoned(TimeZone::get(zone).unwrap())
        .date()
        .checked_add(3.days())
        .unwrap();
    let weekday = pb::Weekday::try_from(i32::from(day.weekday().to_monday_one_offset())).unwrap();
    let set = set_schedule(
        &app,
        "admin",
        "o1",
        vec![weekly(weekday, "09:00", "10:00")],
        vec![],
    )
    .await
    .unwrap();
    let off_until = format!("off shift until {} 09:00 {zone}", day.strftime("%a"));
    assert!(!set.on_shift);
    assert_eq!(set.status, off_until);
    let changes_at = set.changes_at.expect("the shift's start");
    let expected = day
        .at(9, 0, 0, 0)
        .to_zoned(TimeZone::get(zone).unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(changes_at.seconds, expected.as_second());

    // Round robin passes o1 over, as long as they are off shift.
    for conversation in ["c1", "c2", "c3"] {
        assert_eq!(
            app.auto_assign(conversation).await.assignee_id.as_deref(),
            Some("o2")
        );
    }
    let preview = app
        .assignments()
        .await
        .preview_auto_assign(as_actor("admin", pb::PreviewAutoAssignRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let o1 = preview
        .candidates
        .iter()
        .find(|c| c.user_id == "o1")
        .unwrap();
    assert_eq!(
        o1.reasons().collect::<Vec<_>>(),
        [pb::IneligibleReason::OffShift]
    );
    assert_eq!(o1.explanation, off_until);
    assert_eq!(preview.next_assignee_id.as_deref(), Some("o2"));
    // Setting the schedule ended the shift o1 was on without one: history says so.
    assert_eq!(shift_events(&app).await, [("o1".to_string(), false)]);

    // Another time zone: the schedule reads in it at once, and the boundary worker's next change follows.
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            time_zone: Some("Asia/Tokyo".into()),
            ..Default::default()
        },
    )
    .await;
    let read = get_schedule(&app, "admin", "o1").await.unwrap();
    assert!(read.status.ends_with("Asia/Tokyo"), "{read:?}");
    let tokyo = read.changes_at.unwrap().seconds;
    assert_ne!(tokyo, changes_at.seconds);
    until(Duration::from_secs(5), || async {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM next_change_at)::int8 FROM shift_schedules WHERE campaign_id = $1",
        )
        .bind(CAMPAIGN)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        next == Some(tokyo)
    })
    .await;

    // Deleted, o1 is on shift again (SHIFT_STARTED) and next in the rotation.
    app.assignments()
        .await
        .delete_shift_schedule(system(
            CAMPAIGN,
            pb::DeleteShiftScheduleRequest {
                user_id: "o1".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        app.auto_assign("c4").await.assignee_id.as_deref(),
        Some("o1")
    );
    assert_eq!(
        shift_events(&app).await,
        [("o1".to_string(), false), ("o1".to_string(), true)]
    );
}

/// Polls until `done` holds (every 20 ms, for at most `limit`); how long it took.
async fn until<F, Fut>(limit: Duration, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if done().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within {limit:?}");
}

#[tokio::test]
async fn a_shift_start_drains_the_queue_and_its_end_returns_what_they_hold_once_across_replicas() {
    let app = campaign_with(&["o1"]).await;
    let replica = app.replica().await;
    app.update_settings(
        "admin",
        pb::UpdateInboxSettingsRequest {
            on_unavailable: pb::OnUnavailable::ReturnToQueue.into(),
            ..Default::default()
        },
    )
    .await;
    // o1 works a three-second window starting two seconds from now (UTC, the default zone).
    let start = Timestamp::from_second(Timestamp::now().as_second() + 2).unwrap();
    let end = start.checked_add(3.seconds()).unwrap();
    let local = |t: Timestamp| t.to_zoned(TimeZone::UTC);
    let window = works(
        &local(start).date().to_string(),
        &local(start).time().strftime("%H:%M:%S").to_string(),
        &local(end).time().strftime("%H:%M:%S").to_string(),
    );
    let set = set_schedule(&app, "admin", "o1", vec![], vec![window])
        .await
        .unwrap();
    assert!(!set.on_shift, "{set:?}");
    assert_eq!(set.changes_at.unwrap().seconds, start.as_second());
    // Nobody is on shift: c1 waits.
    assert_eq!(
        app.auto_assign("c1").await.outcome(),
        pb::AutoAssignOutcome::Queued
    );

    // The shift's start drains the queue: c1 goes to o1, while the shift lasts.
    until(Duration::from_secs(10), || async {
        app.stored("c1").await.0.is_some()
    })
    .await;
    let assigned_at = Timestamp::now();
    assert!(assigned_at >= start, "assigned before the shift started");
    assert!(assigned_at < end, "not drained while the shift lasted");
    eprintln!(
        "drained {} ms after the shift started",
        (assigned_at - start).get_milliseconds()
    );
    assert_eq!(app.stored("c1").await.0.as_deref(), Some("o1"));

    // Its end applies on_unavailable (RETURN_TO_QUEUE): c1 waits again, nobody being on shift.
    until(Duration::from_secs(10), || async {
        app.stored("c1").await.0.is_none()
    })
    .await;
    assert!(Timestamp::now() >= end);
    assert_eq!(app.count("waiting_conversations").await, 1);
    let returned: Vec<_> = app
        .history("c1")
        .await
        .into_iter()
        .filter(|e| e.cause == "SHIFT_ENDED")
        .map(|e| e.action())
        .collect();
    assert_eq!(
        returned,
        [pb::AssignmentAction::Unassign, pb::AssignmentAction::Queued]
    );
    // Each start and end once, though both replicas watch the boundaries: ended by the schedule's
    // setting, started, ended.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let o1 = |started| ("o1".to_string(), started);
    assert_eq!(shift_events(&app).await, [o1(false), o1(true), o1(false)]);
    drop(replica);
}
