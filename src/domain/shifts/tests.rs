use super::*;
use jiff::civil::Weekday::{Friday, Monday, Saturday, Sunday, Thursday, Tuesday, Wednesday};
use jiff::civil::date;
use jiff::tz::AmbiguousOffset;
use proptest::prelude::*;

const CHICAGO: &str = "America/Chicago";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn win(weekday: Weekday, start: &str, end: &str) -> ShiftWindow {
    ShiftWindow {
        weekday,
        start: start.parse().unwrap(),
        end: end.parse().unwrap(),
    }
}

fn sched(zone: &str, weekly: Vec<ShiftWindow>, exceptions: Vec<ScheduleException>) -> Schedule {
    Schedule {
        time_zone: zone.to_string(),
        weekly,
        exceptions,
    }
}

fn every_day(start: &str, end: &str) -> Vec<ShiftWindow> {
    let days = [
        Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
    ];
    days.into_iter().map(|d| win(d, start, end)).collect()
}

fn weekdays(start: &str, end: &str) -> Vec<ShiftWindow> {
    every_day(start, end).into_iter().take(5).collect()
}

/// Intervals between two UTC instants, as (start, end) strings for readable asserts.
fn ivs(s: &Schedule, from: &str, to: &str) -> Vec<(String, String)> {
    let show = |t: Timestamp| t.strftime("%Y-%m-%dT%H:%MZ").to_string();
    s.intervals(ts(from), ts(to))
        .into_iter()
        .map(|(a, b)| (show(a), show(b)))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn chicago_day_shift_around_both_2026_transitions() {
    let s = sched(CHICAGO, every_day("09:00", "17:00"), vec![]);
    let spring = [
        ("2026-03-07T15:00Z", "2026-03-07T23:00Z"),
        ("2026-03-08T14:00Z", "2026-03-08T22:00Z"),
        ("2026-03-09T14:00Z", "2026-03-09T22:00Z"),
    ];
    assert_eq!(
        ivs(&s, "2026-03-07T00:00Z", "2026-03-10T00:00Z"),
        pairs(&spring)
    );
    let fall = [
        ("2026-10-31T14:00Z", "2026-10-31T22:00Z"),
        ("2026-11-01T15:00Z", "2026-11-01T23:00Z"),
        ("2026-11-02T15:00Z", "2026-11-02T23:00Z"),
    ];
    assert_eq!(
        ivs(&s, "2026-10-31T00:00Z", "2026-11-03T00:00Z"),
        pairs(&fall)
    );
}

#[test]
fn chicago_overnight_shift_has_real_length() {
    let s = sched(CHICAGO, vec![win(Saturday, "22:00", "06:00")], vec![]);
    assert_eq!(
        ivs(&s, "2026-03-07T12:00Z", "2026-03-09T00:00Z"),
        pairs(&[("2026-03-08T04:00Z", "2026-03-08T11:00Z")])
    );
    assert_eq!(
        ivs(&s, "2026-10-31T12:00Z", "2026-11-02T00:00Z"),
        pairs(&[("2026-11-01T03:00Z", "2026-11-01T12:00Z")])
    );
}

#[test]
fn one_to_three_lasts_one_hour_in_spring_and_three_in_fall() {
    let s = sched(CHICAGO, vec![win(Sunday, "01:00", "03:00")], vec![]);
    assert_eq!(
        ivs(&s, "2026-03-08T00:00Z", "2026-03-09T00:00Z"),
        pairs(&[("2026-03-08T07:00Z", "2026-03-08T08:00Z")])
    );
    assert_eq!(
        ivs(&s, "2026-11-01T00:00Z", "2026-11-02T00:00Z"),
        pairs(&[("2026-11-01T06:00Z", "2026-11-01T09:00Z")])
    );
}

#[test]
fn window_starting_in_spring_gap_moves_later() {
    let s = sched(CHICAGO, vec![win(Sunday, "02:30", "04:00")], vec![]);
    // 02:30 does not exist on 2026-03-08: it becomes 03:30 CDT (08:30Z).
    assert_eq!(
        ivs(&s, "2026-03-08T00:00Z", "2026-03-09T00:00Z"),
        pairs(&[("2026-03-08T08:30Z", "2026-03-08T09:00Z")])
    );
    let before = s.state_at(ts("2026-03-08T08:29:59Z"));
    assert_eq!(
        before,
        ShiftState::Off {
            until: Some(ts("2026-03-08T08:30Z"))
        }
    );
    assert_eq!(
        describe(&before, CHICAGO),
        "off shift until Sun 03:30 America/Chicago"
    );
    // Each end moves separately: a window wholly inside the gap moves by the gap...
    let inside = sched(CHICAGO, vec![win(Sunday, "02:00", "02:45")], vec![]);
    assert_eq!(
        ivs(&inside, "2026-03-08T00:00Z", "2026-03-09T00:00Z"),
        pairs(&[("2026-03-08T08:00Z", "2026-03-08T08:45Z")])
    );
    // ...and one whose moved start is not before its end does not happen that day.
    let gone = sched(CHICAGO, vec![win(Sunday, "02:30", "03:00")], vec![]);
    assert_eq!(
        ivs(&gone, "2026-03-08T00:00Z", "2026-03-09T00:00Z"),
        pairs(&[])
    );
}

#[test]
fn berlin_transitions_differ_from_chicago() {
    let s = sched("Europe/Berlin", every_day("09:00", "17:00"), vec![]);
    let spring = [
        ("2026-03-28T08:00Z", "2026-03-28T16:00Z"),
        ("2026-03-29T07:00Z", "2026-03-29T15:00Z"),
    ];
    assert_eq!(
        ivs(&s, "2026-03-28T00:00Z", "2026-03-29T23:00Z"),
        pairs(&spring)
    );
    let fall = [
        ("2026-10-24T07:00Z", "2026-10-24T15:00Z"),
        ("2026-10-25T08:00Z", "2026-10-25T16:00Z"),
    ];
    assert_eq!(
        ivs(&s, "2026-10-24T00:00Z", "2026-10-25T23:00Z"),
        pairs(&fall)
    );
    let night = sched(
        "Europe/Berlin",
        vec![win(Saturday, "22:00", "06:00")],
        vec![],
    );
    assert_eq!(
        ivs(&night, "2026-03-28T12:00Z", "2026-03-30T00:00Z"),
        pairs(&[("2026-03-28T21:00Z", "2026-03-29T04:00Z")])
    );
    assert_eq!(
        ivs(&night, "2026-10-24T12:00Z", "2026-10-26T00:00Z"),
        pairs(&[("2026-10-24T20:00Z", "2026-10-25T05:00Z")])
    );
}

#[test]
fn lord_howe_half_hour_dst() {
    let s = sched(
        "Australia/Lord_Howe",
        vec![win(Saturday, "22:00", "06:00")],
        vec![],
    );
    // DST ends 2026-04-05 02:00 (+11:00 -> +10:30): the night is 8h30.
    assert_eq!(
        ivs(&s, "2026-04-04T00:00Z", "2026-04-05T00:00Z"),
        pairs(&[("2026-04-04T11:00Z", "2026-04-04T19:30Z")])
    );
    // DST starts 2026-10-04 02:00 (+10:30 -> +11:00): the night is 7h30.
    assert_eq!(
        ivs(&s, "2026-10-03T00:00Z", "2026-10-04T00:00Z"),
        pairs(&[("2026-10-03T11:30Z", "2026-10-03T19:00Z")])
    );
}

#[test]
fn off_exception_on_a_holiday() {
    let christmas = ScheduleException::Off {
        date: date(2026, 12, 25),
    };
    let s = sched(CHICAGO, weekdays("09:00", "17:00"), vec![christmas]);
    let state = s.state_at(ts("2026-12-25T18:00Z"));
    assert_eq!(
        state,
        ShiftState::Off {
            until: Some(ts("2026-12-28T15:00Z"))
        }
    );
    assert_eq!(
        describe(&state, CHICAGO),
        "off shift until Mon 09:00 America/Chicago"
    );
    let thursday = s.state_at(ts("2026-12-24T20:00Z"));
    assert_eq!(
        describe(&thursday, CHICAGO),
        "on shift until Thu 17:00 America/Chicago"
    );
    // The weekly overnight shift that started the day before still runs into the holiday.
    let nights = sched(
        CHICAGO,
        vec![win(Thursday, "22:00", "06:00")],
        vec![christmas],
    );
    assert!(nights.state_at(ts("2026-12-25T09:00Z")).is_on());
}

#[test]
fn works_exception_on_a_weekend() {
    let start = "10:00".parse().unwrap();
    let saturday = ScheduleException::Works {
        date: date(2026, 6, 13),
        start,
        end: "14:00".parse().unwrap(),
    };
    let s = sched(CHICAGO, weekdays("09:00", "17:00"), vec![saturday]);
    assert_eq!(
        s.state_at(ts("2026-06-13T14:59:59Z")),
        ShiftState::Off {
            until: Some(ts("2026-06-13T15:00Z"))
        }
    );
    assert_eq!(
        s.state_at(ts("2026-06-13T15:00Z")),
        ShiftState::On {
            until: Some(ts("2026-06-13T19:00Z"))
        }
    );
    assert_eq!(
        s.state_at(ts("2026-06-13T19:00Z")),
        ShiftState::Off {
            until: Some(ts("2026-06-15T14:00Z"))
        }
    );
    assert_eq!(
        s.state_at(ts("2026-06-20T16:00Z")),
        ShiftState::Off {
            until: Some(ts("2026-06-22T14:00Z"))
        }
    );
}

#[test]
fn touching_windows_merge_into_one_shift() {
    let s = sched(
        CHICAGO,
        vec![
            win(Monday, "22:00", "00:00"),
            win(Tuesday, "00:00", "06:00"),
        ],
        vec![],
    );
    assert_eq!(
        ivs(&s, "2026-06-15T00:00Z", "2026-06-17T00:00Z"),
        pairs(&[("2026-06-16T03:00Z", "2026-06-16T11:00Z")])
    );
    let state = s.state_at(ts("2026-06-16T04:00Z"));
    assert_eq!(
        describe(&state, CHICAGO),
        "on shift until Tue 06:00 America/Chicago"
    );
    assert_eq!(
        describe(&s.state_at(ts("2026-06-19T12:00Z")), CHICAGO),
        "off shift until Mon 22:00 America/Chicago"
    );
}

#[test]
fn leave_longer_than_a_week_is_searched_past() {
    let mut leave = Vec::new();
    let mut day = date(2026, 7, 1);
    while day <= date(2026, 7, 31) {
        leave.push(ScheduleException::Off { date: day });
        day = day.tomorrow().unwrap();
    }
    let s = sched(CHICAGO, weekdays("09:00", "17:00"), leave);
    assert_eq!(
        s.state_at(ts("2026-07-01T15:00Z")),
        ShiftState::Off {
            until: Some(ts("2026-08-03T14:00Z"))
        }
    );
}

#[test]
fn empty_and_round_the_clock_schedules_have_no_next_change() {
    let empty = sched(CHICAGO, vec![], vec![]);
    assert_eq!(
        empty.state_at(ts("2026-01-01T00:00Z")),
        ShiftState::Off { until: None }
    );
    assert_eq!(
        describe(&ShiftState::Off { until: None }, CHICAGO),
        "off shift"
    );
    let always = sched(
        CHICAGO,
        every_day("00:00", "12:00")
            .into_iter()
            .chain(every_day("12:00", "00:00"))
            .collect(),
        vec![],
    );
    assert_eq!(
        always.state_at(ts("2026-01-01T00:00Z")),
        ShiftState::On { until: None }
    );
    assert_eq!(always.validate(), Ok(()));
}

#[test]
fn unknown_zone_fails_validation_and_is_never_on() {
    let s = sched("America/Chicgo", weekdays("09:00", "17:00"), vec![]);
    let errors = s.validate().unwrap_err();
    let expected = "unknown time zone \"America/Chicgo\": use an IANA name such as \"America/Chicago\" or \"Europe/Berlin\"";
    assert_eq!(
        errors,
        vec![("time_zone".to_string(), expected.to_string())]
    );
    assert_eq!(
        s.state_at(ts("2026-06-15T15:00Z")),
        ShiftState::Off { until: None }
    );
    assert!(
        sched("", vec![], vec![]).validate().unwrap_err()[0]
            .1
            .contains("required")
    );
}

#[test]
fn validate_reports_bad_windows_and_exceptions() {
    let weekly = vec![
        win(Monday, "09:00", "17:00"),
        win(Monday, "12:00", "20:00"),
        win(Sunday, "22:00", "02:00"),
        win(Monday, "01:00", "03:00"),
        win(Tuesday, "09:00", "09:00"),
    ];
    let t = |s: &str| s.parse().unwrap();
    let exceptions = vec![
        ScheduleException::Off {
            date: date(2026, 12, 25),
        },
        ScheduleException::Off {
            date: date(2026, 12, 25),
        },
        ScheduleException::Works {
            date: date(2026, 6, 15),
            start: t("00:00"),
            end: t("04:00"),
        },
        ScheduleException::Works {
            date: date(2026, 6, 16),
            start: t("10:00"),
            end: t("10:00"),
        },
    ];
    let errors = sched(CHICAGO, weekly, exceptions).validate().unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "weekly[1]",
            "weekly[3]",
            "weekly[4]",
            "exceptions[1]",
            "exceptions[2]",
            "exceptions[3]"
        ]
    );
    assert_eq!(
        errors[0].1,
        "window Mon 12:00–20:00 overlaps weekly[0] (Mon 09:00–17:00); shorten or remove one"
    );
    assert!(
        errors[2]
            .1
            .starts_with("window Tue 09:00–09:00 has zero length")
    );
    assert_eq!(
        errors[4].1,
        "worked window 2026-06-15 00:00–04:00 overlaps weekly[2]; shorten or remove one"
    );
    assert_eq!(
        sched(CHICAGO, weekdays("09:00", "17:00"), vec![]).validate(),
        Ok(())
    );
}

// ---- property tests ----

const ZONES: [&str; 5] = [
    "America/Chicago",
    "Europe/Berlin",
    "Asia/Kolkata",
    "UTC",
    "Australia/Lord_Howe",
];

#[derive(Debug, Clone)]
struct Case {
    zone: &'static str,
    t: Timestamp,
    weekly: Vec<ShiftWindow>,
    /// (days after t's local date, off?, start, end)
    exceptions: Vec<(i64, bool, Time, Time)>,
}

fn arb_time() -> impl Strategy<Value = Time> {
    let minute = prop_oneof![Just(0i8), Just(30), 0i8..60];
    (0i8..24, minute).prop_map(|(h, m)| Time::new(h, m, 0, 0).unwrap())
}

/// Instants in 2026–2027, half of them within 3 days of one of the zone's transitions.
fn arb_case() -> impl Strategy<Value = Case> {
    let window = (0i8..7, arb_time(), arb_time()).prop_map(|(d, start, end)| ShiftWindow {
        weekday: Weekday::from_monday_zero_offset(d).unwrap(),
        start,
        end,
    });
    let exception = (-3i64..10, any::<bool>(), arb_time(), arb_time());
    let instant = (
        any::<bool>(),
        0i64..2 * 365 * 86_400,
        any::<usize>(),
        -3 * 86_400i64..3 * 86_400,
    );
    (
        0..ZONES.len(),
        instant,
        prop::collection::vec(window, 0..=6),
        prop::collection::vec(exception, 0..4),
    )
        .prop_map(|(z, (near, secs, pick, delta), weekly, exceptions)| {
            let (first, last) = (ts("2026-01-01T00:00Z"), ts("2028-01-01T00:00Z"));
            let tz = TimeZone::get(ZONES[z]).unwrap();
            let shifts: Vec<Timestamp> = tz
                .following(first)
                .map(|tr| tr.timestamp())
                .take_while(|t| *t < last)
                .collect();
            let t = match shifts.len() {
                n if near && n > 0 => shifts[pick % n] + SignedDuration::from_secs(delta),
                _ => first + SignedDuration::from_secs(secs),
            };
            Case {
                zone: ZONES[z],
                t,
                weekly,
                exceptions,
            }
        })
}

fn build(case: &Case) -> Schedule {
    let today = case.t.to_zoned(TimeZone::get(case.zone).unwrap()).date();
    let exceptions = case
        .exceptions
        .iter()
        .map(|&(days, off, start, end)| {
            let date = add_days(today, days);
            if off {
                ScheduleException::Off { date }
            } else {
                ScheduleException::Works { date, start, end }
            }
        })
        .collect();
    Schedule {
        time_zone: case.zone.to_string(),
        weekly: case.weekly.clone(),
        exceptions,
    }
}

/// Independent oracle: the windows starting on `day`, straight from the rules.
fn oracle_windows(s: &Schedule, day: Date) -> Vec<(Time, Time)> {
    let exceptions = s.exceptions.iter().filter(|e| e.date() == day);
    if exceptions
        .clone()
        .any(|e| matches!(e, ScheduleException::Off { .. }))
    {
        return vec![];
    }
    let works: Vec<_> = exceptions
        .filter_map(|e| match *e {
            ScheduleException::Works { start, end, .. } => Some((start, end)),
            ScheduleException::Off { .. } => None,
        })
        .collect();
    if !works.is_empty() {
        return works;
    }
    s.weekly
        .iter()
        .filter(|w| w.weekday == day.weekday())
        .map(|w| (w.start, w.end))
        .collect()
}

fn oracle_on(s: &Schedule, tz: &TimeZone, t: Timestamp) -> bool {
    let today = t.to_zoned(tz.clone()).date();
    (-2..=1).map(|k| add_days(today, k)).any(|day| {
        oracle_windows(s, day).into_iter().any(|(start, end)| {
            let end_day = if end > start {
                day
            } else {
                day.tomorrow().unwrap()
            };
            let a = tz
                .to_ambiguous_timestamp(day.to_datetime(start))
                .compatible()
                .unwrap();
            let b = tz
                .to_ambiguous_timestamp(end_day.to_datetime(end))
                .compatible()
                .unwrap();
            start != end && a <= t && t < b
        })
    })
}

/// The instant is a local time from `times`, or one moved forward out of a gap.
fn is_window_edge(tz: &TimeZone, x: Timestamp, times: &[Time]) -> bool {
    let local = x.to_zoned(tz.clone());
    times.contains(&local.time())
        || times.iter().any(|w| {
            [local.date(), add_days(local.date(), -1)]
                .into_iter()
                .any(|d| {
                    let amb = tz.to_ambiguous_timestamp(d.to_datetime(*w));
                    matches!(amb.offset(), AmbiguousOffset::Gap { .. })
                        && amb.compatible().ok() == Some(x)
                })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn state_and_intervals_agree(case in arb_case()) {
        let s = build(&case);
        let tz = TimeZone::get(case.zone).unwrap();
        let (t, week) = (case.t, SignedDuration::from_hours(8 * 24));
        let (from, to) = (t - week, t + week);
        let list = s.intervals(from, to);
        let state = s.state_at(t);
        // (1) on iff an interval contains t, and the independent oracle agrees.
        prop_assert_eq!(state.is_on(), list.iter().any(|&(a, b)| a <= t && t < b));
        prop_assert_eq!(state.is_on(), oracle_on(&s, &tz, t));
        // (2) until is the next change.
        if let Some(u) = state.until() {
            prop_assert!(u > t);
            prop_assert_ne!(s.state_at(u).is_on(), state.is_on());
            prop_assert_eq!(s.state_at(u - SignedDuration::from_secs(1)).is_on(), state.is_on());
        }
        // (3) sorted, non-empty, neither overlapping nor touching, all within [from, to).
        for &(a, b) in &list {
            prop_assert!(a < b && a < to && b > from);
        }
        for pair in list.windows(2) {
            prop_assert!(pair[0].1 < pair[1].0);
        }
        // (4) edges are window edges in local time.
        let mut starts: Vec<Time> = s.weekly.iter().map(|w| w.start).collect();
        let mut ends: Vec<Time> = s.weekly.iter().map(|w| w.end).collect();
        for e in &s.exceptions {
            if let ScheduleException::Works { start, end, .. } = *e {
                starts.push(start);
                ends.push(end);
            }
        }
        for &(a, b) in &list {
            prop_assert!(is_window_edge(&tz, a, &starts), "start {} not a window start", a);
            prop_assert!(is_window_edge(&tz, b, &ends), "end {} not a window end", b);
        }
        // (5) a narrower range gives the same shifts (merging does not depend on the range).
        let day = SignedDuration::from_hours(24);
        let narrow: Vec<_> = list.iter().copied().filter(|&(a, b)| a < t + day && b > t - day).collect();
        prop_assert_eq!(s.intervals(t - day, t + day), narrow);
    }
}
