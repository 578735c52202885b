//! The gateway against tiny in-test backends on 127.0.0.1:0: balancing, retry on a dead
//! replica, the body limit, scale from zero, the activator queue, drain, and responses
//! streamed through, read whole, or broken off.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{get, json, post};
use gpuctl_serving::gateway::{self, Gateway, GatewayConfig, NoScaleUp, ScaleUp};
use gpuctl_serving::http::{self as ghttp, Handler};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::sync::{mpsc, Semaphore};

/// A backend that answers `{"backend": NAME, "path": ...}`; when `gate` has no permits
/// it holds each request until one is added.
struct Backend {
    name: String,
    hits: AtomicUsize,
    gate: Arc<Semaphore>,
}

impl Handler for Backend {
    type Body = Full<Bytes>;

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let _permit = self.gate.acquire().await;
        ghttp::json_value(
            StatusCode::OK,
            &serde_json::json!({"backend": self.name, "path": req.uri().path()}),
        )
    }
}

async fn backend(name: &str, open: bool) -> (String, Arc<Backend>) {
    let b = Arc::new(Backend {
        name: name.into(),
        hits: AtomicUsize::new(0),
        gate: Arc::new(Semaphore::new(if open {
            Semaphore::MAX_PERMITS
        } else {
            0
        })),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(ghttp::serve(listener, b.clone(), std::future::pending()));
    (url, b)
}

async fn start_gateway(config: GatewayConfig, hook: Arc<dyn ScaleUp>) -> (String, Arc<Gateway>) {
    let gw = Gateway::new(config, hook);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gateway::serve(listener, gw.clone(), std::future::pending()));
    (url, gw)
}

/// A URL where nothing listens: bind a port, then let it go.
async fn dead_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn routes_and_reports_metrics() {
    let (a_url, a) = backend("a", true).await;
    let (gw_url, gw) = start_gateway(GatewayConfig::default(), Arc::new(NoScaleUp)).await;
    gw.set_replicas("m", vec![a_url]);
    let (code, body) = post(&format!("{gw_url}/v2/models/m/infer"), "{}").await;
    assert_eq!(code, 200);
    assert_eq!(
        json(&body),
        serde_json::json!({"backend": "a", "path": "/v2/models/m/infer"})
    );
    let (code, body) = get(&format!("{gw_url}/v2/models/other/ready")).await;
    assert_eq!(
        (code, json(&body)["error"].as_str().unwrap()),
        (404, "no endpoint named other")
    );
    assert_eq!(get(&format!("{gw_url}/healthz")).await.0, 200);
    let (code, body) = get(&format!("{gw_url}/v2")).await;
    assert_eq!(
        (code, json(&body)["name"].as_str()),
        (200, Some("gpuctl-gateway"))
    );
    assert!(json(&body)["extensions"].is_array(), "{body}");
    let (_, metrics) = get(&format!("{gw_url}/metrics")).await;
    assert!(
        metrics.contains(r#"gpuctl_gateway_requests_total{code="200",endpoint="m"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gpuctl_gateway_in_flight_requests{endpoint="m"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gpuctl_gateway_request_duration_seconds_count{endpoint="m"} 1"#),
        "{metrics}"
    );
    assert_eq!(a.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn p2c_sends_new_requests_away_from_the_busy_replica() {
    // `slow` holds every request; `fast` answers at once. With two replicas p2c compares
    // both, so once `slow` has one request outstanding every later request goes to
    // `fast`: whatever the random draws, `slow` ends with at most one.
    let (slow_url, slow) = backend("slow", false).await;
    let (fast_url, fast) = backend("fast", true).await;
    let (gw_url, gw) = start_gateway(GatewayConfig::default(), Arc::new(NoScaleUp)).await;
    gw.set_replicas("m", vec![slow_url, fast_url]);
    let mut held = Vec::new();
    for i in 0..10 {
        let url = format!("{gw_url}/v2/models/m/infer");
        let h = tokio::spawn(async move { post(&url, "{}").await });
        wait_until("the request reached a backend", || {
            slow.hits.load(Ordering::SeqCst) + fast.hits.load(Ordering::SeqCst) == i + 1
        })
        .await;
        held.push(h);
    }
    assert!(
        slow.hits.load(Ordering::SeqCst) <= 1,
        "slow got {}",
        slow.hits.load(Ordering::SeqCst)
    );
    assert!(fast.hits.load(Ordering::SeqCst) >= 9);
    assert_eq!(gw.concurrency("m"), slow.hits.load(Ordering::SeqCst));
    slow.gate.add_permits(10);
    for h in held {
        assert_eq!(h.await.unwrap().0, 200);
    }
}

#[tokio::test]
async fn a_dead_replica_is_retried_on_another() {
    let (live_url, live) = backend("live", true).await;
    let (gw_url, gw) = start_gateway(GatewayConfig::default(), Arc::new(NoScaleUp)).await;
    gw.set_replicas("m", vec![dead_url().await, live_url]);
    for _ in 0..10 {
        let (code, body) = post(&format!("{gw_url}/v2/models/m/infer"), "{}").await;
        assert_eq!(
            (code, json(&body)["backend"].clone()),
            (200, serde_json::json!("live"))
        );
    }
    assert_eq!(live.hits.load(Ordering::SeqCst), 10);
    // Nothing left to try: 502 naming the replica.
    let dead = dead_url().await;
    gw.set_replicas("m", vec![dead.clone()]);
    let (code, body) = post(&format!("{gw_url}/v2/models/m/infer"), "{}").await;
    assert_eq!(code, 502);
    let err = json(&body)["error"].as_str().unwrap().to_string();
    assert!(
        err.starts_with("endpoint m: no replica accepted a connection"),
        "{err}"
    );
    assert!(err.contains(&dead), "{err}");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_never_reach_a_replica() {
    let (a_url, a) = backend("a", true).await;
    let config = GatewayConfig {
        max_body_bytes: 1024,
        ..GatewayConfig::default()
    };
    let (gw_url, gw) = start_gateway(config, Arc::new(NoScaleUp)).await;
    gw.set_replicas("m", vec![a_url]);
    let (code, body) = post(&format!("{gw_url}/v2/models/m/infer"), vec![b'x'; 2000]).await;
    assert_eq!(code, 413);
    assert_eq!(
        json(&body)["error"],
        "request body is larger than the limit of 1024 bytes"
    );
    assert_eq!(
        post(&format!("{gw_url}/v2/models/m/infer"), vec![b' '; 1024])
            .await
            .0,
        200
    );
    assert_eq!(a.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn scale_from_zero_holds_requests_until_a_replica_appears() {
    let (tx, mut asked) = mpsc::unbounded_channel::<String>();
    let (gw_url, gw) = start_gateway(GatewayConfig::default(), Arc::new(tx)).await;
    gw.set_replicas("m", vec![]);
    let url = format!("{gw_url}/v2/models/m/infer");
    let first = tokio::spawn({
        let url = url.clone();
        async move { post(&url, "{}").await }
    });
    assert_eq!(asked.recv().await.as_deref(), Some("m"));
    let second = tokio::spawn(async move { post(&url, "{}").await });
    wait_until("both requests are held", || gw.concurrency("m") == 2).await;
    // One cold start, one scale-up request.
    assert!(asked.try_recv().is_err());
    let (a_url, a) = backend("a", true).await;
    gw.set_replicas("m", vec![a_url]);
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(second.await.unwrap().0, 200);
    assert_eq!(a.hits.load(Ordering::SeqCst), 2);
    let (_, metrics) = get(&format!("{gw_url}/metrics")).await;
    assert!(
        metrics.contains(r#"gpuctl_gateway_cold_starts_total{endpoint="m"} 1"#),
        "{metrics}"
    );
}

fn empty_post() -> Request<Full<Bytes>> {
    Request::post("/v2/models/m/infer")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn error_of<B>(resp: Response<B>) -> (u16, String)
where
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    (status, v["error"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(start_paused = true)]
async fn held_requests_time_out_and_a_full_queue_refuses_at_once() {
    let config = GatewayConfig {
        queue_capacity: 1,
        cold_start_timeout: Duration::from_secs(3),
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(config, Arc::new(NoScaleUp));
    gw.set_replicas("m", vec![]);
    let start = tokio::time::Instant::now();
    let held = tokio::spawn({
        let gw = gw.clone();
        async move { gw.handle_request(empty_post()).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(gw.concurrency("m"), 1);
    let (code, err) = error_of(gw.handle_request(empty_post()).await).await;
    assert_eq!(code, 503);
    assert_eq!(
        err,
        "endpoint m has no ready replica and its queue is full (1 requests waiting)"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(10));
    let (code, err) = error_of(held.await.unwrap()).await;
    assert_eq!(
        (code, err.as_str()),
        (503, "endpoint m has no ready replica after 3s")
    );
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    // The queue empties when a held request gives up.
    assert_eq!(gw.concurrency("m"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_does_not_answer_in_time_gets_a_504_naming_it() {
    let (url, slow) = backend("slow", false).await;
    let config = GatewayConfig {
        response_timeout: Duration::from_secs(5),
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(config, Arc::new(NoScaleUp));
    gw.set_replicas("m", vec![url.clone()]);
    let start = tokio::time::Instant::now();
    let (code, err) = error_of(gw.handle_request(empty_post()).await).await;
    assert_eq!(code, 504);
    assert_eq!(
        err,
        format!("endpoint m: replica {url} did not answer within 5s")
    );
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(
        slow.hits.load(Ordering::SeqCst),
        1,
        "it reached the replica"
    );
    assert_eq!(
        gw.concurrency("m"),
        0,
        "its slot on the replica is given back"
    );
    // The replica answers again: a new request gets through on a new connection.
    slow.gate.add_permits(Semaphore::MAX_PERMITS >> 1);
    let resp = gw.handle_request(empty_post()).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn removing_a_replica_drains_it() {
    let (old_url, old) = backend("old", false).await;
    let (new_url, new) = backend("new", true).await;
    let (gw_url, gw) = start_gateway(GatewayConfig::default(), Arc::new(NoScaleUp)).await;
    gw.set_replicas("m", vec![old_url]);
    let url = format!("{gw_url}/v2/models/m/infer");
    let in_flight = tokio::spawn({
        let url = url.clone();
        async move { post(&url, "{}").await }
    });
    wait_until("the old replica has the request", || {
        old.hits.load(Ordering::SeqCst) == 1
    })
    .await;
    gw.set_replicas("m", vec![new_url]);
    for _ in 0..5 {
        let (code, body) = post(&url, "{}").await;
        assert_eq!(
            (code, json(&body)["backend"].clone()),
            (200, serde_json::json!("new"))
        );
    }
    assert!(!in_flight.is_finished());
    old.gate.add_permits(1);
    let (code, body) = in_flight.await.unwrap();
    assert_eq!(
        (code, json(&body)["backend"].clone()),
        (200, serde_json::json!("old"))
    );
    assert_eq!(
        (
            old.hits.load(Ordering::SeqCst),
            new.hits.load(Ordering::SeqCst)
        ),
        (1, 5)
    );
}

/// A body whose chunks the test sends one at a time (a chunked response, as a
/// token stream or server-sent events are).
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|c| c.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

/// A replica whose next response streams what the test sends on the channel.
struct Streamer(std::sync::Mutex<Option<mpsc::Receiver<Bytes>>>);

impl Handler for Streamer {
    type Body = ChannelBody;

    async fn handle(self: Arc<Self>, _req: Request<Incoming>) -> Response<ChannelBody> {
        let rx = self.0.lock().unwrap().take().expect("one request");
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(ChannelBody(rx))
            .unwrap()
    }
}

/// `fut`'s output, or a panic naming `what` after 10 s while a stream is open.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("no {what} within 10 s while the stream is open"))
}

#[tokio::test]
async fn a_chunked_response_is_streamed_through_and_holds_its_replica_until_done() {
    use http_body_util::BodyExt;
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let replica = format!("http://{}", listener.local_addr().unwrap());
    let streamer = Arc::new(Streamer(std::sync::Mutex::new(Some(rx))));
    tokio::spawn(ghttp::serve(listener, streamer, std::future::pending()));
    let (gw_url, gw) = start_gateway(GatewayConfig::default(), Arc::new(NoScaleUp)).await;
    gw.set_replicas("llm", vec![replica]);
    let req = Request::post(format!("{gw_url}/v2/models/llm/generate_stream"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let send = tokio::spawn(async move { common::client().request(req).await });
    tx.send(Bytes::from_static(b"data: one\n\n")).await.unwrap();
    // Bounded: a gateway that waited for the whole body would never answer here.
    let resp = within("the response head", send).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    // The first event arrives while the replica has not sent (or even been given) the
    // second: the gateway does not wait for the end of the response.
    // One data frame of the stream, within the bound.
    async fn event(body: &mut Incoming, what: &str) -> Bytes {
        let frame = within(what, body.frame()).await.expect("a frame");
        frame.expect("no error").into_data().expect("a data frame")
    }
    assert_eq!(event(&mut body, "the first event").await, "data: one\n\n");
    assert_eq!(
        gw.concurrency("llm"),
        1,
        "the stream is outstanding on its replica"
    );
    tx.send(Bytes::from_static(b"data: two\n\n")).await.unwrap();
    assert_eq!(event(&mut body, "the second event").await, "data: two\n\n");
    drop(tx);
    assert!(
        within("the end of the stream", body.frame())
            .await
            .is_none(),
        "the stream ends when the replica's does"
    );
    wait_until("the stream's slot is released", || {
        gw.concurrency("llm") == 0
    })
    .await;
    let metrics = get(&format!("{gw_url}/metrics")).await.1;
    assert!(
        metrics.contains(r#"gpuctl_gateway_in_flight_requests{endpoint="llm"} 0"#),
        "{metrics}"
    );
}

/// A replica on a raw socket that answers every request with `answer`, then closes.
async fn raw_replica(answer: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(answer).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn a_response_broken_off_before_its_length_is_a_502_naming_the_replica() {
    let replica =
        raw_replica(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"outputs\": [").await;
    let (gw_url, gw) = start_gateway(GatewayConfig::default(), Arc::new(NoScaleUp)).await;
    gw.set_replicas("m", vec![replica.clone()]);
    let (code, body) = post(&format!("{gw_url}/v2/models/m/infer"), "{}").await;
    assert_eq!(code, 502, "{body}");
    let err = json(&body)["error"].as_str().unwrap().to_string();
    assert!(
        err.starts_with(&format!(
            "endpoint m: replica {replica} broke off its response"
        )),
        "{err}"
    );
    assert_eq!(gw.concurrency("m"), 0);
}

#[tokio::test]
async fn a_large_response_passes_whole_with_its_length() {
    use http_body_util::BodyExt;
    let size = (gateway::BUFFER_RESPONSES_UP_TO + 12_345) as usize;
    let payload: &'static [u8] = Box::leak(
        (0..size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>()
            .into_boxed_slice(),
    );
    let answer: &'static [u8] = Box::leak(
        [
            format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").as_bytes(),
            payload,
        ]
        .concat()
        .into_boxed_slice(),
    );
    let replica = raw_replica(answer).await;
    let (gw_url, gw) = start_gateway(GatewayConfig::default(), Arc::new(NoScaleUp)).await;
    gw.set_replicas("big", vec![replica]);
    let req = Request::post(format!("{gw_url}/v2/models/big/infer"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], size.to_string().as_str());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(body.as_ref() == payload, "the body arrived changed");
    wait_until("the slot is released", || gw.concurrency("big") == 0).await;
}

#[tokio::test(start_paused = true)]
async fn the_reported_concurrency_is_the_mean_of_the_samples_since_the_last_report() {
    let gw = Gateway::new(GatewayConfig::default(), Arc::new(NoScaleUp));
    gw.set_replicas("m", vec![]);
    // Nothing sampled yet: the concurrency now.
    assert_eq!(gw.mean_concurrency("m"), 0.0);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { gw.handle_request(empty_post()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(gw.concurrency("m"), 2);
    gw.sample_concurrency();
    gw.sample_concurrency();
    gw.sample_concurrency();
    for h in held {
        h.abort();
        let _ = h.await;
    }
    assert_eq!(gw.concurrency("m"), 0);
    gw.sample_concurrency();
    // Two requests for three samples of four, then none: 1.5, though both are gone
    // by the time of the report.
    assert_eq!(gw.mean_concurrency("m"), 1.5);
    // The next period starts afresh.
    gw.sample_concurrency();
    assert_eq!(gw.mean_concurrency("m"), 0.0);
    assert_eq!(gw.mean_concurrency("nothing"), 0.0);
}

/// Writes `request` on a new connection to `url`'s address, then reads until the
/// gateway closes the connection (or 10 s pass): what came back, and whether it
/// closed.
async fn raw_exchange(url: &str, request: &[u8], half_close: bool) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let (a_url, a) = backend("a", true).await;
    let (gw_url, gw) = start_gateway(GatewayConfig::default(), Arc::new(NoScaleUp)).await;
    gw.set_replicas("m", vec![a_url]);
    let request = b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";
    for i in 0..20 {
        let (got, closed) = raw_exchange(&gw_url, request, true).await;
        assert!(got.starts_with("HTTP/1.1 200"), "request {i}: {got:?}");
        assert!(got.contains(r#""backend":"a""#), "request {i}: {got:?}");
        assert!(
            closed,
            "request {i}: the connection stayed open after the answer"
        );
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn slow_or_silent_clients_are_cut_off() {
    let (a_url, a) = backend("a", true).await;
    let config = GatewayConfig {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        ..GatewayConfig::default()
    };
    let (gw_url, gw) = start_gateway(config, Arc::new(NoScaleUp)).await;
    gw.set_replicas("m", vec![a_url]);
    // Nothing at all, and half a head: closed without an answer.
    let (got, closed) = raw_exchange(&gw_url, b"", false).await;
    assert!(closed && got.is_empty(), "silent client: {got:?}");
    let (got, closed) = raw_exchange(&gw_url, b"POST /v2/models/m/in", false).await;
    assert!(closed, "half a head kept the connection open");
    assert!(!got.contains("200 OK"), "{got:?}");
    // A head, then less body than it promised: 408 naming the limit.
    let (got, closed) = raw_exchange(
        &gw_url,
        b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n{}",
        false,
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");
    assert!(got.contains("did not arrive within 0.3s"), "{got:?}");
    assert!(closed, "the connection of a slow body stayed open");
    // A whole request, then an idle keep-alive connection: answered, then closed.
    let (got, closed) = raw_exchange(
        &gw_url,
        b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}",
        false,
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    assert!(closed, "an idle keep-alive connection stayed open");
    assert_eq!(
        a.hits.load(Ordering::SeqCst),
        1,
        "only the whole request reached the replica"
    );
}

#[tokio::test]
async fn a_request_for_an_unknown_endpoint_asks_the_scheduler_again_before_404() {
    let (a_url, a) = backend("a", true).await;
    let (gw_url, gw) = start_gateway(GatewayConfig::default(), Arc::new(NoScaleUp)).await;
    // Without a scheduler to ask, an unknown endpoint is 404 at once.
    let (code, _) = post(&format!("{gw_url}/v2/models/fresh/infer"), "{}").await;
    assert_eq!(code, 404);
    // A stand-in for the loop that follows the scheduler: each look it is asked
    // for finds the endpoint "fresh", applied since the last poll.
    gw.follow_scheduler();
    let looks = Arc::new(AtomicUsize::new(0));
    let follower = tokio::spawn({
        let (gw, looks) = (gw.clone(), looks.clone());
        async move {
            loop {
                gw.lookup_wanted().await;
                let asked = gw.lookups_asked();
                looks.fetch_add(1, Ordering::SeqCst);
                gw.set_replicas("fresh", vec![a_url.clone()]);
                gw.looked_up(asked);
            }
        }
    });
    let (code, body) = post(&format!("{gw_url}/v2/models/fresh/infer"), "{}").await;
    assert_eq!((code, json(&body)["backend"].as_str()), (200, Some("a")));
    assert_eq!(a.hits.load(Ordering::SeqCst), 1);
    // A name the scheduler does not know either: 404 after one look.
    let before = looks.load(Ordering::SeqCst);
    let (code, body) = post(&format!("{gw_url}/v2/models/nope/infer"), "{}").await;
    assert_eq!(
        (code, json(&body)["error"].as_str()),
        (404, Some("no endpoint named nope"))
    );
    assert!(
        looks.load(Ordering::SeqCst) > before,
        "no fresh look was asked for"
    );
    follower.abort();
}
