//! The coordinator: hands out snapshot ids, assembles local reports into
//! global snapshots with the core's assembler, and reports as failed any
//! snapshot not complete within the timeout, naming what it lacked.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use cairn_core::{Assembler, GlobalSnapshot, LocalSnapshot, RecordedChannel, SnapshotId, Topology};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::control::ControlError;
use crate::metrics::Metrics;
use cairn_store::{Manifest, PartRef};

mod summary;
pub use summary::{SnapshotStatus, SnapshotSummary};

/// At most this many snapshots are in progress at once; more are refused.
/// It bounds the coordinator's assemblies and every node's recordings.
pub const MAX_IN_PROGRESS: usize = 32;

/// Failed snapshots remembered for retention to collect.
const MAX_DEAD: usize = 4096;

/// One node's part of a snapshot, as it travels to the coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalReport {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// The reporting node.
    pub process: String,
    /// The epoch the node recorded it in: a report of another epoch than
    /// its snapshot's is refused.
    #[serde(default)]
    pub epoch: u64,
    /// Its recorded state.
    pub state: Value,
    /// Each incoming channel by name, with how many messages it recorded.
    /// The messages themselves are only in the part: the coordinator
    /// serves channel states from the store.
    pub channels: Vec<(String, u64)>,
    /// With markers that overtake messages: each outgoing channel by name,
    /// with how many messages its marker jumped (the tail of its state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overtaken: Vec<(String, u64)>,
    /// Where the node stored its part, once durable.
    #[serde(default)]
    pub part: Option<PartRef>,
    /// Set when the node could not record this snapshot, saying why; the
    /// snapshot then fails at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The state is too large to travel in reports: it is only in the
    /// stored part (`state` is then null), and the coordinator serves this
    /// snapshot from the store.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state_in_store: bool,
}

#[derive(Debug)]
struct Running {
    epoch: u64,
    /// Assembles counts, not messages: each recorded message is a `()`.
    assembler: Assembler<(), Value>,
    parts: Vec<Option<PartRef>>,
    initiator: String,
    started: Instant,
    started_unix_ms: u64,
    /// Some state is only in the store.
    in_store: bool,
}

#[derive(Debug)]
struct Finished {
    summary: SnapshotSummary,
    started: Instant,
    /// Kept in memory only when nothing was in flight and every state
    /// travelled in its report.
    snapshot: Option<GlobalSnapshot<Value, Value>>,
    /// Otherwise where its parts are (durable before they were reported),
    /// to serve it from the store, also before its manifest is.
    stored: Option<Manifest>,
}

/// The coordinator's state. Callers hold it behind a mutex.
#[derive(Debug)]
pub struct Coordinator {
    topology: Arc<Topology>,
    cluster: String,
    app: String,
    timeout: Duration,
    keep: usize,
    metrics: Arc<Metrics>,
    /// The epoch, once established (from the store, or by a rollback).
    epoch: Option<u64>,
    /// The term this coordinator leads in; its manifests carry it.
    term: u64,
    /// Uncommitted snapshots that failed here, for retention to collect.
    dead: std::collections::BTreeSet<u64>,
    /// Failed snapshots whose abort every node must hear: (id, epoch).
    aborts: Vec<(SnapshotId, u64)>,
    /// Snapshots a rollback is reading: retention must keep them.
    pinned: std::collections::BTreeSet<u64>,
    /// The last rollback: (snapshot, or `None` for the initial state; epoch).
    last_rollback: Option<(Option<u64>, u64)>,
    rolling_back: bool,
    /// Nodes silent for the failure timeout, and for how long.
    unreachable: Vec<(String, Duration)>,
    running: BTreeMap<SnapshotId, Running>,
    finished: VecDeque<Finished>,
}

impl Coordinator {
    /// A coordinator of `cluster` running `app`, keeping the `keep` most
    /// recent snapshots in memory.
    pub fn new(
        topology: Arc<Topology>,
        cluster: &str,
        app: &str,
        timeout: Duration,
        keep: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Coordinator {
            cluster: cluster.to_string(),
            app: app.to_string(),
            topology,
            timeout,
            keep,
            metrics,
            epoch: None,
            term: 0,
            dead: std::collections::BTreeSet::new(),
            aborts: Vec::new(),
            pinned: std::collections::BTreeSet::new(),
            last_rollback: None,
            rolling_back: false,
            unreachable: Vec::new(),
            running: BTreeMap::new(),
            finished: VecDeque::new(),
        }
    }

    /// Whether a new snapshot may start now, and in which epoch.
    ///
    /// # Errors
    /// The epoch is not established yet, a rollback is under way, or
    /// [`MAX_IN_PROGRESS`] snapshots are.
    pub fn may_start(&self) -> Result<u64, ControlError> {
        let epoch = self.epoch.ok_or(ControlError::NotReady)?;
        if self.rolling_back {
            return Err(ControlError::RollbackUnderway);
        }
        if self.running.len() >= MAX_IN_PROGRESS {
            return Err(ControlError::Busy(format!(
                "{MAX_IN_PROGRESS} snapshots are in progress; wait for one to finish"
            )));
        }
        Ok(epoch)
    }

    /// Registers snapshot `id` (leased from the store), started by
    /// `initiator` now; returns its epoch.
    ///
    /// # Errors
    /// As [`may_start`](Self::may_start).
    pub fn register(&mut self, id: SnapshotId, initiator: &str) -> Result<u64, ControlError> {
        let epoch = self.may_start()?;
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.running.insert(
            id,
            Running {
                epoch,
                assembler: Assembler::new(self.topology.clone(), id),
                parts: vec![None; self.topology.process_count()],
                initiator: initiator.to_string(),
                started: Instant::now(),
                started_unix_ms,
                in_store: false,
            },
        );
        Metrics::inc(&self.metrics.snapshots_started, 1);
        Ok(epoch)
    }

    /// The snapshot still in progress, if any (aligned and stop-the-world
    /// snapshots run one at a time).
    pub fn in_progress(&self) -> Option<SnapshotId> {
        self.running.keys().next().copied()
    }

    /// Whether the snapshot that finished last failed.
    pub fn last_failed(&self) -> bool {
        self.finished
            .back()
            .is_some_and(|f| matches!(f.summary.status, SnapshotStatus::Failed { .. }))
    }

    /// How many snapshots are started and not yet complete or failed.
    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// Whether snapshot `id` is durable (`Some(true)`), failed or forgotten
    /// (`Some(false)`), or neither yet (`None`).
    pub fn settled(&self, id: SnapshotId) -> Option<bool> {
        if self.running.contains_key(&id) {
            return None;
        }
        match self.finished.iter().find(|f| f.summary.id == id) {
            Some(f) if f.summary.durable_ms.is_some() => Some(true),
            Some(f) if matches!(f.summary.status, SnapshotStatus::Complete) => None,
            _ => Some(false),
        }
    }

    /// Adds a node's report. When it completes a snapshot whose parts are all
    /// durable, returns the manifest the caller must commit to the store.
    ///
    /// # Errors
    /// A sentence naming what was wrong with the report.
    pub fn report(&mut self, report: LocalReport) -> Result<Option<Manifest>, ControlError> {
        let id = report.snapshot;
        let Some(run) = self.running.get_mut(&id) else {
            return Err(ControlError::Stale(format!(
                "snapshot {id} is not in progress (unknown, complete or failed)"
            )));
        };
        let topo = &self.topology;
        let process = topo.process(&report.process).ok_or_else(|| {
            ControlError::BadRequest(format!("unknown process {:?}", report.process))
        })?;
        if report.epoch != run.epoch {
            let why = format!(
                "{} recorded it in epoch {}, but it began in epoch {}",
                report.process, report.epoch, run.epoch
            );
            self.fail(id, Some(why.clone()));
            return Err(ControlError::Stale(why));
        }
        if let Some(why) = report.refused {
            self.fail(id, Some(format!("{} refused it: {why}", report.process)));
            return Ok(None);
        }
        // A part is where this snapshot keeps this process's part, nowhere
        // else: a manifest never points outside its snapshot.
        if let Some(p) = &report.part {
            let want = cairn_store::format::part_key(id.0, &report.process);
            if p.process != report.process || p.key != want {
                return Err(ControlError::BadRequest(format!(
                    "the part of {} for snapshot {id} must be {want:?}, not {:?} of {:?}",
                    report.process, p.key, p.process
                )));
            }
            // The counts the snapshot is assembled from are the ones its
            // manifest will give recovery.
            let counted = |list: &[(String, u64)]| -> BTreeMap<String, u64> {
                list.iter().filter(|(_, n)| *n > 0).cloned().collect()
            };
            let stored = |m: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
                m.iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| (k.clone(), *n))
                    .collect()
            };
            let channels = p.channels.as_ref().map(stored).unwrap_or_default();
            if counted(&report.channels) != channels
                || counted(&report.overtaken) != stored(&p.overtaken)
            {
                return Err(ControlError::BadRequest(format!(
                    "the report of {} for snapshot {id} counts other messages than its part",
                    report.process
                )));
            }
        }
        // A zero-sized `()` per message: a count of any size costs nothing.
        let named = |list: Vec<(String, u64)>| {
            list.into_iter()
                .map(|(name, n)| {
                    let channel = topo.channel_by_name(&name).ok_or_else(|| {
                        ControlError::BadRequest(format!("unknown channel {name:?}"))
                    })?;
                    let n = usize::try_from(n)
                        .map_err(|_| ControlError::BadRequest(format!("{n} messages on {name}")))?;
                    Ok(RecordedChannel {
                        channel,
                        messages: vec![(); n],
                    })
                })
                .collect::<Result<Vec<_>, ControlError>>()
        };
        let channels = named(report.channels)?;
        // The assembler checks each tail is on a channel leading from this
        // process and joins it after what the receiver recorded.
        let overtaken = named(report.overtaken)?;
        run.assembler
            .add(LocalSnapshot {
                snapshot: id,
                process,
                state: report.state,
                channels,
                overtaken,
            })
            .map_err(|e| ControlError::BadRequest(e.to_string()))?;
        tracing::debug!(snapshot = %id, process = %report.process, ms = run.started.elapsed().as_secs_f64() * 1e3, "report");
        run.parts[process.index()] = report.part;
        run.in_store |= report.state_in_store;
        if run.assembler.is_complete() {
            let Some(mut run) = self.running.remove(&id) else {
                return Ok(None);
            };
            let snapshot = run
                .assembler
                .finish()
                .map_err(|e| ControlError::BadRequest(e.to_string()))?;
            // Recorded messages are only in the parts: a snapshot with any
            // is served from the store.
            let in_flight = snapshot.channels.iter().any(|c| !c.is_empty());
            run.in_store |= in_flight;
            let snapshot = GlobalSnapshot {
                id: snapshot.id,
                states: snapshot.states,
                channels: snapshot.channels.iter().map(|_| Vec::new()).collect(),
            };
            let duration = run.started.elapsed();
            self.metrics.observe_complete(duration);
            Metrics::inc(&self.metrics.snapshots_completed, 1);
            info!(snapshot = %id, ms = duration.as_secs_f64() * 1e3, "global snapshot complete");
            let manifest = run
                .parts
                .iter()
                .cloned()
                .collect::<Option<Vec<PartRef>>>()
                .map(|parts| {
                    let channels = self
                        .topology
                        .channel_ids()
                        .map(|c| self.topology.channel_name(c))
                        .collect();
                    let mut m =
                        Manifest::new(id.0, run.epoch, &self.cluster, &self.app, parts, channels);
                    m.term = self.term;
                    m
                });
            self.push(Finished {
                started: run.started,
                summary: Self::summary(id, &run, Some(duration), SnapshotStatus::Complete),
                snapshot: (!run.in_store).then_some(snapshot),
                stored: manifest.clone().filter(|_| run.in_store),
            });
            return Ok(manifest);
        }
        Ok(None)
    }

    /// Records that snapshot `id`'s manifest is durable.
    pub fn mark_durable(&mut self, id: SnapshotId) {
        if let Some(f) = self.finished.iter_mut().find(|f| f.summary.id == id) {
            let took = f.started.elapsed();
            f.summary.durable_ms = Some(took.as_secs_f64() * 1e3);
            Metrics::inc(&self.metrics.snapshots_durable, 1);
            self.metrics.observe_durable(id.0, took);
        }
    }

    /// Fails every snapshot older than the timeout, saying what it waited
    /// for and which of those nodes are unreachable.
    pub fn expire(&mut self) {
        let late: Vec<(SnapshotId, String)> = self
            .running
            .iter()
            .filter(|(_, r)| r.started.elapsed() > self.timeout)
            .map(|(id, r)| (*id, self.timeout_reason(r)))
            .collect();
        for (id, why) in late {
            self.fail(id, Some(why));
        }
    }

    fn timeout_reason(&self, r: &Running) -> String {
        let (processes, channels) = r.assembler.missing();
        let mut why = format!("timed out after {:?}", self.timeout);
        let away: Vec<String> = self
            .unreachable
            .iter()
            .filter(|(n, _)| processes.contains(n))
            .map(|(n, d)| format!("{n} (silent for {:.1} s)", d.as_secs_f64()))
            .collect();
        if !away.is_empty() {
            why += &format!("; unreachable: {}", away.join(", "));
        }
        if !processes.is_empty() {
            why += &format!("; no report from {}", processes.join(", "));
        }
        if !channels.is_empty() {
            why += &format!(
                "; channels not recorded (waiting for a marker or its report): {}",
                channels.join(", ")
            );
        }
        why
    }

    /// The nodes silent for the failure timeout, and for how long.
    pub fn set_unreachable(&mut self, nodes: Vec<(String, Duration)>) {
        self.unreachable = nodes;
    }

    /// The nodes silent for the failure timeout, and for how long.
    pub fn unreachable(&self) -> &[(String, Duration)] {
        &self.unreachable
    }

    /// A rollback begins: no snapshot starts or commits until it ends, and
    /// snapshots in progress are abandoned (failed, and aborted everywhere).
    pub fn begin_rollback(&mut self) {
        self.rolling_back = true;
        let ids: Vec<SnapshotId> = self.running.keys().copied().collect();
        for id in ids {
            self.fail(id, Some("a rollback began".into()));
        }
    }

    /// This coordinator leads in `term`.
    pub fn set_term(&mut self, term: u64) {
        self.term = term;
    }

    /// The cluster is now in `epoch` (established from the store, or begun by
    /// a rollback).
    pub fn enter_epoch(&mut self, epoch: u64) {
        self.epoch = Some(epoch);
    }

    /// The current epoch, once established.
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// The current epoch, and whether a rollback into it is still under way
    /// (nodes then report older epochs without having failed).
    pub fn epoch_state(&self) -> (Option<u64>, bool) {
        (self.epoch, self.rolling_back)
    }

    /// Whether `manifest` may be committed now: its snapshot completed in the
    /// current epoch and no rollback is under way. A snapshot begun before a
    /// rollback never commits after it.
    pub fn committable(&self, manifest: &Manifest) -> Result<(), ControlError> {
        if self.rolling_back {
            return Err(ControlError::RollbackUnderway);
        }
        if self.epoch != Some(manifest.epoch) {
            return Err(ControlError::Stale(format!(
                "snapshot {} was taken in epoch {}; the cluster is in epoch {}",
                manifest.snapshot,
                manifest.epoch,
                self.epoch
                    .map_or("(none yet)".to_string(), |e| e.to_string())
            )));
        }
        Ok(())
    }

    /// Snapshots retention must not touch: in progress, or being read.
    pub fn live(&self) -> std::collections::BTreeSet<u64> {
        self.running
            .keys()
            .map(|id| id.0)
            .chain(self.pinned.iter().copied())
            .collect()
    }

    /// Uncommitted snapshots that failed here, for retention to collect.
    pub fn dead(&self) -> std::collections::BTreeSet<u64> {
        self.dead.clone()
    }

    /// Forgets dead snapshots that retention has collected.
    pub fn collected(&mut self, ids: &std::collections::BTreeSet<u64>) {
        self.dead.retain(|id| !ids.contains(id));
    }

    /// Failed snapshots whose abort every node must hear: (id, epoch).
    pub fn take_aborts(&mut self) -> Vec<(SnapshotId, u64)> {
        std::mem::take(&mut self.aborts)
    }

    /// A complete snapshot could not be committed: it fails, and its parts
    /// become dead.
    pub fn commit_failed(&mut self, id: SnapshotId, why: String) {
        if let Some(f) = self.finished.iter_mut().find(|f| f.summary.id == id) {
            let (processes, channels) = (Vec::new(), Vec::new());
            f.summary.status = SnapshotStatus::Failed {
                missing_processes: processes,
                missing_channels: channels,
                reason: Some(why),
            };
            f.snapshot = None;
            f.stored = None;
            Metrics::inc(&self.metrics.snapshots_failed, 1);
        }
        self.dead.insert(id.0);
    }

    /// Retention deleted these snapshots from the store: their summaries say
    /// so, and nothing of them is served any more.
    pub fn removed(&mut self, gone: &[u64]) {
        for f in self
            .finished
            .iter_mut()
            .filter(|f| gone.contains(&f.summary.id.0))
        {
            f.summary.removed = true;
            f.snapshot = None;
            f.stored = None;
        }
    }

    /// Keeps `id` from retention while a rollback reads it.
    pub fn pin(&mut self, id: u64) {
        self.pinned.insert(id);
    }

    /// Lets retention have `id` again, and records the rollback's outcome
    /// (`id` is `None` for a rollback to the initial state).
    pub fn unpin(&mut self, id: Option<u64>, rolled_back: bool) {
        self.rolling_back = false;
        if let Some(id) = id {
            self.pinned.remove(&id);
        }
        if rolled_back {
            self.last_rollback = Some((id, self.epoch.unwrap_or_default()));
        }
    }

    /// The last rollback: (snapshot, or `None` for the initial state; epoch).
    pub fn last_rollback(&self) -> Option<(Option<u64>, u64)> {
        self.last_rollback
    }

    fn fail(&mut self, id: SnapshotId, reason: Option<String>) {
        let Some(run) = self.running.remove(&id) else {
            return;
        };
        let (missing_processes, missing_channels) = run.assembler.missing();
        warn!(snapshot = %id, ?missing_processes, ?missing_channels, ?reason, "snapshot failed");
        Metrics::inc(&self.metrics.snapshots_failed, 1);
        self.dead.insert(id.0);
        while self.dead.len() > MAX_DEAD {
            // Past the bound, the store's age rule collects them instead.
            self.dead.pop_first();
        }
        self.aborts.push((id, run.epoch));
        while self.aborts.len() > MAX_IN_PROGRESS * 4 {
            self.aborts.remove(0);
        }
        let duration = run.started.elapsed();
        let status = SnapshotStatus::Failed {
            missing_processes,
            missing_channels,
            reason,
        };
        self.push(Finished {
            started: run.started,
            summary: Self::summary(id, &run, Some(duration), status),
            snapshot: None,
            stored: None,
        });
    }
}

#[cfg(test)]
mod tests;
