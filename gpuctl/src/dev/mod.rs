//! `gpuctl dev`: a whole cluster on one machine, as child processes.
//!
//! ```text
//! gpuctl dev ─spawn─► gpu-scheduler × R (1, 3 or 5 Raft replicas, all
//!                      given the same --peers) --ready-file DIR/scheduler-i.ready.json
//!            ─spawn─► gpu-node × N  --server URL1,URL2,… --ready-file DIR/node-i.ready.json
//!            ─waits for the ready files, then for every node to be Ready
//!            ─spawn─► gpu-gateway --server URL1,URL2,… --ready-file DIR/gateway.ready.json
//!            ─writes DIR/cluster.json and the CLI context file
//!            ─supervises: Ctrl-C/SIGTERM stops all; the only scheduler
//!             dying stops all; a node daemon (same name and work dir: it
//!             takes back its running tasks), the gateway, and with R > 1 a
//!             scheduler replica (same id, port and data dir) that dies is
//!             restarted
//! ```
//!
//! The replicas' ports are chosen once and kept in `DIR/replicas.json`:
//! Raft stores the membership (ids and addresses) in each data dir, so a
//! later `gpuctl dev` on the same state dir must reuse them.
//!
//! Each child runs in its own process group so that Ctrl-C in the terminal
//! reaches only us, and we stop the children in order: SIGTERM, up to 10 s,
//! then SIGKILL.
//!
//! `plan` resolves the flags, `supervisor` owns the child processes, `start`
//! brings the cluster up, `watch` keeps it up, and `example` is `--example`.

mod example;
mod identity;
mod plan;
mod start;
mod supervisor;
mod watch;

use tokio::signal::unix::{signal, SignalKind};

use crate::cli::DevFlags;
use crate::config::{self, Context, EnvVars};
use crate::error::{Error, Result, EXIT_FAILURE};
use crate::stdout::out;

pub use crate::duration::format_delay;
pub use example::{example_job, EXAMPLE_JOB};
pub use plan::{
    find_binary, plan_ports, saved_replica_plan, validate_replicas, Binaries, Plan, ReplicaPlan,
    ReplicaPort, DEFAULT_GPUS, REPLICAS_FILE,
};
pub use supervisor::log_tail;

use example::submit_example;
use start::{
    field, remove_context_if_ours, remove_stale_ready_files, start, summary, write_cluster_file,
    Started,
};
use supervisor::Supervisor;
use watch::supervise;

/// Run `gpuctl dev` until Ctrl-C (exit 0) or a child that is not restarted dies (exit 1).
pub async fn run(flags: DevFlags, env: &EnvVars) -> Result<u8> {
    let mut plan = Plan::from_flags(flags, env)?;
    plan.prepare_state_dir()?;
    let admin_token = identity::ensure_admin_token(&plan)?;
    identity::ensure_encryption_config(&plan)?;
    // The dev CA and cluster certificate (made once, reused after), and
    // this process's own connections to the cluster.
    let ca = if plan.insecure {
        None
    } else {
        let dir = plan.state_dir.join("tls");
        let files = gpuctl_security::ca::ensure_dev(&dir)
            .map_err(|e| Error::Other(format!("making the dev CA in {}: {e}", dir.display())))?;
        Some(files.ca)
    };
    crate::client::configure(crate::client::Security::new(ca.as_deref(), plan.insecure)?);
    let bins = Binaries::find()?;
    remove_stale_ready_files(&plan.state_dir)?;

    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("cannot handle SIGINT", e))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| Error::io("cannot handle SIGTERM", e))?;

    let mut sup = Supervisor::new();
    let what = if plan.replicas == 1 {
        "1 scheduler".to_string()
    } else {
        format!("{} scheduler replicas", plan.replicas)
    };
    out(&format!(
        "gpuctl dev: starting {what} and {} node(s) in {}\n",
        plan.nodes,
        plan.state_dir.display()
    ))?;
    let started = tokio::select! {
        r = start(&mut sup, &plan, &bins, &admin_token) => r,
        _ = sigint.recv() => Err(Error::Other("interrupted".into())),
        _ = sigterm.recv() => Err(Error::Other("interrupted".into())),
    };
    let mut started = match started {
        Ok(s) => s,
        Err(e) => {
            sup.shutdown().await;
            return match e {
                Error::Other(m) if m == "interrupted" => Ok(0),
                e => Err(e),
            };
        }
    };

    let context = Context {
        server: started.server_list(),
        state_dir: Some(plan.state_dir.clone()),
        gateway: started
            .gateway
            .as_ref()
            .map(|g| format!("{}://{}", plan.scheme(), field(g, "http"))),
        token: Some(started.user_token.clone()).filter(|t| !t.is_empty()),
        ca,
    };
    let finish = publish(&plan, &started, &context);
    let code = tokio::select! {
        r = finish => match r {
            Ok(()) => None,
            Err(e) => { eprintln!("error: {e}"); Some(EXIT_FAILURE) }
        },
        _ = sigint.recv() => Some(0),
        _ = sigterm.recv() => Some(0),
    };
    let code = match code {
        Some(c) => c,
        None => supervise(&mut sup, &plan, &mut started, &mut sigint, &mut sigterm).await,
    };
    out("gpuctl dev: stopping...\n").ok();
    sup.shutdown().await;
    if let Some(d) = &plan.config_dir {
        remove_context_if_ours(d, &context);
    }
    out("gpuctl dev: stopped\n").ok();
    Ok(code)
}

/// Once the cluster is up: `cluster.json`, the context file the CLI reads,
/// the summary, and the `--example` job.
async fn publish(plan: &Plan, started: &Started, context: &Context) -> Result<()> {
    write_cluster_file(plan, started)?;
    let ctx_path = match &plan.config_dir {
        Some(d) => Some(config::write_context(d, context)?),
        None => None,
    };
    out(&summary(plan, started, ctx_path.as_deref()))?;
    if plan.example {
        submit_example(&started.server_urls, &started.user_token).await?;
    }
    out("\nPress Ctrl-C to stop the cluster.\n")?;
    Ok(())
}
