//! Rollbacks. The coordinator begins a new epoch by recording it in the
//! store (create-if-absent, above every recorded epoch, naming the epoch it
//! continues and the snapshot it restores), then orders every node into it.
//! A node obeys only an order for the newest recorded epoch, with the
//! snapshot that record names: a forged or stale order (an absurd epoch, one
//! nobody began, an old one replayed) is refused and changes nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cairn_store::{EpochRecord, Part};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::control::ControlError;
use crate::control::initiation::ask_driver;
use crate::coordinator::Coordinator;
use crate::driver::Control;
use crate::metrics::Metrics;
use crate::shared::Shared;

/// Asks for a rollback: `{"snapshot": 12}`, or `{}` for the newest good one.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The snapshot to restore; the newest complete, uncorrupted one on the
    /// current timeline when absent.
    pub snapshot: Option<u64>,
}

/// Tells one node to restore its part of `snapshot` in `epoch`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeRollback {
    /// The term of the coordinator that orders it.
    #[serde(default)]
    pub term: u64,
    /// The new epoch; the store must record it as the newest.
    pub epoch: u64,
    /// The snapshot; `None` restarts every process from its initial state
    /// with empty channels (when no snapshot was ever committed).
    pub snapshot: Option<u64>,
    /// How many messages the snapshot recorded on each channel, by name.
    pub in_flight: BTreeMap<String, u64>,
}

/// Rolls the cluster back to `snapshot`, or to the newest good one on the
/// current timeline, or (if there is none) to the initial state. Returns
/// the epoch, the snapshot and what each node re-delivered.
///
/// # Errors
/// The snapshot is unusable, the store failed, or a node did not follow.
pub(crate) async fn roll_back(
    s: &Shared,
    c: &Arc<Mutex<Coordinator>>,
    snapshot: Option<u64>,
) -> Result<serde_json::Value, ControlError> {
    let lock = || c.lock().unwrap_or_else(|p| p.into_inner());
    info!(?snapshot, "rollback requested");
    // No commit lands, and no retention runs, until the rollback is over.
    let _gate = s.gate.lock().await;
    let term = s
        .role
        .lead()
        .filter(|l| Arc::ptr_eq(&l.coordinator, c))
        .map(|l| l.term)
        .ok_or_else(|| ControlError::NotCoordinator(s.coordinator_name().to_string()))?;
    info!(?snapshot, term, "rollback begins");
    let current = {
        let mut co = lock();
        co.begin_rollback();
        co.epoch()
    };
    loop {
        let unusable = s.unusable.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let result = attempt(s, c, term, current, snapshot, &unusable).await;
        match result {
            // A node found its part corrupt: with the snapshot ours to
            // choose, the one before it is tried (in a newer epoch), until
            // none is left and the processes start over.
            // (Each turn passes over one more snapshot, so this ends.)
            Err(ControlError::Unusable {
                snapshot: bad,
                problem,
            }) if snapshot.is_none() && !unusable.contains(&bad) => {
                warn!(
                    snapshot = bad,
                    "a node cannot restore its part, trying the snapshot before: {problem}"
                );
                s.unusable
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(bad);
                lock().begin_rollback();
            }
            other => return other,
        }
    }
}

/// One try of a rollback: chooses the snapshot (unless named), begins its
/// epoch and has every node restore its part.
async fn attempt(
    s: &Shared,
    c: &Arc<Mutex<Coordinator>>,
    term: u64,
    current: Option<u64>,
    snapshot: Option<u64>,
    unusable: &std::collections::BTreeSet<u64>,
) -> Result<serde_json::Value, ControlError> {
    let lock = || c.lock().unwrap_or_else(|p| p.into_inner());
    let mut pinned = None;
    let result = async {
        // Checked from the manifest and a listing: each node reads only its
        // own part, once, and checks it.
        let chosen = match snapshot {
            Some(id) => Some(s.store.recovery_point(id).await?),
            None => {
                let (point, skipped) = s.store.latest_recovery_point_in(current, unusable).await?;
                for (id, why) in skipped {
                    warn!(
                        snapshot = id,
                        "skipping a snapshot recovery cannot use: {why}"
                    );
                }
                point
            }
        };
        // Receivers' recordings and senders' overtaken tails together.
        let in_flight: BTreeMap<String, u64> = chosen
            .as_ref()
            .map(|p| p.in_flight.clone())
            .unwrap_or_default();
        let snapshot = chosen.map(|s| s.manifest.snapshot);
        if let Some(id) = snapshot {
            lock().pin(id);
            pinned = Some(id);
        }
        let epoch = begin_epoch(s, term, current, snapshot).await?;
        lock().enter_epoch(epoch);
        roll_nodes_back(s, term, epoch, snapshot, &in_flight).await
    }
    .await;
    lock().unpin(pinned, result.is_ok());
    result
}

/// Records a new epoch above every recorded one, continuing `current` (or,
/// for a coordinator that has none yet, the newest recorded).
async fn begin_epoch(
    s: &Shared,
    term: u64,
    current: Option<u64>,
    restored: Option<u64>,
) -> Result<u64, ControlError> {
    for _ in 0..8 {
        let seen = s.store.history().await?;
        // Epoch 0 is only ever a fresh store's first; a store written
        // before epochs were recorded ran in an unrecorded epoch 0.
        let parent = current.max(seen.newest_epoch).unwrap_or(0);
        let epoch = parent + 1;
        let record = EpochRecord {
            epoch,
            parent: Some(parent),
            restored,
            by: s.name().to_string(),
            incarnation: s.peers.me,
            created_unix_ms: cairn_store::unix_ms(),
            term,
        };
        match s.store.begin_epoch(&record).await {
            Ok(()) => return Ok(epoch),
            Err(cairn_store::Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ControlError::Busy(
        "could not record a new epoch: other writers kept taking them".into(),
    ))
}

/// Records the cluster's first epoch, 0, on a store that has never been
/// used. Returns `false` if the store was used (the cluster resumes).
pub(crate) async fn begin_first_epoch(s: &Shared) -> Result<bool, ControlError> {
    if s.store.history().await?.used {
        return Ok(false);
    }
    let record = EpochRecord {
        epoch: 0,
        parent: None,
        restored: None,
        by: s.name().to_string(),
        incarnation: s.peers.me,
        created_unix_ms: cairn_store::unix_ms(),
        term: s.role.term(),
    };
    match s.store.begin_epoch(&record).await {
        Ok(()) => Ok(true),
        Err(cairn_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn roll_nodes_back(
    s: &Shared,
    term: u64,
    epoch: u64,
    snapshot: Option<u64>,
    in_flight: &BTreeMap<String, u64>,
) -> Result<serde_json::Value, ControlError> {
    // Every node reads and restores its own part at the same time.
    let orders = s.config.nodes.iter().enumerate().map(|(i, n)| async move {
        let order = NodeRollback {
            term,
            epoch,
            snapshot,
            in_flight: in_flight.clone(),
        };
        // Err((whether the node found its part unusable, why)).
        let result = if i == s.me.index() {
            rollback_local(s, &order)
                .await
                .map_err(|e| (matches!(e, ControlError::Unusable { .. }), e.to_string()))
        } else {
            match s
                .client
                .post_json::<_, serde_json::Value>(n.admin, "/internal/rollback", &order)
                .await
            {
                Ok((st, v)) if st.is_success() => {
                    Ok(v["redelivered"].as_u64().unwrap_or(0) as usize)
                }
                Ok((st, v)) => Err((
                    st == hyper::StatusCode::GONE,
                    format!("{st}: {}", v["error"].as_str().unwrap_or("")),
                )),
                Err(e) => Err((false, e.to_string())),
            }
        };
        (n, result)
    });
    let mut nodes = serde_json::Map::new();
    for (n, result) in futures_util::future::join_all(orders).await {
        match (result, snapshot) {
            (Ok(count), _) => {
                nodes.insert(n.id.clone(), json!({ "redelivered": count }));
            }
            (Err((true, problem)), Some(id)) => {
                return Err(ControlError::Unusable {
                    snapshot: id,
                    problem: format!("node {}: {problem}", n.id),
                });
            }
            (Err((_, problem)), _) => {
                let to = snapshot.map_or("its initial state".to_string(), |id| {
                    format!("snapshot {id}")
                });
                return Err(ControlError::Peer {
                    node: n.id.clone(),
                    problem: format!("did not roll back to {to}: {problem}"),
                });
            }
        }
    }
    info!(?snapshot, epoch, "cluster rolled back");
    Ok(json!({ "snapshot": snapshot, "epoch": epoch, "nodes": nodes }))
}

/// Checks a rollback order against the store, reads this node's part of
/// the snapshot and hands it to the driver. Returns how many recorded
/// messages were re-delivered.
///
/// # Errors
/// [`ControlError::Stale`] for an order of an epoch the store does not
/// record as the newest, or with another snapshot than its record names;
/// the part is missing or unreadable; the driver refused it.
pub(crate) async fn rollback_local(
    s: &Shared,
    order: &NodeRollback,
) -> Result<usize, ControlError> {
    if let Err(e) = check_order(s, order).await {
        Metrics::inc(&s.metrics.orders_refused, 1);
        warn!(epoch = order.epoch, snapshot = ?order.snapshot, "rollback order refused: {e}");
        return Err(e);
    }
    let me = s.name().to_string();
    let began = std::time::Instant::now();
    // This node's state is about to be replaced: its application stops
    // sending now, so that reading the part does not share the cores with
    // work that is thrown away (messages that arrive are still handled). The
    // restore resumes it in the new epoch; if no restore follows (the part
    // is unusable and the coordinator dies before ordering the one before),
    // the pause is the stop-the-world lease and ends by itself.
    ask_driver(s, |reply| Control::Pause { reply }).await?;
    let (part, chunks) = match order.snapshot {
        // No snapshot to go back to: start over from the initial state.
        None => (
            Part {
                snapshot: 0,
                process: me,
                state: s.initial.clone(),
                channels: Vec::new(),
                initial: None,
                epoch: order.epoch,
                overtaken: Vec::new(),
            },
            Vec::new(),
        ),
        Some(id) => {
            // Its manifest, part or a chunk corrupt or gone (deleted behind
            // the coordinator's back, say): the snapshot cannot be restored,
            // and recovery tries the one before.
            let unusable = |e: cairn_store::Error| match e {
                cairn_store::Error::Corrupt { .. } | cairn_store::Error::NotFound { .. } => {
                    ControlError::Unusable {
                        snapshot: id,
                        problem: e.to_string(),
                    }
                }
                other => other.into(),
            };
            let manifest = s.store.manifest(id).await.map_err(unusable)?;
            let part_ref = manifest
                .parts
                .iter()
                .find(|p| p.process == me)
                .ok_or_else(|| {
                    ControlError::BadRequest(format!("snapshot {id} has no part for {me}"))
                })?;
            // The part, then the chunks its state was split into, each
            // checked against the manifest's size and checksum.
            (
                s.store.read_part(part_ref).await.map_err(unusable)?,
                s.store.read_chunks(part_ref).await.map_err(unusable)?,
            )
        }
    };
    let read_ms = began.elapsed().as_secs_f64() * 1e3;
    let redelivered = ask_driver(s, |reply| Control::Rollback {
        epoch: order.epoch,
        part: Box::new(part),
        chunks: crate::driver::Chunks(chunks),
        in_flight: order.in_flight.clone(),
        reply,
    })
    .await??;
    s.set_joined(order.epoch);
    debug!(
        epoch = order.epoch,
        read_ms,
        restore_ms = began.elapsed().as_secs_f64() * 1e3 - read_ms,
        "this node's part restored"
    );
    Ok(redelivered)
}

/// Joins a fresh cluster's epoch 0 on its coordinator's word: this node's
/// state (its initial one, and all it did since) is of that timeline.
///
/// # Errors
/// [`ControlError::Stale`] unless the store's current epoch is 0, begun in
/// this order's term, and this node is in it and has not restarted.
pub(crate) async fn join_local(s: &Shared, term: u64, epoch: u64) -> Result<(), ControlError> {
    let stale = |why: String| {
        Metrics::inc(&s.metrics.orders_refused, 1);
        warn!(epoch, term, "join order refused: {why}");
        Err(ControlError::Stale(why))
    };
    if s.joined() == Some(epoch) {
        return Ok(());
    }
    let mine = *s.epoch.borrow();
    if epoch != 0 || mine != 0 || s.peers.needs_restore() {
        return stale(format!(
            "only a fresh cluster's epoch 0 is joined, by a node in it that did not restart (this node is in epoch {mine})"
        ));
    }
    match s.store.current_epoch().await? {
        Some(r) if r.epoch == 0 && r.term == term => {}
        other => {
            return stale(format!(
                "the store's current epoch is {}, not epoch 0 of term {term}",
                other.map_or("none".into(), |r| format!("{} of term {}", r.epoch, r.term))
            ));
        }
    }
    s.set_joined(0);
    Ok(())
}

async fn check_order(s: &Shared, order: &NodeRollback) -> Result<(), ControlError> {
    let known = s.role.term();
    if order.term < known {
        return Err(ControlError::Stale(format!(
            "term {} is older than term {known}, which this node follows",
            order.term
        )));
    }
    let mine = *s.epoch.borrow();
    if order.epoch <= mine {
        return Err(ControlError::Stale(format!(
            "epoch {} is not newer than this node's epoch {mine}",
            order.epoch
        )));
    }
    let record = match s.store.epoch_record(order.epoch).await {
        Ok(r) => r,
        Err(cairn_store::Error::NotFound { .. }) => {
            return Err(ControlError::Stale(format!(
                "epoch {} was never begun: the store has no record of it",
                order.epoch
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if record.term != order.term {
        return Err(ControlError::Stale(format!(
            "epoch {} was begun in term {}, not {}",
            order.epoch, record.term, order.term
        )));
    }
    if record.restored != order.snapshot {
        return Err(ControlError::Stale(format!(
            "epoch {} restores {}, not {}",
            order.epoch,
            name(record.restored),
            name(order.snapshot)
        )));
    }
    let current = s.store.current_epoch().await?.map(|r| r.epoch);
    if current != Some(order.epoch) {
        return Err(ControlError::Stale(format!(
            "epoch {} is not the current one: the store records epoch {} of the newest term",
            order.epoch,
            current.map_or("none".into(), |e| e.to_string())
        )));
    }
    // The order is the newest coordinator's: follow it.
    if let Some(p) = s.config.topology.process(&record.by) {
        s.role.follow(order.term, p);
    }
    Ok(())
}

fn name(snapshot: Option<u64>) -> String {
    snapshot.map_or("the initial state".into(), |id| format!("snapshot {id}"))
}
