//! Every call passes through here before any handler: the request's protocol (content type, no repeated
//! identity headers, the body's framing), a request id, caller authentication and scope, the
//! concurrency limit and each caller's fair share of it (`fair_share`) with load shedding, the bound on
//! receiving the request (`request_read`), refusal and cancellation at shutdown, one tracing span, and the
//! call metrics.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Extensions, HeaderMap, HeaderValue, Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;

use super::call_body::{CallBody, CallRecord, cancelled_status, status_code};
use super::fair_share::{Held, Limit, Shares};
use super::framing::{FramedBody, single_message_methods};
use super::protocol;
use super::request_read::BoundedRead;
use super::status::refusal;
use crate::auth::{
    CallerScope, CallingService, CallingServices, certificate_fingerprint, is_public, is_system_rpc,
};
use crate::domain::validate;
use crate::error::{AppError, Reason};
use crate::listener::Peer;
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
    pub scope: CallerScope,
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

/// The limits on what callers may hold: slots in all, per caller and per actor, and time to send a request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Calls running at once, in all.
    pub max_in_flight: usize,
    pub per_caller: usize,
    pub per_actor: usize,
    /// How long a request's body (a stream's first message) may take once its headers are in.
    pub read_timeout: Duration,
}

struct Policy {
    callers: CallingServices,
    in_flight: Arc<Semaphore>,
    limits: Limits,
    shares: Arc<Shares>,
    phase: watch::Receiver<Phase>,
    /// The paths of the RPCs whose request is one message.
    single_message: HashSet<String>,
}

/// What an admitted call holds while it runs: a slot of the server's and its caller's and actor's shares.
pub(super) struct Slot {
    _server: OwnedSemaphorePermit,
    _shares: Held,
}

/// Resolves once running calls are to be cancelled; never if the server goes away first.
pub(super) type Cancelled = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Clone)]
pub struct CallLayer {
    policy: Arc<Policy>,
}

impl CallLayer {
    /// `callers` empty means no authentication; calls beyond `limits` are shed; `phase` says when to refuse
    /// new calls and when to cancel running ones.
    pub fn new(callers: CallingServices, limits: Limits, phase: watch::Receiver<Phase>) -> Self {
        Self {
            policy: Arc::new(Policy {
                callers,
                in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
                shares: Shares::new(limits.per_caller, limits.per_actor),
                limits,
                phase,
                single_message: single_message_methods(&[
                    crate::pb::FILE_DESCRIPTOR_SET,
                    tonic_health::pb::FILE_DESCRIPTOR_SET,
                ]),
            }),
        }
    }

    /// Resolves once no call holds a slot (health and reflection hold none): the drain is over.
    pub fn idle(&self) -> impl Future<Output = ()> + Send + 'static {
        let in_flight = self.policy.in_flight.clone();
        let all = u32::try_from(self.policy.limits.max_in_flight).unwrap_or(u32::MAX);
        async move {
            let _all = in_flight.acquire_many(all).await;
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
    reason: Reason,
    shed: bool,
    /// Not a gRPC request at all: answered with HTTP 415.
    not_grpc: bool,
}

impl Refused {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self::from_status(refusal(reason, message), reason)
    }

    /// A refusal whose status is built already (with its field violations).
    fn from_status(status: Status, reason: Reason) -> Self {
        Self {
            status,
            reason,
            shed: false,
            not_grpc: false,
        }
    }

    fn shed(limit: Limit, status: Status, reason: Reason) -> Self {
        metrics::counter!(SHED_CALLS, "limit" => limit.label()).increment(1);
        Self {
            shed: true,
            ..Self::from_status(status, reason)
        }
    }

    fn to_response(&self) -> Response<Body> {
        let mut response = self.status.clone().into_http::<Body>();
        if self.not_grpc {
            *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        }
        response
    }
}

/// An admitted call: who calls, and the slot it holds (none for health and reflection).
struct Admitted {
    identity: Option<CallerIdentity>,
    slot: Option<Slot>,
}

/// Who calls, for logs and shares: its name when authenticated, else its IP address (not the port: every
/// connection of a host is the same caller).
fn caller_label(identity: Option<&CallerIdentity>, extensions: &Extensions) -> String {
    if let Some(identity) = identity {
        return identity.name.clone();
    }
    match extensions.get::<Peer>().and_then(|peer| peer.addr) {
        Some(addr) => format!("address {}", addr.ip()),
        None => "unknown address".to_owned(),
    }
}

impl Policy {
    /// Authenticates and admits a call, or says why not. The caller, once known, is recorded on `span`.
    fn admit(
        &self,
        path: &str,
        headers: &HeaderMap,
        extensions: &Extensions,
        span: &tracing::Span,
    ) -> Result<Admitted, Refused> {
        protocol::content_type(headers).map_err(|status| Refused {
            not_grpc: true,
            ..Refused::from_status(status, Reason::UnsupportedContentType)
        })?;
        // Before authentication: with two tokens, which one authenticated would be a guess.
        protocol::single_headers(headers)
            .map_err(|status| Refused::from_status(status, Reason::DuplicateHeader))?;
        if is_public(path) {
            // Health answers while draining, so probes see NOT_SERVING.
            return Ok(Admitted {
                identity: None,
                slot: None,
            });
        }
        let identity = self.identify(headers, extensions);
        let caller = caller_label(identity.as_ref().ok().and_then(Option::as_ref), extensions);
        span.record("caller", caller.as_str());
        if *self.phase.borrow() != Phase::Serving {
            return Err(Refused::new(
                Reason::ShuttingDown,
                "the server is shutting down; retry on another replica",
            ));
        }
        let identity = identity?;
        if let Some(identity) = &identity
            && identity.scope == CallerScope::User
            && is_system_rpc(path)
        {
            return Err(Refused::new(
                Reason::SystemScopeRequired,
                format!(
                    "{path} needs a system-scoped caller; {:?} is user-scoped",
                    identity.name
                ),
            ));
        }
        let slot = self.slot(&caller, headers)?;
        Ok(Admitted {
            identity,
            slot: Some(slot),
        })
    }

    /// A slot of the server's, of the caller's share and of its actor's (the narrower shares first, so the
    /// refusal names the share a caller can do something about).
    fn slot(&self, caller: &str, headers: &HeaderMap) -> Result<Slot, Refused> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let actor =
            header("x-actor-id").map(|actor| (header("x-campaign-id").unwrap_or(""), actor));
        let shares = self.shares.take(caller, actor).map_err(|full| {
            let status = AppError::new(Reason::FairShareExhausted, full.to_string())
                .with("share", full.limit.label())
                .with("limit", full.size.to_string());
            Refused::shed(full.limit, status.into(), Reason::FairShareExhausted)
        })?;
        let server = self.in_flight.clone().try_acquire_owned().map_err(|_| {
            let status = refusal(
                Reason::Overloaded,
                format!(
                    "the server is at its limit of {} concurrent calls (--max-concurrent-calls); retry \
                     with backoff",
                    self.limits.max_in_flight
                ),
            );
            Refused::shed(Limit::Server, status, Reason::Overloaded)
        })?;
        Ok(Slot {
            _server: server,
            _shares: shares,
        })
    }

    /// The caller by its bearer token or, without one, by its client certificate.
    fn identify(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Option<CallerIdentity>, Refused> {
        if self.callers.is_empty() {
            return Ok(None);
        }
        let token_missing = || {
            Refused::new(
                Reason::TokenMissing,
                "send `authorization: Bearer <token>` with the token issued to your service",
            )
        };
        let caller: &CallingService = match headers.get(http::header::AUTHORIZATION) {
            Some(value) => {
                let secret = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(token_missing)?;
                self.callers.by_token(secret.trim()).ok_or_else(|| {
                    Refused::new(
                        Reason::TokenInvalid,
                        "the bearer token is not valid for this service",
                    )
                })?
            }
            None => {
                let certificates = extensions
                    .get::<Peer>()
                    .and_then(|peer| peer.certificates.as_ref());
                // The first certificate is the client's own; the rest is its chain.
                let Some(leaf) = certificates.and_then(|c| c.first()) else {
                    return Err(token_missing());
                };
                self.callers.by_certificate(leaf).ok_or_else(|| {
                    Refused::new(
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
            let admitted = policy.admit(
                &path,
                request.headers(),
                request.extensions(),
                &tracing::Span::current(),
            );
            let (mut response, slot, refused, cancelled) = match admitted {
                Err(refused) => (refused.to_response(), None, Some(refused), None),
                Ok(Admitted { identity, slot }) => {
                    if let Some(identity) = identity {
                        request.extensions_mut().insert(identity);
                    }
                    request.extensions_mut().insert(RequestId(id.clone()));
                    let timeout = policy.limits.read_timeout;
                    let single = policy.single_message.contains(&path);
                    let request = request.map(|body| {
                        BoundedRead::wrap(&path, Body::new(FramedBody::new(body, single)), timeout)
                    });
                    let mut cancelled = policy.cancelled();
                    let response = tokio::select! {
                        response = inner.call(request) => response?,
                        // Dropping the handler rolls back its transaction.
                        () = &mut cancelled => cancelled_status().into_http::<Body>(),
                    };
                    (response, slot, None, Some(cancelled))
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
                shed: refused.as_ref().is_some_and(|r| r.shed),
                reason: refused.map(|r| r.reason),
            };
            Ok(response.map(|body| Body::new(CallBody::new(body, slot, record, cancelled))))
        };
        Box::pin(future.instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn policy(limits: Limits, phase: watch::Receiver<Phase>) -> Policy {
        Policy {
            callers: CallingServices::default(),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            shares: Shares::new(limits.per_caller, limits.per_actor),
            limits,
            phase,
            single_message: HashSet::new(),
        }
    }

    fn limits(max_in_flight: usize, per_caller: usize, per_actor: usize) -> Limits {
        Limits {
            max_in_flight,
            per_caller,
            per_actor,
            read_timeout: Duration::from_secs(5),
        }
    }

    const CALL: &str = "/assignment.v1.AssignmentService/GetConversation";

    #[test]
    fn shed_calls_are_marked_and_draining_refuses_all_but_health() {
        let (phase, receiver) = watch::channel(Phase::Serving);
        let policy = policy(limits(1, 1, 1), receiver);
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        let extensions = Extensions::new();
        let admit = |path: &str| policy.admit(path, &headers, &extensions, &tracing::Span::none());
        let _held = admit(CALL).ok().expect("the one slot");
        let Err(shed) = admit(CALL) else {
            panic!("a second call is shed")
        };
        assert!(shed.shed);
        assert_eq!(shed.status.code(), Code::ResourceExhausted);

        phase.send_replace(Phase::Draining);
        let Err(refused) = admit(CALL) else {
            panic!("no new calls while draining")
        };
        assert!(!refused.shed, "refusals at shutdown are not load shedding");
        assert_eq!(refused.status.code(), Code::Unavailable);
        assert_eq!(refused.reason, Reason::ShuttingDown);
        assert!(admit("/grpc.health.v1.Health/Check").is_ok());
    }

    #[test]
    fn a_full_share_is_refused_before_the_server_is_full() {
        let (_phase, receiver) = watch::channel(Phase::Serving);
        let policy = policy(limits(10, 3, 2), receiver);
        let extensions = Extensions::new();
        let as_actor = |actor: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static("application/grpc"));
            headers.insert("x-campaign-id", HeaderValue::from_static("camp"));
            headers.insert("x-actor-id", HeaderValue::from_str(actor).unwrap());
            headers
        };
        let admit =
            |headers: &HeaderMap| policy.admit(CALL, headers, &extensions, &tracing::Span::none());
        let _held: Vec<_> = (0..2)
            .map(|_| admit(&as_actor("u1")).ok().expect("within the share"))
            .collect();
        let Err(refused) = admit(&as_actor("u1")) else {
            panic!("the actor's share is full")
        };
        assert_eq!(refused.reason, Reason::FairShareExhausted);
        assert!(
            refused.status.message().contains("share of 2"),
            "{}",
            refused.status.message()
        );
        let _third = admit(&as_actor("u2")).ok().expect("another actor");
        let Err(refused) = admit(&as_actor("u3")) else {
            panic!("the caller's share is full")
        };
        assert!(
            refused.status.message().contains("share of 3"),
            "{}",
            refused.status.message()
        );
        assert_eq!(
            policy.in_flight.available_permits(),
            7,
            "refusals hold no slot"
        );
    }
}
