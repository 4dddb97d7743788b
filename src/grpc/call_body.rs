//! A call's response body as the middleware hands it back: it holds the call's concurrency slot, records
//! the call's metrics and log line when its status is known, and cuts the call short at shutdown.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use tonic::body::Body;
use tonic::{Code, Status};

use super::middleware::{Cancelled, Slot};
use super::status::refusal;
use crate::error::Reason;
use crate::observability::{CALL_SECONDS, CALLS};

pub(super) fn cancelled_status() -> Status {
    refusal(
        Reason::ShuttingDown,
        "the server is shutting down and this call was still running when its drain ended; retry on \
         another replica",
    )
}

/// A call's response body. It holds the call's concurrency slot until it ends, so streams count for as
/// long as they run, and it records the call's metrics and log line once the final status is known: in the
/// headers ("trailers only", how errors end), in the trailers (how successes and late stream errors end),
/// or CANCELLED when the body is dropped unfinished (the client went away). Once the drain timeout passes
/// at shutdown, it ends the call with UNAVAILABLE (SHUTTING_DOWN) instead of waiting for it.
pub(super) struct CallBody {
    body: Body,
    _slot: Option<Slot>,
    finish: Option<CallRecord>,
    cancelled: Option<Cancelled>,
    /// Cut short at shutdown: its trailers went out, so it ends.
    cut: bool,
}

/// What is recorded when a call ends.
pub(super) struct CallRecord {
    pub(super) path: String,
    pub(super) started: Instant,
    pub(super) code: Option<Code>,
    pub(super) span: tracing::Span,
    /// Shed for load: only counted, so an overload does not flood the log.
    pub(super) shed: bool,
    /// Why the middleware refused the call, if it did.
    pub(super) reason: Option<Reason>,
}

impl CallRecord {
    fn record(self, code: Code) {
        let elapsed = self.started.elapsed();
        let (service, method) = self
            .path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", &self.path));
        let labels = [
            ("service", service.to_owned()),
            ("method", method.to_owned()),
            ("code", format!("{code:?}")),
        ];
        self.span.record("code", format!("{code:?}").as_str());
        metrics::counter!(CALLS, &labels).increment(1);
        metrics::histogram!(CALL_SECONDS, &labels).record(elapsed.as_secs_f64());
        let _entered = self.span.enter();
        let elapsed_ms = elapsed.as_secs_f64() * 1e3;
        // The span names the caller; a refusal names its reason.
        let reason = self.reason.map(Reason::as_str);
        if code == Code::Ok {
            tracing::debug!(code = ?code, elapsed_ms, "call finished");
        } else if self.shed {
            tracing::debug!(code = ?code, reason, elapsed_ms, "call shed");
        } else if matches!(code, Code::Internal | Code::Unknown | Code::DataLoss) {
            tracing::error!(code = ?code, reason, elapsed_ms, "call failed");
        } else {
            tracing::info!(code = ?code, reason, elapsed_ms, "call failed");
        }
    }
}

impl CallBody {
    pub(super) fn new(
        body: Body,
        slot: Option<Slot>,
        record: CallRecord,
        cancelled: Option<Cancelled>,
    ) -> Self {
        Self {
            body,
            _slot: slot,
            finish: Some(record),
            cancelled,
            cut: false,
        }
    }

    /// The trailers that end the call now, if shutdown cancels it before its own status is known.
    fn cut_short(&mut self, cx: &mut Context<'_>) -> Option<HeaderMap> {
        let unfinished = self.finish.as_ref().is_some_and(|r| r.code.is_none());
        let cancelled = self.cancelled.as_mut()?;
        if !unfinished || cancelled.as_mut().poll(cx).is_pending() {
            return None;
        }
        self.cancelled = None;
        let status = cancelled_status();
        let mut trailers = HeaderMap::new();
        status.add_header(&mut trailers).ok()?;
        if let Some(record) = self.finish.as_mut() {
            record.code = Some(status.code());
        }
        self.cut = true;
        Some(trailers)
    }
}

impl http_body::Body for CallBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if self.cut {
            if let Some(record) = self.finish.take() {
                let code = record.code.unwrap_or(Code::Unavailable);
                record.record(code);
            }
            return Poll::Ready(None);
        }
        if let Some(trailers) = self.cut_short(cx) {
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        // Inside the call's span: an error a stream meets later is recorded on its one log line.
        let span = self.finish.as_ref().map(|record| record.span.clone());
        let _entered = span.as_ref().map(tracing::Span::enter);
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(frame) = &polled {
            let code = match frame {
                Some(Ok(frame)) => frame.trailers_ref().map(status_code),
                Some(Err(status)) => Some(status.code()),
                None => Some(Code::Ok),
            };
            if let (Some(code), Some(record)) = (code, self.finish.as_mut()) {
                // The first status seen wins: trailers come before the end of the body.
                record.code.get_or_insert(code);
            }
            if frame.is_none()
                && let Some(record) = self.finish.take()
            {
                let code = record.code.unwrap_or(Code::Ok);
                record.record(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.cut || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for CallBody {
    fn drop(&mut self) {
        if let Some(record) = self.finish.take() {
            // Dropped before its end: the status seen so far, or the client cancelled.
            let code = record.code.unwrap_or(Code::Cancelled);
            record.record(code);
        }
    }
}

/// The `grpc-status` in a header or trailer map (OK when absent).
pub(super) fn status_code(headers: &HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
        .unwrap_or(Code::Ok)
}
