//! The gRPC shell: `Control` (for the CLI), `NodeService` (for node
//! daemons) and the Raft peer service (for the other replicas). Handlers
//! validate, turn requests into [`Command`](crate::state::Command)s, propose
//! them through Raft and answer once they are applied. Reads come from the
//! local state machine.
//!
//! ```text
//!  control.rs      Control: apply, get, cancel, delete, wait, logs, cluster
//!  apply.rs        Control.Apply: the object parsed once, checked, proposed
//!  auth.rs         who a call's bearer token says the caller is
//!  authz.rs        what each caller may do: the one authorization function
//!  guard.rs        the handlers' use of both, and of the audit log
//!  audit.rs        the audit log of mutating calls (DATA_DIR/audit.log)
//!  identity.rs     Control's users, tokens, WhoAmI and Audit
//!  nodes.rs        NodeService: register, heartbeat, assignments, reports
//!  assignments.rs  a node's tasks as TaskAssignment messages
//!  node_watch.rs   per-node wakeups of those streams, from the state's
//!                  per-node change log
//!  raft_peer.rs    Raft: peers' messages in, writes forwarded to the leader
//!  workflows.rs    Control's workflow parts (apply, reads, wait)
//!  proposer.rs     Proposer: propose here, or forward to the leader
//!  peers.rs        Peers: clients for the other replicas
//!  convert.rs      errors to gRPC statuses, objects to JSON, kind names,
//!                  task phases to and from the proto enum
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::Status;

use crate::controllers::{Heartbeats, Loads};
use crate::raft::RaftHandle;
use crate::state::State;

mod apply;
mod argo_objects;
mod assignments;
pub mod audit;
pub mod auth;
pub mod authz;
mod control;
mod convert;
mod guard;
mod identity;
mod job_list;
pub mod leader_hint;
pub mod node_watch;
mod nodes;
pub mod peers;
pub mod proposer;
pub mod raft_peer;
mod rollout;
mod workflows;

pub use peers::Peers;
use proposer::Proposer;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Settings the services need.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Interval node daemons are told to heartbeat at (stretched for a
    /// large fleet: `heartbeats_per_second`).
    pub heartbeat_interval: Duration,
    /// Longest server-side wait of one `Wait` call.
    pub max_wait: Duration,
    /// How callers are authenticated (off by default: every caller is an
    /// anonymous admin).
    pub auth: auth::AuthOptions,
    /// `/metrics` and `/healthz` in plain HTTP although TLS is configured
    /// (`--metrics-insecure`); otherwise they speak HTTPS with the TLS
    /// certificate.
    pub metrics_insecure: bool,
    /// Most heartbeats per second the whole fleet is asked to send (0: no
    /// limit). A fleet larger than this times the interval is told a
    /// longer interval ([`crate::controllers::liveness::Cadence`]).
    pub heartbeats_per_second: u32,
}

/// The default of [`ServiceOptions::heartbeats_per_second`]: at 1,000
/// nodes or fewer, every node beats each second; 10,000 nodes beat every
/// 10 s, as Kubernetes' node leases are renewed.
pub const DEFAULT_HEARTBEATS_PER_SECOND: u32 = 1000;

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            heartbeat_interval: Duration::from_secs(1),
            max_wait: Duration::from_secs(300),
            auth: auth::AuthOptions::default(),
            metrics_insecure: false,
            heartbeats_per_second: DEFAULT_HEARTBEATS_PER_SECOND,
        }
    }
}

/// Implements the `Control` and `NodeService` gRPC services over one Raft
/// handle.
#[derive(Clone)]
pub struct Api {
    pub raft: RaftHandle,
    pub heartbeats: Arc<Heartbeats>,
    pub opts: ServiceOptions,
    /// Flips to true on shutdown; ends long-lived streams and waits.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// The other replicas, for forwarding.
    pub peers: Arc<Peers>,
    /// Gateway load reports for the endpoint controller (used while leading).
    pub loads: Arc<Loads>,
    /// This replica's record of mutating calls.
    pub audit_log: Arc<audit::AuditLog>,
    /// Per-node wakeups of `WatchAssignments` streams, fed by
    /// [`node_watch::follow`].
    pub wakeups: Arc<node_watch::NodeWakeups>,
    /// Why pending jobs wait, for `describe` (a planner of its own, and
    /// the round it planned for the state as last applied).
    pub explainer: Arc<std::sync::Mutex<crate::placement::Explainer>>,
    /// Jobs' JSON as lists answer it, kept per version.
    pub job_json: Arc<job_list::JobJson>,
}

impl Api {
    /// Proposes this API's writes: here, or on the leader.
    fn proposer(&self) -> Proposer<'_> {
        Proposer {
            raft: &self.raft,
            peers: &self.peers,
        }
    }

    /// barrier, so on any replica): its retry is answered from the record
    /// and skips the checks a new request gets.
    fn already_applied(&self, request_id: Option<&str>) -> bool {
        request_id.is_some_and(|id| self.state().request(id).is_some())
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.raft.shared.read()
    }

    /// Why the pending job `name` waits, as the `Waiting:` text. The
    /// explainer is taken before the state's read lock, so that calls
    /// waiting for it do not hold back the next apply.
    pub fn waiting_reason(&self, name: &str) -> Option<String> {
        let mut explainer = self.explainer.lock().unwrap_or_else(|p| p.into_inner());
        let st = self.state();
        explainer.waiting_reason(&st, name)
    }
}
