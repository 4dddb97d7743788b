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

use crate::auth::{Scope, Tokens, is_public, is_system_rpc};
use crate::domain::validate;
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
                    Status::unauthenticated("send `authorization: Bearer <token>` with the token issued to your service")
                })?;
            let token = self.tokens.authenticate(secret.trim()).ok_or_else(|| {
                Status::unauthenticated("the bearer token is not valid for this service")
            })?;
            if token.scope == Scope::User && is_system_rpc(path) {
                return Err(Status::permission_denied(format!(
                    "{path} needs a system-scoped token; {:?} holds a user-scoped one",
                    token.name
                )));
            }
            Some(CallerIdentity {
                name: token.name.clone(),
                scope: token.scope,
            })
        };
        let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!(SHED_CALLS).increment(1);
            Status::resource_exhausted(format!(
                "the server is at its limit of {} concurrent calls; retry with backoff",
                self.max_in_flight
            ))
        })?;
        Ok((identity, Some(permit)))
    }
}

/// A response body that keeps its call's concurrency slot until it is finished or dropped.
struct HoldsSlot {
    body: Body,
    _slot: Option<OwnedSemaphorePermit>,
}

impl http_body::Body for HoldsSlot {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
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

/// The status of a finished unary call, or the opening status of a stream: tonic puts an error's
/// `grpc-status` in the headers ("trailers only"); success is reported in trailers.
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
        let future = async move {
            let mut response = match policy.admit(&path, request.headers()) {
                Err(status) => status.into_http::<Body>(),
                Ok((identity, permit)) => {
                    if let Some(identity) = identity {
                        tracing::Span::current().record("caller", identity.name.as_str());
                        request.extensions_mut().insert(identity);
                    }
                    request.extensions_mut().insert(RequestId(id.clone()));
                    let response = inner.call(request).await?;
                    // The slot is held until the response body ends, so streams count for as long as they run.
                    response.map(|body| {
                        Body::new(HoldsSlot {
                            body,
                            _slot: permit,
                        })
                    })
                }
            };
            if let Ok(value) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            let code = status_code(response.headers());
            let elapsed = started.elapsed();
            let (service, method) = path
                .trim_start_matches('/')
                .split_once('/')
                .unwrap_or(("", &path));
            let labels = [
                ("service", service.to_owned()),
                ("method", method.to_owned()),
                ("code", format!("{code:?}")),
            ];
            metrics::counter!(CALLS, &labels).increment(1);
            metrics::histogram!(CALL_SECONDS, &labels).record(elapsed.as_secs_f64());
            if code == Code::Ok {
                tracing::debug!(code = ?code, elapsed_ms = elapsed.as_secs_f64() * 1e3, "call finished");
            } else {
                tracing::info!(code = ?code, elapsed_ms = elapsed.as_secs_f64() * 1e3, "call failed");
            }
            Ok(response)
        };
        Box::pin(future.instrument(span))
    }
}
