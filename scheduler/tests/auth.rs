//! Identity at the API edge, in process on 127.0.0.1:0 with authentication
//! on: missing, garbled, unknown, expired and revoked tokens; what users,
//! team leads, viewers, nodes and join tokens may not do. Every refusal is
//! checked for its exact message and for leaving the state as it was.

use std::time::{Duration, Instant};

use gpuctl_proto::v1 as pb;
use gpuctl_proto::v1::control_client::ControlClient;
use gpuctl_proto::v1::node_service_client::NodeServiceClient;
use gpuctl_scheduler::api::auth::AuthOptions;
use gpuctl_scheduler::api::ServiceOptions;
use gpuctl_scheduler::controllers::ControllerOptions;
use gpuctl_scheduler::raft::RaftOptions;
use gpuctl_scheduler::server::{Config, Server};
use tonic::transport::Channel;
use tonic::{Code, Request};

const LIMIT: Duration = Duration::from_secs(20);
const ADMIN: &str = "bootstrap-admin-secret-0123456789";

struct Cluster {
    server: Server,
    control: ControlClient<Channel>,
    nodes: NodeServiceClient<Channel>,
    dir: tempfile::TempDir,
}

async fn start() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", grpc.local_addr().unwrap());
    let cfg = Config {
        id: 1,
        peers: Default::default(),
        data_dir: dir.path().to_path_buf(),
        raft: RaftOptions::default(),
        service: ServiceOptions {
            auth: AuthOptions::with_admin_token(ADMIN),
            ..Default::default()
        },
        controller: ControllerOptions {
            node_timeout: Duration::from_secs(120),
            resync: Duration::from_millis(100),
        },
        tls: None,
    };
    let server = Server::start(cfg, grpc, metrics).await.unwrap();
    assert!(
        server.wait_leader(LIMIT).await,
        "single voter became leader"
    );
    let ch = Channel::from_shared(addr).unwrap().connect().await.unwrap();
    Cluster {
        server,
        control: ControlClient::new(ch.clone()),
        nodes: NodeServiceClient::new(ch),
        dir,
    }
}

/// `msg` with `authorization: Bearer <token>` (none when `token` is empty).
fn with<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if !token.is_empty() {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    r
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, message: &str) {
    let e = r.expect_err("the call is refused");
    assert_eq!((e.code(), e.message()), (code, message));
}

/// Create user `name` through `c` (as the bootstrap admin), and a token of
/// theirs.
async fn user_on(
    c: &mut ControlClient<Channel>,
    name: &str,
    team: &str,
    role: &str,
    lead: bool,
) -> pb::CreateTokenResponse {
    c.create_user(with(
        ADMIN,
        pb::CreateUserRequest {
            name: name.into(),
            team: team.into(),
            role: role.into(),
            team_lead: lead,
            uid: Some(1000),
            allow_root: false,
        },
    ))
    .await
    .unwrap();
    c.create_token(with(
        ADMIN,
        pb::CreateTokenRequest {
            user: name.into(),
            ttl_seconds: 0,
            kind: String::new(),
            description: "test".into(),
        },
    ))
    .await
    .unwrap()
    .into_inner()
}

impl Cluster {
    async fn user(&mut self, name: &str, team: &str, role: &str, lead: bool) -> String {
        user_on(&mut self.control, name, team, role, lead)
            .await
            .token
    }

    async fn token(&mut self, user: &str, ttl_seconds: u64) -> pb::CreateTokenResponse {
        self.control
            .create_token(with(
                ADMIN,
                pb::CreateTokenRequest {
                    user: user.into(),
                    ttl_seconds,
                    kind: String::new(),
                    description: "test".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// Every object of `kind`, as the admin reads it.
    async fn all(&mut self, kind: &str) -> Vec<String> {
        self.control
            .get(with(
                ADMIN,
                pb::GetRequest {
                    kind: kind.into(),
                    name: String::new(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .objects_json
    }

    async fn apply(&mut self, token: &str, json: String) -> Result<String, tonic::Status> {
        self.control
            .apply(with(
                token,
                pb::ApplyRequest {
                    object_json: json,
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner().object_json)
    }

    /// Wait (bounded) until every job's tasks are placed, so that reads
    /// before and after a refused call compare a state at rest.
    async fn settled(&mut self) {
        let until = Instant::now() + LIMIT;
        loop {
            let placed = self.all("jobs").await.iter().all(|j| {
                let j: serde_json::Value = serde_json::from_str(j).unwrap();
                let tasks = j["status"]["tasks"].as_array().cloned().unwrap_or_default();
                !tasks.is_empty() && tasks.iter().all(|t| t["node"].is_string())
            });
            if placed {
                return;
            }
            assert!(Instant::now() < until, "jobs were never placed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn join(&mut self, join_token: &str, node: &str) -> String {
        self.nodes
            .join(with(join_token, pb::JoinRequest { node: node.into() }))
            .await
            .unwrap()
            .into_inner()
            .token
    }

    async fn join_token(&mut self) -> String {
        self.control
            .create_token(with(
                ADMIN,
                pb::CreateTokenRequest {
                    kind: "join".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .token
    }
}

fn job_json(name: &str, queue: Option<&str>) -> String {
    let mut j = gpuctl_testkit::job(name);
    if let Some(q) = queue {
        j = j.queue(q);
    }
    serde_json::to_string(&j.build()).unwrap()
}

fn register(name: &str) -> pb::RegisterRequest {
    let n = gpuctl_testkit::node(name)
        .gpus(2, gpuctl_testkit::A100)
        .cpu_milli(32_000)
        .memory_bytes(128 << 30)
        .build();
    pb::RegisterRequest {
        name: n.metadata.name,
        address: n.status.address,
        agent_endpoint: n.status.agent_endpoint,
        gpus: n
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
        cpu_milli: n.status.cpu_milli,
        memory_bytes: n.status.memory_bytes,
        inventory: n.status.inventory,
        labels: Default::default(),
        cordon_after_unhealthy_gpus: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_are_unauthenticated_and_change_nothing() {
    let mut c = start().await;
    let alice = c.user("alice", "nlp", "user", false).await;
    let before = c.all("users").await;

    expect_err(
        c.apply("", job_json("j", None)).await,
        Code::Unauthenticated,
        "no token: run `gpuctl login` with a token from your admin, or set GPUCTL_TOKEN",
    );
    expect_err(
        c.apply("not-a-token", job_json("j", None)).await,
        Code::Unauthenticated,
        "the token does not look like a gpuctl token (gpuctl_<id>_<secret>); check GPUCTL_TOKEN or run `gpuctl login` again",
    );
    let wrong = gpuctl_security::token::generate();
    expect_err(
        c.apply(&wrong.token, job_json("j", None)).await,
        Code::Unauthenticated,
        &format!("token gpuctl_{} is not valid in this cluster; check GPUCTL_TOKEN or run `gpuctl login` with a token from your admin", wrong.id),
    );
    // A real id with a forged secret is refused the same way.
    let id = gpuctl_security::token::id_of(&alice).unwrap().to_string();
    let forged = format!("gpuctl_{id}_{}", "0".repeat(40));
    expect_err(
        c.apply(&forged, job_json("j", None)).await,
        Code::Unauthenticated,
        &format!("token gpuctl_{id} is not valid in this cluster; check GPUCTL_TOKEN or run `gpuctl login` with a token from your admin"),
    );
    let r = c
        .control
        .create_user(with(
            &wrong.token,
            pb::CreateUserRequest {
                name: "mallory".into(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(r.unwrap_err().code(), Code::Unauthenticated);
    assert!(c.all("jobs").await.is_empty());
    assert_eq!(c.all("users").await, before);

    // The refusals are in the audit log, as denied.
    let audit = c
        .control
        .audit(with(ADMIN, pb::AuditRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .entries_json;
    let denied = audit
        .iter()
        .filter(|e| e.contains("\"result\":\"denied\"") && e.contains("\"verb\":\"apply\""))
        .count();
    assert_eq!(denied, 4, "{audit:#?}");
    assert!(audit
        .iter()
        .any(|e| e.contains("\"subject\":\"admin\"") && e.contains("\"name\":\"alice\"")));
    c.server.shutdown().await;
    drop(c.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tokens_stop_working() {
    let mut c = start().await;
    c.user("alice", "nlp", "user", false).await;
    let short = c.token("alice", 1).await;
    let who = c
        .control
        .who_am_i(with(&short.token, pb::WhoAmIRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (who.kind.as_str(), who.name.as_str(), who.role.as_str()),
        ("user", "alice", "user")
    );
    assert_eq!(who.token_id, short.id);
    // Wait out the one-second lifetime (bounded).
    let until = Instant::now() + Duration::from_secs(5);
    let err = loop {
        match c
            .control
            .who_am_i(with(&short.token, pb::WhoAmIRequest {}))
            .await
        {
            Err(e) => break e,
            Ok(_) => {
                assert!(Instant::now() < until, "the token never expired");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        err.message(),
        format!(
            "token gpuctl_{} expired at {}; ask an admin for a new one (gpuctl admin create-token)",
            short.id,
            gpuctl_common::format_time(short.expires_unix_ms)
        )
    );

    let t = c.token("alice", 0).await;
    c.control
        .revoke_token(with(&t.token, pb::RevokeTokenRequest { id: t.id.clone() }))
        .await
        .unwrap();
    let before = c.all("tokens").await;
    expect_err(
        c.apply(&t.token, job_json("j", None)).await,
        Code::Unauthenticated,
        &format!(
            "token gpuctl_{} was revoked; ask an admin for a new one (gpuctl admin create-token)",
            t.id
        ),
    );
    assert_eq!(c.all("tokens").await, before);
    assert!(before.iter().all(|t| !t.contains("hash")), "{before:?}");
    c.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_stop_only_their_own_objects_and_team_leads_their_teams() {
    let mut c = start().await;
    let alice = c.user("alice", "nlp", "user", false).await;
    let bob = c.user("bob", "vision", "user", false).await;
    let carol = c.user("carol", "nlp", "user", true).await;
    let viewer = c.user("vera", "", "viewer", false).await;
    c.nodes.register(with(ADMIN, register("n1"))).await.unwrap();
    let created = c.apply(&alice, job_json("train", None)).await.unwrap();
    let job: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(job["metadata"]["owner"], "alice");
    // A user cannot claim someone else's ownership.
    let mut forged: serde_json::Value = serde_json::from_str(&job_json("mine", None)).unwrap();
    forged["metadata"]["owner"] = "carol".into();
    let stored = c.apply(&bob, forged.to_string()).await.unwrap();
    assert!(stored.contains("\"owner\":\"bob\""), "{stored}");

    c.settled().await;
    let before = c.all("jobs").await;
    let cancel = |name: &str| pb::CancelRequest {
        kind: "job".into(),
        name: name.into(),
        action: String::new(),
    };
    expect_err(
        c.control.cancel(with(&bob, cancel("train"))).await,
        Code::PermissionDenied,
        "user \"bob\" may not cancel job \"train\" (owner \"alice\")",
    );
    expect_err(
        c.control
            .delete(with(
                &bob,
                pb::DeleteRequest {
                    kind: "job".into(),
                    name: "train".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "user \"bob\" may not delete job \"train\" (owner \"alice\")",
    );
    expect_err(
        c.apply(&viewer, job_json("peek", None)).await,
        Code::PermissionDenied,
        "user \"vera\" is a viewer and may not apply",
    );
    expect_err(
        c.control
            .cordon(with(
                &alice,
                pb::CordonRequest {
                    node: "n1".into(),
                    cordon: true,
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
        "user \"alice\" may not cordon node \"n1\": Cordon is for admins",
    );
    // The last step of `gpuctl drain` (evict) is a cordon too: admins only.
    expect_err(
        c.control
            .cordon(with(
                &alice,
                pb::CordonRequest {
                    node: "n1".into(),
                    cordon: true,
                    evict: true,
                    reason: "drain".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
        "user \"alice\" may not cordon node \"n1\": Cordon is for admins",
    );
    assert_eq!(c.all("jobs").await, before);
    assert!(!c.all("nodes").await[0].contains("unschedulable\":true"));

    // The team lead of alice's team may.
    let r = c
        .control
        .cancel(with(&carol, cancel("train")))
        .await
        .unwrap()
        .into_inner();
    assert!(r.object_json.contains("Cancelled"), "{}", r.object_json);
    c.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_submit_only_to_queues_their_team_may_use() {
    let mut c = start().await;
    let alice = c.user("alice", "nlp", "user", false).await;
    let bob = c.user("bob", "vision", "user", false).await;
    c.nodes.register(with(ADMIN, register("n1"))).await.unwrap();
    let queue = serde_json::json!({
        "apiVersion": "gpuctl.io/v1", "kind": "Queue",
        "metadata": {"name": "nlp"}, "spec": {"teams": ["nlp"]}
    });
    expect_err(
        c.apply(&alice, queue.to_string()).await,
        Code::PermissionDenied,
        "user \"alice\" may not apply queue \"nlp\": only admins configure queues",
    );
    c.apply(ADMIN, queue.to_string()).await.unwrap();
    let before = c.all("jobs").await;
    expect_err(
        c.apply(&bob, job_json("b1", Some("nlp"))).await,
        Code::PermissionDenied,
        "user \"bob\" (team \"vision\") may not submit to queue \"nlp\" (teams: nlp)",
    );
    assert_eq!(c.all("jobs").await, before);
    c.apply(&alice, job_json("a1", Some("nlp"))).await.unwrap();
    c.apply(&bob, job_json("b2", None)).await.unwrap();
    assert_eq!(c.all("jobs").await.len(), 2);
    c.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_act_only_as_themselves_and_join_tokens_only_join() {
    let mut c = start().await;
    let alice = c.user("alice", "nlp", "user", false).await;
    let join = c.join_token().await;
    expect_err(
        c.control
            .get(with(
                &join,
                pb::GetRequest {
                    kind: "jobs".into(),
                    name: String::new(),
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
        &format!(
            "token gpuctl_{} is a join token: it is good only for a node daemon's join (NodeService.Join), not for reads",
            gpuctl_security::token::id_of(&join).unwrap()
        ),
    );
    expect_err(
        c.nodes.register(with(&join, register("n1"))).await,
        Code::PermissionDenied,
        &format!(
            "token gpuctl_{} is a join token: it is good only for a node daemon's join (NodeService.Join), not for the node service",
            gpuctl_security::token::id_of(&join).unwrap()
        ),
    );
    let n1 = c.join(&join, "n1").await;
    // The join token stays good until it expires: a second node joins.
    let n2 = c.join(&join, "n2").await;
    let who = c
        .control
        .who_am_i(with(&n2, pb::WhoAmIRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((who.kind.as_str(), who.name.as_str()), ("node", "n2"));

    c.nodes.register(with(&n1, register("n1"))).await.unwrap();
    expect_err(
        c.nodes.register(with(&n2, register("n1"))).await,
        Code::PermissionDenied,
        "node \"n2\" may not register as node \"n1\"",
    );
    expect_err(
        c.nodes
            .watch_assignments(with(&n2, pb::WatchAssignmentsRequest { node: "n1".into() }))
            .await,
        Code::PermissionDenied,
        "node \"n2\" may not watch assignments as node \"n1\"",
    );
    expect_err(
        c.apply(&n1, job_json("j", None)).await,
        Code::PermissionDenied,
        "node \"n1\" may only call the node service as itself, not Apply",
    );

    c.apply(&alice, job_json("train", None)).await.unwrap();
    // Wait (bounded) for the job's task to be bound to n1.
    let mut stream = c
        .nodes
        .watch_assignments(with(&n1, pb::WatchAssignmentsRequest { node: "n1".into() }))
        .await
        .unwrap()
        .into_inner();
    let task = tokio::time::timeout(LIMIT, async {
        loop {
            let a = stream.message().await.unwrap().expect("stream open");
            if let Some(t) = a.tasks.into_iter().find(|t| t.job == "train") {
                return t;
            }
        }
    })
    .await
    .expect("the task is assigned to n1");
    let owner = task.owner.expect("the task names its owner");
    assert_eq!(
        (owner.user.as_str(), owner.uid, owner.allow_root),
        ("alice", Some(1000), false)
    );

    let before = c.all("jobs").await;
    let report = |node: &str| pb::ReportTaskRequest {
        node: node.into(),
        job: "train".into(),
        task_index: 0,
        attempt: task.attempt,
        phase: pb::TaskPhase::Failed.into(),
        exit_code: 1,
        ..Default::default()
    };
    expect_err(
        c.nodes.report_task(with(&n2, report("n2"))).await,
        Code::PermissionDenied,
        "node \"n2\" may not report task train/0, which runs on node \"n1\"",
    );
    expect_err(
        c.nodes.report_task(with(&n2, report("n1"))).await,
        Code::PermissionDenied,
        "node \"n2\" may not report for node \"n1\"",
    );
    assert_eq!(c.all("jobs").await, before);
    // Refused node calls are in the audit log (accepted ones are not: noise).
    let audit = c
        .control
        .audit(with(
            ADMIN,
            pb::AuditRequest {
                limit: 0,
                subject: "n2".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .entries_json;
    let verbs: Vec<String> = audit
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            format!("{} {}/{} {}", v["verb"], v["kind"], v["name"], v["result"])
        })
        .collect();
    assert_eq!(
        verbs,
        [
            "\"register\" \"node\"/\"n1\" \"denied\"",
            "\"report\" \"task\"/\"train/0\" \"denied\"",
            "\"report\" \"task\"/\"train/0\" \"denied\"",
        ]
    );
    c.server.shutdown().await;
}

/// Three replicas with authentication on: `(servers, clients)` by id order.
async fn three(root: &std::path::Path) -> (Vec<Server>, Vec<ControlClient<Channel>>) {
    let mut listeners = Vec::new();
    let mut peers = std::collections::BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, format!("http://{}", l.local_addr().unwrap()));
        listeners.push((id, l));
    }
    let mut servers = Vec::new();
    for (id, l) in listeners {
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = Config {
            id,
            peers: peers.clone(),
            data_dir: root.join(format!("r{id}")),
            raft: RaftOptions {
                tick: Duration::from_millis(50),
                ..Default::default()
            },
            service: ServiceOptions {
                auth: AuthOptions::with_admin_token(ADMIN),
                ..Default::default()
            },
            controller: ControllerOptions::default(),
            tls: None,
        };
        servers.push(Server::start(cfg, l, metrics).await.unwrap());
    }
    let mut clients = Vec::new();
    for (s, url) in servers.iter().zip(peers.values()) {
        assert!(s.wait_leader(LIMIT).await, "a leader is elected");
        let ch = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .timeout(LIMIT)
            .connect_lazy();
        clients.push(ControlClient::new(ch));
    }
    (servers, clients)
}

/// The audit entries replica `c` recorded, as JSON strings.
async fn audit_of(c: &mut ControlClient<Channel>) -> Vec<String> {
    c.audit(with(ADMIN, pb::AuditRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .entries_json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_authenticate_fresh_tokens_refuse_before_forwarding_and_audit_what_they_received()
{
    let root = tempfile::tempdir().unwrap();
    let (servers, mut clients) = three(root.path()).await;
    let leader = servers[0].raft.shared.status().leader_id as usize - 1;
    let f1 = (leader + 1) % 3;
    let f2 = (leader + 2) % 3;

    // Created through one follower (forwarded to the leader) ...
    let t = user_on(&mut clients[f1], "alice", "nlp", "", false).await;
    // ... and good at once on the other, which may not have applied it yet.
    let who = clients[f2]
        .who_am_i(with(&t.token, pb::WhoAmIRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(who.name, "alice");

    // A refused call on a follower is refused there and recorded there only.
    let before = clients[leader]
        .get(with(
            ADMIN,
            pb::GetRequest {
                kind: "users".into(),
                name: String::new(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .objects_json;
    expect_err(
        clients[f2]
            .create_user(with(
                &t.token,
                pb::CreateUserRequest {
                    name: "mallory".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
        "user \"alice\" may not create users: CreateUser is for admins",
    );
    let after = clients[leader]
        .get(with(
            ADMIN,
            pb::GetRequest {
                kind: "users".into(),
                name: String::new(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .objects_json;
    assert_eq!(before, after);
    let denied = |entries: &[String]| {
        entries
            .iter()
            .filter(|e| e.contains("\"name\":\"mallory\"") && e.contains("\"result\":\"denied\""))
            .count()
    };
    assert_eq!(denied(&audit_of(&mut clients[f2]).await), 1);
    assert_eq!(denied(&audit_of(&mut clients[leader]).await), 0);
    assert!(audit_of(&mut clients[f1])
        .await
        .iter()
        .any(|e| e.contains("\"name\":\"alice\"") && e.contains("\"result\":\"ok\"")));
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoints_key_hashes_reach_the_gateway_and_admins_only() {
    let mut c = start().await;
    let alice = c.user("alice", "nlp", "user", false).await;
    let gateway = c.user("gw", "", "gateway", false).await;
    c.nodes.register(with(ADMIN, register("n1"))).await.unwrap();
    let secret = serde_json::json!({
        "apiVersion": "gpuctl.io/v1", "kind": "Secret",
        "metadata": {"name": "keys"}, "stringData": {"ci": "key-1"}
    });
    let endpoint = serde_json::json!({
        "apiVersion": "gpuctl.io/v1", "kind": "Endpoint",
        "metadata": {"name": "private"},
        "spec": {"server": {"command": ["srv"]}, "auth": {"apiKeySecret": {"name": "keys"}}}
    });
    // The key's secret must exist first.
    let e = c.apply(&alice, endpoint.to_string()).await.unwrap_err();
    assert!(
        e.message()
            .contains("spec.auth.apiKeySecret: secret \"keys\" does not exist"),
        "{}",
        e.message()
    );
    c.apply(&alice, secret.to_string()).await.unwrap();
    c.apply(&alice, endpoint.to_string()).await.unwrap();
    let hashes = |token: String| {
        let mut control = c.control.clone();
        async move {
            let r = control
                .get(with(
                    &token,
                    pb::GetRequest {
                        kind: "endpoints".into(),
                        name: "private".into(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            let v: serde_json::Value = serde_json::from_str(&r.objects_json[0]).unwrap();
            v["status"]["apiKeyHashes"].clone()
        }
    };
    let want = serde_json::json!([gpuctl_security::token::hash("key-1")]);
    assert_eq!(hashes(gateway).await, want);
    assert_eq!(hashes(ADMIN.to_string()).await, want);
    assert_eq!(hashes(alice).await, serde_json::Value::Null);
    c.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_suspended_and_resumed_by_whoever_may_cancel_them() {
    let mut c = start().await;
    let alice = c.user("alice", "nlp", "user", false).await;
    let bob = c.user("bob", "vision", "user", false).await;
    let carol = c.user("carol", "nlp", "user", true).await;
    let wf = serde_json::json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "approve"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {"name": "main", "steps": [[{"name": "wait", "template": "wait"}]]},
                {"name": "wait", "suspend": {}}
            ]
        }
    });
    c.apply(&alice, wf.to_string()).await.unwrap();
    let req = |action: &str, kind: &str| pb::CancelRequest {
        kind: kind.into(),
        name: "approve".into(),
        action: action.into(),
    };
    expect_err(
        c.control
            .cancel(with(&bob, req("suspend", "workflow")))
            .await,
        Code::PermissionDenied,
        "user \"bob\" may not suspend workflow \"approve\" (owner \"alice\")",
    );
    expect_err(
        c.control
            .cancel(with(&bob, req("resume", "workflow")))
            .await,
        Code::PermissionDenied,
        "user \"bob\" may not resume workflow \"approve\" (owner \"alice\")",
    );
    let r = c
        .control
        .cancel(with(&alice, req("suspend", "workflow")))
        .await;
    let shown = r.unwrap().into_inner().object_json;
    assert!(shown.contains("\"suspended\":true"), "{shown}");
    // A team lead may resume the workflows of the team; the waiting step ends.
    let r = c
        .control
        .cancel(with(&carol, req("resume", "workflow")))
        .await;
    let shown = r.unwrap().into_inner().object_json;
    assert!(shown.contains("\"phase\":\"Succeeded\""), "{shown}");
    expect_err(
        c.control.cancel(with(&alice, req("suspend", "job"))).await,
        Code::InvalidArgument,
        "only workflows can be suspended or resumed; job \"approve\" is not a workflow",
    );
    expect_err(
        c.control
            .cancel(with(&alice, req("pause", "workflow")))
            .await,
        Code::InvalidArgument,
        "action \"pause\": use cancel, suspend or resume",
    );
    c.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_through_a_follower_is_authorized_checked_and_audited_on_the_leader() {
    let root = tempfile::tempdir().unwrap();
    let (servers, mut clients) = three(root.path()).await;
    let leader = servers[0].raft.shared.status().leader_id as usize - 1;
    let f = (leader + 1) % 3;
    let vera = user_on(&mut clients[leader], "vera", "", "viewer", false)
        .await
        .token;
    // A node, registered with the leader, so that jobs could run.
    let url = servers[0].raft.shared.members.borrow()[&(leader as u64 + 1)].clone();
    let ch = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .timeout(LIMIT)
        .connect_lazy();
    NodeServiceClient::new(ch)
        .register(with(ADMIN, register("n1")))
        .await
        .unwrap();
    let apply = |token: &str, name: &str| {
        with(
            token,
            pb::ApplyRequest {
                object_json: job_json(name, None),
                ..Default::default()
            },
        )
    };
    // Accepted through the follower, answered with the stored job.
    let r = clients[f]
        .apply(apply(ADMIN, "through-follower"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.object_json.contains("\"through-follower\""), "{r:?}");
    // Refused with the same words as on the leader itself.
    expect_err(
        clients[f].apply(apply(&vera, "refused")).await,
        Code::PermissionDenied,
        "user \"vera\" is a viewer and may not apply",
    );
    // A name taken is checked on current state wherever it arrives.
    let e = clients[f]
        .apply(apply(ADMIN, "through-follower"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let applies = |entries: &[String], result: &str| {
        entries
            .iter()
            .filter(|e| e.contains("\"verb\":\"apply\"") && e.contains(result))
            .count()
    };
    let on_leader = audit_of(&mut clients[leader]).await;
    assert_eq!(
        applies(&on_leader, "\"result\":\"ok\""),
        1,
        "{on_leader:#?}"
    );
    assert_eq!(applies(&on_leader, "\"result\":\"denied\""), 1);
    let on_follower = audit_of(&mut clients[f]).await;
    assert_eq!(applies(&on_follower, ""), 0, "{on_follower:#?}");
    for s in servers {
        s.shutdown().await;
    }
}
