//! What the driver hands the reporter, and the per-channel counts it keeps.

use cairn_core::{Chunk, Topology};
use cairn_store::{StoredChannel, encode_message};

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
    pub encode: Box<dyn FnOnce() -> Result<Encoded, String> + Send>,
}

impl std::fmt::Debug for PendingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingReport")
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

/// An encoded local snapshot: the report for the coordinator, and what
/// goes only to the store.
#[derive(Debug)]
pub(crate) struct Encoded {
    /// The report, which counts the recorded messages but does not carry
    /// them: the coordinator serves channel states from the store.
    pub report: LocalReport,
    /// Each incoming channel's recorded messages, in the wire's encoding.
    pub channels: Vec<StoredChannel>,
    /// With markers that overtake: each outgoing channel's overtaken tail.
    pub overtaken: Vec<StoredChannel>,
    /// The chunks `Process::split_state` took out of the state.
    pub chunks: Vec<Chunk>,
}

impl Encoded {
    /// A report with nothing for the store (a refusal).
    pub fn report_only(report: LocalReport) -> Self {
        Encoded {
            report,
            channels: Vec::new(),
            overtaken: Vec::new(),
            chunks: Vec::new(),
        }
    }
}

/// Encodes a local snapshot: its state as a JSON value (without the chunks
/// `split` takes out of it, see `Process::split_state`), and each recorded
/// message in the application's own encoding, as the wire carries it.
pub(super) fn encode_report<M: serde::Serialize, S: serde::Serialize>(
    topology: &Topology,
    metrics: &Metrics,
    epoch: u64,
    mut local: cairn_core::LocalSnapshot<M, S>,
    split: fn(&mut S) -> Vec<Chunk>,
) -> Result<Encoded, String> {
    let chunks = split(&mut local.state);
    let mut bytes = 0u64;
    let mut encode = |list: Vec<cairn_core::RecordedChannel<M>>| {
        let mut stored = Vec::with_capacity(list.len());
        for rc in list {
            let name = topology.channel_name(rc.channel);
            let mut messages = Vec::with_capacity(rc.messages.len());
            for m in &rc.messages {
                let b =
                    encode_message(m).map_err(|e| format!("a message recorded on {name}: {e}"))?;
                bytes += b.len() as u64;
                messages.push(b);
            }
            stored.push(StoredChannel::new(name, messages));
        }
        Ok::<_, String>(stored)
    };
    let channels = encode(local.channels)?;
    let overtaken = encode(local.overtaken)?;
    Metrics::inc(&metrics.recorded_channel_bytes, bytes);
    let count = |list: &[StoredChannel]| -> Vec<(String, u64)> {
        list.iter()
            .map(|c| (c.name.clone(), c.len() as u64))
            .collect()
    };
    let report = LocalReport {
        snapshot: local.snapshot,
        process: topology.name(local.process).to_string(),
        epoch,
        state: serde_json::to_value(&local.state).map_err(|e| format!("the state: {e}"))?,
        channels: count(&channels),
        overtaken: count(&overtaken),
        part: None,
        refused: None,
        state_in_store: false,
    };
    Ok(Encoded {
        report,
        channels,
        overtaken,
        chunks,
    })
}
