//! A tiny in-process gRPC server for unit tests that answers the `Control`
//! calls the CLI's failover uses (`Apply`, `Get`, `ClusterStatus`): it
//! stores job names, can answer UNAVAILABLE a number of times first, and
//! reports a fixed `ClusterStatus`. It routes by path rather than
//! implementing the generated `Control` trait, so new RPCs in the proto do
//! not break it; other methods answer UNIMPLEMENTED.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use gpuctl_proto::v1::{
    ApplyRequest, ApplyResponse, ClusterStatusRequest, ClusterStatusResponse, GetRequest,
    GetResponse,
};
use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

#[derive(Default)]
pub struct Fake {
    /// Answer this many calls with UNAVAILABLE before serving.
    pub unavailable_first: AtomicU32,
    /// When set, an apply that is answered UNAVAILABLE still stores the job
    /// (a write committed whose reply was lost).
    pub commit_then_fail: bool,
    pub calls: AtomicU32,
    pub jobs: Mutex<BTreeSet<String>>,
    pub status: Mutex<ClusterStatusResponse>,
}

impl Fake {
    fn gate(&self) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let left = self.unavailable_first.load(Ordering::SeqCst);
        if left > 0 {
            self.unavailable_first.store(left - 1, Ordering::SeqCst);
            return Err(Status::unavailable("no leader yet; retry"));
        }
        Ok(())
    }

    fn apply(&self, req: ApplyRequest) -> Result<ApplyResponse, Status> {
        let v: serde_json::Value = serde_json::from_str(&req.object_json).unwrap();
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Err(s) = self.gate() {
            if self.commit_then_fail {
                self.jobs.lock().unwrap().insert(name);
            }
            return Err(s);
        }
        if !self.jobs.lock().unwrap().insert(name.clone()) {
            return Err(Status::already_exists(format!(
                "job {name:?} already exists"
            )));
        }
        Ok(ApplyResponse {
            object_json: String::new(),
        })
    }

    fn get(&self, req: GetRequest) -> Result<GetResponse, Status> {
        self.gate()?;
        if !req.name.is_empty() {
            return Err(Status::not_found("no such job"));
        }
        Ok(GetResponse {
            objects_json: vec![],
            ..Default::default()
        })
    }

    fn cluster_status(&self, _: ClusterStatusRequest) -> Result<ClusterStatusResponse, Status> {
        self.gate()?;
        Ok(self.status.lock().unwrap().clone())
    }
}

type Handler<Q, R> = fn(&Fake, Q) -> Result<R, Status>;

struct Unary<Q, R>(Arc<Fake>, Handler<Q, R>);

impl<Q: Send + 'static, R: Send + 'static> UnaryService<Q> for Unary<Q, R> {
    type Response = R;
    type Future = BoxFuture<Response<R>, Status>;
    fn call(&mut self, req: Request<Q>) -> Self::Future {
        let r = (self.1)(&self.0, req.into_inner()).map(Response::new);
        Box::pin(async move { r })
    }
}

#[derive(Clone)]
struct Router(Arc<Fake>);

impl NamedService for Router {
    const NAME: &'static str = "gpuctl.v1.Control";
}

fn unary<Q, R, B>(
    fake: Arc<Fake>,
    h: Handler<Q, R>,
    req: http::Request<B>,
) -> BoxFuture<http::Response<tonic::body::Body>, Infallible>
where
    Q: prost::Message + Default + Send + 'static,
    R: prost::Message + Send + 'static,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    Box::pin(async move {
        let mut grpc = Grpc::new(tonic_prost::ProstCodec::<R, Q>::default());
        Ok(grpc.unary(Unary(fake, h), req).await)
    })
}

impl<B> Service<http::Request<B>> for Router
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fake = self.0.clone();
        match req.uri().path() {
            "/gpuctl.v1.Control/Apply" => unary(fake, Fake::apply, req),
            "/gpuctl.v1.Control/Get" => unary(fake, Fake::get, req),
            "/gpuctl.v1.Control/ClusterStatus" => unary(fake, Fake::cluster_status, req),
            _ => {
                Box::pin(
                    async move { Ok(Status::unimplemented("not in the test server").into_http()) },
                )
            }
        }
    }
}

/// Serve `fake` on a fresh loopback port; returns its URL. The server runs
/// until the test's runtime ends.
pub async fn serve(fake: Arc<Fake>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Router(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    url
}

/// A loopback URL where nothing listens.
pub fn closed_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}
