//! Server reflection (v1 and v1alpha) that answers a symbol or file it does not know within the stream, with
//! an `ErrorResponse` (NOT_FOUND), and goes on answering, as grpc-go does. tonic-reflection's service ends
//! the whole stream on the first such request and cannot be configured otherwise, so each request is
//! passed to it alone, in-process, and a refusal becomes that request's answer.

use std::convert::Infallible;

use http::{Request, Response};
use tonic::body::Body;
use tower::Service;

/// What tonic-reflection's built server is to the adapter: a service to call in-process.
pub trait Inner:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Inner for S where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The adapter for one version of the reflection protocol.
macro_rules! in_stream_errors {
    ($version:ident) => {
        pub mod $version {
            use tokio::sync::mpsc;
            use tokio_stream::wrappers::ReceiverStream;
            use tonic::{Request, Response, Status, Streaming};
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::server_reflection_server::{
                ServerReflection, ServerReflectionServer,
            };
            use tonic_reflection::pb::$version::{
                ErrorResponse, ServerReflectionRequest, ServerReflectionResponse,
            };

            use super::Inner;

            /// Serves `inner` (tonic-reflection's server of this version), answering its refusals
            /// in-stream.
            pub fn serve<S: Inner>(inner: S) -> ServerReflectionServer<Adapter<S>> {
                ServerReflectionServer::new(Adapter {
                    client: ServerReflectionClient::new(inner),
                })
            }

            pub struct Adapter<S> {
                client: ServerReflectionClient<S>,
            }

            #[tonic::async_trait]
            impl<S: Inner> ServerReflection for Adapter<S> {
                type ServerReflectionInfoStream =
                    ReceiverStream<Result<ServerReflectionResponse, Status>>;

                async fn server_reflection_info(
                    &self,
                    request: Request<Streaming<ServerReflectionRequest>>,
                ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
                    let mut requests = request.into_inner();
                    let client = self.client.clone();
                    let (tx, rx) = mpsc::channel(1);
                    tokio::spawn(async move {
                        loop {
                            let answer = match requests.message().await {
                                Ok(Some(request)) => Ok(answer(client.clone(), request).await),
                                Ok(None) => return,
                                // A request that does not decode ends the stream, as it would anywhere.
                                Err(status) => Err(status),
                            };
                            let failed = answer.is_err();
                            if tx.send(answer).await.is_err() || failed {
                                return;
                            }
                        }
                    });
                    Ok(Response::new(ReceiverStream::new(rx)))
                }
            }

            /// tonic-reflection's answer to `request` alone, or its refusal as an `ErrorResponse`.
            async fn answer<S: Inner>(
                mut client: ServerReflectionClient<S>,
                request: ServerReflectionRequest,
            ) -> ServerReflectionResponse {
                let once = tokio_stream::once(request.clone());
                let reply = match client.server_reflection_info(once).await {
                    Ok(replies) => replies.into_inner().message().await,
                    Err(status) => Err(status),
                };
                let status = match reply {
                    Ok(Some(reply)) => return reply,
                    Ok(None) => Status::internal("reflection gave no answer"),
                    Err(status) => status,
                };
                ServerReflectionResponse {
                    valid_host: request.host.clone(),
                    original_request: Some(request),
                    message_response: Some(MessageResponse::ErrorResponse(ErrorResponse {
                        error_code: status.code() as i32,
                        error_message: status.message().to_owned(),
                    })),
                }
            }
        }
    };
}

in_stream_errors!(v1);
in_stream_errors!(v1alpha);
