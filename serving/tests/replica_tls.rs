//! The gateway → replica hop over TLS: a model server with the certificate
//! its node CA signed is reached over https and keeps its connections
//! alive; a replica whose certificate another CA signed, and one that
//! speaks plain HTTP at an https:// URL, are refused with a line that says
//! why; a gateway without a CA cannot reach https replicas.

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::{json, testdata};
use gpuctl_security::ca::{self, Ca};
use gpuctl_security::replica::ReplicaIssuer;
use gpuctl_security::tls::TlsFiles;
use gpuctl_serving::gateway::{Gateway, GatewayConfig, NoScaleUp};
use gpuctl_serving::model::OnnxModel;
use gpuctl_serving::model_server::{self, ModelServer, ModelServerConfig};
use gpuctl_serving::replica_stream::ReplicaTls;
use http_body_util::{BodyExt, Full};

const READY: &str = "/v2/health/ready";

const BODY: &str = r#"{"inputs": [
    {"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
    {"name": "b", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}"#;

/// A model server for add_mul on 127.0.0.1, serving HTTPS with `cert`/`key`
/// (plain HTTP without); returns its address.
async fn replica(tls: Option<(&Path, &Path)>) -> String {
    let acceptor = tls.map(|(cert, key)| {
        TlsFiles {
            cert: Some(cert.to_path_buf()),
            key: Some(key.to_path_buf()),
            ca: None,
        }
        .load()
        .unwrap()
        .acceptor(None)
        .unwrap()
    });
    let model = OnnxModel::load(&testdata("add_mul.onnx"), "add_mul").unwrap();
    let server = ModelServer::with_model(model, ModelServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(model_server::serve_with(
        listener,
        server,
        acceptor,
        std::future::pending(),
    ));
    addr
}

/// A replica certificate for 127.0.0.1 from a node CA that `cluster` signed,
/// written in `dir` as `NAME.pem`/`NAME-key.pem`.
fn replica_cert(dir: &Path, cluster: &Ca, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let node = cluster.issue_node_ca(name, &["127.0.0.1"]).unwrap();
    let (nc, nk) = (
        dir.join(format!("{name}-node-ca.pem")),
        dir.join(format!("{name}-node-ca-key.pem")),
    );
    ca::write_leaf(&node, &nc, &nk).unwrap();
    let leaf = ReplicaIssuer::load(&nc, &nk)
        .unwrap()
        .issue(&["127.0.0.1"], "add_mul-replica-0")
        .unwrap();
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    ca::write_leaf(&leaf, &c, &k).unwrap();
    (c, k)
}

/// A gateway trusting the CA in `ca_file` (none: no TLS to replicas).
fn gateway(ca_file: Option<&Path>) -> Arc<Gateway> {
    let replica_tls = ca_file.map(|p| {
        let tls = TlsFiles {
            ca: Some(p.to_path_buf()),
            ..TlsFiles::default()
        }
        .load()
        .unwrap();
        ReplicaTls::new(&tls).unwrap()
    });
    let config = GatewayConfig {
        replica_tls,
        cold_start_timeout: std::time::Duration::from_secs(5),
        ..GatewayConfig::default()
    };
    Gateway::new(config, Arc::new(NoScaleUp))
}

async fn infer(gw: &Arc<Gateway>) -> (u16, String) {
    let req = hyper::Request::post("/v2/models/add_mul/infer")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    let resp = gw.handle_request(req).await;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reaches_a_replica_over_tls_through_its_node_ca() {
    let dir = tempfile::tempdir().unwrap();
    let files = ca::ensure_dev(dir.path()).unwrap();
    // The node's CA, as `gpuctl dev` makes it, signs the replica's certificate.
    let issuer = ReplicaIssuer::load(&files.node_ca, &files.node_ca_key).unwrap();
    let leaf = issuer.issue(&["127.0.0.1"], "add_mul-replica-0").unwrap();
    let (c, k) = (dir.path().join("r.pem"), dir.path().join("r-key.pem"));
    ca::write_leaf(&leaf, &c, &k).unwrap();
    let addr = replica(Some((&c, &k))).await;
    let url = format!("https://{addr}");
    let gw = gateway(Some(&files.ca));
    assert_eq!(gw.probe_ready(&url, READY).await, Ok(true));
    gw.set_replicas("add_mul", vec![url]);
    for _ in 0..3 {
        let (status, body) = infer(&gw).await;
        assert_eq!(status, 200, "{body}");
        let out = json(&body);
        assert_eq!(out["model_name"], "add_mul", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_certificate_from_another_ca_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let files = ca::ensure_dev(dir.path()).unwrap();
    let other = Ca::new("another cluster's CA").unwrap();
    let (c, k) = replica_cert(dir.path(), &other, "other");
    let addr = replica(Some((&c, &k))).await;
    let url = format!("https://{addr}");
    let gw = gateway(Some(&files.ca));
    let why = format!(
        "TLS handshake refused: the replica's certificate is not signed by the CA in {} (unknown issuer)",
        files.ca.display()
    );
    assert_eq!(gw.probe_ready(&url, READY).await, Err(why.clone()));
    gw.set_replicas("add_mul", vec![url.clone()]);
    let (status, body) = infer(&gw).await;
    assert_eq!(status, 502, "{body}");
    let msg = json(&body)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        msg,
        format!("endpoint add_mul: no replica accepted a connection ({url}: {why})")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_at_an_https_url_and_a_gateway_without_a_ca_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = ca::ensure_dev(dir.path()).unwrap();
    let plain = replica(None).await;
    let gw = gateway(Some(&files.ca));
    assert_eq!(
        gw.probe_ready(&format!("https://{plain}"), READY).await,
        Err("TLS handshake refused: the replica does not speak TLS: serve HTTPS with $GPUCTL_TLS_CERT and $GPUCTL_TLS_KEY, or set the endpoint's server.tls: false".into())
    );
    // The same replica at its http:// URL is fine.
    assert_eq!(
        gw.probe_ready(&format!("http://{plain}"), READY).await,
        Ok(true)
    );
    let no_ca = gateway(None);
    assert_eq!(
        no_ca.probe_ready(&format!("https://{plain}"), READY).await,
        Err("the replica serves https, and the gateway has no CA to check its certificate: give the gateway --tls-ca".into())
    );
}
