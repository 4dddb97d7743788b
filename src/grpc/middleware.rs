//! Every call passes through here before any handler: a request id, caller authentication and scope, the
//! concurrency limit with load shedding, one tracing span, and the call metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;

use super::status::refusal;
use crate::auth::{Scope, Tokens, is_public, is_system_rpc};
use crate::domain::validate;
use crate::error::Reason;
use crate::observability::{CALL_SECONDS, CALLS, SHED_CALLS};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the call, from `x-request-id` or generated; in the request's extensions for handlers.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The authenticated calling service, when tokens are configured.
#[derive(Debug, Clone)]
pub struct CallerIdentity {
    pub name: String,
    pub scope: Scope,
}

struct Policy {
    tokens: Tokens,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
}

#[derive(Clone)]
pub struct CallLayer {
    policy: Arc<Policy>,
}

impl CallLayer {
    /// `tokens` empty means no authentication; at most `max_in_flight` calls run at once, the rest are shed.
    pub fn new(tokens: Tokens, max_in_flight: usize) -> Self {
        Self {
            policy: Arc::new(Policy {
                tokens,
                in_flight: Arc::new(Semaphore::new(max_in_flight)),
                max_in_flight,
            }),
        }
    }
}

impl<S> Layer<S> for CallLayer {
    type Service = CallService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CallService<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl Policy {
    /// Authenticates and admits a call, or says why not.
    fn admit(
        &self,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<(Option<CallerIdentity>, Option<OwnedSemaphorePermit>), Status> {
        if is_public(path) {
            return Ok((None, None));
        }
        let identity = if self.tokens.is_empty() {
            None
        } else {
            let secret = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    refusal(
                        Reason::TokenMissing,
                        "send `authorization: Bearer <token>` with the token issued to your service",
                    )
                })?;
            let token = self.tokens.authenticate(secret.trim()).ok_or_else(|| {
                refusal(
                    Reason::TokenInvalid,
                    "the bearer token is not valid for this service",
                )
            })?;
            if token.scope == Scope::User && is_system_rpc(path) {
                return Err(refusal(
                    Reason::SystemScopeRequired,
                    format!(
                        "{path} needs a system-scoped token; {:?} holds a user-scoped one",
                        token.name
                    ),
                ));
            }
            Some(CallerIdentity {
                name: token.name.clone(),
                scope: token.scope,
            })
        };
        let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!(SHED_CALLS).increment(1);
            refusal(
                Reason::Overloaded,
                format!(
                    "the server is at its limit of {} concurrent calls; retry with backoff",
                    self.max_in_flight
                ),
            )
        })?;
        Ok((identity, Some(permit)))
    }
}

/// A call's response body. It holds the call's concurrency slot until it ends, so streams count for as
/// long as they run, and it records the call's metrics and log line once the final status is known: in the
/// headers ("trailers only", how errors end), in the trailers (how successes and late stream errors end),
/// or CANCELLED when the body is dropped unfinished (the client went away).
struct CallBody {
    body: Body,
    _slot: Option<OwnedSemaphorePermit>,
    finish: Option<CallRecord>,
}

/// What is recorded when a call ends.
struct CallRecord {
    path: String,
    started: Instant,
    code: Option<Code>,
    span: tracing::Span,
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
        metrics::counter!(CALLS, &labels).increment(1);
        metrics::histogram!(CALL_SECONDS, &labels).record(elapsed.as_secs_f64());
        let _entered = self.span.enter();
        let elapsed_ms = elapsed.as_secs_f64() * 1e3;
        if code == Code::Ok {
            tracing::debug!(code = ?code, elapsed_ms, "call finished");
        } else {
            tracing::info!(code = ?code, elapsed_ms, "call failed");
        }
    }
}

impl http_body::Body for CallBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
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
        self.body.is_end_stream()
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

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| validate::id(REQUEST_ID_HEADER, v).is_ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The `grpc-status` in a header or trailer map (OK when absent).
fn status_code(headers: &HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
        .unwrap_or(Code::Ok)
}

impl<S> Service<Request<Body>> for CallService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The ready service goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let policy = self.policy.clone();
        let path = request.uri().path().to_owned();
        let id = request_id(request.headers());
        let span = tracing::info_span!(
            "grpc",
            method = %path,
            request_id = %id,
            caller = Empty,
            campaign = Empty,
            actor = Empty,
        );
        let started = Instant::now();
        let record_span = span.clone();
        let future = async move {
            let (mut response, permit) = match policy.admit(&path, request.headers()) {
                Err(status) => (status.into_http::<Body>(), None),
                Ok((identity, permit)) => {
                    if let Some(identity) = identity {
                        tracing::Span::current().record("caller", identity.name.as_str());
                        request.extensions_mut().insert(identity);
                    }
                    request.extensions_mut().insert(RequestId(id.clone()));
                    (inner.call(request).await?, permit)
                }
            };
            if let Ok(value) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            // An error answered in the headers is final; otherwise the body's trailers will tell.
            let code = response
                .headers()
                .get("grpc-status")
                .map(|_| status_code(response.headers()));
            let record = CallRecord {
                path,
                started,
                code,
                span: record_span,
            };
            Ok(response.map(|body| {
                Body::new(CallBody {
                    body,
                    _slot: permit,
                    finish: Some(record),
                })
            }))
        };
        Box::pin(future.instrument(span))
    }
}
