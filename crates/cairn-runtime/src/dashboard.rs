//! The dashboard at `/` on the coordinator's admin port, and what it reads
//! beyond the admin API: `GET /cluster` (every node's status, asked at
//! once) and `GET /snapshots/{id}/diagram.svg` (the snapshot's space-time
//! diagram, when the nodes write traces to a folder this node can read).
//!
//! The page is one file built into the binary; it carries no data, so it is
//! served to anyone, and everything it shows it fetches with the bearer
//! token the person enters (a secure cluster), or with nothing (insecure).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cairn_core::SnapshotId;
use serde_json::{Value, json};

use crate::admin::{error, redirect};
use crate::shared::Shared;

const PAGE: &str = include_str!("dashboard.html");

/// How long `/cluster` waits for each node.
const NODE_WAIT: Duration = Duration::from_millis(800);

/// Events drawn on either side of a snapshot in its diagram.
const DIAGRAM_MARGIN: usize = 40;

/// The dashboard's routes (`/` is open; the others need read access).
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(page))
        .route("/cluster", get(cluster))
        .route("/snapshots/{id}/diagram.svg", get(diagram))
}

/// Whether `path` is the page itself, which anyone may load.
pub(crate) fn is_open(path: &str) -> bool {
    path == "/"
}

async fn page(State(s): State<Arc<Shared>>) -> Response {
    if s.coordinator().is_none() {
        return redirect(&s, "/");
    }
    // The page asks for a token before its first read when the cluster is secure.
    let secure = if s.security.is_some() {
        "true"
    } else {
        "false"
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE.replace("{{SECURE}}", secure),
    )
        .into_response()
}

/// Every node's `/status`, asked at once, with whether it answered.
async fn cluster(State(s): State<Arc<Shared>>) -> Response {
    let topo = &s.config.topology;
    let asks = s.config.nodes.iter().map(|n| {
        let client = s.client.clone();
        let (id, admin) = (n.id.clone(), n.admin);
        async move {
            let answer = client
                .get_json_within::<Value>(NODE_WAIT, admin, "/status")
                .await;
            match answer {
                Ok((status, body)) if status.is_success() => {
                    json!({"id": id, "up": true, "status": body})
                }
                Ok((status, body)) => {
                    json!({"id": id, "up": false, "error": format!("{status}: {body}")})
                }
                Err(e) => json!({"id": id, "up": false, "error": e.to_string()}),
            }
        }
    });
    let nodes = futures_util::future::join_all(asks).await;
    let channels: Vec<Value> = topo
        .channel_ids()
        .map(|c| {
            let ch = topo.channel(c);
            json!({"name": topo.channel_name(c), "from": topo.name(ch.from), "to": topo.name(ch.to)})
        })
        .collect();
    Json(json!({
        "cluster": s.config.cluster,
        "app": s.config.app.name,
        "coordinator": s.coordinator_name(),
        "answered_by": s.name(),
        "term": s.role.term(),
        "epoch": *s.epoch.borrow(),
        "traces": s.config.trace_dir.is_some(),
        "nodes": nodes,
        "channels": channels,
    }))
    .into_response()
}

/// The snapshot's space-time diagram, drawn from the nodes' traces.
async fn diagram(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a snapshot id"),
        );
    };
    let Some(dir) = s.config.trace_dir.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "no traces: the nodes write them only with trace_dir set in the config",
        );
    };
    // Only a snapshot the coordinator knows, and one drawing at a time: a
    // caller cannot make this node scan its traces for ids never taken, or
    // for many at once.
    let Some(c) = s.coordinator() else {
        return redirect(&s, &format!("/snapshots/{id}/diagram.svg"));
    };
    let epoch = {
        let c = c.lock().unwrap_or_else(|p| p.into_inner());
        c.list().into_iter().find(|x| x.id.0 == id).map(|x| x.epoch)
    };
    let Some(epoch) = epoch else {
        return error(
            StatusCode::NOT_FOUND,
            format!("snapshot {id} is not among the coordinator's recent snapshots"),
        );
    };
    static DRAWING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let Ok(_turn) = DRAWING.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let topo = s.config.topology.clone();
    let drawn = tokio::task::spawn_blocking(move || {
        let trace: Vec<cairn_core::trace::TraceEvent<Value>> =
            crate::tracefile::load_around(&topo, &dir, epoch, SnapshotId(id), DIAGRAM_MARGIN)
                .map_err(|e| e.to_string())?;
        let options = cairn_viz::Options {
            snapshot: Some(SnapshotId(id)),
            window: (!trace.is_empty()).then_some(0..trace.len()),
            ..cairn_viz::Options::default()
        };
        cairn_viz::svg(&topo, &trace, &options).map_err(|e| e.to_string())
    })
    .await;
    match drawn {
        Ok(Ok(svg)) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Ok(Err(why)) => error(
            StatusCode::NOT_FOUND,
            format!("no diagram of snapshot {id}: {why}"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
