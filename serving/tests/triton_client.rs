//! Runs `triton_client.py` (NVIDIA's tritonclient[http], JSON and binary tensors) against an
//! in-process model server, directly and through the gateway, when Python has
//! `tritonclient.http`; skipped otherwise.

mod common;

use std::sync::Arc;

use gpuctl_serving::gateway::{self, Gateway, GatewayConfig, NoScaleUp};
use gpuctl_serving::model::OnnxModel;
use gpuctl_serving::model_server::{self, ModelServer, ModelServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_speaks_to_the_model_server() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import tritonclient.http, numpy"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3 with tritonclient[http] is not installed (pip install 'tritonclient[http]')");
        return;
    }
    let model = OnnxModel::load(&common::testdata("add_mul.onnx"), "add_mul").unwrap();
    let server = ModelServer::with_model(model, ModelServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(model_server::serve(
        listener,
        server,
        std::future::pending(),
    ));
    let gw = Gateway::new(GatewayConfig::default(), Arc::new(NoScaleUp));
    gw.set_replicas("add_mul", vec![format!("http://{addr}")]);
    let gw_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw_addr = gw_listener.local_addr().unwrap().to_string();
    tokio::spawn(gateway::serve(gw_listener, gw, std::future::pending()));
    for (what, target) in [("model server", &addr), ("gateway", &gw_addr)] {
        common::python_client("triton_client.py", target, what).await;
    }
}
