//! The connection every command talks through ([`Ctx`]): unary calls with
//! failover and errors phrased for the user, and typed `Get`s of each kind.

use gpuctl_common::api::{Job, Node};
use gpuctl_common::queue::Queue;
use gpuctl_proto::v1::GetRequest;

use crate::cli::Kind;
use crate::client::{Client, Conn, Target};
use crate::error::{Error, Result};
use crate::workflows;

/// The replicas a command talks to. Connections are made lazily, so
/// commands that fail locally never dial; every unary call fails over to the
/// next address when one is unavailable (see [`Conn::call`]).
pub(crate) struct Ctx {
    pub(crate) conn: Conn,
    /// The inference gateway's URL, when known.
    pub(crate) gateway: Option<String>,
}

impl Ctx {
    pub(crate) fn urls(&self) -> &[String] {
        self.conn.urls()
    }

    /// One unary call with failover; errors phrased for the user.
    pub(crate) async fn call<T, F, Fut>(&mut self, target: Option<Target<'_>>, f: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        match self.conn.call(f).await {
            Ok(v) => Ok(v),
            Err(e) => Err(e.into_error(target, self.conn.urls())),
        }
    }

    pub(crate) async fn get_raw(&mut self, kind: Kind, name: Option<&str>) -> Result<Vec<String>> {
        if kind == Kind::Jobs && name.is_none() {
            return self.list_jobs_paged().await;
        }
        let req = GetRequest {
            kind: kind.api_name().into(),
            name: name.unwrap_or_default().into(),
            ..Default::default()
        };
        let target = name.map(|n| Target {
            kind: kind.singular(),
            name: n,
        });
        let resp = self
            .call(target, |mut c| {
                let req = req.clone();
                async move { c.get(req).await }
            })
            .await?;
        let objs = resp.into_inner().objects_json;
        if let (Some(t), true) = (target, objs.is_empty()) {
            return Err(Error::NotFound {
                kind: t.kind,
                name: t.name.to_string(),
            });
        }
        Ok(objs)
    }

    /// Every job, in pages ([`crate::client::list_jobs`]), each call with
    /// failover.
    async fn list_jobs_paged(&mut self) -> Result<Vec<String>> {
        crate::client::list_jobs(async |req: GetRequest| {
            let page = self
                .call(None, |mut c| {
                    let req = req.clone();
                    async move { c.get(req).await }
                })
                .await?;
            Ok::<_, Error>(page.into_inner())
        })
        .await
    }

    pub(crate) async fn get_jobs(&mut self, name: Option<&str>) -> Result<Vec<Job>> {
        self.get_raw(Kind::Jobs, name)
            .await?
            .iter()
            .map(|j| decode(j, "job"))
            .collect()
    }

    pub(crate) async fn get_queues(&mut self, name: Option<&str>) -> Result<Vec<Queue>> {
        self.get_raw(Kind::Queues, name)
            .await?
            .iter()
            .map(|j| decode(j, "queue"))
            .collect()
    }

    pub(crate) async fn get_workflows(
        &mut self,
        name: Option<&str>,
    ) -> Result<Vec<workflows::WorkflowDoc>> {
        self.get_raw(Kind::Workflows, name)
            .await?
            .iter()
            .map(|j| decode(j, "workflow"))
            .collect()
    }

    pub(crate) async fn get_secrets(
        &mut self,
        name: Option<&str>,
    ) -> Result<Vec<gpuctl_common::secret::Secret>> {
        self.get_raw(Kind::Secrets, name)
            .await?
            .iter()
            .map(|j| decode(j, "secret"))
            .collect()
    }

    pub(crate) async fn get_endpoints(
        &mut self,
        name: Option<&str>,
    ) -> Result<Vec<gpuctl_common::endpoint::Endpoint>> {
        self.get_raw(Kind::Endpoints, name)
            .await?
            .iter()
            .map(|j| decode(j, "endpoint"))
            .collect()
    }

    pub(crate) async fn get_nodes(&mut self, name: Option<&str>) -> Result<Vec<Node>> {
        self.get_raw(Kind::Nodes, name)
            .await?
            .iter()
            .map(|j| decode(j, "node"))
            .collect()
    }
}

pub(crate) fn job_target(name: &str) -> Option<Target<'_>> {
    Some(Target { kind: "job", name })
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| {
        Error::Other(format!(
            "cannot read a {what} the server sent ({e}); is gpuctl the same version as the scheduler?"
        ))
    })
}
