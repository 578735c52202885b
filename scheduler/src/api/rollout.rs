//! `Control.Rollout`: promote an endpoint's canary revision, or roll it back
//! (`gpuctl rollout promote|undo endpoint/NAME`). Authorized as deleting the
//! endpoint would be (its owner, their team lead, an admin), and audited.

use gpuctl_proto::v1 as pb;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::authz::Action;
use super::Api;
use crate::state::Command;

impl Api {
    pub(super) async fn rollout_call(
        &self,
        md: &MetadataMap,
        req: pb::RolloutRequest,
    ) -> Result<pb::RolloutResponse, Status> {
        let who = self.caller(md).await;
        let verb = format!("rollout {}", req.action);
        let r = async {
            let who = who.as_ref().map_err(Clone::clone)?;
            if !req.kind.is_empty() && req.kind != "endpoint" && req.kind != "endpoints" {
                return Err(Status::invalid_argument(format!(
                    "{}s have no rollouts; endpoints do (gpuctl rollout {} endpoint/NAME)",
                    req.kind, req.action
                )));
            }
            let name = req.name.clone();
            let cmd = match req.action.as_str() {
                "promote" => Command::PromoteEndpoint { name },
                "undo" => Command::UndoEndpoint {
                    name,
                    to_revision: req.to_revision,
                },
                other => {
                    return Err(Status::invalid_argument(format!(
                        "unknown rollout action {other:?}: promote or undo"
                    )))
                }
            };
            let checked = || {
                self.check(
                    who,
                    &Action::Stop {
                        verb: &verb,
                        kind: "endpoint",
                        name: &req.name,
                    },
                )?;
                Ok(cmd.clone())
            };
            let object_json = self.proposer().checked_write(None, checked).await?;
            Ok(pb::RolloutResponse { object_json })
        }
        .await;
        self.audit(&who, &verb, "endpoint", &req.name, &r);
        r
    }
}
