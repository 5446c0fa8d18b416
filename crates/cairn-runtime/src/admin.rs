//! The admin HTTP API every node serves (axum):
//!
//! | route | what |
//! |---|---|
//! | `GET /status` | the node, its channels, its counters, and (on the coordinator) recent snapshots |
//! | `POST /snapshots` | start a snapshot here; answers `{"id": n}` |
//! | `GET /snapshots` | the coordinator's recent snapshots (other nodes redirect there) |
//! | `GET /snapshots/{id}` | a complete snapshot in the shared JSON shape; 202 with progress while in progress; 500 with what was missing if it failed |
//! | `GET /metrics` | Prometheus text |
//! | `POST /metrics/reset-peaks` | forget the longest pause, so the next reading covers only what follows |
//!
//! Nodes use two internal routes on the coordinator: `POST /internal/ids` for a
//! new snapshot id and `POST /internal/reports` for a local snapshot; in
//! stop-the-world mode the coordinator calls `POST /internal/pause` and
//! `POST /internal/resume` on every node.
//! `POST /debug/cut` drops every connection of the node, when the config allows it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_core::{ProcessId, SnapshotId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::client;
use crate::config::{ClusterConfig, SnapshotMode};
use crate::coordinator::{Coordinator, LocalReport};
use crate::driver::Control;
use crate::metrics::Metrics;
use cairn_store::{Manifest, Part, Store};
use tracing::{debug, warn};

/// What the admin handlers share with the node.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Arc<ClusterConfig>,
    pub me: ProcessId,
    pub control: mpsc::Sender<Control>,
    pub metrics: Arc<Metrics>,
    pub coordinator: Option<Arc<Mutex<Coordinator>>>,
    pub cut: watch::Sender<u64>,
    pub started: Instant,
    pub store: Store,
    /// Manifests to commit, one after another (coordinator only).
    pub commits: mpsc::UnboundedSender<Manifest>,
    /// The node's epoch.
    pub epoch: watch::Receiver<u64>,
    /// The process's initial state, for a rollback when no snapshot exists.
    pub initial: serde_json::Value,
    /// One stop-the-world snapshot at a time.
    pub stop_world: tokio::sync::Mutex<()>,
}

/// Asks for a new id: `{"initiator": "n2"}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdRequest {
    /// The node that will start the snapshot.
    pub initiator: String,
}

/// A snapshot id: `{"id": 3}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdAnswer {
    /// The id.
    pub id: SnapshotId,
}

type Shr = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/snapshots", get(list).post(start))
        .route("/snapshots/{id}", get(one))
        .route("/metrics", get(metrics))
        .route("/metrics/reset-peaks", post(reset_peaks))
        .route("/internal/ids", post(allocate))
        .route("/internal/reports", post(report))
        .route("/debug/cut", post(cut))
        .route("/rollback", post(rollback_all))
        .route("/internal/rollback", post(rollback_here))
        .route("/internal/pause", post(crate::stop_world::pause_here))
        .route("/internal/resume", post(crate::stop_world::resume_here))
        .with_state(shared)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

fn name(s: &Shared) -> &str {
    s.config.topology.name(s.me)
}

async fn status(State(s): Shr) -> Response {
    let topo = &s.config.topology;
    let m = &s.metrics;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let last_rollback = s
        .coordinator
        .as_ref()
        .and_then(|c| c.lock().unwrap_or_else(|p| p.into_inner()).last_rollback());
    let recent = s.coordinator.as_ref().map(|c| {
        let list = c.lock().unwrap_or_else(|p| p.into_inner()).list();
        let skip = list.len().saturating_sub(20);
        list.into_iter().skip(skip).collect::<Vec<_>>()
    });
    Json(json!({
        "node": name(&s),
        "pid": std::process::id(),
        "epoch": *s.epoch.borrow(),
        "cluster": s.config.cluster,
        "app": s.config.app.name,
        "coordinator": topo.name(s.config.coordinator),
        "address": s.config.nodes[s.me.index()].address,
        "uptime_ms": s.started.elapsed().as_millis() as u64,
        "incoming": topo.incoming(s.me).iter().map(|&c| topo.channel_name(c)).collect::<Vec<_>>(),
        "outgoing": topo.outgoing(s.me).iter().map(|&c| topo.channel_name(c)).collect::<Vec<_>>(),
        "messages_sent": load(&m.messages_sent),
        "messages_received": load(&m.messages_received),
        "snapshots_recorded": load(&m.snapshots_recorded),
        "markers_sent": load(&m.markers_sent),
        "frames_resent": load(&m.frames_resent),
        "longest_pause_us": load(&m.longest_pause_us),
        "snapshot_mode": s.config.snapshots.mode.as_str(),
        "recent_snapshots": recent,
        "last_rollback": last_rollback.map(|(snapshot, epoch)| json!({"snapshot": snapshot, "epoch": epoch})),
    }))
    .into_response()
}

async fn start(State(s): Shr) -> Response {
    match start_here(&s).await {
        Ok(id) => (StatusCode::ACCEPTED, Json(IdAnswer { id })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Gets an id from the coordinator and starts that snapshot at this node.
pub(crate) async fn start_here(s: &Shared) -> Result<SnapshotId, String> {
    if s.config.snapshots.mode == SnapshotMode::StopTheWorld {
        return crate::stop_world::stop_the_world(s).await;
    }
    let id = match &s.coordinator {
        Some(c) => allocate_for(s, c, name(s))?,
        None => {
            let req = IdRequest {
                initiator: name(s).to_string(),
            };
            let (status, answer): (_, IdAnswer) =
                client::post_json(s.config.coordinator_admin(), "/internal/ids", &req)
                    .await
                    .map_err(|e| format!("cannot get a snapshot id from the coordinator: {e}"))?;
            if !status.is_success() {
                return Err(format!("the coordinator refused a snapshot id: {status}"));
            }
            answer.id
        }
    };
    start_local(s, id).await?;
    Ok(id)
}

/// Starts snapshot `id` at this node's driver.
pub(crate) async fn start_local(s: &Shared, id: SnapshotId) -> Result<(), String> {
    ask_driver(s, |reply| Control::Start { id, reply }).await??;
    Ok(())
}

/// Hands the driver a request and waits for its answer.
pub(crate) async fn ask_driver<T>(
    s: &Shared,
    request: impl FnOnce(oneshot::Sender<T>) -> Control,
) -> Result<T, String> {
    let (reply, answer) = oneshot::channel();
    s.control
        .send(request(reply))
        .await
        .map_err(|_| "the node is shutting down".to_string())?;
    answer
        .await
        .map_err(|_| "the node is shutting down".to_string())
}

/// A new snapshot id; one at a time unless the mode is Chandy–Lamport.
pub(crate) fn allocate_for(
    s: &Shared,
    c: &Mutex<Coordinator>,
    initiator: &str,
) -> Result<SnapshotId, String> {
    let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
    match s.config.snapshots.mode {
        SnapshotMode::ChandyLamport => Ok(c.allocate(initiator)),
        SnapshotMode::Aligned | SnapshotMode::StopTheWorld => c.allocate_alone(initiator),
    }
}

/// Non-coordinators send snapshot reads to the coordinator.
fn redirect(s: &Shared, path: &str) -> Response {
    let url = format!("http://{}{path}", s.config.coordinator_admin());
    Redirect::temporary(&url).into_response()
}

async fn list(State(s): Shr) -> Response {
    match &s.coordinator {
        Some(c) => Json(c.lock().unwrap_or_else(|p| p.into_inner()).list()).into_response(),
        None => redirect(&s, "/snapshots"),
    }
}

async fn one(State(s): Shr, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a snapshot id"),
        );
    };
    let Some(c) = &s.coordinator else {
        return redirect(&s, &format!("/snapshots/{id}"));
    };
    let (found, in_store) = {
        let c = c.lock().unwrap_or_else(|p| p.into_inner());
        (c.get(SnapshotId(id)), c.in_store(SnapshotId(id)))
    };
    match (in_store, &found) {
        // Large states are read back from the store, once it holds them.
        (Some(true), _) => {
            return match s.store.load(id, &mut |_, _| {}).await {
                Ok(stored) => Json(stored.to_json()).into_response(),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            };
        }
        (Some(false), Some((summary, _))) => {
            return (StatusCode::ACCEPTED, Json(summary)).into_response();
        }
        _ => {}
    }
    match found {
        None => error(
            StatusCode::NOT_FOUND,
            format!("no snapshot {id} (unknown, or too old to keep)"),
        ),
        Some((_, Some(doc))) => Json(doc).into_response(),
        Some((summary, None)) => {
            let code = if matches!(
                summary.status,
                crate::coordinator::SnapshotStatus::InProgress { .. }
            ) {
                StatusCode::ACCEPTED
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (code, Json(summary)).into_response()
        }
    }
}

async fn metrics(State(s): Shr) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(name(&s)),
    )
        .into_response()
}

async fn allocate(State(s): Shr, Json(req): Json<IdRequest>) -> Response {
    let Some(c) = &s.coordinator else {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "this node is not the coordinator",
        );
    };
    if s.config.topology.process(&req.initiator).is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown node {:?}", req.initiator),
        );
    }
    match allocate_for(&s, c, &req.initiator) {
        Ok(id) => Json(IdAnswer { id }).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn report(State(s): Shr, Json(r): Json<LocalReport>) -> Response {
    let Some(c) = &s.coordinator else {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "this node is not the coordinator",
        );
    };
    match accept_report(&s, c, r) {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

/// Adds a report at the coordinator; when it completes a snapshot whose parts
/// are durable, queues its manifest for the committer.
pub(crate) fn accept_report(
    s: &Arc<Shared>,
    c: &Arc<Mutex<Coordinator>>,
    r: LocalReport,
) -> Result<(), String> {
    let manifest = c.lock().unwrap_or_else(|p| p.into_inner()).report(r)?;
    if let Some(m) = manifest {
        let _ = s.commits.send(m);
    }
    Ok(())
}

/// Commits manifests in order, then applies retention, off the reporting
/// path. At shutdown it finishes what is queued, so retention always runs
/// after the last commit.
pub(crate) async fn run_committer(
    store: Store,
    coordinator: Arc<Mutex<Coordinator>>,
    retain: usize,
    mut manifests: mpsc::UnboundedReceiver<Manifest>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let m = tokio::select! {
            m = manifests.recv() => m,
            _ = stop.changed() => {
                while let Ok(m) = manifests.try_recv() {
                    commit_one(&store, &coordinator, retain, m).await;
                }
                return;
            }
        };
        let Some(m) = m else { return };
        commit_one(&store, &coordinator, retain, m).await;
    }
}

async fn commit_one(
    store: &Store,
    coordinator: &Arc<Mutex<Coordinator>>,
    retain: usize,
    manifest: Manifest,
) {
    let id = SnapshotId(manifest.snapshot);
    match store.commit(&manifest).await {
        Ok(()) => {
            coordinator
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .mark_durable(id);
            let pinned = coordinator
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pinned();
            match store.retain(retain, &pinned).await {
                Ok(gone) if !gone.is_empty() => debug!(?gone, "retention deleted old snapshots"),
                Ok(_) => {}
                Err(e) => warn!("retention failed: {e}"),
            }
        }
        Err(e) => warn!(snapshot = %id, "could not commit the snapshot: {e}"),
    }
}

/// Asks for a rollback: `{"snapshot": 12}`, or `{}` for the newest good one.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The snapshot to restore; the newest complete, uncorrupted one when absent.
    pub snapshot: Option<u64>,
}

/// Tells one node to restore its part of `snapshot` in `epoch`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeRollback {
    /// The new epoch.
    pub epoch: u64,
    /// The snapshot; `None` restarts every process from its initial state
    /// with empty channels (when no snapshot was ever committed).
    pub snapshot: Option<u64>,
    /// How many messages the snapshot recorded on each channel, by name.
    pub in_flight: std::collections::BTreeMap<String, u64>,
}

/// The coordinator rolls the whole cluster back to one snapshot: a new
/// epoch, then every node restores its part of the same snapshot.
async fn rollback_all(State(s): Shr, Json(req): Json<RollbackRequest>) -> Response {
    let Some(c) = s.coordinator.clone() else {
        return redirect(&s, "/rollback");
    };
    match roll_back(&s, &c, req.snapshot).await {
        Ok(v) => Json(v).into_response(),
        Err((code, msg)) => error(code, msg),
    }
}

/// Rolls the cluster back to `snapshot`, or to the newest complete,
/// uncorrupted one, or (if the store holds none) to the initial state.
/// Returns the epoch, the snapshot and what each node re-delivered.
pub(crate) async fn roll_back(
    s: &Shared,
    c: &Arc<Mutex<Coordinator>>,
    snapshot: Option<u64>,
) -> Result<serde_json::Value, (StatusCode, String)> {
    let chosen = match snapshot {
        Some(id) => s
            .store
            .load(id, &mut |_, _| {})
            .await
            .and_then(|snap| snap.check_complete().map(|()| snap))
            .map(Some),
        None => s.store.latest_good().await.map(|(snap, skipped)| {
            for (id, why) in skipped {
                warn!(snapshot = id, "skipping an unusable snapshot: {why}");
            }
            snap
        }),
    };
    let snapshot = match chosen {
        Ok(snap) => snap,
        Err(e) => {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("cannot roll back to it: {e}"),
            ));
        }
    };
    let in_flight: std::collections::BTreeMap<String, u64> = snapshot
        .iter()
        .flat_map(|s| &s.parts)
        .flat_map(|p| {
            p.channels
                .iter()
                .map(|c| (c.name.clone(), c.messages.len() as u64))
        })
        .collect();
    let snapshot = snapshot.map(|s| s.manifest.snapshot);
    let epoch = {
        let mut co = c.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = snapshot {
            co.pin(id);
        }
        co.begin_epoch()
    };
    let result = roll_nodes_back(s, epoch, snapshot, &in_flight).await;
    c.lock()
        .unwrap_or_else(|p| p.into_inner())
        .unpin(snapshot, result.is_ok());
    result
}

async fn roll_nodes_back(
    s: &Shared,
    epoch: u64,
    snapshot: Option<u64>,
    in_flight: &std::collections::BTreeMap<String, u64>,
) -> Result<serde_json::Value, (StatusCode, String)> {
    // Every node reads and restores its own part at the same time.
    let orders = s.config.nodes.iter().enumerate().map(|(i, n)| async move {
        let order = NodeRollback {
            epoch,
            snapshot,
            in_flight: in_flight.clone(),
        };
        let result = if i == s.me.index() {
            rollback_local(s, &order).await
        } else {
            match client::post_json::<_, serde_json::Value>(n.admin, "/internal/rollback", &order)
                .await
            {
                Ok((st, v)) if st.is_success() => {
                    Ok(v["redelivered"].as_u64().unwrap_or(0) as usize)
                }
                Ok((st, v)) => Err(format!("{st}: {v}")),
                Err(e) => Err(e.to_string()),
            }
        };
        (n, result)
    });
    let mut nodes = serde_json::Map::new();
    for (n, result) in futures_util::future::join_all(orders).await {
        match result {
            Ok(n_msgs) => {
                nodes.insert(n.id.clone(), json!({ "redelivered": n_msgs }));
            }
            Err(e) => {
                return Err((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "node {} did not roll back to {}: {e}",
                        n.id,
                        snapshot.map_or("its initial state".to_string(), |id| format!(
                            "snapshot {id}"
                        ))
                    ),
                ));
            }
        }
    }
    tracing::info!(?snapshot, epoch, "cluster rolled back");
    Ok(json!({ "snapshot": snapshot, "epoch": epoch, "nodes": nodes }))
}

async fn rollback_here(State(s): Shr, Json(order): Json<NodeRollback>) -> Response {
    match rollback_local(&s, &order).await {
        Ok(n) => Json(json!({ "redelivered": n })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Reads this node's part of the snapshot and hands it to the driver.
async fn rollback_local(s: &Shared, order: &NodeRollback) -> Result<usize, String> {
    let me = name(s).to_string();
    let part = match order.snapshot {
        // No snapshot to go back to: start over from the initial state.
        None => Part {
            snapshot: 0,
            process: me,
            state: s.initial.clone(),
            channels: Vec::new(),
            initial: None,
        },
        Some(id) => {
            let manifest = s.store.manifest(id).await.map_err(|e| e.to_string())?;
            let part_ref = manifest
                .parts
                .iter()
                .find(|p| p.process == me)
                .ok_or_else(|| format!("snapshot {id} has no part for {me}"))?;
            s.store
                .read_part(part_ref)
                .await
                .map_err(|e| e.to_string())?
        }
    };
    ask_driver(s, |reply| Control::Rollback {
        epoch: order.epoch,
        part: Box::new(part),
        in_flight: order.in_flight.clone(),
        reply,
    })
    .await?
}

async fn reset_peaks(State(s): Shr) -> Response {
    s.metrics.reset_peaks();
    Json(json!({ "ok": true })).into_response()
}

async fn cut(State(s): Shr) -> Response {
    if !s.config.allow_cut {
        return error(
            StatusCode::FORBIDDEN,
            "set [debug] allow_cut = true to allow cutting connections",
        );
    }
    s.cut.send_modify(|g| *g += 1);
    Json(json!({ "ok": true })).into_response()
}
