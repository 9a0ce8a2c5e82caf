//! `users.v1.Users` (proto/users/v1/users.proto), written by hand: prost
//! derives for the messages and a small tower service dispatching on the
//! method path with tonic's server helpers, which is what tonic's code
//! generator would emit. Hand-written so that the build needs no protoc
//! (not on CI's machines) and no proto compiler crate (build time): keep it
//! in step with the .proto file.

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// `users.v1.Empty`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Empty {}

/// `users.v1.GetUserRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct GetUserRequest {
    /// The user's id.
    #[prost(string, tag = "1")]
    pub(crate) id: String,
}

/// `users.v1.User`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct User {
    /// The user's id.
    #[prost(string, tag = "1")]
    pub(crate) id: String,
    /// The user's name.
    #[prost(string, tag = "2")]
    pub(crate) name: String,
}

/// `users.v1.SleepRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SleepRequest {
    /// How long to sleep.
    #[prost(uint64, tag = "1")]
    pub(crate) millis: u64,
}

/// `users.v1.ListUsersRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ListUsersRequest {
    /// How many users to stream.
    #[prost(uint32, tag = "1")]
    pub(crate) count: u32,
    /// The pause before each one.
    #[prost(uint64, tag = "2")]
    pub(crate) interval_millis: u64,
}

/// The service's handlers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Users {
    /// Longest `Sleep` honoured (`APP_SLOW_MAX_MS`).
    pub(crate) slow_max: Duration,
}

impl Users {
    async fn get_user(&self, req: GetUserRequest) -> Result<User, Status> {
        let name = match req.id.as_str() {
            "7" => "Ada",
            "42" => "Grace",
            _ => return Err(Status::not_found(format!("no user {}", req.id))),
        };
        Ok(User {
            id: req.id,
            name: name.to_owned(),
        })
    }

    async fn fail(&self) -> Result<Empty, Status> {
        tracing::error!("the users database is unreachable");
        Err(Status::internal("the users database is unreachable"))
    }

    async fn panic(&self) -> Result<Empty, Status> {
        panic!("users.v1.Users/Panic was called");
    }

    async fn sleep(&self, req: SleepRequest) -> Result<Empty, Status> {
        tokio::time::sleep(Duration::from_millis(req.millis).min(self.slow_max)).await;
        Ok(Empty {})
    }

    fn list_users(&self, req: ListUsersRequest) -> BoxStream<'static, Result<User, Status>> {
        let interval = Duration::from_millis(req.interval_millis).min(self.slow_max);
        futures_util::stream::iter(0..req.count)
            .then(move |n| async move {
                tokio::time::sleep(interval).await;
                Ok(User {
                    id: n.to_string(),
                    name: format!("user {n}"),
                })
            })
            .boxed()
    }
}

/// The tower service of `users.v1.Users`: routes a call to its handler by
/// path; an unknown method is UNIMPLEMENTED (Trailers-Only).
#[derive(Debug, Clone)]
pub(crate) struct UsersServer {
    users: Arc<Users>,
}

impl UsersServer {
    /// The service around these handlers.
    pub(crate) fn new(users: Users) -> Self {
        Self {
            users: Arc::new(users),
        }
    }
}

impl tonic::server::NamedService for UsersServer {
    const NAME: &'static str = "users.v1.Users";
}

type Codec<Out, In> = tonic_prost::ProstCodec<Out, In>;
type BoxFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

/// A handler's boxed answer.
type Answer<Out> = Pin<Box<dyn Future<Output = Result<Response<Out>, Status>> + Send>>;

/// A unary handler as tonic's `UnaryService`.
fn unary<In, Out, F, Fut>(
    users: Arc<Users>,
    f: F,
) -> impl tower_service::Service<
    Request<In>,
    Response = Response<Out>,
    Error = Status,
    Future = Answer<Out>,
>
where
    F: Fn(Arc<Users>, In) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Out, Status>> + Send + 'static,
    In: Send + 'static,
{
    Handler(move |req: Request<In>| {
        let (users, f) = (users.clone(), f.clone());
        Box::pin(async move { f(users, req.into_inner()).await.map(Response::new) }) as Answer<Out>
    })
}

/// A closure as a tower service (tonic's `UnaryService` and
/// `ServerStreamingService` are implemented for tower services).
#[derive(Clone)]
struct Handler<F>(F);

impl<F, R, Fut, T> tower_service::Service<R> for Handler<F>
where
    F: FnMut(R) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    type Response = T;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Fut {
        (self.0)(req)
    }
}

impl<B> tower_service::Service<http::Request<B>> for UsersServer
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
        let users = self.users.clone();
        match req.uri().path() {
            "/users.v1.Users/GetUser" => Box::pin(async move {
                let svc = unary(users, |u: Arc<Users>, r: GetUserRequest| async move {
                    u.get_user(r).await
                });
                let mut grpc = tonic::server::Grpc::new(Codec::<User, GetUserRequest>::default());
                Ok(grpc.unary(svc, req).await)
            }),
            "/users.v1.Users/Fail" => Box::pin(async move {
                let svc = unary(
                    users,
                    |u: Arc<Users>, _: Empty| async move { u.fail().await },
                );
                let mut grpc = tonic::server::Grpc::new(Codec::<Empty, Empty>::default());
                Ok(grpc.unary(svc, req).await)
            }),
            "/users.v1.Users/Panic" => Box::pin(async move {
                let svc = unary(
                    users,
                    |u: Arc<Users>, _: Empty| async move { u.panic().await },
                );
                let mut grpc = tonic::server::Grpc::new(Codec::<Empty, Empty>::default());
                Ok(grpc.unary(svc, req).await)
            }),
            "/users.v1.Users/Sleep" => Box::pin(async move {
                let svc = unary(users, |u: Arc<Users>, r: SleepRequest| async move {
                    u.sleep(r).await
                });
                let mut grpc = tonic::server::Grpc::new(Codec::<Empty, SleepRequest>::default());
                Ok(grpc.unary(svc, req).await)
            }),
            "/users.v1.Users/ListUsers" => Box::pin(async move {
                let svc = Handler(move |r: Request<ListUsersRequest>| {
                    let stream = users.list_users(r.into_inner());
                    std::future::ready(Ok::<_, Status>(Response::new(stream)))
                });
                let mut grpc = tonic::server::Grpc::new(Codec::<User, ListUsersRequest>::default());
                Ok(grpc.server_streaming(svc, req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}
