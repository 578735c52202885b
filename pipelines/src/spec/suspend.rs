//! A `suspend` template: the step waits until the workflow is resumed
//! (`gpuctl resume`, as `argo resume`), or until its `duration` has passed.

use serde::{Deserialize, Serialize};

use super::scalar::AnyString;

/// `suspend:` (`{}` waits for a resume; `{duration: "20s"}` resumes itself).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SuspendTemplate {
    /// Argo's duration: a number of seconds (`"20"`, or `20`) or a duration
    /// with units (`"30s"`, `"2m"`, `"6h"`), possibly from a `{{...}}`
    /// parameter. Absent: until resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<AnyString>,
}
