//! Who coordinates: terms decided by the store, and failover.
//!
//! A candidate becomes coordinator of term `T` by creating `terms/<T>` in
//! the store (create-if-absent): exactly one candidate wins each term. Every
//! node follows the highest term it has seen, from the store or from the
//! coordinator's own status, and refuses orders of a lower term.
//!
//! Every node watches the coordinator of its term. When it has been silent
//! for the failure timeout, the next candidate in order claims the next
//! term, if it reaches more than half of the cluster (a node cut off from
//! the rest never takes the lead); if that one is silent too, the one after
//! it claims a failure timeout later. A new coordinator that holds a state
//! of the current epoch carries the cluster on in it: a node that lost its
//! state shows it in its heartbeat, and only that rolls back (see
//! `failure`). Orders of the old term are refused by the term check. A
//! coordinator that finds a higher term in the store steps down and follows.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use cairn_core::ProcessId;
use cairn_store::TermRecord;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::control::commit::run_committer;
use crate::control::failure::run_coordinator_timers;
use crate::coordinator::Coordinator;
use crate::shared::{COMMIT_QUEUE, Shared};

/// The term and coordinator a node follows, and, on the coordinator, what
/// it leads with.
#[derive(Debug)]
pub(crate) struct Role {
    view: Mutex<(u64, ProcessId)>,
    lead: Mutex<Option<Lead>>,
}

/// What a coordinator leads with in its term.
#[derive(Debug, Clone)]
pub(crate) struct Lead {
    pub term: u64,
    pub coordinator: Arc<Mutex<Coordinator>>,
    pub commits: mpsc::Sender<cairn_store::Manifest>,
    stop: Arc<watch::Sender<bool>>,
}

impl Role {
    /// A node that expects `first` to coordinate, in no term yet.
    pub fn new(first: ProcessId) -> Self {
        Role {
            view: Mutex::new((0, first)),
            lead: Mutex::new(None),
        }
    }

    /// The term and its coordinator, as this node knows them.
    pub fn view(&self) -> (u64, ProcessId) {
        *self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The highest term this node has seen.
    pub fn term(&self) -> u64 {
        self.view().0
    }

    /// What this node leads with, if it coordinates.
    pub fn lead(&self) -> Option<Lead> {
        self.lead.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The coordinator's state, if this node coordinates.
    pub fn leading(&self) -> Option<Arc<Mutex<Coordinator>>> {
        self.lead().map(|l| l.coordinator)
    }

    /// Follows `coordinator` in `term` if it is newer than what this node
    /// knows; a coordinator of an older term steps down. Returns whether
    /// anything changed.
    pub fn follow(&self, term: u64, coordinator: ProcessId) -> bool {
        {
            let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            if term <= view.0 {
                return false;
            }
            *view = (term, coordinator);
        }
        let mut lead = self.lead.lock().unwrap_or_else(|p| p.into_inner());
        if lead.as_ref().is_some_and(|l| l.term < term) {
            if let Some(l) = lead.take() {
                let _ = l.stop.send(true);
                warn!(
                    term = l.term,
                    newer = term,
                    "stepping down: a newer term has a coordinator"
                );
            }
        }
        true
    }
}

/// The tasks of a term this node led: awaited at shutdown, so that the
/// committer finishes what is queued (and retention runs after the last commit).
type LeadTasks = Vec<tokio::task::JoinHandle<()>>;

/// Claims `term` for this node; leads if it won, follows the winner if not.
async fn claim(
    shared: &Arc<Shared>,
    term: u64,
    takeover: bool,
    stop: &watch::Receiver<bool>,
    tasks: &mut LeadTasks,
) {
    let mine = TermRecord {
        term,
        node: shared.name().to_string(),
        incarnation: shared.peers.me,
        created_unix_ms: cairn_store::unix_ms(),
    };
    match shared.store.claim_term(&mine).await {
        Ok(holder) if holder.node == mine.node && holder.incarnation == mine.incarnation => {
            tasks.extend(begin_lead(shared, term, takeover, stop));
        }
        Ok(holder) => {
            if let Some(p) = shared.config.topology.process(&holder.node) {
                shared.role.follow(holder.term, p);
            }
        }
        Err(e) => warn!(term, "could not claim the term: {e}"),
    }
}

/// Becomes coordinator of `term`: a fresh coordinator, its committer and
/// its timers, all stopped when the term is lost or the node stops.
fn begin_lead(
    shared: &Arc<Shared>,
    term: u64,
    takeover: bool,
    node_stop: &watch::Receiver<bool>,
) -> LeadTasks {
    let me = shared.me;
    if !shared.role.follow(term, me) && shared.role.view() != (term, me) {
        return Vec::new(); // a newer term is already known
    }
    let coordinator = Arc::new(Mutex::new(Coordinator::new(
        shared.config.topology.clone(),
        &shared.config.cluster,
        &shared.config.app.name,
        shared.config.snapshots.timeout,
        shared.config.snapshots.keep,
        shared.metrics.clone(),
    )));
    coordinator
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_term(term);
    let (commits, commit_rx) = mpsc::channel(COMMIT_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    *shared.role.lead.lock().unwrap_or_else(|p| p.into_inner()) = Some(Lead {
        term,
        coordinator: coordinator.clone(),
        commits,
        stop: stop_tx.clone(),
    });
    info!(term, "coordinating");
    // The last-durable series start from what the store holds, so a new
    // coordinator does not report "never" until its first commit.
    let seed = shared.clone();
    tokio::spawn(async move {
        let newest = seed
            .store
            .list()
            .await
            .ok()
            .and_then(|l| l.into_iter().max());
        if let Some(id) = newest
            && let Ok(m) = seed.store.manifest(id).await
        {
            seed.metrics.note_durable_in_store(id, m.created_unix_ms);
        }
    });
    // The node's own stop ends the term's tasks too.
    let mut node_stop = node_stop.clone();
    let forward = stop_tx.clone();
    tokio::spawn(async move {
        let _ = node_stop.changed().await;
        let _ = forward.send(true);
    });
    vec![
        tokio::spawn(run_committer(
            shared.clone(),
            coordinator.clone(),
            commit_rx,
            stop_rx.clone(),
        )),
        tokio::spawn(run_coordinator_timers(
            shared.clone(),
            coordinator,
            takeover,
            stop_rx,
        )),
    ]
}

/// How many nodes agree that the coordinator is gone (this node, and each
/// node it reaches that has not heard the coordinator for `silent`), and
/// how many must: more than half of the cluster; in a cluster of two,
/// this node alone, since the other side of a cut cannot be told from a
/// crash. A node cut off from the rest, or one whose link to the
/// coordinator alone is broken, never deposes a coordinator the others hear.
async fn reachable(shared: &Shared, silent: Duration) -> (usize, usize) {
    let nodes = &shared.config.nodes;
    let need = if nodes.len() <= 2 {
        1
    } else {
        nodes.len() / 2 + 1
    };
    let polls = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != shared.me.index())
        .map(|(_, n)| {
            shared.client.get_json_within::<serde_json::Value>(
                Duration::from_millis(250),
                n.admin,
                "/status",
            )
        });
    let agree = |r: &crate::error::Result<(hyper::StatusCode, serde_json::Value)>| {
        let Ok((_, v)) = r else { return false };
        v["leading"] != true
            && v["coordinator_silent_ms"]
                .as_u64()
                .is_some_and(|ms| ms >= silent.as_millis() as u64)
    };
    let reached = 1 + futures_util::future::join_all(polls)
        .await
        .iter()
        .filter(|r| agree(r))
        .count();
    (reached, need)
}

/// This node's rank among the candidates that would take over from
/// `current`: 0 for the next one in order, `None` if it is no candidate.
fn rank(candidates: &[ProcessId], current: ProcessId, me: ProcessId) -> Option<usize> {
    let start = candidates
        .iter()
        .position(|&c| c == current)
        .map_or(0, |i| i + 1);
    let n = candidates.len();
    (0..n)
        .map(|k| candidates[(start + k) % n])
        .filter(|&c| c != current)
        .position(|c| c == me)
}

/// Runs the node's part in choosing the coordinator until `stop`.
pub(crate) async fn run_role(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let config = shared.config.clone();
    let limit = config
        .snapshots
        .failure_timeout
        .unwrap_or(Duration::from_secs(1));
    let mut stop_watch = stop.clone();
    let mut tasks: LeadTasks = Vec::new();
    // Start: follow the newest term's holder; claim a term if there is
    // none and this node is the first candidate, or if the holder is an
    // earlier life of this node.
    let newest = loop {
        match shared.store.newest_term().await {
            Ok(n) => break n,
            Err(e) => {
                warn!("cannot read the terms, retrying: {e}");
                tokio::select! {
                    _ = stop_watch.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    };
    match newest {
        None if config.candidates.first() == Some(&shared.me) => {
            claim(&shared, 1, false, &stop, &mut tasks).await
        }
        None => {}
        Some(r) if r.node == shared.name() => {
            claim(&shared, r.term + 1, false, &stop, &mut tasks).await
        }
        Some(r) => {
            if let Some(p) = config.topology.process(&r.node) {
                shared.role.follow(r.term, p);
            }
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_heard = Instant::now();
    shared.heard_coordinator();
    // Until a coordinator has answered once, nodes may still be starting.
    let mut heard_once = false;
    let mut warned_minority = false;
    let mut last_store_look = Instant::now();
    loop {
        tokio::select! {
            _ = stop_watch.changed() => {
                for t in tasks {
                    let _ = t.await;
                }
                return;
            }
            _ = tick.tick() => {}
        }
        tasks.retain(|t| !t.is_finished());
        crate::metrics::Metrics::set(&shared.metrics.term, shared.role.term());
        let leading = shared.role.lead().is_some();
        crate::metrics::Metrics::set(&shared.metrics.leading, u64::from(leading));
        // A newer term in the store wins, whoever holds it.
        if last_store_look.elapsed() >= Duration::from_millis(500) {
            last_store_look = Instant::now();
            if let Ok(Some(r)) = shared.store.newest_term().await {
                if let Some(p) = config.topology.process(&r.node) {
                    if shared.role.follow(r.term, p) {
                        last_heard = Instant::now();
                        shared.heard_coordinator();
                    }
                }
            }
        }
        if shared.role.lead().is_some() {
            shared.heard_coordinator();
            continue;
        }
        let (term, current) = shared.role.view();
        let answer = shared
            .client
            .get_json_within::<serde_json::Value>(
                Duration::from_millis(250),
                config.nodes[current.index()].admin,
                "/status",
            )
            .await;
        if let Ok((_, v)) = answer {
            // Only a node that leads vouches for a term.
            if v["leading"] == true {
                heard_once = true;
                last_heard = Instant::now();
                shared.heard_coordinator();
                if let Some(t) = v["term"].as_u64() {
                    shared.role.follow(t, current);
                }
                continue;
            }
        }
        let Some(rank) = rank(&config.candidates, current, shared.me) else {
            continue;
        };
        let grace = if heard_once {
            Duration::ZERO
        } else {
            Duration::from_secs(5)
        };
        if last_heard.elapsed() > grace + limit * (1 + rank as u32) {
            let (reached, need) = reachable(&shared, limit / 2).await;
            if reached < need {
                // Cut off from most of the cluster: this node is the one
                // partitioned away, and must not take the lead from the side
                // that can run.
                if !warned_minority {
                    warn!(
                        reached,
                        need,
                        "the coordinator is silent, but this node reaches too few nodes to take over"
                    );
                    warned_minority = true;
                }
                continue;
            }
            warned_minority = false;
            let newest = shared
                .store
                .newest_term()
                .await
                .ok()
                .flatten()
                .map_or(0, |r| r.term);
            let next = term.max(newest) + 1;
            warn!(
                coordinator = %config.nodes[current.index()].id,
                term = next,
                "the coordinator is silent: claiming the next term"
            );
            claim(&shared, next, true, &stop, &mut tasks).await;
            last_heard = Instant::now();
            shared.heard_coordinator();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_take_over_in_order_after_the_silent_one() {
        let c = [ProcessId(0), ProcessId(1), ProcessId(2)];
        assert_eq!(rank(&c, ProcessId(0), ProcessId(1)), Some(0));
        assert_eq!(rank(&c, ProcessId(0), ProcessId(2)), Some(1));
        assert_eq!(rank(&c, ProcessId(1), ProcessId(2)), Some(0));
        assert_eq!(rank(&c, ProcessId(1), ProcessId(0)), Some(1));
        assert_eq!(rank(&c, ProcessId(0), ProcessId(0)), None);
        assert_eq!(rank(&c[..2], ProcessId(0), ProcessId(5)), None);
    }

    #[test]
    fn a_newer_term_is_followed_and_an_older_one_ignored() {
        let r = Role::new(ProcessId(0));
        assert!(r.follow(2, ProcessId(1)));
        assert!(!r.follow(1, ProcessId(0)));
        assert_eq!(r.view(), (2, ProcessId(1)));
    }
}
