//! Every call passes through here before any handler: a request id, caller authentication and scope, the
//! concurrency limit with load shedding, refusal and cancellation at shutdown, one tracing span, and the
//! call metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Extensions, HeaderMap, HeaderValue, Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;

use super::call_body::{CallBody, CallRecord, cancelled_status, status_code};
use super::status::refusal;
use crate::auth::{Caller, Callers, Scope, certificate_fingerprint, is_public, is_system_rpc};
use crate::domain::validate;
use crate::error::Reason;
use crate::observability::SHED_CALLS;
use crate::telemetry;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the call, from `x-request-id` or generated; in the request's extensions for handlers.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The authenticated calling service, when callers are configured.
#[derive(Debug, Clone)]
pub struct CallerIdentity {
    pub name: String,
    pub scope: Scope,
}

/// How far the server is into shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// New calls are refused; running ones may finish.
    Draining,
    /// The drain timeout passed: running calls are ended now.
    Cancelling,
}

struct Policy {
    callers: Callers,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    phase: watch::Receiver<Phase>,
}

/// Resolves once running calls are to be cancelled; never if the server goes away first.
pub(super) type Cancelled = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Clone)]
pub struct CallLayer {
    policy: Arc<Policy>,
}

impl CallLayer {
    /// `callers` empty means no authentication; at most `max_in_flight` calls run at once, the rest are
    /// shed; `phase` says when to refuse new calls and when to cancel running ones.
    pub fn new(callers: Callers, max_in_flight: usize, phase: watch::Receiver<Phase>) -> Self {
        Self {
            policy: Arc::new(Policy {
                callers,
                in_flight: Arc::new(Semaphore::new(max_in_flight)),
                max_in_flight,
                phase,
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

/// Why a call was not admitted; shed calls are logged quietly (the shed counter has them).
struct Refused {
    status: Status,
    shed: bool,
}

impl From<Status> for Refused {
    fn from(status: Status) -> Self {
        Self {
            status,
            shed: false,
        }
    }
}

impl Policy {
    /// Authenticates and admits a call, or says why not.
    fn admit(
        &self,
        path: &str,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<(Option<CallerIdentity>, Option<OwnedSemaphorePermit>), Refused> {
        if is_public(path) {
            // Health answers while draining, so probes see NOT_SERVING.
            return Ok((None, None));
        }
        if *self.phase.borrow() != Phase::Serving {
            return Err(refusal(
                Reason::ShuttingDown,
                "the server is shutting down; retry on another replica",
            )
            .into());
        }
        let identity = self.identify(path, headers, extensions)?;
        let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!(SHED_CALLS).increment(1);
            Refused {
                status: refusal(
                    Reason::Overloaded,
                    format!(
                        "the server is at its limit of {} concurrent calls; retry with backoff",
                        self.max_in_flight
                    ),
                ),
                shed: true,
            }
        })?;
        Ok((identity, Some(permit)))
    }

    /// The caller by its bearer token or, without one, by its client certificate; then its scope.
    fn identify(
        &self,
        path: &str,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Option<CallerIdentity>, Status> {
        if self.callers.is_empty() {
            return Ok(None);
        }
        let token_missing = || {
            refusal(
                Reason::TokenMissing,
                "send `authorization: Bearer <token>` with the token issued to your service",
            )
        };
        let caller: &Caller = match headers.get(http::header::AUTHORIZATION) {
            Some(value) => {
                let secret = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(token_missing)?;
                self.callers.by_token(secret.trim()).ok_or_else(|| {
                    refusal(
                        Reason::TokenInvalid,
                        "the bearer token is not valid for this service",
                    )
                })?
            }
            None => {
                let certificates = extensions
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|info| info.peer_certs());
                // The first certificate is the client's own; the rest is its chain.
                let Some(leaf) = certificates.as_ref().and_then(|c| c.first()) else {
                    return Err(token_missing());
                };
                self.callers.by_certificate(leaf).ok_or_else(|| {
                    refusal(
                        Reason::CertificateUnknown,
                        format!(
                            "no bearer token, and the client certificate (cert-sha256:{}) is not one \
                             this service's tokens file names; send `authorization: Bearer <token>` or \
                             have the certificate added",
                            certificate_fingerprint(leaf)
                        ),
                    )
                })?
            }
        };
        if caller.scope == Scope::User && is_system_rpc(path) {
            return Err(refusal(
                Reason::SystemScopeRequired,
                format!(
                    "{path} needs a system-scoped caller; {:?} is user-scoped",
                    caller.name
                ),
            ));
        }
        Ok(Some(CallerIdentity {
            name: caller.name.clone(),
            scope: caller.scope,
        }))
    }

    fn cancelled(&self) -> Cancelled {
        let mut phase = self.phase.clone();
        Box::pin(async move {
            if phase.wait_for(|p| *p == Phase::Cancelling).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
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
            otel.name = %path,
            otel.kind = "server",
            method = %path,
            request_id = %id,
            caller = Empty,
            campaign = Empty,
            actor = Empty,
            code = Empty,
            error = Empty,
            trace_id = Empty,
        );
        // Continue the caller's trace (W3C traceparent), and put its id on every log line of the call.
        if let Some(trace_id) = telemetry::continue_trace(&span, request.headers()) {
            span.record("trace_id", trace_id.as_str());
        }
        let started = Instant::now();
        let record_span = span.clone();
        let future = async move {
            let admitted = policy.admit(&path, request.headers(), request.extensions());
            let (mut response, permit, shed, cancelled) = match admitted {
                Err(Refused { status, shed }) => (status.into_http::<Body>(), None, shed, None),
                Ok((identity, permit)) => {
                    if let Some(identity) = identity {
                        tracing::Span::current().record("caller", identity.name.as_str());
                        request.extensions_mut().insert(identity);
                    }
                    request.extensions_mut().insert(RequestId(id.clone()));
                    let mut cancelled = policy.cancelled();
                    let response = tokio::select! {
                        response = inner.call(request) => response?,
                        // Dropping the handler rolls back its transaction.
                        () = &mut cancelled => cancelled_status().into_http::<Body>(),
                    };
                    (response, permit, false, Some(cancelled))
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
                shed,
            };
            Ok(response.map(|body| Body::new(CallBody::new(body, permit, record, cancelled))))
        };
        Box::pin(future.instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn shed_calls_are_marked_and_draining_refuses_all_but_health() {
        let (phase, receiver) = watch::channel(Phase::Serving);
        let policy = Policy {
            callers: Callers::default(),
            in_flight: Arc::new(Semaphore::new(1)),
            max_in_flight: 1,
            phase: receiver,
        };
        let (headers, extensions) = (HeaderMap::new(), Extensions::new());
        let admit = |path: &str| policy.admit(path, &headers, &extensions);
        let call = "/assignment.v1.AssignmentService/GetConversation";
        let _held = admit(call).ok().expect("the one slot");
        let Err(shed) = admit(call) else {
            panic!("a second call is shed")
        };
        assert!(shed.shed);
        assert_eq!(shed.status.code(), Code::ResourceExhausted);

        phase.send_replace(Phase::Draining);
        let Err(refused) = admit(call) else {
            panic!("no new calls while draining")
        };
        assert!(!refused.shed, "refusals at shutdown are not load shedding");
        assert_eq!(refused.status.code(), Code::Unavailable);
        assert!(admit("/grpc.health.v1.Health/Check").is_ok());
    }
}
