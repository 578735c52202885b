//! The V2 gRPC service (`inference.GRPCInferenceService`) on the model server and
//! through the gateway, with a tonic client: health, metadata, infer with raw and
//! typed tensors, errors as gRPC statuses, a request that wakes an endpoint from
//! zero, and tritonclient[grpc] when Python has it.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use gpuctl_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use gpuctl_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use gpuctl_proto::inference::{
    InferTensorContents, ModelInferRequest, ModelMetadataRequest, ModelReadyRequest,
    ServerLiveRequest, ServerMetadataRequest, ServerReadyRequest,
};
use gpuctl_serving::gateway::{Gateway, GatewayConfig, NoScaleUp};
use gpuctl_serving::grpc;
use gpuctl_serving::model::OnnxModel;
use gpuctl_serving::model_server::{self, ModelServer, ModelServerConfig};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Code;

/// `add_mul` served over HTTP; returns its URL and the server.
async fn model_server() -> (String, Arc<ModelServer>) {
    let model = OnnxModel::load(&common::testdata("add_mul.onnx"), "add_mul").unwrap();
    let server = ModelServer::with_model(model, ModelServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(model_server::serve(
        listener,
        server.clone(),
        std::future::pending(),
    ));
    (url, server)
}

/// The gRPC service in front of `backend`; returns its address.
async fn grpc_front<B: grpc::V2Http>(backend: Arc<B>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(grpc::serve(
        listener,
        backend,
        None,
        16 << 20,
        std::future::pending(),
    ));
    addr
}

async fn client(addr: &str) -> GrpcInferenceServiceClient<Channel> {
    for _ in 0..100 {
        if let Ok(c) = GrpcInferenceServiceClient::connect(format!("http://{addr}")).await {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no gRPC server on {addr}");
}

fn le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_le(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn tensor(name: &str, contents: Option<&[f32]>) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: vec![1, 4],
        parameters: HashMap::new(),
        contents: contents.map(|c| InferTensorContents {
            fp32_contents: c.to_vec(),
            ..Default::default()
        }),
    }
}

/// Health, metadata, infer (raw and typed inputs) and errors against `addr`.
async fn speaks_v2(addr: &str, server_name: &str) {
    let mut c = client(addr).await;
    assert!(
        c.server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let meta = c
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, server_name);
    let ready = c
        .model_ready(ModelReadyRequest {
            name: "add_mul".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ready.ready);
    let meta = c
        .model_metadata(ModelMetadataRequest {
            name: "add_mul".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.versions, ["1"]);
    let names: Vec<_> = meta
        .inputs
        .iter()
        .map(|t| (&*t.name, &*t.datatype))
        .collect();
    assert_eq!(names, [("a", "FP32"), ("b", "FP32")]);
    assert_eq!(meta.inputs[0].shape, [-1, 4]);

    let a = [1.0, 2.0, 3.0, 4.0];
    let b = [2.0; 4];
    // Raw inputs (what tritonclient sends), all outputs.
    let r = c
        .model_infer(ModelInferRequest {
            model_name: "add_mul".into(),
            id: "g1".into(),
            inputs: vec![tensor("a", None), tensor("b", None)],
            raw_input_contents: vec![le(&a), le(&b)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.id, "g1");
    assert_eq!(r.model_name, "add_mul");
    let outs: Vec<_> = r.outputs.iter().map(|o| &*o.name).collect();
    assert_eq!(outs, ["sum", "product"]);
    assert_eq!(r.outputs[0].shape, [1, 4]);
    assert_eq!(from_le(&r.raw_output_contents[0]), [3.0, 4.0, 5.0, 6.0]);
    assert_eq!(from_le(&r.raw_output_contents[1]), [2.0, 4.0, 6.0, 8.0]);
    // Typed contents, one output asked for.
    let r = c
        .model_infer(ModelInferRequest {
            model_name: "add_mul".into(),
            inputs: vec![tensor("a", Some(&a)), tensor("b", Some(&b))],
            outputs: vec![InferRequestedOutputTensor {
                name: "product".into(),
                parameters: HashMap::new(),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(from_le(&r.raw_output_contents[0]), [2.0, 4.0, 6.0, 8.0]);
    // Errors carry the server's message and a matching code.
    let e = c
        .model_infer(ModelInferRequest {
            model_name: "add_mul".into(),
            inputs: vec![tensor("a", Some(&a))],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "missing input b for model add_mul");
    let e = c
        .model_infer(ModelInferRequest {
            model_name: "add_mul".into(),
            inputs: vec![tensor("a", None), tensor("b", None)],
            raw_input_contents: vec![le(&a), le(&[1.0])],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("binary_data_size is 4 bytes"),
        "{}",
        e.message()
    );
    let e = c
        .model_ready(ModelReadyRequest {
            name: "add_mul".into(),
            version: "2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_server_speaks_v2_grpc() {
    let (_, server) = model_server().await;
    let addr = grpc_front(server).await;
    speaks_v2(&addr, "gpuctl-model-server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_routes_v2_grpc_like_http() {
    let (url, _) = model_server().await;
    let gw = Gateway::new(GatewayConfig::default(), Arc::new(NoScaleUp));
    gw.set_replicas("add_mul", vec![url]);
    let addr = grpc_front(gw.clone()).await;
    speaks_v2(&addr, "gpuctl-gateway").await;
    let mut c = client(&addr).await;
    let e = c
        .model_metadata(ModelMetadataRequest {
            name: "nothing".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "no endpoint named nothing")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_request_wakes_an_endpoint_from_zero() {
    let (tx, mut asked) = mpsc::unbounded_channel::<String>();
    let gw = Gateway::new(GatewayConfig::default(), Arc::new(tx));
    gw.set_replicas("add_mul", vec![]);
    let addr = grpc_front(gw.clone()).await;
    let mut c = client(&addr).await;
    let infer = tokio::spawn(async move {
        c.model_infer(ModelInferRequest {
            model_name: "add_mul".into(),
            inputs: vec![tensor("a", Some(&[1.0; 4])), tensor("b", Some(&[1.0; 4]))],
            ..Default::default()
        })
        .await
    });
    // The gateway asks for a replica, holds the call, and sends it on once one is ready.
    assert_eq!(asked.recv().await.as_deref(), Some("add_mul"));
    let (url, _) = model_server().await;
    gw.set_replicas("add_mul", vec![url]);
    let r = infer.await.unwrap().unwrap().into_inner();
    assert_eq!(from_le(&r.raw_output_contents[0]), [2.0; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_grpc_speaks_to_the_gateway_and_the_model_server() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import tritonclient.grpc, numpy"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3 with tritonclient[grpc] is not installed (pip install 'tritonclient[grpc]')");
        return;
    }
    let (url, server) = model_server().await;
    let direct = grpc_front(server).await;
    let gw = Gateway::new(GatewayConfig::default(), Arc::new(NoScaleUp));
    gw.set_replicas("add_mul", vec![url]);
    let through = grpc_front(gw).await;
    for (what, addr) in [("model server", &direct), ("gateway", &through)] {
        common::python_client("triton_grpc.py", addr, what).await;
    }
}
