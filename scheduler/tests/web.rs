//! The web UI's server in process, on 127.0.0.1:0 with authentication on:
//! the login wall (redirects and 401s, the login form, the session cookie),
//! the JSON API, a revoked token losing its session, and the live feed
//! sending a change event when a job is applied. The pages themselves are
//! checked in a browser by gpuctl/tests/web_ui.rs.

use std::net::SocketAddr;
use std::time::Duration;

use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::control_client::ControlClient;
use gpuctl_proto::v1::node_service_client::NodeServiceClient;
use gpuctl_scheduler::api::auth::AuthOptions;
use gpuctl_scheduler::api::ServiceOptions;
use gpuctl_scheduler::raft::RaftOptions;
use gpuctl_scheduler::server::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::Request;

const LIMIT: Duration = Duration::from_secs(20);
const ADMIN: &str = "bootstrap-admin-secret-0123456789";

struct Ui {
    server: Server,
    control: ControlClient<Channel>,
    channel: Channel,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start() -> Ui {
    let dir = tempfile::tempdir().unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ui = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = ui.local_addr().unwrap();
    let url = format!("http://{}", grpc.local_addr().unwrap());
    let cfg = Config {
        id: 1,
        peers: Default::default(),
        data_dir: dir.path().to_path_buf(),
        raft: RaftOptions::default(),
        service: ServiceOptions {
            auth: AuthOptions::with_admin_token(ADMIN),
            ..Default::default()
        },
        controller: Default::default(),
        tls: None,
    };
    let mut server = Server::start(cfg, grpc, metrics).await.unwrap();
    server.serve_ui(ui, None).unwrap();
    assert!(server.wait_leader(LIMIT).await);
    let ch = Channel::from_shared(url).unwrap().connect().await.unwrap();
    Ui {
        server,
        control: ControlClient::new(ch.clone()),
        channel: ch,
        addr,
        _dir: dir,
    }
}

fn with<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// One request on its own connection: status, head (lowercased) and body.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: ui\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut out))
        .await
        .expect("the answer within the limit")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_string())
}

#[tokio::test]
async fn only_a_valid_token_opens_the_ui_and_a_revoked_one_closes_it() {
    let mut c = start().await;
    let a = c.addr;
    // Not signed in: the page redirects to the login form, the API answers 401.
    let (code, head, _) = call(a, "GET", "/", &[], "").await;
    assert_eq!(code, 303);
    assert!(head.contains("location: /login"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    let (code, _, body) = call(a, "GET", "/api/jobs", &[], "").await;
    assert_eq!(code, 401);
    assert!(body.contains("no token"), "{body}");
    let (code, _, body) = call(a, "GET", "/static/app.js", &[], "").await;
    assert_eq!(
        code, 303,
        "the script is for signed-in browsers only: {body}"
    );
    let (code, _, body) = call(a, "GET", "/login", &[], "").await;
    assert_eq!(code, 200);
    assert!(body.contains("name=\"token\""), "{body}");

    // A wrong token: the form again, saying why, and no cookie.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (code, head, body) = call(a, "POST", "/login", &form, "token=gpuctl_abc_0123456789").await;
    assert_eq!(code, 401);
    assert!(!head.contains("set-cookie"), "{head}");
    assert!(body.contains("id=\"login-error\""), "{body}");
    let cross = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("origin", "https://evil.example"),
    ];
    let (code, _, body) = call(a, "POST", "/login", &cross, &format!("token={ADMIN}")).await;
    assert_eq!(code, 403, "a login posted from another site: {body}");
    let (code, _, body) = call(a, "POST", "/login", &form, "token=").await;
    assert_eq!(code, 401);
    assert!(body.contains("paste a token"), "{body}");

    // A viewer's token: a session cookie scripts cannot read.
    c.control
        .create_user(with(
            ADMIN,
            pb::CreateUserRequest {
                name: "vera".into(),
                role: "viewer".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let t = c
        .control
        .create_token(with(
            ADMIN,
            pb::CreateTokenRequest {
                user: "vera".into(),
                description: "ui".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let (code, head, _) = call(a, "POST", "/login", &form, &format!("token={}", t.token)).await;
    assert_eq!(code, 303);
    let cookie_line = head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .expect("a session cookie");
    assert!(
        cookie_line.contains("httponly") && cookie_line.contains("samesite=strict"),
        "{cookie_line}"
    );
    let cookie = format!("gpuctl_session={}", t.token);
    let session = [("cookie", cookie.as_str())];
    let (code, _, body) = call(a, "GET", "/api/session", &session, "").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["user"].as_str(), v["role"].as_str()),
        (Some("vera"), Some("viewer"))
    );
    let (code, head, body) = call(a, "GET", "/", &session, "").await;
    assert_eq!(code, 200);
    assert!(
        head.contains("text/html") && body.contains("/static/app.js"),
        "{body}"
    );
    // Read-only.
    let (code, _, body) = call(a, "POST", "/api/jobs", &session, "{}").await;
    assert_eq!(code, 405, "{body}");

    // Revoked: the same cookie opens nothing.
    c.control
        .revoke_token(with(ADMIN, pb::RevokeTokenRequest { id: t.id.clone() }))
        .await
        .unwrap();
    let (code, _, body) = call(a, "GET", "/api/session", &session, "").await;
    assert_eq!(code, 401);
    assert!(body.contains("was revoked"), "{body}");
    let (code, head, _) = call(a, "GET", "/", &session, "").await;
    assert_eq!(code, 303);
    assert!(head.contains("location: /login"), "{head}");
    c.server.shutdown().await;
}

/// Read the event stream until `what` appears (bounded).
async fn read_until(feed: &mut tokio::net::TcpStream, seen: &mut String, what: &str) {
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(LIMIT, async {
        while !seen.contains(what) {
            let n = feed.read(&mut buf).await.unwrap();
            assert!(n > 0, "the feed ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    assert!(found.is_ok(), "no {what:?} on the feed: {seen}");
}

#[tokio::test]
async fn the_api_reads_the_state_and_the_feed_follows_its_changes() {
    let mut c = start().await;
    let a = c.addr;
    let bearer = format!("Bearer {ADMIN}");
    let auth = [("authorization", bearer.as_str())];

    // The live feed: a hello, then a change once something is applied.
    let mut feed = tokio::net::TcpStream::connect(a).await.unwrap();
    feed.write_all(
        format!("GET /api/events HTTP/1.1\r\nhost: ui\r\nauthorization: {bearer}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut seen = String::new();
    read_until(&mut feed, &mut seen, "event: hello").await;
    assert!(
        seen.to_lowercase()
            .contains("content-type: text/event-stream"),
        "{seen}"
    );

    // A node with one GPU: the first job takes it, the second waits.
    let node = gpuctl_testkit::node("n1")
        .gpus(1, gpuctl_testkit::A100)
        .build();
    let register = pb::RegisterRequest {
        name: "n1".into(),
        address: node.status.address,
        agent_endpoint: node.status.agent_endpoint,
        gpus: node
            .status
            .gpus
            .into_iter()
            .map(|g| pb::GpuDevice {
                uuid: g.uuid,
                index: g.index,
                model: g.model,
                memory_bytes: g.memory_bytes,
                nvlink_domain: g.nvlink_domain,
                healthy: g.healthy,
                xid: g.xid,
            })
            .collect(),
        cpu_milli: 8000,
        memory_bytes: 32 << 30,
        inventory: "test".into(),
        ..Default::default()
    };
    NodeServiceClient::new(c.channel.clone())
        .register(with(ADMIN, register))
        .await
        .unwrap();
    read_until(&mut feed, &mut seen, "event: change").await;
    for name in ["first", "second"] {
        let job = gpuctl_testkit::job(name).gpus(1.0).build();
        let req = pb::ApplyRequest {
            object_json: serde_json::to_string(&job).unwrap(),
            ..Default::default()
        };
        c.control.apply(with(ADMIN, req)).await.unwrap();
    }
    // The feed names the node whose GPU the first job took.
    read_until(&mut feed, &mut seen, "\"nodes\":[\"n1\"]").await;

    // The GPU's use and the job on it.
    let mut gpu = serde_json::Value::Null;
    for _ in 0..200 {
        let (code, _, body) = call(a, "GET", "/api/cluster", &auth, "").await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        gpu = v["nodes"][0].clone();
        if gpu["gpus"]["used"][0] == 1000 {
            assert_eq!(v["queues"][0]["name"], "default");
            assert_eq!(v["counts"]["jobsPending"], 1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The node's GPUs in columns: GPU 0 wholly used by task 0 of "first".
    assert_eq!(gpu["gpus"]["used"][0], 1000, "{gpu}");
    assert_eq!(gpu["jobs"], serde_json::json!(["first"]), "{gpu}");
    assert_eq!(
        gpu["gpus"]["tasks"],
        serde_json::json!([[0, 0, 0, 1000]]),
        "{gpu}"
    );
    assert!(gpu["gpus"]["models"][0][2].as_u64().unwrap() >= 1, "{gpu}");

    // The jobs, filtered by phase, and one on its own.
    let (code, _, body) = call(a, "GET", "/api/jobs?phase=Pending", &auth, "").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["jobs"][0]["name"], "second");
    let (_, _, body) = call(a, "GET", "/api/jobs", &auth, "").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 2, "{v}");
    assert_eq!(v["jobs"][0]["name"], "second", "newest first: {v}");
    let (code, _, body) = call(a, "GET", "/api/jobs/second", &auth, "").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"]["phase"], "Pending");
    assert!(
        v["status"]["waiting"].is_string(),
        "a pending job says why: {v}"
    );
    let (code, _, body) = call(a, "GET", "/api/jobs/nope", &auth, "").await;
    assert_eq!(code, 404);
    assert!(body.contains("job \\\"nope\\\" not found"), "{body}");

    // The control plane, and a path that does not exist.
    let (code, _, body) = call(a, "GET", "/api/control", &auth, "").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["id"].as_u64(), v["leader"].as_u64()), (Some(1), Some(1)));
    let (code, _, body) = call(a, "GET", "/api/nothing", &auth, "").await;
    assert_eq!(code, 404);
    assert!(body.contains("no such API path /api/nothing"), "{body}");
    drop(feed);
    c.server.shutdown().await;
}
