//! The admin HTTP API every node serves (axum). Handlers only: each parses
//! the request, calls the control plane ([`crate::control`]) and maps its
//! typed error to a status code.
//!
//! | route | what |
//! |---|---|
//! | `GET /status` | the node, its incarnation, epoch, channels and counters, and (on the coordinator) recent snapshots |
//! | `POST /snapshots` | start a snapshot here; answers `{"id": n, "epoch": e}` |
//! | `GET /snapshots` | the coordinator's recent snapshots (other nodes redirect there) |
//! | `GET /snapshots/{id}` | a complete snapshot in the shared JSON shape; 202 with progress while in progress; 500 with what was missing if it failed |
//! | `POST /rollback` | roll the cluster back (coordinator) |
//! | `GET /metrics` | Prometheus text |
//! | `POST /metrics/reset-peaks` | forget the longest pause in `/status` (for `cairn bench`; the metrics' pause histogram is never reset) |
//! | `GET /` | the dashboard (coordinator; other nodes redirect there), see [`crate::dashboard`] |
//! | `GET /cluster` | every node's `/status`, asked at once, with whether it answered |
//! | `GET /snapshots/{id}/diagram.svg` | the snapshot's space-time diagram, from the nodes' traces |
//!
//! Nodes use internal routes: on the coordinator `POST /internal/ids` for a
//! new snapshot id and `POST /internal/reports` for a local snapshot; on
//! every node `POST /internal/rollback`, `POST /internal/abort`,
//! `POST /internal/join` (a fresh cluster's epoch 0), and in
//! stop-the-world mode `POST /internal/pause` and `POST /internal/resume`.
//! `POST /debug/cut` drops every connection of the node, when the config allows it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_core::SnapshotId;
use serde::Deserialize;
use serde_json::json;

use crate::admin_auth::{holder_of, refuse_unless};
use crate::control::ControlError;
use crate::control::commit::accept_report;
use crate::control::initiation::{IdAnswer, IdRequest, allocate, ask_driver, start_here};
use crate::control::recovery::{
    NodeRollback, RollbackRequest, join_local, roll_back, rollback_local,
};
use crate::coordinator::LocalReport;
use crate::driver::Control;
use crate::shared::Shared;
use crate::tls::listener::Caller;

type Shr = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/snapshots", get(list).post(start))
        .route("/snapshots/{id}", get(one))
        .route("/metrics", get(metrics))
        .route("/metrics/reset-peaks", post(reset_peaks))
        .route("/internal/ids", post(ids))
        .route("/internal/reports", post(report))
        .route("/debug/cut", post(cut))
        .route("/rollback", post(rollback_all))
        .route("/internal/rollback", post(rollback_here))
        .route("/internal/abort", post(abort_here))
        .route("/internal/join", post(join_here))
        .route("/internal/pause", post(pause_here))
        .route("/internal/resume", post(resume_here))
        .merge(crate::dashboard::routes())
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            crate::admin_auth::authorize,
        ))
        .with_state(shared)
}

pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// The status code for a control error.
fn failed(e: ControlError) -> Response {
    let code = match &e {
        ControlError::ShuttingDown | ControlError::NotReady | ControlError::RollbackUnderway => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ControlError::NotCoordinator(_) => StatusCode::MISDIRECTED_REQUEST,
        ControlError::Busy(_) | ControlError::Stale(_) | ControlError::Refused(_) => {
            StatusCode::CONFLICT
        }
        ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ControlError::Store(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ControlError::Unusable { .. } => StatusCode::GONE,
        ControlError::Peer { .. } => StatusCode::BAD_GATEWAY,
    };
    error(code, e.to_string())
}

async fn status(State(s): Shr) -> Response {
    Json(status_value(&s)).into_response()
}

/// What `GET /status` answers.
pub(crate) fn status_value(s: &Shared) -> serde_json::Value {
    let topo = &s.config.topology;
    let m = &s.metrics;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let (recent, last_rollback, ready, unreachable) = match s.coordinator() {
        Some(c) => {
            let c = c.lock().unwrap_or_else(|p| p.into_inner());
            let list = c.list();
            let skip = list.len().saturating_sub(20);
            let (epoch, rolling_back) = c.epoch_state();
            let away: serde_json::Map<String, serde_json::Value> = c
                .unreachable()
                .iter()
                .map(|(n, d)| (n.clone(), json!({ "silent_ms": d.as_millis() as u64 })))
                .collect();
            (
                Some(list.into_iter().skip(skip).collect::<Vec<_>>()),
                c.last_rollback(),
                Some(epoch.is_some() && !rolling_back),
                Some(away),
            )
        }
        None => (None, None, None, None),
    };
    let counts = &s.counts;
    let channels_out: serde_json::Map<String, serde_json::Value> = topo
        .outgoing(s.me)
        .iter()
        .map(|&c| {
            (
                topo.channel_name(c),
                json!({
                    "sent": load(&counts.sent[c.index()]),
                    "pending": s.pending.get(&c).map_or(0, |p| p.0.load(Ordering::Relaxed)),
                    "connected": s.pending.get(&c).is_some_and(|p| p.1.load(Ordering::Relaxed)),
                }),
            )
        })
        .collect();
    let channels_in: serde_json::Map<String, serde_json::Value> = topo
        .incoming(s.me)
        .iter()
        .map(|&c| {
            (
                topo.channel_name(c),
                json!({ "received": load(&counts.received[c.index()]) }),
            )
        })
        .collect();
    json!({
        "node": s.name(),
        "pid": std::process::id(),
        "incarnation": s.peers.me,
        "insecure": s.security.is_none(),
        "needs_restore": s.peers.needs_restore(),
        "restarted_peers": s.peers.restarted_peers(),
        "epoch": *s.epoch.borrow(),
        "joined": s.joined(),
        "coordinator_silent_ms": s.coordinator_silent().as_millis() as u64,
        "ready": ready,
        "cluster": s.config.cluster,
        "app": s.config.app.name,
        "coordinator": s.coordinator_name(),
        "term": s.role.term(),
        "leading": s.coordinator().is_some(),
        "address": s.config.nodes[s.me.index()].address,
        "uptime_ms": s.started.elapsed().as_millis() as u64,
        "incoming": topo.incoming(s.me).iter().map(|&c| topo.channel_name(c)).collect::<Vec<_>>(),
        "outgoing": topo.outgoing(s.me).iter().map(|&c| topo.channel_name(c)).collect::<Vec<_>>(),
        "channels_out": channels_out,
        "channels_in": channels_in,
        "messages_sent": m.messages_sent.get(),
        "messages_received": m.messages_received.get(),
        "snapshots_recorded": m.snapshots_recorded.get(),
        "snapshots_aborted": m.snapshots_aborted.get(),
        "markers_sent": m.markers_sent.get(),
        "frames_resent": m.frames_resent.get(),
        "messages_overtaken": m.messages_overtaken.get(),
        "connect_attempts": m.connect_attempts.get(),
        "orders_refused": m.orders_refused.get(),
        "longest_pause_us": m.longest_pause_us.load(Ordering::Relaxed),
        "snapshot_mode": s.config.snapshots.mode.as_str(),
        "recent_snapshots": recent,
        "unreachable": unreachable,
        "last_rollback": last_rollback.map(|(snapshot, epoch)| json!({"snapshot": snapshot, "epoch": epoch})),
    })
}

async fn start(State(s): Shr) -> Response {
    match start_here(&s).await {
        Ok(id) => {
            let epoch = *s.epoch.borrow();
            (
                StatusCode::ACCEPTED,
                Json(IdAnswer {
                    id,
                    epoch,
                    term: s.role.term(),
                }),
            )
                .into_response()
        }
        Err(e) => failed(e),
    }
}

/// Non-coordinators send snapshot reads to the coordinator.
pub(crate) fn redirect(s: &Shared, path: &str) -> Response {
    // This node's client speaks TLS exactly when the cluster does.
    let url = s.client.url(s.coordinator_admin(), path);
    Redirect::temporary(&url).into_response()
}

async fn list(State(s): Shr) -> Response {
    match s.coordinator() {
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
    let Some(c) = s.coordinator() else {
        return redirect(&s, &format!("/snapshots/{id}"));
    };
    let (found, stored) = {
        let c = c.lock().unwrap_or_else(|p| p.into_inner());
        (c.get(SnapshotId(id)), c.stored(SnapshotId(id)))
    };
    let gone = |why: String| error(StatusCode::GONE, why);
    if found.as_ref().is_some_and(|(summary, _)| summary.removed) {
        return gone(format!(
            "snapshot {id} was removed from the store by retention (snapshots.retain = {})",
            s.config.snapshots.retain
        ));
    }
    // Channel states and large states are read from the parts, which were
    // durable before they were reported (the manifest may still be on its
    // way).
    if let Some(manifest) = stored {
        let doc = match s.store.load_from(manifest, &mut |_, _| {}).await {
            Ok(stored) => stored.to_json(s.decode_message),
            Err(e) => Err(e),
        };
        return match doc {
            Ok(doc) => Json(doc).into_response(),
            // Deleted behind the coordinator's back (`snapshots delete`).
            Err(e @ cairn_store::Error::NotFound { .. }) => {
                gone(format!("snapshot {id} is no longer in the store ({e})"))
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
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
    let m = &s.metrics;
    crate::metrics::Metrics::set(&m.epoch, *s.epoch.borrow());
    // Read at scrape, like /status, so the two never disagree (the role
    // loop also sets them, but only on its next tick).
    crate::metrics::Metrics::set(&m.term, s.role.term());
    let lead = s.coordinator();
    crate::metrics::Metrics::set(&m.leading, u64::from(lead.is_some()));
    // A node that no longer coordinates has none in progress.
    let running = lead.map_or(0, |c| {
        c.lock().unwrap_or_else(|p| p.into_inner()).running_count()
    });
    crate::metrics::Metrics::set(&m.snapshots_in_progress, running as u64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        m.render(),
    )
        .into_response()
}

fn coordinator_of(
    s: &Shared,
) -> Result<Arc<std::sync::Mutex<crate::coordinator::Coordinator>>, ControlError> {
    s.coordinator()
        .ok_or_else(|| ControlError::NotCoordinator(s.coordinator_name().to_string()))
}

async fn ids(State(s): Shr, Json(req): Json<IdRequest>) -> Response {
    let c = match coordinator_of(&s) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    if s.config.topology.process(&req.initiator).is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown node {:?}", req.initiator),
        );
    }
    match allocate(&s, &c, &req.initiator).await {
        Ok((id, epoch)) => Json(IdAnswer {
            id,
            epoch,
            term: s.role.term(),
        })
        .into_response(),
        Err(e) => failed(e),
    }
}

async fn report(
    State(s): Shr,
    Extension(caller): Extension<Caller>,
    Json(r): Json<LocalReport>,
) -> Response {
    if let Some(refused) =
        refuse_unless(&s, &caller, &format!("{}'s report", r.process), &r.process)
    {
        return refused;
    }
    let c = match coordinator_of(&s) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    match accept_report(&s, &c, r) {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => failed(e),
    }
}

/// The coordinator rolls the whole cluster back to one snapshot: a new
/// epoch, then every node restores its part of the same snapshot.
async fn rollback_all(State(s): Shr, Json(req): Json<RollbackRequest>) -> Response {
    let Some(c) = s.coordinator() else {
        return redirect(&s, "/rollback");
    };
    match roll_back(&s, &c, req.snapshot).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => failed(e),
    }
}

async fn rollback_here(
    State(s): Shr,
    Extension(caller): Extension<Caller>,
    Json(order): Json<NodeRollback>,
) -> Response {
    if let Some(refused) = from_holder(&s, &caller, "a rollback", order.term).await {
        return refused;
    }
    match rollback_local(&s, &order).await {
        Ok(n) => Json(json!({ "redelivered": n })).into_response(),
        Err(e) => failed(e),
    }
}

/// `{"snapshot": 7, "epoch": 2}`: give snapshot 7 of epoch 2 up here.
#[derive(Debug, Deserialize)]
struct AbortOrder {
    snapshot: u64,
    epoch: u64,
    #[serde(default)]
    term: u64,
}

/// An order from a coordinator: `{"term": t}`.
#[derive(Debug, Default, Deserialize)]
struct Order {
    #[serde(default)]
    term: u64,
}

/// Refuses an order of a term older than the one this node follows, with a
/// log line and a metric.
fn stale(s: &Shared, what: &str, term: u64) -> Option<Response> {
    let known = s.role.term();
    if term >= known {
        return None;
    }
    s.metrics.orders_refused.inc();
    tracing::warn!(term, known, "refused a {what} of an older term");
    Some(failed(ControlError::Stale(format!(
        "a {what} of term {term}, older than term {known}, which this node follows"
    ))))
}

async fn abort_here(
    State(s): Shr,
    Extension(caller): Extension<Caller>,
    Json(order): Json<AbortOrder>,
) -> Response {
    if let Some(refused) = refuse_order(&s, &caller, "abort", "an abort", order.term).await {
        return refused;
    }
    let id = SnapshotId(order.snapshot);
    s.give_up(order.snapshot);
    match ask_driver(&s, |reply| Control::Abort {
        id,
        epoch: order.epoch,
        reply,
    })
    .await
    {
        Ok(was) => Json(json!({ "aborted": was })).into_response(),
        Err(e) => failed(e),
    }
}

/// `{"term": 1, "epoch": 0}`: this node's state is of a fresh cluster's epoch 0.
#[derive(Debug, Deserialize)]
struct JoinOrder {
    term: u64,
    epoch: u64,
}

async fn join_here(
    State(s): Shr,
    Extension(caller): Extension<Caller>,
    Json(order): Json<JoinOrder>,
) -> Response {
    if let Some(refused) = refuse_order(&s, &caller, "join", "a join", order.term).await {
        return refused;
    }
    match join_local(&s, order.term, order.epoch).await {
        Ok(()) => Json(json!({ "joined": order.epoch })).into_response(),
        Err(e) => failed(e),
    }
}

async fn pause_here(
    State(s): Shr,
    Extension(caller): Extension<Caller>,
    order: Option<Json<Order>>,
) -> Response {
    let order = order.map(|Json(o)| o).unwrap_or_default();
    if let Some(refused) = refuse_order(&s, &caller, "pause", "a pause", order.term).await {
        return refused;
    }
    ok_or_failed(ask_driver(&s, |reply| Control::Pause { reply }).await)
}

async fn resume_here(State(s): Shr, Extension(caller): Extension<Caller>) -> Response {
    // Only the coordinator this node follows ends its pause (an early
    // resume would let a stop-the-world snapshot record a moving state).
    let coordinator = s.coordinator_name().to_string();
    if let Some(refused) = refuse_unless(&s, &caller, "a resume", &coordinator) {
        return refused;
    }
    ok_or_failed(ask_driver(&s, |reply| Control::Resume { reply }).await)
}

/// Refuses an order that does not come from the coordinator of its term.
/// Refuses an order (`kind`, or with its article `what`) of an older term
/// than this node follows, or from anyone but that term's holder.
async fn refuse_order(
    s: &Shared,
    caller: &Caller,
    kind: &str,
    what: &str,
    term: u64,
) -> Option<Response> {
    match stale(s, kind, term) {
        Some(refused) => Some(refused),
        None => from_holder(s, caller, what, term).await,
    }
}

async fn from_holder(s: &Shared, caller: &Caller, what: &str, term: u64) -> Option<Response> {
    s.security.as_ref()?;
    let holder = holder_of(s, term)
        .await
        .unwrap_or_else(|| format!("(nobody holds term {term})"));
    refuse_unless(s, caller, &format!("{what} of term {term}"), &holder)
}

fn ok_or_failed(r: Result<(), ControlError>) -> Response {
    match r {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => failed(e),
    }
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
