//! The stop-the-world baseline, driven by the coordinator: pause every node's
//! sends, take an aligned snapshot (the channels drain behind its markers),
//! wait until it is durable, resume every node. It exists to be measured
//! against Chandy–Lamport (`cairn bench`); see [`crate::config::SnapshotMode`].

use std::time::Duration;

use tokio::time::Instant;

use cairn_core::SnapshotId;
use serde_json::json;
use tokio::sync::oneshot;
use tracing::warn;

use crate::control::ControlError;
use crate::control::initiation::{allocate, ask_driver, start_local};
use crate::driver::Control;
use crate::shared::Shared;

/// Takes one stop-the-world snapshot from the coordinator; returns once the
/// cluster runs again.
pub(crate) async fn stop_the_world(s: &Shared) -> Result<SnapshotId, ControlError> {
    let Some(c) = s.coordinator() else {
        return Err(ControlError::NotCoordinator(
            s.coordinator_name().to_string(),
        ));
    };
    let c = &c;
    let _one = s.stop_world.lock().await;
    // The snapshot's clock starts before the world stops: its latency
    // includes pausing every node.
    let (id, epoch) = allocate(s, c, s.name()).await?;
    let outcome = async {
        broadcast(s, "/internal/pause", |reply| Control::Pause { reply }).await?;
        start_local(s, id, epoch).await?;
        // Resume once the snapshot is durable, or has failed.
        let deadline = Instant::now() + s.config.snapshots.timeout + Duration::from_secs(1);
        loop {
            let settled = c.lock().unwrap_or_else(|p| p.into_inner()).settled(id);
            match settled {
                Some(true) => return Ok(id),
                Some(false) => return Err(ControlError::Refused(format!("snapshot {id} failed"))),
                None if Instant::now() > deadline => {
                    return Err(ControlError::Refused(format!(
                        "snapshot {id} was not durable in time"
                    )));
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
) -> Result<(), ControlError> {
    let others = s
        .config
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != s.me.index())
        .map(|(_, n)| async move {
            let body = json!({ "term": s.role.term() });
            let problem = match s
                .client
                .post_json::<_, serde_json::Value>(n.admin, path, &body)
                .await
            {
                Ok((st, _)) if st.is_success() => return Ok(()),
                Ok((st, v)) => format!("{st} {v}"),
                Err(e) => e.to_string(),
            };
            Err(ControlError::Peer {
                node: n.id.clone(),
                problem,
            })
        });
    let here = ask_driver(s, control);
    let (answers, here) = tokio::join!(futures_util::future::join_all(others), here);
    answers.into_iter().chain([here]).collect()
}
