//! The stop-the-world baseline, driven by the coordinator: pause every node's
//! sends, take an aligned snapshot (the channels drain behind its markers),
//! wait until it is durable, resume every node. It exists to be measured
//! against Chandy–Lamport (`cairn bench`); see [`crate::config::SnapshotMode`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_core::SnapshotId;
use serde_json::json;
use tokio::sync::oneshot;
use tracing::warn;

use crate::admin::{Shared, allocate_for, ask_driver, start_local};
use crate::client;
use crate::driver::Control;

/// Takes one stop-the-world snapshot from the coordinator; returns once the
/// cluster runs again.
pub(crate) async fn stop_the_world(s: &Shared) -> Result<SnapshotId, String> {
    let Some(c) = &s.coordinator else {
        return Err(format!(
            "stop-the-world snapshots start at the coordinator, {}",
            s.config.nodes[s.config.coordinator.index()].id
        ));
    };
    let _one = s.stop_world.lock().await;
    // The snapshot's clock starts before the world stops: its latency
    // includes pausing every node.
    let id = allocate_for(s, c, &s.config.nodes[s.me.index()].id)?;
    let outcome = async {
        broadcast(s, "/internal/pause", |reply| Control::Pause { reply }).await?;
        start_local(s, id).await?;
        // Resume once the snapshot is durable, or has failed.
        let deadline = Instant::now() + s.config.snapshots.timeout + Duration::from_secs(1);
        loop {
            let settled = c.lock().unwrap_or_else(|p| p.into_inner()).settled(id);
            match settled {
                Some(true) => return Ok(id),
                Some(false) => return Err(format!("snapshot {id} failed")),
                None if Instant::now() > deadline => {
                    return Err(format!("snapshot {id} was not durable in time"));
                }
                None => tokio::time::sleep(Duration::from_micros(500)).await,
            }
        }
    }
    .await;
    // Whatever happened, the cluster runs again.
    if let Err(e) = broadcast(s, "/internal/resume", |reply| Control::Resume { reply }).await {
        warn!("resuming after a stop-the-world snapshot: {e}");
    }
    outcome
}

/// Sends a pause or resume to every node, this one through its driver.
async fn broadcast(
    s: &Shared,
    path: &str,
    control: fn(oneshot::Sender<()>) -> Control,
) -> Result<(), String> {
    let others = s
        .config
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != s.me.index())
        .map(|(_, n)| async move {
            match client::post_json::<_, serde_json::Value>(n.admin, path, &json!({})).await {
                Ok((st, _)) if st.is_success() => Ok(()),
                Ok((st, v)) => Err(format!("node {}: {st} {v}", n.id)),
                Err(e) => Err(format!("node {}: {e}", n.id)),
            }
        });
    let here = ask_driver(s, control);
    let (answers, here) = tokio::join!(futures_util::future::join_all(others), here);
    answers.into_iter().chain([here]).collect()
}

pub(crate) async fn pause_here(State(s): State<Arc<Shared>>) -> Response {
    answer(ask_driver(&s, |reply| Control::Pause { reply }).await)
}

pub(crate) async fn resume_here(State(s): State<Arc<Shared>>) -> Response {
    answer(ask_driver(&s, |reply| Control::Resume { reply }).await)
}

fn answer(r: Result<(), String>) -> Response {
    match r {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": e }))).into_response(),
    }
}
