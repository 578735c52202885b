//! `gpuctl apply -f` and `gpuctl submit`: objects from files or flags, sent
//! with a request id so that a retried create is applied once.

use std::collections::BTreeMap;

use gpuctl_common::api::{Job, Manifest};
use gpuctl_proto::v1::ApplyRequest;

use crate::cli::{Kind, SubmitFlags};
use crate::client::create;
use crate::commands::ctx::{decode, Ctx};
use crate::error::{Error, Result, EXIT_FAILURE};
use crate::stdout::out;
use crate::{endpoints, manifest, workflows};

pub(crate) async fn cmd_apply(cx: &mut Ctx, files: &[String]) -> Result<u8> {
    // Parse and validate everything before sending anything.
    let mut objects = manifest::load_objects(files, &mut std::io::stdin().lock())?;
    let cwd =
        std::env::current_dir().map_err(|e| Error::io("cannot read the current folder", e))?;
    for o in objects.iter_mut() {
        if let manifest::Object::Manifest(l) = o {
            endpoints::resolve_model_paths(std::slice::from_mut(&mut **l), &cwd);
        }
    }
    let mut code = 0;
    for o in objects {
        let l = match o {
            manifest::Object::Manifest(l) => *l,
            manifest::Object::Workflow { source, workflow } => {
                match submit_workflow(cx, &source, &workflow, &BTreeMap::new()).await {
                    Ok(name) => out(&format!("workflow/{name} created\n"))?,
                    Err(e) => {
                        if matches!(e, Error::Unreachable { .. }) {
                            return Err(e);
                        }
                        eprintln!("error: {e}");
                        code = EXIT_FAILURE;
                    }
                }
                continue;
            }
            manifest::Object::Argo(o) => {
                match apply_argo_object(cx, &o).await {
                    Ok(verb) => out(&format!("{}/{} {verb}\n", o.kind, o.name))?,
                    Err(e) => {
                        if matches!(e, Error::Unreachable { .. }) {
                            return Err(e);
                        }
                        eprintln!("error: {e}");
                        code = EXIT_FAILURE;
                    }
                }
                continue;
            }
        };
        let kind = l.manifest.kind().to_ascii_lowercase();
        let name = l.manifest.name().to_string();
        let object_json = serde_json::to_string(&l.manifest).expect("manifests serialise");
        if let Err(e) = check_size(&l.source, &format!("{kind}/{name}"), &object_json) {
            eprintln!("error: {e}");
            code = EXIT_FAILURE;
            continue;
        }
        let req = ApplyRequest {
            object_json,
            source: l.source.clone(),
            request_id: new_request_id(),
            ..Default::default()
        };
        let verb = match &l.manifest {
            Manifest::Job(_) => "created",
            // Applied again, an endpoint is updated (a rollout when what its
            // replicas run changed), as kubectl says "configured".
            Manifest::Endpoint(_) => match cx.get_raw(Kind::Endpoints, Some(&name)).await {
                Ok(_) => "configured",
                Err(_) => "created",
            },
            Manifest::Queue(_) | Manifest::Secret(_) => "configured",
        };
        match create(&mut cx.conn, &req).await {
            Ok(_) => out(&format!("{kind}/{name} {verb}\n"))?,
            Err(e) => {
                let e = e.into_error(None, cx.urls());
                if matches!(e, Error::Unreachable { .. }) {
                    return Err(e);
                }
                eprintln!("error: {e}");
                code = EXIT_FAILURE;
            }
        }
    }
    Ok(code)
}

/// Store a WorkflowTemplate, ClusterWorkflowTemplate or CronWorkflow:
/// `created`, or `configured` when it replaced one.
pub(crate) async fn apply_argo_object(
    cx: &mut Ctx,
    o: &crate::argo_objects::ArgoObject,
) -> Result<&'static str> {
    check_size(&o.source, &format!("{}/{}", o.kind, o.name), &o.json)?;
    let req = ApplyRequest {
        object_json: o.json.clone(),
        source: o.source.clone(),
        request_id: new_request_id(),
        ..Default::default()
    };
    let kind = crate::cli::parse_kind(&o.kind).map_err(Error::Other)?;
    let existed = cx.get_raw(kind, Some(&o.name)).await.is_ok();
    create(&mut cx.conn, &req)
        .await
        .map_err(|e| e.into_error(None, cx.urls()))?;
    Ok(if existed { "configured" } else { "created" })
}

/// `gpuctl cron suspend|resume NAME`: the stored CronWorkflow applied again
/// with `spec.suspend` changed.
pub(crate) async fn cmd_cron(cx: &mut Ctx, command: crate::cli::CronCommand) -> Result<u8> {
    let (name, suspend) = match command {
        crate::cli::CronCommand::Suspend { name } => (name, true),
        crate::cli::CronCommand::Resume { name } => (name, false),
    };
    let raw = cx
        .get_raw(crate::cli::Kind::CronWorkflows, Some(&name))
        .await?;
    let v = decode(&raw[0], "cronworkflow")?;
    let doc = crate::argo_objects::with_suspend(&v, suspend);
    let req = ApplyRequest {
        object_json: doc.to_string(),
        source: format!("cronworkflow/{name}"),
        request_id: new_request_id(),
        ..Default::default()
    };
    create(&mut cx.conn, &req)
        .await
        .map_err(|e| e.into_error(None, cx.urls()))?;
    let verb = if suspend { "suspended" } else { "resumed" };
    out(&format!("cronworkflow/{name} {verb}\n"))?;
    Ok(0)
}

pub(crate) async fn cmd_submit(cx: &mut Ctx, flags: &SubmitFlags) -> Result<u8> {
    if let Some(file) = &flags.file {
        if !flags.command.is_empty() {
            return Err(Error::Usage(
                "give either -f WORKFLOW.yaml or a command after --, not both".into(),
            ));
        }
        let params = workflows::parse_parameters(&flags.parameters)?;
        let mut workflow = None;
        for o in manifest::load_objects(std::slice::from_ref(file), &mut std::io::stdin().lock())? {
            match o {
                manifest::Object::Workflow { source, workflow: w } => workflow = Some((source, w)),
                manifest::Object::Manifest(l) => {
                    return Err(Error::Usage(format!(
                        "{}: submit -f takes a workflow (kind: Workflow); use `gpuctl apply -f` for a {}",
                        l.source,
                        l.manifest.kind()
                    )))
                }
                manifest::Object::Argo(a) => {
                    return Err(Error::Usage(format!(
                        "{}: a {} is stored with `gpuctl apply -f`; submit a workflow that names it (workflowTemplateRef or templateRef)",
                        a.source, a.kind
                    )))
                }
            }
        }
        let (source, w) =
            workflow.ok_or_else(|| Error::Other(format!("{file}: no workflow found")))?;
        let name = submit_workflow(cx, &source, &w, &params).await?;
        out(&format!("workflow/{name} submitted\n"))?;
        return Ok(0);
    }
    if !flags.parameters.is_empty() {
        return Err(Error::Usage(
            "-p is for workflows: use it with -f WORKFLOW.yaml".into(),
        ));
    }
    let job = manifest::build_submit_job(&flags.to_args(), manifest::random_job_name)?;
    let name = job.metadata.name.clone();
    submit_job(cx, &job).await?;
    out(&format!("job/{name} submitted\n"))?;
    Ok(0)
}

async fn submit_job(cx: &mut Ctx, job: &Job) -> Result<()> {
    let req = ApplyRequest {
        object_json: serde_json::to_string(&Manifest::Job(job.clone())).expect("jobs serialise"),
        source: manifest::SUBMIT_SOURCE.into(),
        request_id: new_request_id(),
        ..Default::default()
    };
    create(&mut cx.conn, &req)
        .await
        .map_err(|e| e.into_error(None, cx.urls()))?;
    Ok(())
}

/// A fresh id for one request, sent again unchanged on every retry of it so
/// that the scheduler applies it at most once (random, 128 bits).
pub fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let half = |salt: u64| {
        // RandomState is seeded from the OS once per process, then varied.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(n);
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

/// The largest object the API takes: a message's size limit (gRPC's usual
/// 4 MiB), less room for the rest of the request.
pub const MAX_OBJECT_BYTES: usize = (4 << 20) - (64 << 10);

/// Refuses an object too large to send, naming its file and itself, instead
/// of the transport's error.
fn check_size(source: &str, object: &str, json: &str) -> Result<()> {
    if json.len() <= MAX_OBJECT_BYTES {
        return Ok(());
    }
    Err(Error::Other(format!(
        "{source}: {object} is {:.1} MiB as sent; an object may be at most {:.1} MiB (keep large data in files or an artifact store, and name it)",
        json.len() as f64 / (1 << 20) as f64,
        MAX_OBJECT_BYTES as f64 / (1 << 20) as f64
    )))
}

/// Send a workflow; returns its name (the server picks the suffix of a
/// `generateName`).
pub(crate) async fn submit_workflow(
    cx: &mut Ctx,
    source: &str,
    workflow: &gpuctl_pipelines::Workflow,
    params: &BTreeMap<String, String>,
) -> Result<String> {
    let object_json = serde_json::to_string(workflow).expect("workflows serialise");
    check_size(source, "workflow", &object_json)?;
    let req = ApplyRequest {
        object_json,
        source: source.to_string(),
        parameters: params.clone().into_iter().collect(),
        request_id: new_request_id(),
    };
    let resp = cx
        .call(None, |mut c| {
            let req = req.clone();
            async move { c.apply(req).await }
        })
        .await?;
    let doc: serde_json::Value = decode(&resp.into_inner().object_json, "workflow")?;
    Ok(doc
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or("?")
        .to_string())
}
