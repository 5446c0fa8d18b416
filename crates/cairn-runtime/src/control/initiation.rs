//! Starting snapshots: ids leased from the store in blocks (so they never
//! repeat across restarts), and the request that starts one at a node.

use std::sync::Mutex;

use cairn_core::{SnapshotId, StartOutcome};
use cairn_store::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::config::SnapshotMode;
use crate::control::ControlError;
use crate::coordinator::Coordinator;
use crate::driver::Control;
use crate::shared::Shared;

/// Ids leased from the store at a time: a restarted coordinator skips at
/// most this many.
pub(crate) const ID_BLOCK: u64 = 100;

/// Asks for a new id: `{"initiator": "n2"}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdRequest {
    /// The node that will start the snapshot.
    pub initiator: String,
}

/// A snapshot id and the epoch it belongs to: `{"id": 3, "epoch": 1}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdAnswer {
    /// The id.
    pub id: SnapshotId,
    /// The epoch it was handed out in.
    #[serde(default)]
    pub epoch: u64,
    /// The term of the coordinator that handed it out.
    #[serde(default)]
    pub term: u64,
}

/// The block of leased ids this coordinator hands out from.
#[derive(Debug, Default)]
pub(crate) struct IdBlock {
    next: u64,
    end: u64,
}

impl IdBlock {
    /// The next id, leasing a new block above everything the store has seen
    /// when this one is used up.
    async fn next(&mut self, store: &Store, holder: &str) -> Result<SnapshotId, ControlError> {
        let mut tries = 0;
        while self.next >= self.end {
            tries += 1;
            let seen = store.history().await?;
            let from = seen.next_id.max(self.end);
            match store.lease_ids(from, ID_BLOCK, holder).await {
                Ok(block) => (self.next, self.end) = (block.start, block.end),
                // Another writer leased it first: look again, above it.
                Err(cairn_store::Error::AlreadyExists { .. }) if tries < 8 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let id = self.next;
        self.next += 1;
        Ok(SnapshotId(id))
    }
}

/// Gets an id (from the coordinator) and starts that snapshot at this node.
pub(crate) async fn start_here(s: &Shared) -> Result<SnapshotId, ControlError> {
    if s.config.snapshots.mode == SnapshotMode::StopTheWorld {
        return crate::baselines::stop_world::stop_the_world(s).await;
    }
    let (id, epoch) = match s.coordinator() {
        Some(c) => allocate(s, &c, s.name()).await?,
        None => {
            let req = IdRequest {
                initiator: s.name().to_string(),
            };
            let coordinator = s.coordinator_name().to_string();
            let (status, answer): (_, serde_json::Value) = s
                .client
                .post_json(s.coordinator_admin(), "/internal/ids", &req)
                .await
                .map_err(|e| ControlError::Peer {
                    node: coordinator.clone(),
                    problem: format!("cannot get a snapshot id: {e}"),
                })?;
            if !status.is_success() {
                return Err(ControlError::Peer {
                    node: coordinator,
                    problem: format!(
                        "refused a snapshot id: {}",
                        answer["error"].as_str().unwrap_or(&answer.to_string())
                    ),
                });
            }
            let answer: IdAnswer =
                serde_json::from_value(answer).map_err(|e| ControlError::Peer {
                    node: coordinator.clone(),
                    problem: format!("unexpected answer: {e}"),
                })?;
            if answer.term < s.role.term() {
                return Err(ControlError::Stale(format!(
                    "{coordinator} handed out snapshot {} in term {}, older than term {}",
                    answer.id,
                    answer.term,
                    s.role.term()
                )));
            }
            (answer.id, answer.epoch)
        }
    };
    start_local(s, id, epoch).await?;
    Ok(id)
}

/// Starts snapshot `id` of `epoch` at this node's driver.
pub(crate) async fn start_local(
    s: &Shared,
    id: SnapshotId,
    epoch: u64,
) -> Result<StartOutcome, ControlError> {
    ask_driver(s, |reply| Control::Start { id, epoch, reply }).await?
}

/// Hands the driver a request and waits for its answer.
pub(crate) async fn ask_driver<T>(
    s: &Shared,
    request: impl FnOnce(oneshot::Sender<T>) -> Control,
) -> Result<T, ControlError> {
    let (reply, answer) = oneshot::channel();
    s.control
        .send(request(reply))
        .await
        .map_err(|_| ControlError::ShuttingDown)?;
    answer.await.map_err(|_| ControlError::ShuttingDown)
}

/// A new snapshot id and its epoch, at the coordinator. Aligned and
/// stop-the-world snapshots run one at a time.
pub(crate) async fn allocate(
    s: &Shared,
    c: &Mutex<Coordinator>,
    initiator: &str,
) -> Result<(SnapshotId, u64), ControlError> {
    let mut ids = s.ids.lock().await;
    {
        let c = c.lock().unwrap_or_else(|p| p.into_inner());
        c.may_start()?;
        if s.config.snapshots.mode != SnapshotMode::ChandyLamport {
            if let Some(id) = c.in_progress() {
                return Err(ControlError::Busy(format!(
                    "snapshot {id} is still in progress; aligned and stop-the-world snapshots run one at a time"
                )));
            }
        }
    }
    let id = ids.next(&s.store, s.name()).await?;
    let epoch = c
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .register(id, initiator)?;
    Ok((id, epoch))
}
