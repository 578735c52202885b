//! From a parsed command line to the command that runs it: `gpuctl dev`
//! directly, everything else after resolving which scheduler to talk to.

use crate::cli::{is_workflow_word, AdminCommand, Cli, ClusterCommand, Command};
use crate::client::{self, Bearer, Conn};
use crate::commands::ctx::Ctx;
use crate::commands::{
    apply, cancel, cluster, cordon, get, identity, logs, node_ca, rollout, suspend, top, wait,
};
use crate::config::{self, EnvVars};
use crate::error::{Error, Result};
use crate::{dev, status};

/// Run one command; returns the exit code. The context file and the server
/// list are read through `env`, so tests can point them at temp dirs.
pub async fn run(cli: Cli, env: &EnvVars) -> Result<u8> {
    if let Command::Dev(mut flags) = cli.command {
        flags.insecure = cli.insecure;
        return dev::run(flags, env).await;
    }
    if let Command::Admin {
        command: command @ AdminCommand::NodeCa { .. },
    } = cli.command
    {
        return node_ca::cmd_node_ca(command);
    }
    let servers = config::resolve_servers(
        cli.server.as_deref(),
        env.gpuctl_server.as_deref(),
        env.config_dir().as_deref(),
    )?;
    let context = env
        .config_dir()
        .and_then(|d| config::read_context(&d).ok().flatten());
    // TLS: --ca, else the context's CA; --insecure: plaintext.
    let ca = cli
        .ca
        .clone()
        .or_else(|| context.as_ref().and_then(|c| c.ca.clone()));
    client::configure(client::Security::new(ca.as_deref(), cli.insecure)?);
    // The gateway `gpuctl dev` started, for endpoint URLs.
    let gateway = context.and_then(|c| c.gateway);
    let mut cx = Ctx {
        conn: Conn::new(servers.urls).with_bearer(bearer(&cli, env)?),
        gateway,
    };
    match cli.command {
        Command::Dev(_) => unreachable!("handled above"),
        Command::Cluster {
            command: ClusterCommand::Status { output, timeout },
        } => status::cmd_status(cx.conn.urls(), output, timeout.duration).await,
        Command::Cluster {
            command: ClusterCommand::AddPeer { id, address },
        } => cluster::cmd_add_peer(&mut cx, id, &address).await,
        Command::Cluster {
            command: ClusterCommand::RemovePeer { id },
        } => cluster::cmd_remove_peer(&mut cx, id).await,
        Command::Apply { files } => apply::cmd_apply(&mut cx, &files).await,
        Command::Submit(flags) => apply::cmd_submit(&mut cx, &flags).await,
        Command::Get { kind, name, output } => get::cmd_get(&mut cx, kind, name, output).await,
        Command::Describe { kind, name } => get::cmd_describe(&mut cx, kind, &name).await,
        Command::Logs {
            job,
            name: Some(name),
            step,
            follow,
            ..
        } if is_workflow_word(&job) => {
            logs::cmd_workflow_logs(&mut cx, &name, step.as_deref(), follow).await
        }
        Command::Logs {
            job, name: Some(n), ..
        } => Err(Error::Usage(format!(
            "logs takes one job name, or `workflow NAME`; got {job:?} and {n:?}"
        ))),
        Command::Logs {
            job,
            task,
            follow,
            attempt,
            ..
        } => logs::cmd_logs(&mut cx, &job, task, follow, attempt.unwrap_or(0)).await,
        Command::Cancel {
            job,
            name: Some(name),
        } if is_workflow_word(&job) => cancel::cmd_cancel_workflow(&mut cx, &name).await,
        Command::Cancel { job, name: Some(_) } => Err(Error::Usage(format!(
            "cancel takes one job name, or `workflow NAME`; got {job:?} and more"
        ))),
        Command::Cancel { job, name: None } => cancel::cmd_cancel_job(&mut cx, &job).await,
        Command::Delete { kind, name } => cancel::cmd_delete(&mut cx, kind, &name).await,
        Command::Cordon { node, reason } => {
            cordon::cmd_cordon(&mut cx, &node, true, reason.as_deref()).await
        }
        Command::Uncordon { node } => cordon::cmd_cordon(&mut cx, &node, false, None).await,
        Command::Suspend { workflow, name } => {
            let name = suspend::workflow_name("suspend", &workflow, name)?;
            suspend::cmd_suspend(&mut cx, &name, "suspend").await
        }
        Command::Resume {
            workflow,
            name,
            node_field_selector,
        } => {
            if node_field_selector.is_some() {
                return Err(Error::Usage(
                    "resume --node-field-selector is not supported yet by gpuctl: resume resumes every suspend step of the workflow".into(),
                ));
            }
            let name = suspend::workflow_name("resume", &workflow, name)?;
            suspend::cmd_suspend(&mut cx, &name, "resume").await
        }
        Command::Drain {
            node,
            timeout,
            reason,
        } => cordon::cmd_drain(&mut cx, &node, timeout.duration, reason.as_deref()).await,
        Command::Wait { job, timeout } => wait::cmd_wait(&mut cx, &job, &timeout).await,
        Command::Rollout { command } => rollout::cmd_rollout(&mut cx, command).await,
        Command::Login => {
            identity::cmd_login(&mut cx, cli.token, env.config_dir().as_deref()).await
        }
        Command::Whoami => identity::cmd_whoami(&mut cx).await,
        Command::Top {
            what,
            interval,
            once,
        } => top::cmd_top(&mut cx, what, interval.duration, once).await,
        Command::Admin { command } => identity::cmd_admin(&mut cx, command).await,
        Command::Audit { limit, user } => identity::cmd_audit(&mut cx, limit, user).await,
    }
}

/// The token every call carries: `--token`, else `GPUCTL_TOKEN`, else the
/// context's.
fn bearer(cli: &Cli, env: &EnvVars) -> Result<Bearer> {
    let token = config::resolve_token(
        cli.token.as_deref(),
        env.gpuctl_token.as_deref(),
        env.config_dir().as_deref(),
    )?;
    match token {
        Some((t, source)) => Bearer::new(Some(&t), source),
        None => Ok(Bearer::default()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("gpuctl").chain(args.iter().copied())).unwrap()
    }

    #[tokio::test]
    async fn unreachable_server_fails_with_exit_1() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cfg = tempfile::tempdir().unwrap();
        config::write_context(
            cfg.path(),
            &config::Context {
                server: format!("127.0.0.1:{port}"),
                state_dir: None,
                gateway: None,
                token: None,
                ca: None,
            },
        )
        .unwrap();
        let env = EnvVars {
            gpuctl_config_dir: Some(cfg.path().display().to_string()),
            ..Default::default()
        };
        let e = run(parse(&["get", "jobs"]), &env).await.unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "cannot reach the gpuctl scheduler at http://127.0.0.1:{port}: connection refused"
            )),
            "{e}"
        );
        assert_eq!(e.exit_code(), 1);
        // A bad submit fails before dialling.
        let e = run(parse(&["submit", "--gpus", "1.5", "--", "x"]), &env)
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("<submit>: --gpus:"), "{e}");
    }
}
