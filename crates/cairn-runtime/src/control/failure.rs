//! The coordinator's timers: it establishes its epoch from the store at
//! start, starts a snapshot every interval, expires late ones and aborts
//! them on every node, and watches every node's heartbeat. A node is failed
//! when it is silent for the failure timeout, comes back as another
//! incarnation, says it needs a restore, or is named restarted by a peer;
//! once every node answers again, the cluster rolls back to the newest good
//! snapshot on the current timeline.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::control::ControlError;
use crate::control::initiation::{ask_driver, start_here};
use crate::control::recovery::{begin_first_epoch, roll_back};
use crate::coordinator::Coordinator;
use crate::driver::Control;
use crate::shared::Shared;

/// Why a node counts as failed, from its answer to the heartbeat.
///
/// Only a new incarnation is judged from an answer taken while a rollback
/// was under way or the epoch moved: the other signs may be from before it.
fn failed_because(
    v: &serde_json::Value,
    known: Option<u64>,
    restarted_by_peers: &BTreeSet<String>,
    behind: bool,
    settled: bool,
) -> Option<&'static str> {
    let incarnation = v["incarnation"].as_u64();
    if known.is_some() && incarnation != known {
        return Some("it restarted (a new incarnation) and lost its state");
    }
    if !settled {
        return None;
    }
    if v["needs_restore"].as_bool() == Some(true) {
        return Some("it says it restarted and needs a restore");
    }
    if v["node"]
        .as_str()
        .is_some_and(|n| restarted_by_peers.contains(n))
    {
        return Some("its peers saw it restart");
    }
    if behind {
        return Some("it is behind the cluster's epoch");
    }
    None
}

/// Runs the coordinator's timers until `stop`.
pub(crate) async fn run_coordinator_timers(
    shared: Arc<Shared>,
    coordinator: Arc<Mutex<Coordinator>>,
    mut stop: watch::Receiver<bool>,
) {
    let lock = || coordinator.lock().unwrap_or_else(|p| p.into_inner());
    let mut expire = tokio::time::interval(Duration::from_millis(50));
    let mut interval = shared.config.snapshots.interval.map(|d| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let failure_timeout = shared.config.snapshots.failure_timeout;
    let mut heartbeat = tokio::time::interval(Duration::from_millis(100));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let nodes = shared.config.nodes.clone();
    let mut last_ok: Vec<Instant> = vec![Instant::now(); nodes.len()];
    let mut failed: BTreeSet<usize> = BTreeSet::new();
    let mut incarnations: Vec<Option<u64>> = vec![None; nodes.len()];
    incarnations[shared.me.index()] = Some(shared.peers.me);
    // A cluster over a fresh store begins epoch 0; over a used one (a
    // restart of the coordinator or of the whole cluster) it resumes from
    // the operator's restore point, or the newest good snapshot, in a new epoch.
    let mut resume: Option<Option<u64>> = loop {
        match begin_first_epoch(&shared).await {
            Ok(true) => {
                lock().enter_epoch(0);
                break None;
            }
            Ok(false) => match shared.store.take_restore_point().await {
                Ok(point) => break Some(point),
                Err(e) => {
                    warn!("cannot read the restore point, resuming from the newest snapshot: {e}");
                    break Some(None);
                }
            },
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
            _ = expire.tick() => {
                let aborts = {
                    let mut c = lock();
                    c.expire();
                    c.take_aborts()
                };
                for (id, epoch) in aborts {
                    broadcast_abort(&shared, id.0, epoch);
                }
            }
            _ = heartbeat.tick(), if failure_timeout.is_some() || resume.is_some() => {
                let limit = failure_timeout.unwrap_or_default();
                let before = lock().epoch_state();
                let client = &shared.client;
                let polls = nodes.iter().enumerate().filter(|(i, _)| *i != shared.me.index()).map(|(i, n)| async move {
                    let answer = tokio::time::timeout(Duration::from_millis(250), client.get_json::<serde_json::Value>(n.admin, "/status")).await;
                    (i, answer.ok().and_then(|r| r.ok()).map(|(_, v)| v))
                });
                let answers = futures_util::future::join_all(polls).await;
                let all_up = answers.iter().all(|(_, a)| a.is_some());
                let after = lock().epoch_state();
                // Mid-rollback, a node not yet rolled back is behind without having failed.
                let settled = before == after && !after.1;
                let epoch = after.0;
                let mut restarted_by_peers: BTreeSet<String> =
                    shared.peers.restarted_peers().into_iter().collect();
                for (_, v) in &answers {
                    for p in v.iter().flat_map(|v| v["restarted_peers"].as_array()).flatten() {
                        if let Some(p) = p.as_str() {
                            restarted_by_peers.insert(p.to_string());
                        }
                    }
                }
                for (i, answer) in answers {
                    match answer {
                        Some(v) => {
                            last_ok[i] = Instant::now();
                            let behind = settled
                                && epoch.is_some_and(|e| v["epoch"].as_u64().is_some_and(|n| n < e));
                            if let Some(why) = failed_because(&v, incarnations[i], &restarted_by_peers, behind, settled) {
                                if failed.insert(i) {
                                    warn!(node = %nodes[i].id, "node failed: {why}");
                                }
                            }
                            incarnations[i] = v["incarnation"].as_u64();
                        }
                        None if last_ok[i].elapsed() > limit && failed.insert(i) => {
                            warn!(node = %nodes[i].id, "node failed: no heartbeat for {limit:?}");
                        }
                        None => {}
                    }
                }
                if shared.peers.needs_restore() && failed.insert(shared.me.index()) {
                    warn!(node = %shared.name(), "node failed: the coordinator's own node restarted and needs a restore");
                }
                if failure_timeout.is_none() && resume.is_none() {
                    failed.clear(); // recovery is off: the operator restores
                }
                if (!failed.is_empty() || resume.is_some()) && all_up {
                    match roll_back(&shared, &coordinator, resume.flatten()).await {
                        Ok(v) => {
                            info!(snapshot = %v["snapshot"], epoch = %v["epoch"], "recovered: the cluster rolled back");
                            failed.clear();
                            resume = None;
                        }
                        Err(e) => warn!("recovery failed, retrying: {e}"),
                    }
                }
            }
            _ = async { match &mut interval { Some(i) => { i.tick().await; } None => std::future::pending().await } } => {
                if !failed.is_empty() || resume.is_some() {
                    continue; // no snapshots while a node is down or the cluster resumes
                }
                match start_here(&shared).await {
                    Ok(_) => {}
                    // Expected while snapshots back up or a rollback runs: not worth a warning each tick.
                    Err(e @ (ControlError::Busy(_) | ControlError::RollbackUnderway | ControlError::NotReady)) => {
                        debug!("no scheduled snapshot this time: {e}");
                    }
                    Err(e) => warn!("could not start a scheduled snapshot: {e}"),
                }
            }
        }
    }
}

/// Tells every node (this one through its driver) to give up snapshot `id`
/// of `epoch`, without waiting: a node that misses it gives the snapshot up
/// by itself once it is older than the snapshot timeout.
fn broadcast_abort(shared: &Arc<Shared>, id: u64, epoch: u64) {
    let term = shared.role.term();
    for (i, n) in shared.config.nodes.iter().enumerate() {
        if i == shared.me.index() {
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
