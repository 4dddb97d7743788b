//! A schedule as a caller sends it (weekdays, "HH:MM" times, "YYYY-MM-DD" dates), parsed and checked into
//! a [`Schedule`]: every mistake is reported at once, each naming its field.

use jiff::civil::{Date, Time, Weekday};

use super::{Schedule, ScheduleException, ShiftWindow};

/// At most this many weekly windows and exceptions each: a person's schedule, not a calendar dump.
pub const MAX_WINDOWS: usize = 200;

/// A weekly window as sent; `weekday` is `None` when the request named none.
#[derive(Debug, Clone, Default)]
pub struct WindowInput {
    pub weekday: Option<Weekday>,
    pub start: String,
    pub end: String,
}

/// An exception as sent.
#[derive(Debug, Clone, Default)]
pub struct ExceptionInput {
    pub date: String,
    pub off: bool,
    pub start: String,
    pub end: String,
}

/// The schedule read in `time_zone`, or every `(field, message)` wrong with it.
pub fn parse(
    time_zone: &str,
    weekly: &[WindowInput],
    exceptions: &[ExceptionInput],
) -> Result<Schedule, Vec<(String, String)>> {
    let mut errors = Vec::new();
    for (field, count) in [("weekly", weekly.len()), ("exceptions", exceptions.len())] {
        if count > MAX_WINDOWS {
            errors.push((
                field.to_string(),
                format!("at most {MAX_WINDOWS} {field} entries, not {count}"),
            ));
        }
    }
    let mut schedule = Schedule {
        time_zone: time_zone.to_owned(),
        ..Schedule::default()
    };
    for (i, window) in weekly.iter().enumerate() {
        let field = format!("weekly[{i}]");
        if window.weekday.is_none() {
            errors.push((
                format!("{field}.weekday"),
                "weekday is required (WEEKDAY_MONDAY … WEEKDAY_SUNDAY)".to_string(),
            ));
        }
        let start = time(&field, "start", &window.start, &mut errors);
        let end = time(&field, "end", &window.end, &mut errors);
        if let (Some(weekday), Some(start), Some(end)) = (window.weekday, start, end) {
            schedule.weekly.push(ShiftWindow {
                weekday,
                start,
                end,
            });
        }
    }
    for (i, exception) in exceptions.iter().enumerate() {
        let field = format!("exceptions[{i}]");
        let date = Date::strptime("%Y-%m-%d", exception.date.trim()).ok();
        if date.is_none() {
            errors.push((
                format!("{field}.date"),
                format!(
                    "date {:?} is not a date: use YYYY-MM-DD, e.g. \"2026-12-24\"",
                    exception.date
                ),
            ));
        }
        let parsed = if exception.off {
            if !exception.start.is_empty() || !exception.end.is_empty() {
                errors.push((
                    field.clone(),
                    "a day off has no start or end: leave them empty, or set off to false to work \
                     from start to end"
                        .to_string(),
                ));
            }
            date.map(|date| ScheduleException::Off { date })
        } else {
            let start = time(&field, "start", &exception.start, &mut errors);
            let end = time(&field, "end", &exception.end, &mut errors);
            match (date, start, end) {
                (Some(date), Some(start), Some(end)) => {
                    Some(ScheduleException::Works { date, start, end })
                }
                _ => None,
            }
        };
        schedule.exceptions.extend(parsed);
    }
    // The rules between windows (overlaps, zero lengths, the zone) once each window reads well.
    if errors.is_empty() {
        schedule.validate()?;
        Ok(schedule)
    } else {
        Err(errors)
    }
}

/// "HH:MM" or "HH:MM:SS", 00:00 to 23:59:59.
fn time(field: &str, part: &str, text: &str, errors: &mut Vec<(String, String)>) -> Option<Time> {
    let text = text.trim();
    let parsed = Time::strptime("%H:%M:%S", text)
        .or_else(|_| Time::strptime("%H:%M", text))
        .ok();
    if parsed.is_none() {
        errors.push((
            format!("{field}.{part}"),
            format!("{part} {text:?} is not a time of day: use HH:MM (24-hour), e.g. \"09:00\""),
        ));
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(weekday: Option<Weekday>, start: &str, end: &str) -> WindowInput {
        WindowInput {
            weekday,
            start: start.into(),
            end: end.into(),
        }
    }

    #[test]
    fn a_schedule_reads_weekly_windows_and_exceptions() {
        let schedule = parse(
            "America/Chicago",
            &[
                window(Some(Weekday::Monday), "09:00", "17:00"),
                window(Some(Weekday::Friday), "22:00", "06:00:30"),
            ],
            &[
                ExceptionInput {
                    date: "2026-12-24".into(),
                    off: true,
                    ..ExceptionInput::default()
                },
                ExceptionInput {
                    date: "2026-12-26".into(),
                    start: "10:00".into(),
                    end: "12:00".into(),
                    ..ExceptionInput::default()
                },
            ],
        )
        .unwrap();
        assert_eq!(schedule.weekly.len(), 2);
        assert_eq!(schedule.weekly[1].end, Time::constant(6, 0, 30, 0));
        assert_eq!(
            schedule.exceptions[0],
            ScheduleException::Off {
                date: Date::constant(2026, 12, 24)
            }
        );
    }

    #[test]
    fn every_mistake_is_named_by_its_field() {
        let errors = parse(
            "America/Chicago",
            &[
                window(None, "9am", "17:00"),
                window(Some(Weekday::Monday), "25:00", "17:00"),
            ],
            &[ExceptionInput {
                date: "24/12/2026".into(),
                off: true,
                start: "10:00".into(),
                ..ExceptionInput::default()
            }],
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "weekly[0].weekday",
                "weekly[0].start",
                "weekly[1].start",
                "exceptions[0].date",
                "exceptions[0]"
            ]
        );
        assert!(errors[1].1.contains("HH:MM"), "{errors:?}");
    }

    #[test]
    fn the_rules_between_windows_apply_once_each_reads_well() {
        let errors = parse(
            "Mars/Olympus",
            &[
                window(Some(Weekday::Monday), "09:00", "17:00"),
                window(Some(Weekday::Monday), "16:00", "18:00"),
            ],
            &[],
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["time_zone", "weekly[1]"]);
    }
}
