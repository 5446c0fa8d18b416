//! Committing snapshots and retention, at the coordinator. A snapshot is
//! committed only if it completed in the current epoch with no rollback
//! under way, and retention runs right after each commit, under the same
//! gate that a rollback holds from start to end. So a snapshot begun before
//! a rollback never commits after it, and retention never deletes what a
//! rollback is reading or a snapshot still in progress.

use std::sync::{Arc, Mutex};

use cairn_core::SnapshotId;
use cairn_store::{Manifest, Retention};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::control::ControlError;
use crate::coordinator::{Coordinator, LocalReport};
use crate::shared::Shared;

/// Adds a report at the coordinator; when it completes a snapshot whose
/// parts are durable, queues its manifest for the committer.
///
/// # Errors
/// The report is refused (stale, unknown, malformed), or the commit queue
/// is full (the snapshot then fails).
pub(crate) fn accept_report(
    s: &Shared,
    c: &Mutex<Coordinator>,
    r: LocalReport,
) -> Result<(), ControlError> {
    let manifest = c.lock().unwrap_or_else(|p| p.into_inner()).report(r)?;
    if let Some(m) = manifest {
        let id = SnapshotId(m.snapshot);
        if s.commits.try_send(m).is_err() {
            let why = "the commit queue is full: the store is too slow for this snapshot rate";
            c.lock()
                .unwrap_or_else(|p| p.into_inner())
                .commit_failed(id, why.into());
            return Err(ControlError::Busy(why.into()));
        }
    }
    Ok(())
}

/// Commits manifests in order, then applies retention, off the reporting
/// path. At shutdown it finishes what is queued.
pub(crate) async fn run_committer(
    shared: Arc<Shared>,
    coordinator: Arc<Mutex<Coordinator>>,
    mut manifests: mpsc::Receiver<Manifest>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let m = tokio::select! {
            m = manifests.recv() => m,
            _ = stop.changed() => {
                while let Ok(m) = manifests.try_recv() {
                    commit_one(&shared, &coordinator, m).await;
                }
                return;
            }
        };
        let Some(m) = m else { return };
        commit_one(&shared, &coordinator, m).await;
    }
}

async fn commit_one(s: &Shared, coordinator: &Mutex<Coordinator>, manifest: Manifest) {
    let lock = || coordinator.lock().unwrap_or_else(|p| p.into_inner());
    let id = SnapshotId(manifest.snapshot);
    let _gate = s.gate.lock().await;
    if let Err(e) = lock().committable(&manifest) {
        warn!(snapshot = %id, "not committed: {e}");
        lock().commit_failed(id, format!("not committed: {e}"));
        return;
    }
    if let Err(e) = s.store.commit(&manifest).await {
        warn!(snapshot = %id, "could not commit the snapshot: {e}");
        lock().commit_failed(id, format!("could not commit: {e}"));
        return;
    }
    lock().mark_durable(id);
    let policy = {
        let c = lock();
        Retention {
            keep: s.config.snapshots.retain,
            epoch: Some(manifest.epoch),
            live: c.live(),
            dead: c.dead(),
            stale_after: s.stale_after(),
        }
    };
    match s.store.retain(&policy).await {
        Ok(gone) => {
            if !gone.is_empty() {
                debug!(?gone, "retention deleted old snapshots");
            }
            // Dead snapshots are handled: deleted, or nothing was written.
            // A part written even later is collected by the age rule.
            lock().collected(&policy.dead);
        }
        Err(e) => warn!("retention failed: {e}"),
    }
}
