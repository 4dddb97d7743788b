//! SetShiftSchedule, GetShiftSchedule, DeleteShiftSchedule: decode, call `service::shifts`, encode.

use jiff::civil::{Time, Weekday};
use tonic::{Request, Response, Status};

use super::context::caller;
use super::convert;
use crate::domain::shifts::{ExceptionInput, ScheduleException, WindowInput};
use crate::pb;
use crate::service::AfterCommit;
use crate::service::shifts::{self, ScheduleView};
use crate::store::Store;

pub(super) async fn set_shift_schedule(
    store: &Store,
    after: &AfterCommit,
    request: Request<pb::SetShiftScheduleRequest>,
) -> Result<Response<pb::SetShiftScheduleResponse>, Status> {
    let caller = caller(&request)?;
    let req = request.into_inner();
    let weekly: Vec<WindowInput> = req.weekly.iter().map(window_input).collect();
    let exceptions: Vec<ExceptionInput> = req.exceptions.iter().map(exception_input).collect();
    let view =
        shifts::set_schedule(store, after, &caller, &req.user_id, &weekly, &exceptions).await?;
    Ok(Response::new(pb::SetShiftScheduleResponse {
        schedule: Some(schedule(view)),
    }))
}

pub(super) async fn get_shift_schedule(
    store: &Store,
    request: Request<pb::GetShiftScheduleRequest>,
) -> Result<Response<pb::GetShiftScheduleResponse>, Status> {
    let caller = caller(&request)?;
    let view = shifts::get_schedule(store, &caller, &request.get_ref().user_id).await?;
    Ok(Response::new(pb::GetShiftScheduleResponse {
        schedule: Some(schedule(view)),
    }))
}

pub(super) async fn delete_shift_schedule(
    store: &Store,
    after: &AfterCommit,
    request: Request<pb::DeleteShiftScheduleRequest>,
) -> Result<Response<pb::DeleteShiftScheduleResponse>, Status> {
    let caller = caller(&request)?;
    let deleted =
        shifts::delete_schedule(store, after, &caller, &request.get_ref().user_id).await?;
    Ok(Response::new(pb::DeleteShiftScheduleResponse { deleted }))
}

fn window_input(window: &pb::ShiftWindow) -> WindowInput {
    WindowInput {
        weekday: weekday_from_pb(window.weekday),
        start: window.start.clone(),
        end: window.end.clone(),
    }
}

fn exception_input(exception: &pb::ShiftException) -> ExceptionInput {
    ExceptionInput {
        date: exception.date.clone(),
        off: exception.off,
        start: exception.start.clone(),
        end: exception.end.clone(),
    }
}

/// `None` for UNSPECIFIED or a number no weekday has.
fn weekday_from_pb(weekday: i32) -> Option<Weekday> {
    match pb::Weekday::try_from(weekday).ok()? {
        pb::Weekday::Unspecified => None,
        known => Weekday::from_monday_one_offset(known as i8).ok(),
    }
}

fn schedule(view: ScheduleView) -> pb::ShiftSchedule {
    let status = view.status();
    let changes_at = view.changes_at().map(convert::timestamp);
    pb::ShiftSchedule {
        on_shift: view.state.is_on(),
        changes_at,
        status,
        weekly: view
            .schedule
            .weekly
            .iter()
            .map(|w| pb::ShiftWindow {
                weekday: i32::from(w.weekday.to_monday_one_offset()),
                start: hm(w.start),
                end: hm(w.end),
            })
            .collect(),
        exceptions: view
            .schedule
            .exceptions
            .iter()
            .map(|e| match *e {
                ScheduleException::Off { date } => pb::ShiftException {
                    date: date.to_string(),
                    off: true,
                    ..pb::ShiftException::default()
                },
                ScheduleException::Works { date, start, end } => pb::ShiftException {
                    date: date.to_string(),
                    off: false,
                    start: hm(start),
                    end: hm(end),
                },
            })
            .collect(),
        time_zone: view.schedule.time_zone,
        user_id: view.user_id,
    }
}

/// "09:00", or "09:00:30" when the seconds matter.
fn hm(t: Time) -> String {
    if t.second() == 0 && t.subsec_nanosecond() == 0 {
        t.strftime("%H:%M").to_string()
    } else {
        t.strftime("%H:%M:%S").to_string()
    }
}
