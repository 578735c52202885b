//! The async side of the Raft driver: [`RaftHandle`] sends proposals,
//! ReadIndex requests and membership changes to the driver thread and waits
//! for their answers; [`Shared`] is what the thread publishes (the state
//! machine, the Raft status, the applied version, the replica addresses).

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use raft::prelude::{ConfChange, Message};
use tokio::sync::{oneshot, watch};

use super::status::RaftStatus;
use crate::metrics::Metrics;
use crate::state::{Applied, ApplyError, Envelope, State};

/// Why a proposal did not take effect.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("{}", match leader {
        Some(l) => format!("this scheduler replica is not the leader (replica {l} is); retry"),
        None => "no leader is known right now (an election is under way, or this replica cannot reach a majority of its peers); retry, or try another replica".to_string(),
    })]
    NotLeader { leader: Option<u64> },
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    #[error("the proposal was not committed within {0:?}; it may or may not take effect")]
    Timeout(Duration),
    /// A membership change while the last one is not yet applied here.
    #[error("another membership change is still being applied; try again in a moment")]
    ChangeInProgress,
    #[error("the scheduler is shutting down")]
    Shutdown,
    #[error("storage failure: {0}")]
    Storage(String),
}

/// Longest wait for a ReadIndex answer.
const READ_BARRIER_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) type Reply = oneshot::Sender<Result<Applied, ProposeError>>;
pub(super) type ReadReply = oneshot::Sender<Result<(), ProposeError>>;

pub(super) enum Msg {
    Propose {
        env: Box<Envelope>,
        reply: Reply,
        /// Refuse (as not leader) unless this replica leads in this term.
        term: Option<u64>,
    },
    /// A message from a peer.
    Step(Box<Message>),
    /// Sending to this peer failed.
    Unreachable(u64),
    /// Answer once this replica has applied everything committed when asked.
    ReadIndex(oneshot::Sender<Result<(), ProposeError>>),
    /// Propose a configuration change; answered once applied.
    ConfChange {
        cc: Box<ConfChange>,
        reply: Reply,
    },
    Shutdown,
}

/// State shared between the driver thread and the async world.
pub struct Shared {
    pub state: RwLock<State>,
    pub status: Mutex<RaftStatus>,
    /// Bumped to the applied index after every applied batch.
    pub version: watch::Sender<u64>,
    /// Replica addresses (id → gRPC URL), changed by membership changes.
    pub members: watch::Sender<std::collections::BTreeMap<u64, String>>,
    pub metrics: Metrics,
}

impl Shared {
    pub fn status(&self) -> RaftStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle to the driver; cheap to clone.
#[derive(Clone)]
pub struct RaftHandle {
    pub(super) tx: Sender<Msg>,
    pub shared: Arc<Shared>,
    pub(super) propose_timeout: Duration,
}

/// The default of [`RaftOptions::compact_after`]. The log keeps the newest
/// half, 25,000 entries: at 2,000 jobs a second (about three entries a
/// job) a follower that stops for 4 s catches up from the log instead of a
/// snapshot of the whole state (10,000 kept 0.8 s; 100,000 jobs' state is
/// about 450 MiB on disk). Between compactions the log holds 25,000 to
/// 75,000 entries, in memory too (tens of MiB for one-task jobs).
pub const DEFAULT_COMPACT_AFTER: u64 = 50_000;

/// Settings of the driver.
#[derive(Debug, Clone)]
pub struct RaftOptions {
    pub id: u64,
    /// Voters of a brand-new cluster (every replica is given the same list);
    /// ignored once the replica has stored a configuration.
    pub initial_voters: Vec<u64>,
    /// Join an existing cluster instead of bootstrapping one: start empty
    /// and wait for the leader (after `AddPeer`) to send a snapshot.
    pub join: bool,
    pub tick: Duration,
    /// Keep at most this many applied entries in the log before compacting.
    pub compact_after: u64,
    /// How long a caller waits for its proposal to be applied.
    pub propose_timeout: Duration,
    /// Answer read barriers on the leader's lease while a majority has
    /// confirmed it lately (`lease.rs`); otherwise every batch of them is
    /// a heartbeat round (raft-rs's `Safe` ReadIndex).
    pub lease_reads: bool,
}

impl Default for RaftOptions {
    fn default() -> Self {
        RaftOptions {
            id: 1,
            initial_voters: vec![1],
            join: false,
            tick: Duration::from_millis(100),
            compact_after: DEFAULT_COMPACT_AFTER,
            propose_timeout: Duration::from_secs(10),
            lease_reads: true,
        }
    }
}

impl RaftHandle {
    /// Propose a command and wait until it is committed and applied.
    pub async fn propose(&self, env: Envelope) -> Result<Applied, ProposeError> {
        self.propose_in(env, None).await
    }

    /// [`RaftHandle::propose`], refused as [`ProposeError::NotLeader`]
    /// unless this replica still leads in `term` when the command reaches
    /// the log: a command checked against this leader's state is never
    /// proposed by a later leadership of the same replica.
    pub async fn propose_in_term(&self, env: Envelope, term: u64) -> Result<Applied, ProposeError> {
        self.propose_in(env, Some(term)).await
    }

    async fn propose_in(&self, env: Envelope, term: Option<u64>) -> Result<Applied, ProposeError> {
        let name = env.cmd.name();
        let start = Instant::now();
        let env = Box::new(env);
        let timeout = self.propose_timeout;
        let res = self
            .ask(
                |reply| Msg::Propose { env, reply, term },
                timeout,
                ProposeError::Timeout(timeout),
            )
            .await;
        self.shared
            .metrics
            .observe_command(name, res.is_ok(), start.elapsed());
        res
    }

    /// Send the driver a request and wait up to `timeout` for its answer.
    async fn ask<T>(
        &self,
        msg: impl FnOnce(oneshot::Sender<Result<T, ProposeError>>) -> Msg,
        timeout: Duration,
        on_timeout: ProposeError,
    ) -> Result<T, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(msg(tx)).map_err(|_| ProposeError::Shutdown)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ProposeError::Shutdown),
            Err(_) => Err(on_timeout),
        }
    }

    /// Hand a peer's message to Raft.
    pub fn step(&self, m: Message) {
        let _ = self.tx.send(Msg::Step(Box::new(m)));
    }

    /// Tell Raft that sending to a peer failed.
    pub fn unreachable(&self, id: u64) {
        let _ = self.tx.send(Msg::Unreachable(id));
    }

    /// Wait until this replica has applied every write committed before the
    /// call (Raft's ReadIndex): a read after this is linearizable.
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        // A read has no side effect: a slow barrier is reported as "no
        // leader" so that clients retry, possibly on another replica.
        let start = Instant::now();
        let res = self
            .ask(
                Msg::ReadIndex,
                READ_BARRIER_TIMEOUT,
                ProposeError::NotLeader { leader: None },
            )
            .await;
        self.shared
            .metrics
            .observe_read_barrier(res.is_ok(), start.elapsed());
        res
    }

    /// Add or remove a voter; returns once the change is applied here.
    pub async fn change_membership(&self, cc: ConfChange) -> Result<Applied, ProposeError> {
        let cc = Box::new(cc);
        let timeout = self.propose_timeout;
        self.ask(
            |reply| Msg::ConfChange { cc, reply },
            timeout,
            ProposeError::Timeout(timeout),
        )
        .await
    }

    /// Stop the driver after it has persisted what it has.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Msg::Shutdown);
    }
}
