//! What a node's tasks share: its config, its driver's control queue, its
//! store, its peers, and (on the coordinator) the coordinator's state.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use cairn_core::ProcessId;
use cairn_store::Store;
use tokio::sync::{mpsc, watch};

use crate::config::ClusterConfig;
use crate::control::initiation::IdBlock;
use crate::control::role::Role;
use crate::coordinator::Coordinator;
use crate::driver::{ChannelCounts, Control};
use crate::metrics::Metrics;
use crate::peers::PeerBook;

/// Manifests waiting for the committer. A full queue fails the snapshot
/// instead of growing.
pub(crate) const COMMIT_QUEUE: usize = 64;

/// What a node's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Arc<ClusterConfig>,
    /// Reads a recorded message (kept in the wire's encoding) as JSON, for
    /// serving snapshots from the store.
    pub decode_message: cairn_store::Decoder,
    pub me: ProcessId,
    pub control: mpsc::Sender<Control>,
    pub metrics: Arc<Metrics>,
    pub cut: watch::Sender<u64>,
    pub started: Instant,
    pub store: Store,
    /// Who coordinates, in which term, and what this node leads with.
    pub role: Role,
    /// The node's epoch.
    pub epoch: watch::Receiver<u64>,
    /// The process's initial state, for a rollback when no snapshot exists.
    pub initial: serde_json::Value,
    /// One stop-the-world snapshot at a time.
    pub stop_world: tokio::sync::Mutex<()>,
    /// This node's incarnation and its peers'.
    pub peers: Arc<PeerBook>,
    /// Snapshot ids leased from the store (coordinator only).
    pub ids: tokio::sync::Mutex<IdBlock>,
    /// Held by a commit (with its retention) and by a whole rollback, so
    /// that no commit lands while a rollback chooses and begins its epoch.
    pub gate: tokio::sync::Mutex<()>,
    /// Messages sent and received per channel in this epoch.
    pub counts: Arc<ChannelCounts>,
    /// Certificates (`None`: the cluster runs insecure).
    pub security: Option<Arc<crate::tls::Security>>,
    /// Calls other nodes' admin APIs, presenting this node's certificate.
    pub client: crate::client::AdminClient,
    /// The bearer tokens the admin API accepts.
    pub tokens: crate::admin_auth::Tokens,
    /// Snapshots the coordinator gave up, newest last (bounded): a report
    /// for one of them is dropped, not sent or retried.
    pub given_up: Mutex<std::collections::VecDeque<u64>>,
    /// The epoch whose timeline this node's state belongs to: set when a
    /// rollback gives it a state, or when it joins a fresh cluster's epoch
    /// 0. A fresh process in a used store has none ([`NO_EPOCH`]).
    pub joined: std::sync::atomic::AtomicU64,
    /// Snapshots a node could not restore its part of (corrupt or missing):
    /// automatic recovery passes over them from then on (coordinator only).
    pub unusable: Mutex<std::collections::BTreeSet<u64>>,
    /// When this node last heard its coordinator (or led).
    pub coordinator_heard: Mutex<Instant>,
    /// Per outgoing channel: frames queued or unacknowledged, and whether
    /// its connection is up.
    pub pending: std::collections::HashMap<
        cairn_core::ChannelId,
        (
            Arc<std::sync::atomic::AtomicUsize>,
            Arc<std::sync::atomic::AtomicBool>,
        ),
    >,
}

/// `joined` before the node holds a state of any epoch.
pub(crate) const NO_EPOCH: u64 = u64::MAX;

/// How many given-up snapshot ids a node remembers.
const GIVEN_UP: usize = 256;

impl Shared {
    /// The epoch whose timeline this node's state belongs to, if any.
    pub fn joined(&self) -> Option<u64> {
        let e = self.joined.load(std::sync::atomic::Ordering::Relaxed);
        (e != NO_EPOCH).then_some(e)
    }

    /// This node's state now belongs to `epoch`'s timeline.
    pub fn set_joined(&self, epoch: u64) {
        self.joined
            .store(epoch, std::sync::atomic::Ordering::Relaxed);
    }

    /// This node heard its coordinator just now (or leads).
    pub fn heard_coordinator(&self) {
        *self
            .coordinator_heard
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// How long since this node last heard its coordinator.
    pub fn coordinator_silent(&self) -> Duration {
        self.coordinator_heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// The coordinator gave snapshot `id` up.
    pub fn give_up(&self, id: u64) {
        let mut g = self.given_up.lock().unwrap_or_else(|p| p.into_inner());
        if !g.contains(&id) {
            g.push_back(id);
            while g.len() > GIVEN_UP {
                g.pop_front();
            }
        }
    }

    /// Whether the coordinator gave snapshot `id` up.
    pub fn given_up(&self, id: u64) -> bool {
        let g = self.given_up.lock().unwrap_or_else(|p| p.into_inner());
        g.contains(&id)
    }

    /// This node's id.
    pub fn name(&self) -> &str {
        self.config.topology.name(self.me)
    }

    /// The coordinator's state, if this node coordinates now.
    pub fn coordinator(&self) -> Option<Arc<Mutex<Coordinator>>> {
        self.role.leading()
    }

    /// The admin address of the coordinator this node follows.
    pub fn coordinator_admin(&self) -> std::net::SocketAddr {
        self.config.nodes[self.role.view().1.index()].admin
    }

    /// The id of the coordinator this node follows.
    pub fn coordinator_name(&self) -> &str {
        self.config.topology.name(self.role.view().1)
    }

    /// Leftovers of uncommitted snapshots nobody has written to for this
    /// long are collected even when this coordinator did not see them fail.
    pub fn stale_after(&self) -> Duration {
        self.config
            .stale_after
            .unwrap_or_else(|| (self.config.snapshots.timeout * 4).max(Duration::from_secs(30)))
    }
}
