//! The driver's commands: what the admin API and the coordinator ask of
//! it (start, abort, pause, resume, roll back), and giving up recordings
//! whose snapshot has failed.

use std::time::Duration;

use cairn_core::{Process, SnapshotId, StartOutcome};
use cairn_store::Part;
use tokio::sync::oneshot;
use tracing::warn;

use super::{Driver, rollback};
use crate::config::SnapshotMode;
use crate::control::ControlError;
use crate::metrics::Metrics;

/// A request to the driver from the admin API or the coordinator.
#[derive(Debug)]
pub(crate) enum Control {
    /// Start snapshot `id`, handed out in `epoch`, here.
    Start {
        id: SnapshotId,
        epoch: u64,
        reply: oneshot::Sender<std::result::Result<StartOutcome, ControlError>>,
    },
    /// Roll back to this node's part of a snapshot, in a new epoch.
    Rollback {
        epoch: u64,
        part: Box<Part>,
        /// The chunks split out of the part's state, read from the store.
        chunks: rollback::Chunks,
        /// Messages the snapshot recorded on each channel, by name.
        in_flight: std::collections::BTreeMap<String, u64>,
        reply: oneshot::Sender<std::result::Result<usize, ControlError>>,
    },
    /// Give up snapshot `id` of `epoch` here (it failed or timed out);
    /// answers whether it was being recorded.
    Abort {
        id: SnapshotId,
        epoch: u64,
        reply: oneshot::Sender<bool>,
    },
    /// Stop the world: hold the application's own sends until resumed.
    Pause { reply: oneshot::Sender<()> },
    /// Let the application send again.
    Resume { reply: oneshot::Sender<()> },
}

impl<P: Process> Driver<P> {
    pub(super) fn on_control(&mut self, c: Control) {
        match c {
            Control::Start { id, epoch, reply } => {
                let r = if epoch != self.epoch {
                    Err(ControlError::Stale(format!(
                        "snapshot {id} belongs to epoch {epoch}; this node is in epoch {}",
                        self.epoch
                    )))
                } else if self.peers.as_ref().is_some_and(|p| p.needs_restore()) {
                    Err(ControlError::Refused(
                        "this node restarted and lost its state; it records nothing until a restore"
                            .into(),
                    ))
                } else {
                    match self.mode {
                        SnapshotMode::ChandyLamport => {
                            let r = self
                                .engine
                                .start_snapshot(id)
                                .map_err(|e| ControlError::Refused(e.to_string()));
                            self.pump();
                            r
                        }
                        SnapshotMode::Aligned | SnapshotMode::StopTheWorld => {
                            self.start_aligned(id)
                        }
                    }
                };
                let _ = reply.send(r);
            }
            Control::Abort { id, epoch, reply } => {
                let was = epoch == self.epoch && self.abort(id);
                let _ = reply.send(was);
            }
            Control::Pause { reply } => {
                self.pause();
                let _ = reply.send(());
            }
            Control::Resume { reply } => {
                self.resume();
                let _ = reply.send(());
            }
            Control::Rollback {
                epoch,
                part,
                chunks,
                in_flight,
                reply,
            } => {
                let r = self
                    .rollback(epoch, *part, chunks.0, &in_flight)
                    .map_err(ControlError::Refused);
                let _ = reply.send(r);
            }
        }
    }

    /// Gives up snapshot `id` here; whether it was being recorded.
    pub(super) fn abort(&mut self, id: SnapshotId) -> bool {
        self.recording_since.remove(&id);
        let was = self.engine.abort(id);
        if was {
            Metrics::inc(&self.metrics.snapshots_aborted, 1);
            tracing::debug!(snapshot = %id, "snapshot aborted here");
        }
        was
    }

    /// Gives up recordings older than twice the snapshot timeout: their
    /// snapshot has failed, whether or not its abort reached this node.
    pub(super) fn expire_recordings(&mut self) {
        let limit = self.snapshot_timeout * 2;
        // A pause (stop-the-world, or a rollback reading its part) is a
        // lease: if the coordinator that paused this node never resumes or
        // restores it (it died, or lost its term), the node resumes by itself.
        if self
            .paused
            .is_some_and(|since| since.elapsed() > limit + Duration::from_secs(1))
        {
            warn!("resuming by itself: the pause outlived its lease (no resume or restore came)");
            self.resume();
        }
        let late: Vec<SnapshotId> = self
            .recording_since
            .iter()
            .filter(|(_, t)| t.elapsed() > limit)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            warn!(snapshot = %id, "snapshot given up here: no marker came within twice the snapshot timeout");
            self.abort(id);
        }
    }
}
