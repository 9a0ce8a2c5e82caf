//! `tonic-bare` and `tonic-opskit`: one unary gRPC call
//! (`/bench.v1.Users/GetUser`) through a tonic service on tonic's router,
//! bare and behind opskit's full layer; each call's response body is read
//! to its trailers (where opskit records the call).

use http_body_util::BodyExt;
use opskit::layer::OpsLayer;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The request message: a user id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetUser {
    #[prost(string, tag = "1")]
    pub id: String,
}

/// The reply: the user's name.
#[derive(Clone, PartialEq, prost::Message)]
pub struct User {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// The handler, as tonic's `UnaryService` (a tower service).
#[derive(Clone)]
struct Handler;

impl tower::Service<tonic::Request<GetUser>> for Handler {
    type Response = tonic::Response<User>;
    type Error = tonic::Status;
    type Future = std::future::Ready<Result<tonic::Response<User>, tonic::Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<GetUser>) -> Self::Future {
        let name = format!("user {}", req.into_inner().id);
        std::future::ready(Ok(tonic::Response::new(User { name })))
    }
}

/// The service as tonic's code generator would write it (one method).
#[derive(Clone)]
struct Users;

impl tonic::server::NamedService for Users {
    const NAME: &'static str = "bench.v1.Users";
}

type BoxFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl<B> tower::Service<http::Request<B>> for Users
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> BoxFuture {
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(tonic_prost::ProstCodec::<User, GetUser>::default());
            Ok(grpc.unary(Handler, req).await)
        })
    }
}

/// tonic's router with the service, behind `layer` when given.
pub fn router(layer: Option<OpsLayer>) -> axum::Router {
    let app = tonic::service::Routes::new(Users).into_axum_router();
    match layer {
        Some(layer) => app.layer(layer),
        None => app,
    }
}

/// A unary call as grpcio sends it: the message length-prefixed, the
/// gRPC headers, a traceparent and a client address.
pub fn request() -> http::Request<axum::body::Body> {
    use prost::Message;
    let message = GetUser { id: "7".into() }.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    body.extend_from_slice(&message);
    http::Request::post("/bench.v1.Users/GetUser")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(
            "user-agent",
            "grpc-python/1.85.3 grpc-c/58.0.0 (linux; chttp2)",
        )
        .header("x-forwarded-for", "203.0.113.7")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(axum::body::Body::from(body))
        .expect("a valid request")
}

/// Makes one call and reads its body to the trailers: whether it was OK.
pub async fn call(app: axum::Router) -> bool {
    use tower::ServiceExt;
    let res = app.oneshot(request()).await.expect("response");
    let body = res.into_body().collect().await.expect("body");
    body.trailers()
        .and_then(|t| t.get("grpc-status"))
        .is_some_and(|s| s == "0")
}
