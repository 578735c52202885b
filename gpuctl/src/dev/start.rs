//! Bringing the cluster up: the scheduler replicas first, then the nodes
//! (once every replica wrote its ready file), then the gateway (once the
//! scheduler lists every node Ready); then `cluster.json` and the summary
//! that `gpuctl dev` prints.

use std::path::Path;
use std::time::Duration;

use gpuctl_common::api::NodePhase;
use gpuctl_proto::v1::GetRequest;
use serde_json::{json, Value};

use crate::client;
use crate::config::{self, Context};
use crate::dev::identity;
use crate::dev::plan::{Binaries, Plan};
use crate::dev::supervisor::Supervisor;
use crate::duration::format_delay;
use crate::error::{Error, Result};

/// How long the nodes may take to show up Ready in the scheduler.
const NODES_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What start-up learned.
pub(super) struct Started {
    /// Every replica's gRPC URL, by id order.
    pub(super) server_urls: Vec<String>,
    /// Each replica's ready file plus its data dir, as in `cluster.json`.
    pub(super) schedulers: Vec<Value>,
    pub(super) nodes: Vec<Value>,
    /// The gateway's ready file (`http`, `url`, `metrics`, `pid`), when it runs.
    pub(super) gateway: Option<Value>,
    /// The token of the admin user named after whoever runs `gpuctl dev`.
    pub(super) user_token: String,
    pub(super) user_name: String,
}

impl Started {
    pub(super) fn server_list(&self) -> String {
        self.server_urls.join(",")
    }
}

pub(super) fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("?")
}

/// Write `DIR/cluster.json` (atomically): every process with its addresses
/// and pid, for scripts and tests.
pub(super) fn write_cluster_file(plan: &Plan, started: &Started) -> Result<()> {
    let cluster = json!({
        "schedulers": started.schedulers,
        "nodes": started.nodes,
        "gateway": started.gateway,
        "stateDir": plan.state_dir,
    });
    config::write_atomic(
        &plan.state_dir.join("cluster.json"),
        serde_json::to_string_pretty(&cluster)
            .expect("json")
            .as_bytes(),
    )
}

/// A replica's ready file as `cluster.json` lists it.
pub(super) fn scheduler_entry(plan: &Plan, id: u64, ready: &Value) -> Value {
    let mut v = ready.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), json!(id));
        o.insert("dataDir".into(), json!(plan.scheduler_dir(id)));
    }
    v
}

pub(super) async fn start(
    sup: &mut Supervisor,
    plan: &Plan,
    bins: &Binaries,
    admin_token: &str,
) -> Result<Started> {
    let logs = plan.logs_dir();
    // Start every replica before waiting: none is ready before a majority
    // is up to elect a leader.
    let mut idxs = Vec::new();
    for id in plan.scheduler_ids() {
        let idx = sup.spawn(
            &format!("gpu-scheduler {id}"),
            &bins.scheduler,
            &plan.scheduler_args(id),
            plan.scheduler_log(id),
        )?;
        idxs.push((id, idx));
    }
    let mut schedulers = Vec::new();
    let mut server_urls = Vec::new();
    for (id, idx) in idxs {
        let ready = sup.wait_ready(idx, &plan.scheduler_ready(id)).await?;
        let grpc = field(&ready, "grpc");
        let url = config::normalize_url(grpc).map_err(|_| {
            Error::Other(format!(
                "{} has no usable \"grpc\" address: {ready}",
                plan.scheduler_ready(id).display()
            ))
        })?;
        let url = gpuctl_security::tls::url(&url, !plan.insecure);
        server_urls.push(url);
        schedulers.push(scheduler_entry(plan, id, &ready));
    }
    let server_list = server_urls.join(",");
    let mut admin = identity::admin_conn(&server_urls, admin_token)?;
    if !plan.no_auth {
        identity::ensure_join_token(plan, &mut admin).await?;
    }

    let mut idxs = Vec::new();
    for i in 1..=plan.nodes {
        let idx = sup.spawn(
            &Plan::node_name(i),
            &bins.node,
            &plan.node_args(i, &server_list),
            logs.join(format!("node-{i}.log")),
        )?;
        idxs.push((i, idx));
    }
    let mut nodes = Vec::new();
    for (i, idx) in idxs {
        nodes.push(sup.wait_ready(idx, &plan.node_ready(i)).await?);
    }

    wait_for_nodes(sup, plan, &mut admin).await?;
    let gateway = match &bins.gateway {
        Some(bin) => {
            if !plan.no_auth {
                identity::ensure_user_token(
                    &mut admin,
                    &plan.gateway_token_file(),
                    identity::gateway_user(),
                    "gpuctl dev gateway",
                )
                .await?;
            }
            let idx = sup.spawn(
                "gpu-gateway",
                bin,
                &plan.gateway_args(&server_list),
                logs.join("gateway.log"),
            )?;
            Some(sup.wait_ready(idx, &plan.gateway_ready()).await?)
        }
        None => None,
    };
    let me = identity::local_user();
    let user_name = me.name.clone();
    // Without authentication no token is needed (nor would one say who calls).
    let user_token = if plan.no_auth {
        String::new()
    } else {
        identity::ensure_user_token(&mut admin, &plan.user_token_file(), me, "gpuctl dev").await?
    };
    Ok(Started {
        server_urls,
        schedulers,
        nodes,
        gateway,
        user_token,
        user_name,
    })
}

/// Wait until the scheduler lists every node Ready: a node daemon's ready
/// file says it listens, not that its registration was committed.
async fn wait_for_nodes(sup: &Supervisor, plan: &Plan, conn: &mut client::Conn) -> Result<()> {
    let logs = plan.logs_dir();
    let want: Vec<String> = (1..=plan.nodes).map(Plan::node_name).collect();
    let deadline = tokio::time::Instant::now() + NODES_READY_TIMEOUT;
    let mut missing = want.clone();
    loop {
        sup.check_alive()?;
        let req = GetRequest {
            kind: "nodes".into(),
            name: String::new(),
            ..Default::default()
        };
        if let Ok(resp) = conn
            .call(|mut c| {
                let req = req.clone();
                async move { c.get(req).await }
            })
            .await
        {
            let ready: Vec<String> = resp
                .into_inner()
                .objects_json
                .iter()
                .filter_map(|j| serde_json::from_str::<gpuctl_common::api::Node>(j).ok())
                .filter(|n| n.status.phase == NodePhase::Ready)
                .map(|n| n.metadata.name)
                .collect();
            missing = want
                .iter()
                .filter(|w| !ready.contains(w))
                .cloned()
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Other(format!(
                "the scheduler did not list {} as Ready within {}s; see the logs in {}",
                missing.join(", "),
                NODES_READY_TIMEOUT.as_secs(),
                logs.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) fn remove_stale_ready_files(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".ready.json") {
            std::fs::remove_file(e.path())
                .map_err(|err| Error::io(format!("cannot remove {}", e.path().display()), err))?;
        }
    }
    Ok(())
}

pub(super) fn remove_context_if_ours(config_dir: &Path, ours: &Context) {
    if let Ok(Some(ctx)) = config::read_context(config_dir) {
        if ctx == *ours {
            let _ = std::fs::remove_file(config_dir.join(config::CONTEXT_FILE));
        }
    }
}

/// What `gpuctl dev` prints once the cluster is up.
pub(super) fn summary(plan: &Plan, s: &Started, ctx_path: Option<&Path>) -> String {
    // Every process's /metrics speaks TLS when the cluster does.
    let url = |a: &str| format!("{}://{a}", plan.scheme());
    let agent = url;
    let mut o = String::from("\ngpuctl dev: cluster is up\n\n");
    for (i, sch) in s.schedulers.iter().enumerate() {
        let label = format!("scheduler {}", i + 1);
        o.push_str(&format!(
            "  {label:<16} gRPC {}   metrics {}/metrics   pid {}\n",
            s.server_urls[i],
            url(field(sch, "metrics")),
            sch.get("pid").map_or("?".into(), |p| p.to_string())
        ));
    }
    for (i, sch) in s.schedulers.iter().enumerate() {
        if let Some(ui) = sch.get("ui").and_then(Value::as_str) {
            let who = if plan.no_auth {
                "no sign-in (--no-auth)"
            } else {
                "sign in with the admin token"
            };
            let label = if s.schedulers.len() > 1 {
                format!("web UI {}", i + 1)
            } else {
                "web UI".to_string()
            };
            o.push_str(&format!("  {label:<16} {ui}   ({who})\n"));
        }
    }
    for n in &s.nodes {
        o.push_str(&format!(
            "  {:<16} agent {}   metrics {}/metrics   pid {}   GPUs {} ({})\n",
            field(n, "name"),
            agent(field(n, "agent")),
            url(field(n, "metrics")),
            n.get("pid").map_or("?".into(), |p| p.to_string()),
            plan.gpus.join(" + "),
            field(n, "inventory"),
        ));
    }
    if let Some(g) = &s.gateway {
        o.push_str(&format!(
            "  {:<16} {}/v2/models/ENDPOINT/infer   metrics {}   pid {}\n",
            "gateway",
            field(g, "url"),
            field(g, "metrics"),
            g.get("pid").map_or("?".into(), |p| p.to_string()),
        ));
        if let Some(grpc) = g.get("grpc").and_then(|v| v.as_str()) {
            o.push_str(&format!(
                "  {:<16} {grpc} (V2 gRPC, inference.GRPCInferenceService)\n",
                "gateway gRPC"
            ));
        }
    }
    o.push_str(&format!(
        "  state dir        {}\n",
        plan.state_dir.display()
    ));
    o.push_str(&format!(
        "  logs             {}/*.log\n",
        plan.logs_dir().display()
    ));
    o.push_str(&format!(
        "  cluster file     {}\n",
        plan.state_dir.join("cluster.json").display()
    ));
    if plan.no_auth {
        o.push_str("  authentication   off (--no-auth): every caller is an admin\n");
    } else {
        o.push_str(&format!(
        "  admin token      {} (bootstrap admin; you are user {:?}, an admin, in the context)\n",
        plan.admin_token_file().display(),
        s.user_name
    ));
    }
    match ctx_path {
        Some(p) => o.push_str(&format!(
            "  context          {} (gpuctl commands now talk to this cluster)\n",
            p.display()
        )),
        None => o.push_str(&format!(
            "  context          not written (no config dir); use --server {}\n",
            s.server_list()
        )),
    }
    if plan.replicas > 1 {
        o.push_str(&format!(
            "\n{} Raft replicas: a replica that dies is restarted after {}; watch with \"gpuctl cluster status\"\n",
            plan.replicas,
            format_delay(plan.restart_delay)
        ));
    }
    o.push_str(
        "\ntry:\n  gpuctl get nodes\n  gpuctl submit --gpus 1 -- sh -c 'echo hello from rank $RANK on GPUs $CUDA_VISIBLE_DEVICES'\n  gpuctl get jobs\n",
    );
    if plan.replicas > 1 {
        o.push_str("  gpuctl cluster status\n");
    }
    o
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_ready_files_go_and_context_is_removed_only_if_ours() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("scheduler-1.ready.json"), "{}").unwrap();
        std::fs::write(dir.path().join("node-1.ready.json"), "{}").unwrap();
        std::fs::write(dir.path().join("cluster.json"), "{}").unwrap();
        remove_stale_ready_files(dir.path()).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["cluster.json"]);

        let ours = Context {
            server: "http://127.0.0.1:1".into(),
            state_dir: Some(dir.path().into()),
            gateway: None,
            token: None,
            ca: None,
        };
        let theirs = Context {
            server: "http://127.0.0.1:2".into(),
            ..ours.clone()
        };
        config::write_context(dir.path(), &theirs).unwrap();
        remove_context_if_ours(dir.path(), &ours);
        assert!(dir.path().join("context.json").exists());
        config::write_context(dir.path(), &ours).unwrap();
        remove_context_if_ours(dir.path(), &ours);
        assert!(!dir.path().join("context.json").exists());
    }
}
