//! The Argo `Workflow` document as serde types, and strict parsing.
//!
//! Every struct denies unknown fields, so a field that would change what a
//! DAG does and that we do not implement is an error rather than silently
//! ignored. Fields Argo has that we know about but do not implement are
//! declared here as [`Unsupported`] and rejected by [`crate::validate`] with a
//! reason that names them.
//!
//! Accepted and ignored (they only matter to Kubernetes, not to the DAG):
//! `metadata.namespace`, `metadata.uid` and other server-set metadata,
//! `spec.serviceAccountName`, `spec.podGC`,
//! `spec.volumes`, `spec.nodeSelector`, `spec.tolerations`, `spec.affinity`,
//! `spec.imagePullSecrets`, `spec.securityContext`, `spec.podMetadata`,
//! `spec.priorityClassName`, `spec.archiveLogs`, `status`; in a template:
//! `metadata`, `nodeSelector`, `tolerations`, `affinity`,
//! `serviceAccountName`, `securityContext`, `volumes`, `archiveLocation`;
//! in a container or script: `name`, `imagePullPolicy`, `volumeMounts`,
//! `securityContext`, `ports`; in an artifact: `archive`, `mode`;
//! `resources.*.ephemeral-storage`; `memoize.cache`. `metadata.labels` and
//! `metadata.annotations` are kept.
//!
//! The document's parts, from the top down: `workflow` (the object, its
//! metadata and spec), `template` (a template and its shared settings),
//! `dag` and `container` (the two kinds of template), `io` (parameters and
//! artifacts), `scalar` (the scalar forms Argo accepts, and durations) and
//! `parse` (text to a [`Workflow`]). Everything is re-exported here.

mod container;
mod dag;
mod inline;
mod io;
mod parse;
mod scalar;
mod suspend;
mod template;
mod workflow;

pub use container::{Container, EnvVar, ResourceList, ResourceRequirements, Script};
pub use dag::{
    Arguments, ContinueOn, DagTask, DagTemplate, Hooks, LifecycleHook, Sequence, WorkflowStep,
};
pub use inline::{hoist_inline, unhoisted_path};
pub use io::{Artifact, Inputs, Outputs, Parameter, RawArtifact, ValueFrom};
pub use parse::{from_document, parse_unvalidated, ARGO_API_VERSION};
pub use scalar::{parse_duration_ms, AnyString, Ignored, IntOrString, Unsupported};
pub use suspend::SuspendTemplate;
pub use template::{Backoff, Memoize, RetryPolicy, RetryStrategy, Template};
pub use workflow::{TtlStrategy, Workflow, WorkflowArguments, WorkflowMeta, WorkflowSpec};
