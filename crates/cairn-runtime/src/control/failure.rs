//! The coordinator's timers: it establishes its epoch from the store at
//! start, starts a snapshot every interval, expires late ones and aborts
//! them on every node, and watches every node's heartbeat (judged in
//! [`health`](super::health)).
//!
//! How the coordinator begins depends on the store and on how it came to
//! lead:
//! - a fresh store: epoch 0; every node is told it joined it, and nothing
//!   else happens until all have;
//! - a used store, at start (a restart of the coordinator or of the whole
//!   cluster): the cluster resumes from the operator's restore point, or the
//!   newest good snapshot, in a new epoch;
//! - a takeover from a silent coordinator, by a node that holds a state of
//!   the current epoch: the cluster carries on in that epoch. Any node that
//!   lost its state shows it in its heartbeat, and only that rolls back.
//!
//! A node silent for the failure timeout is unreachable, not failed: no
//! rollback, no work lost. Scheduled snapshots go on one at a time and
//! fail naming it, until it answers again.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::control::ControlError;
use crate::control::health::{Answer, Change, Health, Judge};
use crate::control::initiation::{ask_driver, start_here};
use crate::control::recovery::{begin_first_epoch, roll_back};
use crate::coordinator::Coordinator;
use crate::driver::Control;
use crate::shared::Shared;

/// Where the coordinator's term stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A fresh store: every node must join epoch 0 first.
    Join,
    /// Roll the cluster back to this snapshot (or the newest good one)
    /// once every node answers.
    Resume(Option<u64>),
    /// Snapshots run; a node that lost its state rolls the cluster back.
    Running,
}

/// How long the coordinator waits for one heartbeat answer.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(250);

/// Runs the coordinator's timers until `stop`. `takeover` is set when this
/// node claimed its term from a silent coordinator while running (not at
/// start).
pub(crate) async fn run_coordinator_timers(
    shared: Arc<Shared>,
    coordinator: Arc<Mutex<Coordinator>>,
    takeover: bool,
    stop: watch::Receiver<bool>,
) {
    // Expiry and the schedule run beside the heartbeat, never behind it: a
    // heartbeat waiting on an unreachable node, or a rollback, must neither
    // hold a snapshot past its timeout nor hold back the next one.
    let (gate_tx, gate) = watch::channel(Gate::default());
    tokio::select! {
        () = run_timers(shared.clone(), coordinator.clone(), takeover, stop, gate_tx) => {}
        () = expire_late(&shared, &coordinator) => {}
        () = run_schedule(&shared, &coordinator, gate) => {}
    }
}

/// What the heartbeat tells the schedule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Gate {
    /// Snapshots may run: the cluster runs and no node lost its state.
    open: bool,
    /// Some node is unreachable: one snapshot at a time (each fails naming it).
    away: bool,
}

/// Starts a snapshot every interval while the gate is open.
async fn run_schedule(
    shared: &Arc<Shared>,
    coordinator: &Mutex<Coordinator>,
    gate: watch::Receiver<Gate>,
) {
    let Some(every) = shared.config.snapshots.interval else {
        return std::future::pending().await;
    };
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let g = *gate.borrow();
        if !g.open {
            continue; // no snapshots while a node lost its state or the cluster resumes
        }
        let (busy, failing) = {
            let c = coordinator.lock().unwrap_or_else(|p| p.into_inner());
            (c.in_progress().is_some(), c.last_failed())
        };
        if (g.away || failing) && busy {
            // While a node is away, or snapshots fail, one at a time: each
            // fails naming what it lacked, and failures do not pile up.
            continue;
        }
        match start_here(shared).await {
            Ok(_) => {}
            // Expected while snapshots back up or a rollback runs: not worth a warning each tick.
            Err(
                e @ (ControlError::Busy(_)
                | ControlError::RollbackUnderway
                | ControlError::NotReady),
            ) => {
                debug!("no scheduled snapshot this time: {e}");
            }
            Err(e) => warn!("could not start a scheduled snapshot: {e}"),
        }
    }
}

/// Fails each snapshot that passed its timeout, every 50 ms, and tells the
/// nodes to give it up.
async fn expire_late(shared: &Arc<Shared>, coordinator: &Mutex<Coordinator>) {
    let mut expire = tokio::time::interval(Duration::from_millis(50));
    loop {
        expire.tick().await;
        let aborts = {
            let mut c = coordinator.lock().unwrap_or_else(|p| p.into_inner());
            c.expire();
            c.take_aborts()
        };
        for (id, epoch) in aborts {
            broadcast_abort(shared, id.0, epoch);
        }
    }
}

/// The heartbeat, the schedule and recovery.
async fn run_timers(
    shared: Arc<Shared>,
    coordinator: Arc<Mutex<Coordinator>>,
    takeover: bool,
    mut stop: watch::Receiver<bool>,
    gate: watch::Sender<Gate>,
) {
    let lock = || coordinator.lock().unwrap_or_else(|p| p.into_inner());
    let recovery = shared.config.snapshots.failure_timeout.is_some();
    let limit = shared
        .config
        .snapshots
        .failure_timeout
        .unwrap_or(Duration::from_secs(1));
    let mut heartbeat = tokio::time::interval(Duration::from_millis(100));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let nodes = shared.config.nodes.clone();
    let me = shared.me.index();
    // The lives this node has spoken with over its links: a node that comes
    // back as another has restarted, even if this coordinator is new.
    let known = (0..nodes.len())
        .map(|i| match i == me {
            true => Some(shared.peers.me),
            false => shared.peers.known(i).map(|(incarnation, _)| incarnation),
        })
        .collect();
    let mut health = Health::new(limit, known, tokio::time::Instant::now());
    let mut phase = loop {
        match establish(&shared, &coordinator, takeover).await {
            Ok(p) => break p,
            Err(e) => {
                warn!("cannot read the store, retrying: {e}");
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    };
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = heartbeat.tick() => {
                let before = lock().epoch_state();
                let client = &shared.client;
                let polls = nodes.iter().enumerate().filter(|(i, _)| *i != me).map(|(i, n)| async move {
                    let answer = client.get_json_within::<serde_json::Value>(HEARTBEAT_TIMEOUT, n.admin, "/status").await;
                    (i, answer.ok().map(|(_, v)| v))
                });
                let raw = futures_util::future::join_all(polls).await;
                let all_up = raw.iter().all(|(_, a)| a.is_some());
                let after = lock().epoch_state();
                // Mid-rollback, a node not yet rolled back is behind without having failed.
                let judge = match phase {
                    _ if before != after || after.1 => Judge::NewLives,
                    Phase::Running => Judge::All,
                    Phase::Join => Judge::Forming,
                    Phase::Resume(_) => Judge::NewLives,
                };
                let settled = judge == Judge::All;
                let mut restarted: BTreeSet<String> = shared.peers.restarted_peers().into_iter().collect();
                for (_, v) in &raw {
                    for p in v.iter().flat_map(|v| v["restarted_peers"].as_array()).flatten() {
                        if let Some(p) = p.as_str() {
                            restarted.insert(p.to_string());
                        }
                    }
                }
                let answers: Vec<(usize, Option<Answer>)> =
                    raw.iter().map(|(i, v)| (*i, v.as_ref().map(Answer::from_status))).collect();
                let now = tokio::time::Instant::now();
                for change in health.observe(now, &answers, after.0, judge, &restarted) {
                    match change {
                        Change::Failed(i, why) => warn!(node = %nodes[i].id, "node failed: {why}"),
                        Change::Unreachable(i) => warn!(
                            node = %nodes[i].id,
                            "node unreachable: no answer for {limit:?}; snapshots fail until it answers, and nothing is rolled back unless it comes back having lost its state"
                        ),
                        Change::Back(i, away) => info!(node = %nodes[i].id, "node reachable again after {away:.1?}, as the same life: nothing to roll back"),
                    }
                }
                if shared.peers.needs_restore() && health.fail(me) {
                    warn!(node = %shared.name(), "node failed: the coordinator's own node restarted and needs a restore");
                }
                if settled && after.0.is_some() && shared.joined() != after.0 && health.fail(me) {
                    warn!(node = %shared.name(), "node failed: the coordinator's own node holds no state of the cluster's epoch");
                }
                let away: Vec<(String, Duration)> = health
                    .unreachable()
                    .iter()
                    .map(|&i| (nodes[i].id.clone(), health.silent_for(i, now)))
                    .collect();
                crate::metrics::Metrics::set(&shared.metrics.nodes_unreachable, away.len() as u64);
                lock().set_unreachable(away);
                if !recovery && phase == Phase::Running {
                    health.recovered(); // recovery is off: the operator restores
                }
                let open = |phase: Phase, health: &Health| Gate {
                    open: phase == Phase::Running && health.failed().is_empty(),
                    away: !health.unreachable().is_empty(),
                };
                // Closed before a rollback begins, not only after it.
                gate.send_replace(open(phase, &health));
                if phase == Phase::Join && !health.failed().is_empty() {
                    // A node that lost its state before every node joined
                    // epoch 0 can never join it: recover as from any failure
                    // (to the newest snapshot, or the initial states).
                    phase = Phase::Running;
                }
                match phase {
                    Phase::Join if all_up => {
                        let joined = join_all(&shared, &raw).await;
                        if joined {
                            info!("every node joined epoch 0");
                            phase = Phase::Running;
                        }
                    }
                    Phase::Resume(point) if all_up => {
                        let done = recover(&shared, &coordinator, point).await;
                        if done {
                            health.recovered();
                            phase = Phase::Running;
                        }
                    }
                    Phase::Running if !health.failed().is_empty() && all_up => {
                        let done = recover(&shared, &coordinator, None).await;
                        if done {
                            health.recovered();
                        }
                    }
                    _ => {}
                }
                gate.send_replace(open(phase, &health));
            }
        }
    }
}

/// Establishes the coordinator's epoch from the store; returns what comes first.
async fn establish(
    shared: &Shared,
    coordinator: &Mutex<Coordinator>,
    takeover: bool,
) -> Result<Phase, ControlError> {
    let lock = || coordinator.lock().unwrap_or_else(|p| p.into_inner());
    if begin_first_epoch(shared).await? {
        lock().enter_epoch(0);
        return Ok(Phase::Join);
    }
    if takeover {
        let current = shared.store.current_epoch().await?.map(|r| r.epoch);
        if current.is_some() && shared.joined() == current && !shared.peers.needs_restore() {
            let epoch = current.unwrap_or_default();
            info!(
                epoch,
                "took over a running cluster: it carries on in epoch {epoch}"
            );
            lock().enter_epoch(epoch);
            return Ok(Phase::Running);
        }
        warn!(
            "took over, but this node holds no state of the current epoch: the cluster resumes from a snapshot"
        );
    }
    match shared.store.take_restore_point().await {
        Ok(point) => Ok(Phase::Resume(point)),
        Err(e) => {
            warn!("cannot read the restore point, resuming from the newest snapshot: {e}");
            Ok(Phase::Resume(None))
        }
    }
}

/// Rolls the cluster back; whether it worked.
async fn recover(shared: &Shared, coordinator: &Arc<Mutex<Coordinator>>, to: Option<u64>) -> bool {
    match roll_back(shared, coordinator, to).await {
        Ok(v) => {
            info!(snapshot = %v["snapshot"], epoch = %v["epoch"], "recovered: the cluster rolled back");
            true
        }
        Err(e) => {
            warn!("recovery failed, retrying: {e}");
            false
        }
    }
}

/// Tells every node that has not joined epoch 0 that it has (a fresh
/// store's processes all begin from their initial states); whether all have.
async fn join_all(shared: &Shared, answers: &[(usize, Option<serde_json::Value>)]) -> bool {
    let term = shared.role.term();
    if shared.joined().is_none() {
        shared.set_joined(0);
    }
    let body = json!({ "term": term, "epoch": 0 });
    let orders = answers
        .iter()
        .filter(|(_, v)| v.as_ref().is_none_or(|v| v["joined"].as_u64() != Some(0)))
        .map(|(i, _)| {
            let admin = shared.config.nodes[*i].admin;
            let body = &body;
            async move {
                let r = shared
                    .client
                    .post_json::<_, serde_json::Value>(admin, "/internal/join", body)
                    .await;
                matches!(r, Ok((status, _)) if status.is_success())
            }
        });
    futures_util::future::join_all(orders)
        .await
        .into_iter()
        .all(|ok| ok)
}

/// Tells every node (this one through its driver) to give up snapshot `id`
/// of `epoch`, without waiting: a node that misses it gives the snapshot up
/// by itself once it is older than the snapshot timeout.
fn broadcast_abort(shared: &Arc<Shared>, id: u64, epoch: u64) {
    let term = shared.role.term();
    for (i, n) in shared.config.nodes.iter().enumerate() {
        if i == shared.me.index() {
            shared.give_up(id);
            let s = shared.clone();
            tokio::spawn(async move {
                let _ = ask_driver(&s, |reply| Control::Abort {
                    id: cairn_core::SnapshotId(id),
                    epoch,
                    reply,
                })
                .await;
            });
        } else {
            let admin = n.admin;
            let client = shared.client.clone();
            tokio::spawn(async move {
                let body = json!({ "snapshot": id, "epoch": epoch, "term": term });
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    client.post_json::<_, serde_json::Value>(admin, "/internal/abort", &body),
                )
                .await;
            });
        }
    }
}
