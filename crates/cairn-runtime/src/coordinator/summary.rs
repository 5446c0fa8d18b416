//! What the coordinator tells about its snapshots: each one's summary and
//! status, as `GET /snapshots` lists them, and the snapshot itself while it
//! is kept in memory.

use std::time::Duration;

use cairn_core::{SnapshotDoc, SnapshotId};
use cairn_store::Manifest;
use serde::Serialize;
use serde_json::Value;

use super::{Coordinator, Finished, Running};

/// Where a snapshot stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SnapshotStatus {
    /// Still collecting reports.
    InProgress {
        /// Processes that have not reported.
        missing_processes: Vec<String>,
        /// Channels not yet recorded.
        missing_channels: Vec<String>,
    },
    /// Complete.
    Complete,
    /// Timed out.
    Failed {
        /// Processes that never reported.
        missing_processes: Vec<String>,
        /// Channels never recorded.
        missing_channels: Vec<String>,
        /// Why: timed out (naming unreachable nodes), refused by a node,
        /// a rollback, or the commit failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// A snapshot's summary, as `GET /snapshots` lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SnapshotSummary {
    /// The id.
    pub id: SnapshotId,
    /// The node that started it.
    pub initiator: String,
    /// The epoch it was taken in (each rollback starts a new one).
    pub epoch: u64,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// From start to complete (or to failure), in milliseconds; absent while in progress.
    pub duration_ms: Option<f64>,
    /// From start to its manifest being durable in the store, in milliseconds;
    /// absent until then.
    pub durable_ms: Option<f64>,
    /// Retention deleted it from the store (`snapshots.retain`): its states
    /// are gone, and only this summary is left.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// Where it stands.
    #[serde(flatten)]
    pub status: SnapshotStatus,
}

impl Coordinator {
    /// Every snapshot in progress and every recent one, in id order.
    pub fn list(&self) -> Vec<SnapshotSummary> {
        let mut all: Vec<SnapshotSummary> =
            self.finished.iter().map(|f| f.summary.clone()).collect();
        all.extend(
            self.running
                .iter()
                .map(|(id, r)| self.running_summary(*id, r)),
        );
        all.sort_by_key(|s| s.id);
        all
    }

    /// One snapshot's summary, and the snapshot itself in the shared JSON shape when complete.
    pub fn get(
        &self,
        id: SnapshotId,
    ) -> Option<(SnapshotSummary, Option<SnapshotDoc<Value, Value>>)> {
        if let Some(r) = self.running.get(&id) {
            return Some((self.running_summary(id, r), None));
        }
        let f = self.finished.iter().find(|f| f.summary.id == id)?;
        let doc = f
            .snapshot
            .as_ref()
            .map(|s| s.to_doc(&self.topology).cloned());
        Some((f.summary.clone(), doc))
    }

    /// Where complete snapshot `id`'s parts are, when it is served from the
    /// store (it recorded messages, or a state too large to travel).
    pub fn stored(&self, id: SnapshotId) -> Option<Manifest> {
        let f = self.finished.iter().find(|f| f.summary.id == id)?;
        f.stored.clone().filter(|_| !f.summary.removed)
    }

    fn running_summary(&self, id: SnapshotId, r: &Running) -> SnapshotSummary {
        let (missing_processes, missing_channels) = r.assembler.missing();
        let status = SnapshotStatus::InProgress {
            missing_processes,
            missing_channels,
        };
        Self::summary(id, r, None, status)
    }

    /// The summary of snapshot `id`; `duration` is set once it has ended.
    pub(super) fn summary(
        id: SnapshotId,
        r: &Running,
        duration: Option<Duration>,
        status: SnapshotStatus,
    ) -> SnapshotSummary {
        SnapshotSummary {
            id,
            removed: false,
            epoch: r.epoch,
            initiator: r.initiator.clone(),
            started_unix_ms: r.started_unix_ms,
            duration_ms: duration.map(|d| d.as_secs_f64() * 1e3),
            durable_ms: None,
            status,
        }
    }

    pub(super) fn push(&mut self, f: Finished) {
        self.finished.push_back(f);
        while self.finished.len() > self.keep {
            self.finished.pop_front();
        }
    }
}
