//! A task's or step's `hooks`: Argo's lifecycle hooks. The `exit` hook (and
//! the older `onExit: TEMPLATE`, the same hook without arguments) runs a
//! template after the task ends, whatever its phase.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dag::{Arguments, DagTask};
use super::scalar::Unsupported;

/// One lifecycle hook: the template it runs and its arguments.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LifecycleHook {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Arguments>,
    #[serde(default, skip_serializing)]
    pub template_ref: Unsupported,
    /// When the hook runs (hooks other than `exit`); not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// `hooks:` by name (`exit`, or a name of the user's with an expression).
pub type Hooks = BTreeMap<String, LifecycleHook>;

impl DagTask {
    /// The exit handler: `hooks.exit`, else `onExit` (Argo's older form of
    /// the same hook, without arguments).
    pub fn exit_hook(&self) -> Option<LifecycleHook> {
        if let Some(h) = self.hooks.as_ref().and_then(|h| h.get("exit")) {
            return Some(h.clone());
        }
        self.on_exit.as_ref().map(|t| LifecycleHook {
            template: Some(t.clone()),
            ..Default::default()
        })
    }
}
