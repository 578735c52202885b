//! The gateway's OpenAI-compatible routes against a small OpenAI-speaking stand-in
//! (what vLLM or llama.cpp's server answer, reduced to an echo): routing by the
//! body's `model`, `/v1/models`, errors in OpenAI's shape, streamed answers passed
//! through as they come, token metrics, and the official `openai` Python client.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{get, json, post};
use gpuctl_serving::gateway::{self, Gateway, GatewayConfig, NoScaleUp};
use gpuctl_serving::http::{self as ghttp, Handler};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{json as j, Value};
use tokio::sync::mpsc;

/// A whole body, or chunks sent one by one (a streamed answer).
enum StandInBody {
    Whole(Full<Bytes>),
    Chunks(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for StandInBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            StandInBody::Whole(b) => Pin::new(b).poll_frame(cx),
            StandInBody::Chunks(rx) => rx.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, StandInBody::Whole(b) if b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            StandInBody::Whole(b) => b.size_hint(),
            StandInBody::Chunks(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// An OpenAI-compatible server that echoes the last message.
struct StandIn;

fn answer(status: u16, v: Value) -> Response<StandInBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(StandInBody::Whole(Full::new(Bytes::from(v.to_string()))))
        .unwrap()
}

const USAGE: &str = r#"{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}"#;

impl Handler for StandIn {
    type Body = StandInBody;

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<StandInBody> {
        let path = req.uri().path().to_string();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let usage: Value = serde_json::from_str(USAGE).unwrap();
        if path == "/health" {
            return answer(200, j!({}));
        }
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return answer(400, j!({"error": {"message": "bad JSON"}}));
        };
        let model = v["model"].as_str().unwrap_or_default().to_string();
        match path.as_str() {
            "/v1/chat/completions" => {
                let last = v["messages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .and_then(|m| m["content"].as_str())
                    .unwrap_or_default()
                    .to_string();
                if v["stream"] != j!(true) {
                    return answer(
                        200,
                        j!({"id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                            "model": model, "usage": usage,
                            "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": format!("echo: {last}")}}]}),
                    );
                }
                let with_usage = v["stream_options"]["include_usage"] == j!(true);
                let (tx, rx) = mpsc::channel(4);
                tokio::spawn(async move {
                    let chunk = |delta: Value, finish: Value| {
                        let c = j!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                                    "created": 0, "model": model,
                                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
                        Bytes::from(format!("data: {c}\n\n"))
                    };
                    let mut events = vec![
                        chunk(j!({"role": "assistant", "content": "echo"}), Value::Null),
                        chunk(j!({"content": format!(": {last}")}), Value::Null),
                        chunk(j!({}), j!("stop")),
                    ];
                    if with_usage {
                        let c = j!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                                    "created": 0, "model": model, "choices": [], "usage": usage});
                        events.push(Bytes::from(format!("data: {c}\n\n")));
                    }
                    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
                    for e in events {
                        if tx.send(e).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(StandInBody::Chunks(rx))
                    .unwrap()
            }
            "/v1/completions" => answer(
                200,
                j!({"id": "cmpl-1", "object": "text_completion", "created": 0, "model": model,
                    "usage": usage,
                    "choices": [{"index": 0, "text": format!("echo: {}", v["prompt"].as_str().unwrap_or("")),
                                 "logprobs": null, "finish_reason": "stop"}]}),
            ),
            "/v1/embeddings" => answer(
                200,
                j!({"object": "list", "model": model,
                    "usage": {"prompt_tokens": 2, "total_tokens": 2},
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25, 0.125]}]}),
            ),
            _ => answer(404, j!({"error": {"message": format!("no route {path}")}})),
        }
    }
}

/// A gateway with `chat` (an OpenAI-compatible stand-in) and `v2` (a V2 endpoint
/// with no replica); returns its URL.
async fn gateway() -> (String, Arc<Gateway>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let replica = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(ghttp::serve(
        listener,
        Arc::new(StandIn),
        std::future::pending(),
    ));
    let gw = Gateway::new(GatewayConfig::default(), Arc::new(NoScaleUp));
    gw.set_replicas("chat", vec![replica]);
    gw.set_openai("chat", true);
    gw.set_replicas("v2", vec![]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gateway::serve(listener, gw.clone(), std::future::pending()));
    (url, gw)
}

#[tokio::test]
async fn requests_are_routed_by_the_body_model_and_errors_speak_openai() {
    let (gw, _) = gateway().await;
    let (code, body) = get(&format!("{gw}/v1/models")).await;
    assert_eq!(code, 200);
    let ids: Vec<_> = json(&body)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [j!("chat")],
        "only endpoints that speak OpenAI's API: {body}"
    );

    let chat = j!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    let (code, body) = post(&format!("{gw}/v1/chat/completions"), chat.to_string()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["choices"][0]["message"]["content"], "echo: hi");

    let err = |body: &str| json(body)["error"]["message"].as_str().unwrap().to_string();
    let (code, body) = post(&format!("{gw}/v1/chat/completions"), r#"{"messages": []}"#).await;
    assert_eq!(
        (code, err(&body)),
        (
            400,
            "missing `model`: the name of the endpoint to call".into()
        )
    );
    assert_eq!(json(&body)["error"]["param"], "model");
    let (code, body) = post(&format!("{gw}/v1/completions"), r#"{"model": "nope"}"#).await;
    assert_eq!(
        (code, err(&body)),
        (
            404,
            "The model `nope` does not exist: no endpoint named nope".into()
        )
    );
    let (code, body) = post(&format!("{gw}/v1/embeddings"), r#"{"model": "v2"}"#).await;
    assert_eq!(code, 400);
    assert!(
        err(&body).starts_with("endpoint v2 speaks the V2 protocol"),
        "{body}"
    );
    let (code, body) = post(&format!("{gw}/v1/files"), "{}").await;
    assert_eq!(code, 404);
    assert!(err(&body).starts_with("no route /v1/files"), "{body}");
    let (code, _) = get(&format!("{gw}/v1/chat/completions")).await;
    assert_eq!(code, 405);

    let (_, metrics) = get(&format!("{gw}/metrics")).await;
    for line in [
        r#"gpuctl_gateway_requests_total{code="200",endpoint="chat"} 1"#,
        r#"gpuctl_gateway_tokens_total{endpoint="chat",kind="completion"} 2"#,
        r#"gpuctl_gateway_tokens_total{endpoint="chat",kind="prompt"} 3"#,
        r#"gpuctl_gateway_tokens_per_second_count{endpoint="chat"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn a_streamed_answer_passes_through_as_it_comes() {
    let (gw, g) = gateway().await;
    let chat = j!({"model": "chat", "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "hi"}]});
    let req = Request::post(format!("{gw}/v1/chat/completions"))
        .body(Full::new(Bytes::from(chat.to_string())))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    // The first event arrives on its own: the gateway does not wait for the end.
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("a first event within 10 s")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert!(first.starts_with(b"data: {"), "{first:?}");
    assert!(
        !first.ends_with(b"[DONE]\n\n"),
        "one event, not the whole stream"
    );
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(rest.ends_with(b"data: [DONE]\n\n"), "{rest:?}");
    for _ in 0..200 {
        if g.concurrency("chat") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, metrics) = get(&format!("{gw}/metrics")).await;
    for line in [
        r#"gpuctl_gateway_time_to_first_token_seconds_count{endpoint="chat"} 1"#,
        r#"gpuctl_gateway_tokens_total{endpoint="chat",kind="completion"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_works_through_the_gateway() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3 with the openai package is not installed (pip install openai)");
        return;
    }
    let (gw, _) = gateway().await;
    common::python_client("openai_client.py", &format!("{gw}/v1"), "gateway").await;
}
