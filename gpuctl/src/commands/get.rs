//! `gpuctl get` and `gpuctl describe`: objects of one kind as a table, JSON
//! or YAML, or one in detail.

use crate::cli::{Kind, Output};
use crate::commands::ctx::{decode, Ctx};
use crate::commands::identity;
use crate::error::{Error, Result};
use crate::stdout::out;
use crate::{argo_objects, endpoints, render, secrets, workflows};

pub(crate) async fn cmd_get(
    cx: &mut Ctx,
    kind: Kind,
    name: Option<String>,
    output: Output,
) -> Result<u8> {
    let name = name.as_deref();
    match output {
        Output::Json | Output::Yaml => {
            let raw = cx.get_raw(kind, name).await?;
            let values: Vec<serde_json::Value> = raw
                .iter()
                .map(|j| decode(j, kind.singular()))
                .collect::<Result<_>>()?;
            let doc = match (name, values.len()) {
                (Some(_), 1) => values.into_iter().next().expect("one"),
                _ => serde_json::Value::Array(values),
            };
            let text = if output == Output::Json {
                let mut s = serde_json::to_string_pretty(&doc).expect("json");
                s.push('\n');
                s
            } else {
                serde_yaml_ng::to_string(&doc)
                    .map_err(|e| Error::Other(format!("cannot render YAML: {e}")))?
            };
            out(&text)?;
        }
        Output::Table => {
            let now = gpuctl_common::now_ms();
            let text = match kind {
                Kind::Jobs => render::jobs_table(&cx.get_jobs(name).await?, now),
                Kind::Queues => render::queues_table(&cx.get_queues(name).await?, now),
                Kind::Nodes => {
                    let nodes = cx.get_nodes(name).await?;
                    let jobs = cx.get_jobs(None).await?;
                    render::nodes_table(&nodes, &jobs, now)
                }
                Kind::Workflows => workflows::workflows_table(&cx.get_workflows(name).await?, now),
                Kind::Endpoints => {
                    let eps = cx.get_endpoints(name).await?;
                    endpoints::endpoints_table(&eps, cx.gateway.as_deref(), now)
                }
                Kind::Secrets => secrets::secrets_table(&cx.get_secrets(name).await?, now),
                Kind::Users => identity::users_table(&values_of(cx, kind, name).await?),
                Kind::Tokens => identity::tokens_table(&values_of(cx, kind, name).await?, now),
                Kind::WorkflowTemplates | Kind::ClusterWorkflowTemplates => {
                    argo_objects::templates_table(&values_of(cx, kind, name).await?, now)
                }
                Kind::CronWorkflows => {
                    argo_objects::cron_table(&values_of(cx, kind, name).await?, now)
                }
            };
            out(&text)?;
        }
    }
    Ok(0)
}

/// The objects of `kind` as JSON values.
async fn values_of(cx: &mut Ctx, kind: Kind, name: Option<&str>) -> Result<Vec<serde_json::Value>> {
    cx.get_raw(kind, name)
        .await?
        .iter()
        .map(|j| decode(j, kind.singular()))
        .collect()
}

pub(crate) async fn cmd_describe(cx: &mut Ctx, kind: Kind, name: &str) -> Result<u8> {
    let now = gpuctl_common::now_ms();
    let text = match kind {
        Kind::Jobs => {
            let jobs = cx.get_jobs(Some(name)).await?;
            jobs.iter()
                .map(|j| render::describe_job(j, now))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Kind::Nodes => {
            let nodes = cx.get_nodes(Some(name)).await?;
            let jobs = cx.get_jobs(None).await?;
            nodes
                .iter()
                .map(|n| render::describe_node(n, &jobs, now))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Kind::Queues => {
            let queues = cx.get_queues(Some(name)).await?;
            let jobs = cx.get_jobs(None).await?;
            queues
                .iter()
                .map(|q| render::describe_queue(q, &jobs, now))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Kind::Workflows => cx
            .get_workflows(Some(name))
            .await?
            .iter()
            .map(|w| workflows::describe_workflow(w, now))
            .collect::<Vec<_>>()
            .join("\n"),
        Kind::Endpoints => {
            let eps = cx.get_endpoints(Some(name)).await?;
            eps.iter()
                .map(|e| endpoints::describe_endpoint(e, cx.gateway.as_deref(), now))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Kind::Secrets => cx
            .get_secrets(Some(name))
            .await?
            .iter()
            .map(|s| secrets::describe_secret(s, now))
            .collect::<Vec<_>>()
            .join("\n"),
        Kind::CronWorkflows => values_of(cx, kind, Some(name))
            .await?
            .iter()
            .map(argo_objects::describe_cron)
            .collect::<Vec<_>>()
            .join("\n"),
        Kind::Users | Kind::Tokens | Kind::WorkflowTemplates | Kind::ClusterWorkflowTemplates => {
            values_of(cx, kind, Some(name))
                .await?
                .iter()
                .map(serde_yaml_ng::to_string)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Other(format!("cannot render YAML: {e}")))?
                .join("---\n")
        }
    };
    out(&text)?;
    Ok(0)
}
