//! The Raft peer transport against stand-in peers on 127.0.0.1:0: messages
//! arrive in order over one `StepStream` stream, a peer without that call
//! (an older build) gets them through unary `Step` calls, and a peer that
//! cannot be reached is reported unreachable.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::raft_server::{Raft, RaftServer};
use gpuctl_scheduler::raft::Transport;
use protobuf::Message as _;
use raft::prelude::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Bound on every wait below.
const LIMIT: Duration = Duration::from_secs(20);

/// A peer that records the index of every message it is sent, and how.
#[derive(Clone, Default)]
struct Recorder {
    /// Answer `StepStream` with UNIMPLEMENTED, as an older build does.
    old: bool,
    streamed: Arc<Mutex<Vec<u64>>>,
    unary: Arc<Mutex<Vec<u64>>>,
    streams: Arc<AtomicUsize>,
}

fn indexes(b: &pb::RaftBatch) -> Vec<u64> {
    b.messages
        .iter()
        .map(|m| Message::parse_from_bytes(m).unwrap().index)
        .collect()
}

#[tonic::async_trait]
impl Raft for Recorder {
    async fn step(&self, req: Request<pb::RaftBatch>) -> Result<Response<pb::RaftAck>, Status> {
        self.unary.lock().unwrap().extend(indexes(req.get_ref()));
        Ok(Response::new(pb::RaftAck {}))
    }

    async fn forward(
        &self,
        _req: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    type StepStreamStream = ReceiverStream<Result<pb::RaftAck, Status>>;

    async fn step_stream(
        &self,
        req: Request<Streaming<pb::RaftBatch>>,
    ) -> Result<Response<Self::StepStreamStream>, Status> {
        if self.old {
            return Err(Status::unimplemented("no StepStream in this build"));
        }
        self.streams.fetch_add(1, Ordering::SeqCst);
        let mut inbound = req.into_inner();
        let streamed = self.streamed.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while let Ok(Some(b)) = inbound.message().await {
                streamed.lock().unwrap().extend(indexes(&b));
            }
            drop(tx);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn serve(peer: Recorder) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServer::new(peer))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    url
}

fn message(to: u64, index: u64) -> Message {
    Message {
        from: 1,
        to,
        index,
        ..Default::default()
    }
}

/// Send messages with indexes 0, 1, … to peer 2 at `url`, in bursts as
/// Readys send them, until `got` holds `n` of them.
async fn send_and_wait(url: &str, n: u64, got: &Mutex<Vec<u64>>) {
    let unreachable = Arc::new(AtomicUsize::new(0));
    let u = unreachable.clone();
    let t = Transport::start(
        1,
        &BTreeMap::from([(1, "http://127.0.0.1:1".to_string()), (2, url.to_string())]),
        Arc::new(move |_| {
            u.fetch_add(1, Ordering::SeqCst);
        }),
        None,
    );
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut sent = 0;
    while got.lock().unwrap().len() < n as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} messages arrived",
            got.lock().unwrap().len()
        );
        for i in sent..sent + 50 {
            t.send(message(2, i));
        }
        sent += 50;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(unreachable.load(Ordering::SeqCst), 0, "never unreachable");
}

#[tokio::test]
async fn messages_arrive_in_order_over_one_stream() {
    let peer = Recorder::default();
    let url = serve(peer.clone()).await;
    send_and_wait(&url, 1_000, &peer.streamed).await;
    let got = peer.streamed.lock().unwrap().clone();
    assert_eq!(
        got[..1_000],
        (0..1_000).collect::<Vec<_>>(),
        "all, in order"
    );
    assert!(peer.unary.lock().unwrap().is_empty(), "no unary calls");
    assert_eq!(
        peer.streams.load(Ordering::SeqCst),
        1,
        "one stream for them all"
    );
}

#[tokio::test]
async fn a_peer_without_step_stream_gets_unary_calls() {
    let peer = Recorder {
        old: true,
        ..Default::default()
    };
    let url = serve(peer.clone()).await;
    // The messages written to the refused stream are lost (Raft resends
    // what matters); every later one arrives, in order, through Step.
    send_and_wait(&url, 300, &peer.unary).await;
    let got = peer.unary.lock().unwrap().clone();
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1),
        "in order: {got:?}"
    );
    assert!(peer.streamed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_peer_is_reported() {
    // A port nobody listens on (bound, then closed).
    let url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let unreachable = Arc::new(AtomicUsize::new(0));
    let u = unreachable.clone();
    let t = Transport::start(
        1,
        &BTreeMap::from([(2, url)]),
        Arc::new(move |id| {
            assert_eq!(id, 2);
            u.fetch_add(1, Ordering::SeqCst);
        }),
        None,
    );
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut i = 0;
    while unreachable.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never reported");
        t.send(message(2, i));
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
