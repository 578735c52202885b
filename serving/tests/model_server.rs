//! The model server against the committed ONNX models: over real sockets on 127.0.0.1:0
//! for the protocol, and through `handle_request` with paused time for batching.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{get, json, post, testdata};
use gpuctl_serving::model::OnnxModel;
use gpuctl_serving::model_server::{self, ModelServer, ModelServerConfig};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::json as j;

async fn start(
    model: &str,
    config: ModelServerConfig,
) -> (String, Arc<ModelServer>, tokio::sync::oneshot::Sender<()>) {
    let m = OnnxModel::load(&testdata(&format!("{model}.onnx")), model).expect("model loads");
    let server = ModelServer::with_model(m, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(model_server::serve(listener, server.clone(), async {
        let _ = stopped.await;
    }));
    (url, server, stop)
}

#[tokio::test]
async fn health_and_metadata() {
    let (url, _s, _stop) = start("add_mul", ModelServerConfig::default()).await;
    assert_eq!(get(&format!("{url}/v2/health/live")).await.0, 200);
    let (code, body) = get(&format!("{url}/v2/health/ready")).await;
    assert_eq!((code, json(&body)), (200, j!({"ready": true})));
    let (code, body) = get(&format!("{url}/v2")).await;
    assert_eq!(code, 200);
    assert_eq!(json(&body)["name"], "gpuctl-model-server");
    let (code, body) = get(&format!("{url}/v2/models/add_mul")).await;
    assert_eq!(code, 200);
    assert_eq!(
        json(&body),
        j!({"name": "add_mul", "versions": ["1"], "platform": "onnx",
            "inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 4]},
                       {"name": "b", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "sum", "datatype": "FP32", "shape": [-1, 4]},
                        {"name": "product", "datatype": "FP32", "shape": [-1, 4]}]})
    );
    let (code, body) = get(&format!("{url}/v2/models/add_mul/versions/1")).await;
    assert_eq!((code, json(&body)["name"].clone()), (200, j!("add_mul")));
    let want = "model add_mul has no version 2: this server serves version 1";
    let (code, body) = get(&format!("{url}/v2/models/add_mul/versions/2")).await;
    assert_eq!((code, json(&body)["error"].clone()), (404, j!(want)));
    let infer_v2 = format!("{url}/v2/models/add_mul/versions/2/infer");
    let (code, body) = post(&infer_v2, "{}").await;
    assert_eq!((code, json(&body)["error"].clone()), (404, j!(want)));
    let (code, body) = get(&format!("{url}/v2/models/add_mul/ready")).await;
    assert_eq!(
        (code, json(&body)),
        (200, j!({"name": "add_mul", "ready": true}))
    );
    let (code, body) = get(&format!("{url}/v2/models/nope")).await;
    assert_eq!(code, 404);
    assert_eq!(
        json(&body)["error"],
        "model nope not found: this server serves add_mul"
    );
    let (code, body) = get(&format!("{url}/v2/models/add_mul/infer")).await;
    assert_eq!(code, 405, "{body}");
    assert_eq!(get(&format!("{url}/healthz")).await.0, 200);
}

#[tokio::test]
async fn int_bool_metadata_and_infer() {
    let (url, _s, _stop) = start("int_bool", ModelServerConfig::default()).await;
    let (_, body) = get(&format!("{url}/v2/models/int_bool")).await;
    let meta = json(&body);
    assert_eq!(
        meta["inputs"][0],
        j!({"name": "x", "datatype": "INT64", "shape": [-1, 3]})
    );
    assert_eq!(
        meta["inputs"][1],
        j!({"name": "mask", "datatype": "BOOL", "shape": [-1, 3]})
    );
    assert_eq!(
        meta["outputs"][1],
        j!({"name": "positive", "datatype": "BOOL", "shape": [-1, 3]})
    );
    let (code, body) = post(
        &format!("{url}/v2/models/int_bool/infer"),
        r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"INT64","data":[[-2,0,7]]},
                      {"name":"mask","shape":[1,3],"datatype":"BOOL","data":[true,true,false]}]}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let out = json(&body);
    assert_eq!(
        out["outputs"][0],
        j!({"name":"masked","datatype":"INT64","shape":[1,3],"data":[-2,0,0]})
    );
    assert_eq!(
        out["outputs"][1],
        j!({"name":"positive","datatype":"BOOL","shape":[1,3],"data":[false,false,true]})
    );
}

#[tokio::test]
async fn infer_flat_nested_and_selected_outputs() {
    let (url, _s, _stop) = start("add_mul", ModelServerConfig::default()).await;
    let infer = format!("{url}/v2/models/add_mul/infer");
    let flat = r#"{"id":"req-1","parameters":{"custom":true},"inputs":[
        {"name":"a","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]},
        {"name":"b","shape":[2,4],"datatype":"FP32","data":[1,1,1,1,2,2,2,2],"parameters":{"content_type":"np"}}]}"#;
    let (code, body) = post(&infer, flat).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json(&body),
        j!({"model_name":"add_mul","model_version":"1","id":"req-1","outputs":[
            {"name":"sum","datatype":"FP32","shape":[2,4],"data":[2.0,3.0,4.0,5.0,7.0,8.0,9.0,10.0]},
            {"name":"product","datatype":"FP32","shape":[2,4],"data":[1.0,2.0,3.0,4.0,10.0,12.0,14.0,16.0]}]})
    );
    let nested = r#"{"inputs":[
        {"name":"a","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[5,6,7,8]]},
        {"name":"b","shape":[2,4],"datatype":"FP32","data":[[1,1,1,1],[2,2,2,2]]}],
        "outputs":[{"name":"product","parameters":{"binary_data":false}}]}"#;
    let (code, body) = post(&infer, nested).await;
    assert_eq!(code, 200, "{body}");
    let out = json(&body);
    assert_eq!(out["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(
        out["outputs"][0]["data"],
        j!([1.0, 2.0, 3.0, 4.0, 10.0, 12.0, 14.0, 16.0])
    );

    let (url, _s2, _stop2) = start("linear", ModelServerConfig::default()).await;
    let (code, body) = post(
        &format!("{url}/v2/models/linear/infer"),
        r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[[1,1,1]]}]}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["outputs"][0]["data"], j!([9.5, 11.5]));
}

#[tokio::test]
async fn bad_requests_are_4xx_naming_the_input() {
    let config = ModelServerConfig {
        max_body_bytes: 4096,
        ..ModelServerConfig::default()
    };
    let (url, server, _stop) = start("add_mul", config).await;
    let infer = format!("{url}/v2/models/add_mul/infer");
    let b_ok = r#"{"name":"b","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}"#;
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!(
                r#"{{"inputs":[{{"name":"a","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}},{b_ok}]}}"#
            ),
            400,
            "input a: datatype INT64 does not match the model's FP32",
        ),
        (
            format!(
                r#"{{"inputs":[{{"name":"a","shape":[1,4],"datatype":"FP16","data":[1,2,3,4]}},{b_ok}]}}"#
            ),
            400,
            "input a: datatype FP16 does not match the model's FP32",
        ),
        (
            format!(
                r#"{{"inputs":[{{"name":"a","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}},{b_ok}]}}"#
            ),
            400,
            "input a: dimension 1 is 5 but the model takes 4",
        ),
        (
            format!(
                r#"{{"inputs":[{{"name":"a","shape":[2,4],"datatype":"FP32","data":[1,2,3,4]}},{b_ok}]}}"#
            ),
            400,
            "input a: shape [2, 4] needs 8 elements but data has 4",
        ),
        (
            format!(
                r#"{{"inputs":[{{"name":"a","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[5,6,7]]}},{b_ok}]}}"#
            ),
            400,
            "input a: data at [1] has 3 elements along dimension 1 but shape says 4",
        ),
        (
            format!(
                r#"{{"inputs":[{{"name":"c","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}},{b_ok}]}}"#
            ),
            400,
            "unknown input c for model add_mul (it takes a, b)",
        ),
        (
            format!(r#"{{"inputs":[{b_ok}]}}"#),
            400,
            "missing input a for model add_mul",
        ),
        (
            r#"{"inputs":[{"name":"a","shape":[1,4],"#.to_string(),
            400,
            "request JSON is truncated at line 1, column 37",
        ),
        (
            r#"{"inputs":[{"name":"a" "shape"}]}"#.to_string(),
            400,
            "invalid request JSON at line 1, column 24",
        ),
        (
            format!(
                r#"{{"inputs":[{{"name":"a","shape":[1,4],"datatype":"FP32","data":[{}]}},{b_ok}]}}"#,
                vec!["1"; 3000].join(",")
            ),
            413,
            "request body is larger than the limit of 4096 bytes",
        ),
    ];
    for (body, want_code, want) in cases {
        let (code, resp) = post(&infer, body.clone()).await;
        let err = json(&resp)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(code, want_code, "{body}: {resp}");
        assert!(err.contains(want), "{body}\n  got  {err}\n  want {want}");
    }
    let (_, metrics) = get(&format!("{url}/metrics")).await;
    assert!(
        metrics.contains(r#"gpuctl_model_server_requests_total{code="400",model="add_mul"} 9"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gpuctl_model_server_requests_total{code="413",model="add_mul"} 1"#),
        "{metrics}"
    );
    drop(server);
}

#[tokio::test]
async fn not_ready_until_the_model_is_set() {
    let server = ModelServer::new("add_mul", ModelServerConfig::default());
    let req = |uri: &str| Request::get(uri).body(Full::new(Bytes::new())).unwrap();
    let resp = server.handle_request(req("/v2/health/ready")).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        server.handle_request(req("/v2/health/live")).await.status(),
        200
    );
    let resp = server.handle_request(req("/v2/models/add_mul")).await;
    assert_eq!(resp.status(), 503);
    server.set_model(OnnxModel::load(&testdata("add_mul.onnx"), "add_mul").unwrap());
    assert_eq!(
        server
            .handle_request(req("/v2/health/ready"))
            .await
            .status(),
        200
    );
}

fn infer_request(a: [f32; 4], b: [f32; 4]) -> Request<Full<Bytes>> {
    let body = j!({"inputs": [
        {"name": "a", "shape": [1, 4], "datatype": "FP32", "data": a},
        {"name": "b", "shape": [1, 4], "datatype": "FP32", "data": b}]});
    Request::post("/v2/models/add_mul/infer")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn body_json(resp: hyper::Response<Full<Bytes>>) -> serde_json::Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// (count, sum) of the batch-size histogram.
fn batch_stats(server: &ModelServer) -> (u64, f64) {
    let families = server.registry().gather();
    let f = families
        .iter()
        .find(|f| f.name() == "gpuctl_model_server_batch_size")
        .map(|f| f.get_metric()[0].get_histogram().clone());
    f.map(|h| (h.get_sample_count(), h.get_sample_sum()))
        .unwrap_or((0, 0.0))
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_are_batched_up_to_the_maximum_and_split_back() {
    let model = OnnxModel::load(&testdata("add_mul.onnx"), "add_mul").unwrap();
    let config = ModelServerConfig {
        max_batch_size: 4,
        max_delay: Duration::from_millis(5),
        ..ModelServerConfig::default()
    };
    let server = ModelServer::with_model(model, config);
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let server = server.clone();
            let x = i as f32;
            tokio::spawn(async move {
                server
                    .handle_request(infer_request([x, x, x, x], [1.0, 2.0, 3.0, 4.0]))
                    .await
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let resp = h.await.unwrap();
        assert_eq!(resp.status(), 200);
        let out = body_json(resp).await;
        let x = i as f64;
        assert_eq!(out["outputs"][0]["shape"], j!([1, 4]));
        assert_eq!(
            out["outputs"][0]["data"],
            j!([x + 1.0, x + 2.0, x + 3.0, x + 4.0]),
            "request {i}"
        );
        assert_eq!(
            out["outputs"][1]["data"],
            j!([x, 2.0 * x, 3.0 * x, 4.0 * x]),
            "request {i}"
        );
    }
    // Six one-row requests, at most four rows per run: two runs, 4 + 2 rows.
    assert_eq!(batch_stats(&server), (2, 6.0));
}

#[tokio::test(start_paused = true)]
async fn a_lone_request_waits_the_maximum_delay() {
    let model = OnnxModel::load(&testdata("add_mul.onnx"), "add_mul").unwrap();
    let config = ModelServerConfig {
        max_batch_size: 4,
        max_delay: Duration::from_millis(5),
        ..ModelServerConfig::default()
    };
    let server = ModelServer::with_model(model, config);
    let start = tokio::time::Instant::now();
    let s = server.clone();
    let h = tokio::spawn(async move { s.handle_request(infer_request([1.0; 4], [1.0; 4])).await });
    tokio::time::sleep(Duration::from_millis(4)).await;
    assert!(!h.is_finished());
    assert_eq!(batch_stats(&server), (0, 0.0));
    // A second request joins the waiting batch; both go at the first one's deadline.
    let s = server.clone();
    let h2 = tokio::spawn(async move { s.handle_request(infer_request([2.0; 4], [1.0; 4])).await });
    assert_eq!(h.await.unwrap().status(), 200);
    assert_eq!(h2.await.unwrap().status(), 200);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(5), "{waited:?}");
    assert_eq!(batch_stats(&server), (1, 2.0));
}
