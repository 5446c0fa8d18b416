//! Committing snapshots and retention, at the coordinator. A snapshot is
//! committed only if it completed in the current epoch with no rollback
//! under way, and retention runs right after each commit, under the same
//! gate that a rollback holds from start to end. So a snapshot begun before
//! a rollback never commits after it, and retention never deletes what a
//! rollback is reading or a snapshot still in progress.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

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
        let queued = s.role.lead().is_some_and(|l| l.commits.try_send(m).is_ok());
        if !queued {
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
    let mut last_retention = Instant::now();
    loop {
        let m = tokio::select! {
            m = manifests.recv() => m,
            _ = stop.changed() => {
                while let Ok(m) = manifests.try_recv() {
                    commit_one(&shared, &coordinator, m, true).await;
                }
                return;
            }
        };
        let Some(m) = m else { return };
        // Retention runs once the committer has caught up, or at least
        // every RETENTION_EVERY: at a high snapshot rate it would otherwise
        // cost more than the commits.
        let retain = manifests.is_empty() || last_retention.elapsed() >= RETENTION_EVERY;
        commit_one(&shared, &coordinator, m, retain).await;
        if retain {
            last_retention = Instant::now();
        }
    }
}

/// The longest the committer goes without applying retention while busy.
const RETENTION_EVERY: Duration = Duration::from_millis(500);

async fn commit_one(
    s: &Shared,
    coordinator: &Arc<Mutex<Coordinator>>,
    manifest: Manifest,
    retain: bool,
) {
    let lock = || coordinator.lock().unwrap_or_else(|p| p.into_inner());
    let id = SnapshotId(manifest.snapshot);
    let _gate = s.gate.lock().await;
    let began = Instant::now();
    // A coordinator that lost its term commits nothing more.
    let term_held = s
        .role
        .lead()
        .is_some_and(|l| Arc::ptr_eq(&l.coordinator, coordinator));
    // Bound first: the coordinator's lock must be released before the branch takes it again.
    let committable = if term_held {
        lock().committable(&manifest)
    } else {
        Err(ControlError::Stale(format!(
            "this node no longer coordinates (term {} is another's)",
            s.role.term()
        )))
    };
    if let Err(e) = committable {
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
    let durable_ms = began.elapsed().as_secs_f64() * 1e3;
    if !retain {
        debug!(snapshot = %id, durable_ms, "committed");
        return;
    }
    let policy = {
        let c = lock();
        Retention {
            keep: s.config.snapshots.retain,
            // The newest recorded epoch's timeline, not the manifest's: a
            // late commit never makes retention judge by an old timeline.
            epoch: None,
            live: c.live(),
            dead: c.dead(),
            stale_after: s.stale_after(),
        }
    };
    match s.store.retain(&policy).await {
        Ok(gone) => {
            if !gone.is_empty() {
                debug!(?gone, "retention deleted old snapshots");
                lock().removed(&gone);
            }
            // Dead snapshots are handled: deleted, or nothing was written.
            // A part written even later is collected by the age rule.
            lock().collected(&policy.dead);
        }
        Err(e) => warn!("retention failed: {e}"),
    }
    debug!(snapshot = %id, durable_ms, ms = began.elapsed().as_secs_f64() * 1e3, "committed and retained");
}
