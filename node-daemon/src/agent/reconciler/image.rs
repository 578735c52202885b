//! Tasks that name an `image`: on a node with a container runtime they run
//! in it ([`crate::container`]); on a node that runs tasks as processes the
//! command runs in the node's own environment, and the task's Running
//! report (its events in `describe job`) says so. Its log does not: that
//! is the program's output (`gpuctl logs` of an Argo step shows only it).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Reconciler;
use crate::assignment::Assignment;
use crate::container::{self, ContainerSpec, Podman, Runtime};
use crate::isolation::TaskIsolation;
use crate::runtime::TaskKey;
use crate::supervisor::record::TaskDir;

impl Reconciler {
    /// podman, when `a` names an image and this node runs images.
    fn podman_for(&self, a: &Assignment) -> Option<&Podman> {
        match &self.cfg.isolation.runtime {
            Runtime::Podman(p) if !a.image.is_empty() => Some(p),
            _ => None,
        }
    }

    /// What confines `a`: its cgroup and `/tmp`, placed for a container
    /// when it runs in one.
    pub(super) fn isolation_of(&self, a: &Assignment) -> TaskIsolation {
        let iso = &self.cfg.isolation;
        let (job, i, n) = (&a.job, a.task_index, a.attempt);
        if self.podman_for(a).is_some() {
            iso.for_container(job, i, n, a.cpu_milli, a.memory_bytes)
        } else {
            // Device rules name /dev/nvidia<minor>, not CUDA's index.
            let minors = crate::inventory::device_minors(&self.inventory.devices(), &a.gpu_indices);
            iso.for_task(job, i, n, a.cpu_milli, a.memory_bytes, &minors)
        }
    }

    /// The container `a` runs in (`None`: it runs as a process), with the
    /// folders of the daemon's it uses (its step or task folder, its secret
    /// files) bound at the same path. An image that is no image reference
    /// is refused, naming it.
    pub(super) fn container_of(
        &self,
        key: &TaskKey,
        a: &Assignment,
        env: &BTreeMap<String, String>,
        scratch: Option<&PathBuf>,
        iso: &TaskIsolation,
    ) -> Result<Option<ContainerSpec>, String> {
        let Some(podman) = self.podman_for(a) else {
            return Ok(None);
        };
        gpuctl_common::api::check_image(&a.image)
            .map_err(|why| format!("cannot start the task: image: {why}"))?;
        let mut binds = Vec::new();
        if a.step.is_some() {
            binds.push(self.step_dir(key));
        }
        binds.extend(scratch.cloned());
        binds.extend(env.get("GPUCTL_SECRETS_DIR").map(PathBuf::from));
        // CDI names the host's GPUs by UUID; simulated GPUs have none.
        let devices = if self.cfg.isolation.has_gpu_devices() {
            a.gpu_uuids
                .iter()
                .map(|u| format!("nvidia.com/gpu={u}"))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Some(ContainerSpec {
            image: a.image.clone(),
            name: container::container_name(&key.job, key.task_index, key.attempt),
            node: self.cfg.node.clone(),
            devices,
            binds,
            cgroup_parent: iso.container_parent.clone(),
            podman: podman.clone(),
            client_dir: TaskDir::new(&self.cfg.supervisors.root, key).map(|d| d.dir),
        }))
    }

    /// Why `a`'s image is not used here, when it names one and this node
    /// runs tasks as processes.
    pub(super) fn image_note(&self, a: &Assignment) -> Option<String> {
        let process = matches!(self.cfg.isolation.runtime, Runtime::Process);
        (process && !a.image.is_empty()).then(|| {
            format!(
                "image {:?} not used: node {} runs tasks as processes in its own environment \
                 (`gpu-node --runtime podman` runs them in their image)",
                a.image, self.cfg.node
            )
        })
    }
}
