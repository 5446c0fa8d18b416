//! A rollback at one node: a fresh engine in a new epoch, the recorded
//! state restored, the recorded channel states re-delivered, and the
//! messages this node's markers had overtaken sent again first.

use cairn_core::{Engine, Process};
use cairn_store::{Part, StoredChannel};
use tracing::warn;

use super::{Driver, In};

/// A state's chunks on their way to the driver (their bytes are not worth
/// printing).
pub(crate) struct Chunks(pub Vec<cairn_core::Chunk>);

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} chunks", self.0.len())
    }
}

/// Which end of a channel a rollback's part speaks for.
#[derive(Clone, Copy)]
enum Toward {
    /// The channel leads from this node (its markers' overtaken tails).
    From,
    /// The channel leads here (what this node recorded).
    To,
}
use crate::metrics::Metrics;
use crate::tracefile::TraceWriter;
use crate::transport::Out;

/// One recorded channel read back: its name, its id and its messages.
type Decoded<M> = (String, cairn_core::ChannelId, Vec<M>);

impl<P: Process> Driver<P> {
    /// Restores this node's part of a snapshot in a new epoch: a fresh engine,
    /// the recorded state, and every recorded channel message re-delivered in
    /// order, before anything newer is taken from any channel. Returns how
    /// many messages were re-delivered.
    pub(super) fn rollback(
        &mut self,
        epoch: u64,
        part: Part,
        chunks: Vec<cairn_core::Chunk>,
        in_flight: &std::collections::BTreeMap<String, u64>,
    ) -> std::result::Result<usize, String> {
        if epoch <= self.epoch {
            return Err(format!(
                "epoch {epoch} is not newer than this node's epoch {}",
                self.epoch
            ));
        }
        let mut state: P::State = serde_json::from_value(part.state)
            .map_err(|e| format!("the recorded state does not fit the application: {e}"))?;
        P::join_state(&mut state, chunks)
            .map_err(|e| format!("the recorded state's chunks do not fit the application: {e}"))?;
        // What this node's markers overtook is still to be sent: it goes
        // first on its channel in the new epoch, after what the receiver
        // recorded there (which the receiver re-delivers itself).
        let resend = self.decode_channels(&part.overtaken, Toward::From)?;
        let redeliver = self.decode_channels(&part.channels, Toward::To)?;
        // The trace's record of the channel states this epoch began with,
        // as JSON (only when tracing: it costs an encoding per message).
        let tracing = self.trace_dir.is_some();
        let named = |decoded: &[Decoded<P::Message>]| {
            decoded
                .iter()
                .filter(|_| tracing)
                .map(|(name, _, ms)| {
                    let values = ms.iter().filter_map(|m| serde_json::to_value(m).ok());
                    (name.clone(), values.collect())
                })
                .collect::<Vec<(String, Vec<serde_json::Value>)>>()
        };
        let recorded = named(&redeliver);
        let tails = named(&resend);
        let flat = |decoded: Vec<Decoded<P::Message>>| {
            decoded
                .into_iter()
                .flat_map(|(_, c, ms)| ms.into_iter().map(move |m| (c, m)))
                .collect::<Vec<_>>()
        };
        let (resend, redeliver) = (flat(resend), flat(redeliver));
        // Close the old epoch's trace, then switch epochs and restore.
        if let Err(e) = self.end_epoch() {
            warn!("{e}; tracing stops");
            self.trace = None;
        }
        self.epoch = epoch;
        self.epoch_tx.send_replace(epoch);
        self.abandon_alignment();
        let limit = self.engine_limit;
        self.engine = Engine::new(&self.topology, self.me).map_err(|e| e.to_string())?;
        self.engine.set_recording_limit(limit);
        self.engine.set_overtaking(self.overtaking);
        self.recording_since.clear();
        self.counts.reset();
        if let Some(p) = &self.peers {
            p.restored();
        }
        self.seq_in.clear();
        // On each outgoing channel the receiver re-delivers what the snapshot
        // recorded; new messages are numbered after those, as in one run.
        self.seq_out = self
            .topology
            .outgoing(self.me)
            .iter()
            .map(|&c| {
                (
                    c,
                    in_flight
                        .get(&self.topology.channel_name(c))
                        .copied()
                        .unwrap_or(0),
                )
            })
            .collect();
        self.process.restore(state);
        self.epoch_initial = Some(self.process.state());
        self.epoch_channels = recorded;
        self.epoch_tails = tails;
        // Queued before anything the restored application sends, with no
        // trace event: the trace of this epoch starts with them in flight.
        for (channel, message) in resend {
            if let Some(o) = self.outbound.get_mut(channel) {
                o.push(Out::Data {
                    epoch,
                    message,
                    vc: None,
                });
            }
        }
        // Each epoch is traced afresh, also when the last one stopped
        // tracing at its limit.
        if let Some(dir) = &self.trace_dir {
            match TraceWriter::create(dir, &self.name, epoch) {
                Ok(t) => self.trace = Some(t.with_limit(self.trace_limit)),
                Err(e) => {
                    warn!("{e}; tracing stops");
                    self.trace = None;
                }
            }
        }
        // Frames read ahead belong to the epoch just ended.
        self.backlog = super::lookahead::Backlog::default();
        let count = redeliver.len();
        for (channel, message) in redeliver {
            let epoch = self.epoch;
            self.on_inbound(In::Data {
                channel,
                epoch,
                message,
                vc: None,
                bytes: 0,
            });
        }
        Metrics::inc(&self.metrics.rollbacks, 1);
        Ok(count)
    }

    /// Each message of `channels` with its channel, in order, decoded for the
    /// application; every channel must lead from or to this node, as `end`
    /// says (a sender's overtaken tails, or a receiver's recording).
    fn decode_channels(
        &self,
        channels: &[StoredChannel],
        end: Toward,
    ) -> std::result::Result<Vec<Decoded<P::Message>>, String> {
        let (what, here, verb) = match end {
            Toward::From => (
                "messages overtaken on",
                "does not lead from here",
                "overtaken",
            ),
            Toward::To => ("channel", "does not lead here", "recorded"),
        };
        let mut out = Vec::new();
        for c in channels {
            let channel = self
                .topology
                .channel_by_name(&c.name)
                .filter(|&ch| {
                    let ch = self.topology.channel(ch);
                    match end {
                        Toward::From => ch.from == self.me,
                        Toward::To => ch.to == self.me,
                    }
                })
                .ok_or_else(|| format!("the part records {what} {}, which {here}", c.name))?;
            let messages = c
                .decode::<P::Message>()
                .map_err(|e| format!("{e} ({verb}): it does not fit the application"))?;
            out.push((c.name.clone(), channel, messages));
        }
        Ok(out)
    }
}
