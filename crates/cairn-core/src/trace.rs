//! Execution traces: what each process did, in order, with vector clocks.
//! The oracle reads them; `cairn sim --trace` writes them as JSON Lines.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{ChannelId, ProcessId, SnapshotId};
use crate::named_map::NamedMap;
use crate::topology::Topology;

/// What happened in one trace event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<M> {
    /// An application message was sent; `seq` counts application messages on
    /// `channel` from 0.
    Send {
        /// The channel.
        channel: ChannelId,
        /// Per-channel sequence number.
        seq: u64,
        /// The message.
        message: M,
    },
    /// An application message was received and handed to the application.
    Receive {
        /// The channel.
        channel: ChannelId,
        /// Per-channel sequence number (the sender's).
        seq: u64,
        /// The message.
        message: M,
    },
    /// The process recorded its state for `snapshot`.
    Record {
        /// The snapshot.
        snapshot: SnapshotId,
    },
    /// A marker was sent.
    MarkerSend {
        /// The channel.
        channel: ChannelId,
        /// The snapshot.
        snapshot: SnapshotId,
    },
    /// A marker was received.
    MarkerReceive {
        /// The channel.
        channel: ChannelId,
        /// The snapshot.
        snapshot: SnapshotId,
    },
}

/// One event at one process, with the process's vector clock after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent<M> {
    /// The process it happened at.
    pub process: ProcessId,
    /// What happened.
    pub event: Event<M>,
    /// The vector clock after the event, indexed by process.
    pub vc: Vec<u64>,
}

/// The `kind` field of a [`TraceRecord`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An application send.
    Send,
    /// An application receive.
    Receive,
    /// A state recording.
    Record,
    /// A marker send.
    MarkerSend,
    /// A marker receive.
    MarkerReceive,
}

/// One line of a JSON Lines trace (see `shared/reference/trace-formats.md`):
/// names instead of indices, absent fields left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRecord<M> {
    /// The process's name, e.g. `"N1"`.
    pub process: String,
    /// What happened.
    pub kind: Kind,
    /// The channel, e.g. `"N1->N2"`; absent on `record`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Per-channel index of application messages; on send and receive only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The application message; on send and receive only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<M>,
    /// The snapshot id; on record and marker events only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotId>,
    /// The vector clock after the event; processes at 0 are left out.
    pub vc: NamedMap<u64>,
}

impl<M> TraceEvent<M> {
    /// This event as a JSON Lines record, borrowing the message.
    pub fn to_record<'a>(&'a self, topology: &Topology) -> TraceRecord<&'a M> {
        let (kind, channel, seq, message, snapshot) = match &self.event {
            Event::Send {
                channel,
                seq,
                message,
            } => (Kind::Send, Some(*channel), Some(*seq), Some(message), None),
            Event::Receive {
                channel,
                seq,
                message,
            } => (
                Kind::Receive,
                Some(*channel),
                Some(*seq),
                Some(message),
                None,
            ),
            Event::Record { snapshot } => (Kind::Record, None, None, None, Some(*snapshot)),
            Event::MarkerSend { channel, snapshot } => (
                Kind::MarkerSend,
                Some(*channel),
                None,
                None,
                Some(*snapshot),
            ),
            Event::MarkerReceive { channel, snapshot } => (
                Kind::MarkerReceive,
                Some(*channel),
                None,
                None,
                Some(*snapshot),
            ),
        };
        let vc = topology
            .processes()
            .zip(&self.vc)
            .filter(|(_, n)| **n > 0)
            .map(|(p, n)| (topology.name(p).to_string(), *n))
            .collect();
        TraceRecord {
            process: topology.name(self.process).to_string(),
            kind,
            channel: channel.map(|c| topology.channel_name(c)),
            seq,
            message,
            snapshot,
            vc: NamedMap(vc),
        }
    }

    /// Reads an event back from a JSON Lines record.
    ///
    /// # Errors
    /// [`Error::BadDocument`] naming the field that is missing, unknown or
    /// does not belong to the event's kind.
    pub fn from_record(topology: &Topology, rec: TraceRecord<M>) -> Result<Self> {
        let bad = |s: String| Error::BadDocument(format!("trace event of {}: {s}", rec.process));
        let process = topology
            .process(&rec.process)
            .ok_or_else(|| bad("unknown process".into()))?;
        let channel = match &rec.channel {
            Some(name) => Some(
                topology
                    .channel_by_name(name)
                    .ok_or_else(|| bad(format!("unknown channel {name:?}")))?,
            ),
            None => None,
        };
        let mut vc = vec![0; topology.process_count()];
        for (name, n) in &rec.vc.0 {
            let p = topology
                .process(name)
                .ok_or_else(|| bad(format!("vector clock names unknown process {name:?}")))?;
            vc[p.index()] = *n;
        }
        let need = |what: &str| bad(format!("a {:?} event needs a {what}", rec.kind));
        let channel = || channel.ok_or_else(|| need("channel"));
        let snapshot = rec.snapshot;
        let snapshot = || snapshot.ok_or_else(|| need("snapshot"));
        let event = match rec.kind {
            Kind::Send | Kind::Receive => {
                let channel = channel()?;
                let seq = rec.seq.ok_or_else(|| need("seq"))?;
                let message = rec.message.ok_or_else(|| need("message"))?;
                if rec.kind == Kind::Send {
                    Event::Send {
                        channel,
                        seq,
                        message,
                    }
                } else {
                    Event::Receive {
                        channel,
                        seq,
                        message,
                    }
                }
            }
            Kind::Record => Event::Record {
                snapshot: snapshot()?,
            },
            Kind::MarkerSend => Event::MarkerSend {
                channel: channel()?,
                snapshot: snapshot()?,
            },
            Kind::MarkerReceive => Event::MarkerReceive {
                channel: channel()?,
                snapshot: snapshot()?,
            },
        };
        Ok(TraceEvent { process, event, vc })
    }
}

/// One process's vector clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VectorClock {
    me: ProcessId,
    clock: Vec<u64>,
}

impl VectorClock {
    /// A clock of process `me` among `processes`, all at zero.
    pub fn new(me: ProcessId, processes: usize) -> Self {
        VectorClock {
            me,
            clock: vec![0; processes],
        }
    }

    /// A local event (a send, a record): the own entry grows by one.
    pub fn tick(&mut self) -> &[u64] {
        self.clock[self.me.index()] += 1;
        &self.clock
    }

    /// A receive of something sent with clock `sent`: merge, then tick.
    pub fn receive(&mut self, sent: &[u64]) -> &[u64] {
        for (mine, theirs) in self.clock.iter_mut().zip(sent) {
            *mine = (*mine).max(*theirs);
        }
        self.tick()
    }

    /// The current clock.
    pub fn now(&self) -> &[u64] {
        &self.clock
    }
}
