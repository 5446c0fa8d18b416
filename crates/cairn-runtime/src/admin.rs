//! The admin HTTP API every node serves (axum):
//!
//! | route | what |
//! |---|---|
//! | `GET /status` | the node, its channels, its counters, and (on the coordinator) recent snapshots |
//! | `POST /snapshots` | start a snapshot here; answers `{"id": n}` |
//! | `GET /snapshots` | the coordinator's recent snapshots (other nodes redirect there) |
//! | `GET /snapshots/{id}` | a complete snapshot in the shared JSON shape; 202 with progress while in progress; 500 with what was missing if it failed |
//! | `GET /metrics` | Prometheus text |
//!
//! Nodes use two internal routes on the coordinator: `POST /internal/ids` for a
//! new snapshot id and `POST /internal/reports` for a local snapshot.
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
use crate::config::ClusterConfig;
use crate::coordinator::{Coordinator, LocalReport};
use crate::driver::Control;
use crate::metrics::Metrics;
use cairn_store::Store;
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
        .route("/internal/ids", post(allocate))
        .route("/internal/reports", post(report))
        .route("/debug/cut", post(cut))
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
    let recent = s.coordinator.as_ref().map(|c| {
        let list = c.lock().unwrap_or_else(|p| p.into_inner()).list();
        let skip = list.len().saturating_sub(20);
        list.into_iter().skip(skip).collect::<Vec<_>>()
    });
    Json(json!({
        "node": name(&s),
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
        "recent_snapshots": recent,
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
    let id = match &s.coordinator {
        Some(c) => c
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allocate(name(s)),
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
    let (reply, answer) = oneshot::channel();
    s.control
        .send(Control::Start { id, reply })
        .await
        .map_err(|_| "the node is shutting down".to_string())?;
    answer
        .await
        .map_err(|_| "the node is shutting down".to_string())??;
    Ok(id)
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
    let found = c
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(SnapshotId(id));
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
    let id = c
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .allocate(&req.initiator);
    Json(IdAnswer { id }).into_response()
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
/// are durable, commits the manifest and applies retention, off the caller's path.
pub(crate) fn accept_report(
    s: &Arc<Shared>,
    c: &Arc<Mutex<Coordinator>>,
    r: LocalReport,
) -> Result<(), String> {
    let manifest = c.lock().unwrap_or_else(|p| p.into_inner()).report(r)?;
    let Some(manifest) = manifest else {
        return Ok(());
    };
    let (store, coordinator, retain) = (s.store.clone(), c.clone(), s.config.snapshots.retain);
    tokio::spawn(async move {
        let id = SnapshotId(manifest.snapshot);
        match store.commit(&manifest).await {
            Ok(()) => {
                coordinator
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .mark_durable(id);
                match store.retain(retain, &[]).await {
                    Ok(gone) if !gone.is_empty() => {
                        debug!(?gone, "retention deleted old snapshots")
                    }
                    Ok(_) => {}
                    Err(e) => warn!("retention failed: {e}"),
                }
            }
            Err(e) => warn!(snapshot = %id, "could not commit the snapshot: {e}"),
        }
    });
    Ok(())
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
