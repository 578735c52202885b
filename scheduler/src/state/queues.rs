//! Queues in the state machine: `PutQueue`, a create or a compare-and-set
//! replace on `metadata.resourceVersion`.

use gpuctl_common::api::API_VERSION;
use gpuctl_common::queue::Queue;

use super::command::{Applied, ApplyError};
use super::objects::ObjKey;
use super::State;

impl State {
    pub(super) fn put_queue(
        &mut self,
        index: u64,
        now: u64,
        queue: &Queue,
    ) -> Result<Applied, ApplyError> {
        queue
            .validate()
            .map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let name = queue.metadata.name.clone();
        let expected = queue.metadata.resource_version;
        let mut q = queue.clone();
        q.api_version = API_VERSION.to_string();
        q.status = None;
        q.metadata.resource_version = Some(index);
        match self.queues.get(&name) {
            Some(old) => {
                if let Some(want) = expected {
                    let have = old.metadata.resource_version.unwrap_or(0);
                    if want != have {
                        return Err(ApplyError::Conflict(format!(
                            "queue {name:?} was changed (resourceVersion {have}) after version {want} that this update is based on; get it again and reapply"
                        )));
                    }
                }
                q.metadata.uid = old.metadata.uid;
                q.metadata.creation_timestamp_ms = old.metadata.creation_timestamp_ms;
            }
            None => {
                if let Some(want) = expected {
                    return Err(ApplyError::NotFound {
                        kind: "queue",
                        name: format!("{name} (the update names resourceVersion {want})"),
                    });
                }
                q.metadata.uid = Some(index);
                q.metadata.creation_timestamp_ms = Some(now);
            }
        }
        self.queues.insert(name.clone(), q.clone());
        self.dirty.insert(ObjKey::Queue(name));
        Ok(Applied::Queue(Box::new(q)))
    }
}
