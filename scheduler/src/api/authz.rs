//! Authorization: the one place that decides whether a caller may do
//! something. [`authorize`] is pure: the caller ([`Principal`], found by
//! `auth.rs`), what it asks for ([`Action`]) and the current state in, a
//! [`Denied`] naming the rule out. Every handler calls it before proposing,
//! so a denied call changes nothing.
//!
//! The rules:
//! - admins (and everyone when the scheduler runs with `--no-auth`): all;
//! - users: read everything; apply jobs, workflows and endpoints to queues
//!   that name their team or them (or name nobody); cancel and delete their
//!   own objects, team leads also their team's; create and revoke their own
//!   tokens;
//! - viewers: read; gateways: read and report load;
//! - node credentials: the node service, as their own node only;
//! - join tokens: only `NodeService.Join`.
//!
//! Queue objects, cordons, replica membership, users, join tokens
//! and the audit log are for admins.

use gpuctl_common::queue::DEFAULT_QUEUE;

use crate::state::identity::Role;
use crate::state::State;

/// Who is calling, as its credential says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Every caller of a scheduler started with `--no-auth`: an admin.
    Anonymous,
    /// A user (the bootstrap admin is user "admin", role admin, no token id).
    User {
        name: String,
        role: Role,
        team: String,
        team_lead: bool,
        token_id: String,
    },
    /// A node daemon's credential.
    Node { name: String, token_id: String },
    /// A join token: good only to trade for a node credential.
    Join { token_id: String },
}

impl Principal {
    /// The name the audit log records.
    pub fn subject(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User { name, .. } | Principal::Node { name, .. } => name,
            Principal::Join { .. } => "join-token",
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Principal::Anonymous
                | Principal::User {
                    role: Role::Admin,
                    ..
                }
        )
    }

    /// The owner recorded on objects this caller creates.
    pub fn owner(&self) -> Option<String> {
        match self {
            Principal::User { name, .. } => Some(name.clone()),
            _ => None,
        }
    }
}

/// Kinds of object a caller creates with `Apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyKind {
    Job,
    Workflow,
    Endpoint,
    Queue,
    Secret,
}

impl ApplyKind {
    fn name(self) -> &'static str {
        match self {
            ApplyKind::Job => "job",
            ApplyKind::Workflow => "workflow",
            ApplyKind::Endpoint => "endpoint",
            ApplyKind::Queue => "queue",
            ApplyKind::Secret => "secret",
        }
    }
}

/// What a caller asks to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// Get, Wait, Logs, ClusterStatus.
    Read,
    /// WhoAmI.
    WhoAmI,
    Apply {
        kind: ApplyKind,
        name: &'a str,
        /// The queue the object's jobs run in (`None`: the default queue).
        queue: Option<&'a str>,
    },
    /// Give a job or endpoint being applied the values of secret `name`.
    UseSecret {
        name: &'a str,
    },
    /// Cancel (`verb` "cancel") or delete ("delete") a job, workflow or
    /// endpoint; suspend ("suspend") or resume ("resume") a workflow.
    Stop {
        verb: &'a str,
        kind: &'a str,
        name: &'a str,
    },
    Cordon {
        node: &'a str,
    },
    ChangePeers,
    CreateUser,
    /// A token for `user` (user tokens) or a join token.
    CreateToken {
        user: &'a str,
        join: bool,
    },
    RevokeToken {
        id: &'a str,
    },
    Audit,
    ReportLoad,
    /// Register, Heartbeat, WatchAssignments: acting as `node`.
    AsNode {
        verb: &'a str,
        node: &'a str,
    },
    ReportTask {
        node: &'a str,
        job: &'a str,
        index: u32,
        attempt: u32,
    },
    GoneWorkflows,
    Join,
}

/// Why a call was refused: the rule, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// Whether `who` may do `action` in state `st`.
pub fn authorize(who: &Principal, action: &Action, st: &State) -> Result<(), Denied> {
    if who.is_admin() {
        return Ok(());
    }
    match who {
        Principal::Anonymous => Ok(()),
        Principal::Join { token_id } => match action {
            Action::Join => Ok(()),
            _ => Err(Denied(format!(
                "token gpuctl_{token_id} is a join token: it is good only for a node daemon's join (NodeService.Join), not for {}",
                describe(action)
            ))),
        },
        Principal::Node { name, .. } => node_rules(name, action, st),
        Principal::User {
            name,
            role,
            team,
            team_lead,
            ..
        } => user_rules(name, *role, team, *team_lead, action, st),
    }
}

fn node_rules(me: &str, action: &Action, st: &State) -> Result<(), Denied> {
    match action {
        Action::WhoAmI | Action::GoneWorkflows => Ok(()),
        Action::AsNode { verb, node } => {
            if *node == me {
                Ok(())
            } else {
                Err(Denied(format!(
                    "node {me:?} may not {verb} as node {node:?}"
                )))
            }
        }
        Action::ReportTask {
            node,
            job,
            index,
            attempt,
        } => {
            if *node != me {
                return Err(Denied(format!(
                    "node {me:?} may not report for node {node:?}"
                )));
            }
            let Some(j) = st.jobs.get(*job) else {
                // The state machine answers that the job is gone.
                return Ok(());
            };
            let current = if *attempt == j.status.attempt || *attempt == 0 {
                j.status
                    .tasks
                    .get(*index as usize)
                    .and_then(|t| t.node.clone())
            } else {
                j.status
                    .past_attempts
                    .iter()
                    .find(|p| p.attempt == *attempt)
                    .and_then(|p| p.nodes.get(*index as usize).cloned())
                    .filter(|n| !n.is_empty())
            };
            match current {
                Some(n) if n == me => Ok(()),
                Some(n) => Err(Denied(format!(
                    "node {me:?} may not report task {job}/{index}, which runs on node {n:?}"
                ))),
                None => Err(Denied(format!(
                    "node {me:?} may not report task {job}/{index}, which runs on no node"
                ))),
            }
        }
        Action::Join => Err(Denied(format!(
            "node {me:?} already has a credential; joining takes a join token"
        ))),
        other => Err(Denied(format!(
            "node {me:?} may only call the node service as itself, not {}",
            describe(other)
        ))),
    }
}

fn user_rules(
    me: &str,
    role: Role,
    team: &str,
    team_lead: bool,
    action: &Action,
    st: &State,
) -> Result<(), Denied> {
    let who = format!("user {me:?}");
    match action {
        Action::Read | Action::WhoAmI => return Ok(()),
        Action::ReportLoad if role == Role::Gateway => return Ok(()),
        _ => {}
    }
    match role {
        Role::Viewer => {
            return Err(Denied(format!(
                "{who} is a viewer and may not {}",
                verb_of(action)
            )))
        }
        Role::Gateway => {
            return Err(Denied(format!(
                "{who} has role gateway and may only read and report load, not {}",
                verb_of(action)
            )))
        }
        Role::User | Role::Admin => {}
    }
    match action {
        Action::Apply { kind, name, queue } => match kind {
            ApplyKind::Queue => Err(Denied(format!(
                "{who} may not apply {} {name:?}: only admins configure {}s",
                kind.name(),
                kind.name()
            ))),
            ApplyKind::Secret => match st.secrets.get(*name) {
                Some(s) if !shares_secret(st, me, team, &s.metadata.owner) => Err(Denied(format!(
                    "{who} may not replace secret {name:?} ({})",
                    secret_holder(st, &s.metadata.owner)
                ))),
                _ => Ok(()),
            },
            _ => {
                let q = queue.unwrap_or(DEFAULT_QUEUE);
                match st.queues.get(q) {
                    Some(queue) if !queue.admits(me, team) => Err(Denied(format!(
                        "{who} (team {team:?}) may not submit to queue {q:?} ({})",
                        queue_members(queue)
                    ))),
                    _ => Ok(()),
                }
            }
        },
        Action::Stop { verb, kind, name } => {
            let owner = owner_of(st, kind, name);
            match owner {
                None => Ok(()), // not found: the state machine says so
                Some(Some(o)) if o == me => Ok(()),
                Some(Some(o)) if team_lead && !team.is_empty() && team_of(st, &o) == team => Ok(()),
                Some(Some(o)) => Err(Denied(format!(
                    "{who} may not {verb} {kind} {name:?} (owner {o:?})"
                ))),
                Some(None) => Err(Denied(format!(
                    "{who} may not {verb} {kind} {name:?} (no owner: only admins may)"
                ))),
            }
        }
        Action::UseSecret { name } => match st.secrets.get(*name) {
            Some(s) if !shares_secret(st, me, team, &s.metadata.owner) => Err(Denied(format!(
                "{who} (team {team:?}) may not use secret {name:?} ({})",
                secret_holder(st, &s.metadata.owner)
            ))),
            // A missing secret is refused by the apply, naming the field.
            _ => Ok(()),
        },
        Action::CreateToken { user, join } => {
            if *join {
                Err(Denied(format!(
                    "{who} may not create join tokens: only admins add nodes"
                )))
            } else if user.is_empty() || *user == me {
                Ok(())
            } else {
                Err(Denied(format!(
                    "{who} may not create tokens for user {user:?}, only for themself"
                )))
            }
        }
        Action::RevokeToken { id } => match st.tokens.get(*id) {
            Some(t) if t.subject != me || t.kind != crate::state::identity::TokenKind::User => {
                Err(Denied(format!(
                    "{who} may not revoke token {id} of {} {:?}",
                    t.kind.as_str(),
                    t.subject
                )))
            }
            _ => Ok(()),
        },
        other => Err(Denied(format!(
            "{who} may not {}: {} is for admins",
            verb_of(other),
            describe(other)
        ))),
    }
}

/// The owner of an object: `None` when there is no such object,
/// `Some(None)` when it has no owner.
fn owner_of(st: &State, kind: &str, name: &str) -> Option<Option<String>> {
    match kind {
        "job" => st.jobs.get(name).map(|j| j.metadata.owner.clone()),
        "workflow" => st.workflows.get(name).map(|w| w.metadata.owner.clone()),
        "endpoint" => st.endpoints.get(name).map(|e| e.metadata.owner.clone()),
        "secret" => st.secrets.get(name).map(|s| s.metadata.owner.clone()),
        _ => None,
    }
}

/// A secret belongs to its owner's team: its owner and the members of
/// that team may use and replace it (one without an owner: admins only).
fn shares_secret(st: &State, me: &str, team: &str, owner: &Option<String>) -> bool {
    match owner {
        Some(o) => o == me || (!team.is_empty() && team_of(st, o) == team),
        None => false,
    }
}

/// Whose a secret is, for messages: `owner "alice", team "vision"`.
fn secret_holder(st: &State, owner: &Option<String>) -> String {
    match owner {
        Some(o) => format!("owner {o:?}, team {:?}", team_of(st, o)),
        None => "no owner: only admins may".into(),
    }
}

fn team_of<'a>(st: &'a State, user: &str) -> &'a str {
    st.users.get(user).map(|u| u.team.as_str()).unwrap_or("")
}

fn queue_members(q: &gpuctl_common::queue::Queue) -> String {
    let mut parts = Vec::new();
    if !q.spec.teams.is_empty() {
        parts.push(format!("teams: {}", q.spec.teams.join(", ")));
    }
    if !q.spec.users.is_empty() {
        parts.push(format!("users: {}", q.spec.users.join(", ")));
    }
    parts.join("; ")
}

/// The verb of an action, for "may not <verb>".
fn verb_of(action: &Action) -> String {
    match action {
        Action::Apply { .. } => "apply".into(),
        Action::UseSecret { name } => format!("use secret {name:?}"),
        Action::Stop { verb, kind, name } => format!("{verb} {kind} {name:?}"),
        Action::Cordon { node } => format!("cordon node {node:?}"),
        Action::ChangePeers => "change the scheduler replicas".into(),
        Action::CreateUser => "create users".into(),
        Action::CreateToken { .. } => "create tokens".into(),
        Action::RevokeToken { id } => format!("revoke token {id}"),
        Action::Audit => "read the audit log".into(),
        Action::ReportLoad => "report load".into(),
        Action::AsNode { verb, node } => format!("{verb} as node {node:?}"),
        Action::ReportTask { .. } => "report tasks".into(),
        Action::GoneWorkflows | Action::Join => "call the node service".into(),
        Action::Read | Action::WhoAmI => "read".into(),
    }
}

/// The call an action stands for, for messages.
fn describe(action: &Action) -> &'static str {
    match action {
        Action::Read => "reads",
        Action::WhoAmI => "WhoAmI",
        Action::Apply { .. } => "Apply",
        Action::UseSecret { .. } => "Apply",
        Action::Stop { .. } => "Cancel/Delete",
        Action::Cordon { .. } => "Cordon",
        Action::ChangePeers => "AddPeer/RemovePeer",
        Action::CreateUser => "CreateUser",
        Action::CreateToken { .. } => "CreateToken",
        Action::RevokeToken { .. } => "RevokeToken",
        Action::Audit => "Audit",
        Action::ReportLoad => "ReportLoad",
        Action::AsNode { .. } => "the node service",
        Action::ReportTask { .. } => "ReportTask",
        Action::GoneWorkflows => "GoneWorkflows",
        Action::Join => "Join",
    }
}

#[cfg(test)]
#[path = "authz_tests.rs"]
mod tests;
