//! What the driver hands the reporter, and the per-channel counts it keeps.

use cairn_core::{Chunk, Topology};

use crate::coordinator::LocalReport;
use crate::metrics::Metrics;

/// Messages sent and received on each channel (by channel id) in the
/// current epoch, a received count including re-delivered ones.
#[derive(Debug)]
pub(crate) struct ChannelCounts {
    pub sent: Vec<std::sync::atomic::AtomicU64>,
    pub received: Vec<std::sync::atomic::AtomicU64>,
}

impl ChannelCounts {
    pub fn new(channels: usize) -> Self {
        let zeros = || (0..channels).map(|_| 0.into()).collect();
        ChannelCounts {
            sent: zeros(),
            received: zeros(),
        }
    }

    pub(super) fn reset(&self) {
        for c in self.sent.iter().chain(&self.received) {
            c.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(super) fn add(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A local snapshot for the reporter to encode, and when this node began
/// recording it: the report is worth sending until the snapshot timeout
/// after that, never later.
pub(crate) struct PendingReport {
    pub since: tokio::time::Instant,
    pub encode: Box<dyn FnOnce() -> serde_json::Result<(LocalReport, Vec<Chunk>)> + Send>,
}

impl std::fmt::Debug for PendingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingReport")
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

/// Counts the bytes written to it and keeps none.
struct Counted(u64);

impl std::io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A local snapshot in the shape it travels in (JSON values), with the
/// chunks `split` took out of its state (see `Process::split_state`),
/// which go only to the store.
pub(super) fn encode_report<M: serde::Serialize, S: serde::Serialize>(
    topology: &Topology,
    metrics: &Metrics,
    epoch: u64,
    mut local: cairn_core::LocalSnapshot<M, S>,
    split: fn(&mut S) -> Vec<Chunk>,
) -> serde_json::Result<(LocalReport, Vec<Chunk>)> {
    let chunks = split(&mut local.state);
    let mut bytes = 0u64;
    let mut encode = |list: Vec<cairn_core::RecordedChannel<M>>| {
        let mut named = Vec::with_capacity(list.len());
        for rc in list {
            let mut messages = Vec::with_capacity(rc.messages.len());
            for m in &rc.messages {
                let v = serde_json::to_value(m)?;
                let mut counted = Counted(0);
                serde_json::to_writer(&mut counted, &v)?;
                bytes += counted.0;
                messages.push(v);
            }
            named.push((topology.channel_name(rc.channel), messages));
        }
        serde_json::Result::Ok(named)
    };
    let channels = encode(local.channels)?;
    let overtaken = encode(local.overtaken)?;
    Metrics::inc(&metrics.recorded_channel_bytes, bytes);
    let report = LocalReport {
        snapshot: local.snapshot,
        process: topology.name(local.process).to_string(),
        epoch,
        state: serde_json::to_value(&local.state)?,
        channels,
        overtaken,
        part: None,
        refused: None,
        state_in_store: false,
    };
    Ok((report, chunks))
}
