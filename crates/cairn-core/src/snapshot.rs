//! Local and global snapshots, assembling one from the other, and the one
//! JSON shape Cairn prints a snapshot in.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{ChannelId, ProcessId, SnapshotId};
use crate::named_map::NamedMap;
use crate::topology::Topology;

/// The recorded state of one incoming channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedChannel<M> {
    /// The channel.
    pub channel: ChannelId,
    /// Messages that arrived after the process recorded and before the
    /// channel's marker, in arrival (= sending) order.
    pub messages: Vec<M>,
}

/// One process's part of a snapshot: its state, every incoming channel, and
/// what its markers overtook on its outgoing channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSnapshot<M, S> {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// The reporting process.
    pub process: ProcessId,
    /// Its recorded state.
    pub state: S,
    /// The recorded state of each of its incoming channels.
    pub channels: Vec<RecordedChannel<M>>,
    /// With sender-side [`Overtaking`](crate::Overtaking): per outgoing
    /// channel whose marker overtook messages, those messages in send order,
    /// the tail of that channel's state. Empty otherwise.
    pub overtaken: Vec<RecordedChannel<M>>,
}

/// A complete global snapshot: one state per process and one message
/// sequence per channel, both indexed like the topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalSnapshot<M, S> {
    /// The snapshot.
    pub id: SnapshotId,
    /// `states[p]` is process `p`'s recorded state.
    pub states: Vec<S>,
    /// `channels[c]` is channel `c`'s recorded state.
    pub channels: Vec<Vec<M>>,
}

/// Collects local snapshots until a global snapshot is complete: every process
/// has reported and every channel is recorded exactly once.
#[derive(Clone, Debug)]
pub struct Assembler<M, S> {
    topology: Arc<Topology>,
    id: SnapshotId,
    states: Vec<Option<S>>,
    channels: Vec<Option<Vec<M>>>,
    /// Per channel, what its sender's marker overtook.
    tails: Vec<Vec<M>>,
}

impl<M, S> Assembler<M, S> {
    /// An empty assembly of snapshot `id`.
    pub fn new(topology: Arc<Topology>, id: SnapshotId) -> Self {
        let (n, c) = (topology.process_count(), topology.channel_count());
        Assembler {
            topology,
            id,
            states: (0..n).map(|_| None).collect(),
            channels: (0..c).map(|_| None).collect(),
            tails: (0..c).map(|_| Vec::new()).collect(),
        }
    }

    /// The snapshot being assembled.
    pub fn id(&self) -> SnapshotId {
        self.id
    }

    /// Adds one process's report. A rejected report changes nothing.
    ///
    /// # Errors
    /// [`Error::BadReport`] for a report of another snapshot, from an unknown
    /// or already reported process, or whose channels are not exactly the
    /// process's incoming channels.
    pub fn add(&mut self, local: LocalSnapshot<M, S>) -> Result<()> {
        let topo = &self.topology;
        let process = if local.process.index() < topo.process_count() {
            topo.name(local.process).to_string()
        } else {
            format!("#{}", local.process.0)
        };
        let bad = |problem: String| Error::BadReport {
            snapshot: self.id,
            process: process.clone(),
            problem,
        };
        if local.snapshot != self.id {
            return Err(bad(format!(
                "it is a report of snapshot {}",
                local.snapshot
            )));
        }
        if local.process.index() >= topo.process_count() {
            return Err(bad("no such process".into()));
        }
        if self.states[local.process.index()].is_some() {
            return Err(bad("it already reported".into()));
        }
        let incoming = topo.incoming(local.process);
        let mut seen = vec![false; incoming.len()];
        for rc in &local.channels {
            let name = || {
                if rc.channel.index() < topo.channel_count() {
                    topo.channel_name(rc.channel)
                } else {
                    format!("#{}", rc.channel.0)
                }
            };
            match incoming.iter().position(|&c| c == rc.channel) {
                None => return Err(bad(format!("channel {} is not incoming to it", name()))),
                Some(i) if seen[i] => {
                    return Err(bad(format!("channel {} is reported twice", name())));
                }
                Some(i) => seen[i] = true,
            }
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            let name = topo.channel_name(incoming[i]);
            return Err(bad(format!("channel {name} is missing from the report")));
        }
        let outgoing = topo.outgoing(local.process);
        let mut tailed = vec![false; outgoing.len()];
        for rc in &local.overtaken {
            match outgoing.iter().position(|&c| c == rc.channel) {
                None => {
                    return Err(bad(format!(
                        "it reports overtaken messages on #{}, not one of its outgoing channels",
                        rc.channel.0
                    )));
                }
                Some(i) if tailed[i] => {
                    let name = topo.channel_name(rc.channel);
                    return Err(bad(format!(
                        "overtaken messages on {name} are reported twice"
                    )));
                }
                Some(i) => tailed[i] = true,
            }
        }
        self.states[local.process.index()] = Some(local.state);
        for rc in local.channels {
            self.channels[rc.channel.index()] = Some(rc.messages);
        }
        for rc in local.overtaken {
            self.tails[rc.channel.index()] = rc.messages;
        }
        Ok(())
    }

    /// True when every process has reported and every channel is recorded.
    pub fn is_complete(&self) -> bool {
        self.states.iter().all(Option::is_some) && self.channels.iter().all(Option::is_some)
    }

    /// The processes and channels still missing, by name.
    pub fn missing(&self) -> (Vec<String>, Vec<String>) {
        let topo = &self.topology;
        let processes = topo
            .processes()
            .filter(|p| self.states[p.index()].is_none())
            .map(|p| topo.name(p).to_string())
            .collect();
        let channels = topo
            .channel_ids()
            .filter(|c| self.channels[c.index()].is_none())
            .map(|c| topo.channel_name(c))
            .collect();
        (processes, channels)
    }

    /// Takes the global snapshot out, if complete, leaving this assembly empty.
    ///
    /// # Errors
    /// [`Error::Incomplete`] naming what is missing; the assembly is unchanged.
    pub fn finish(&mut self) -> Result<GlobalSnapshot<M, S>> {
        if !self.is_complete() {
            let (processes, channels) = self.missing();
            return Err(Error::Incomplete {
                snapshot: self.id,
                processes,
                channels,
            });
        }
        Ok(GlobalSnapshot {
            id: self.id,
            states: self.states.iter_mut().filter_map(Option::take).collect(),
            // What the receiver recorded, then what the sender's marker overtook.
            channels: self
                .channels
                .iter_mut()
                .zip(&mut self.tails)
                .filter_map(|(c, tail)| {
                    let mut c = c.take()?;
                    c.append(tail);
                    Some(c)
                })
                .collect(),
        })
    }
}

/// The JSON shape Cairn prints every snapshot in:
/// `{"id": 0, "processes": {"N1": <state>, ...}, "channels": [{"from": "N1", "to": "N2", "messages": [<message>, ...]}, ...]}`.
///
/// Processes and channels are listed in topology order, every channel
/// included, empty ones too, with messages in the order they were sent. A
/// second or later channel between the same pair carries `"lane": 2`, `3`, ...
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotDoc<M, S> {
    /// The snapshot id.
    pub id: SnapshotId,
    /// Each process's recorded state, by process name.
    pub processes: NamedMap<S>,
    /// Each channel's recorded messages.
    pub channels: Vec<ChannelDoc<M>>,
}

/// One channel in a [`SnapshotDoc`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDoc<M> {
    /// The sending process's name.
    pub from: String,
    /// The receiving process's name.
    pub to: String,
    /// Which of several channels between this pair, from 2; absent for the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lane: Option<u32>,
    /// The recorded messages, in sending order.
    pub messages: Vec<M>,
}

impl<M: Clone, S: Clone> SnapshotDoc<&M, &S> {
    /// The same document owning copies of its states and messages.
    pub fn cloned(self) -> SnapshotDoc<M, S> {
        SnapshotDoc {
            id: self.id,
            processes: NamedMap(
                self.processes
                    .0
                    .into_iter()
                    .map(|(k, v)| (k, v.clone()))
                    .collect(),
            ),
            channels: self
                .channels
                .into_iter()
                .map(|c| ChannelDoc {
                    from: c.from,
                    to: c.to,
                    lane: c.lane,
                    messages: c.messages.into_iter().cloned().collect(),
                })
                .collect(),
        }
    }
}

impl<M, S> GlobalSnapshot<M, S> {
    /// This snapshot in the shared JSON shape, borrowing its states and messages.
    pub fn to_doc<'a>(&'a self, topology: &Topology) -> SnapshotDoc<&'a M, &'a S> {
        SnapshotDoc {
            id: self.id,
            processes: NamedMap(
                topology
                    .processes()
                    .zip(&self.states)
                    .map(|(p, s)| (topology.name(p).to_string(), s))
                    .collect(),
            ),
            channels: topology
                .channel_ids()
                .zip(&self.channels)
                .map(|(c, messages)| {
                    let ch = topology.channel(c);
                    ChannelDoc {
                        from: topology.name(ch.from).to_string(),
                        to: topology.name(ch.to).to_string(),
                        lane: (ch.lane > 0).then_some(ch.lane + 1),
                        messages: messages.iter().collect(),
                    }
                })
                .collect(),
        }
    }

    /// Reads a snapshot back from the shared JSON shape.
    ///
    /// # Errors
    /// [`Error::BadDocument`] when a process or channel is unknown, missing or listed twice.
    pub fn from_doc(topology: &Topology, doc: SnapshotDoc<M, S>) -> Result<Self> {
        let bad = |s: String| Error::BadDocument(format!("snapshot {}: {s}", doc.id));
        let mut states: Vec<Option<S>> = (0..topology.process_count()).map(|_| None).collect();
        for (name, state) in doc.processes.0 {
            let p = topology
                .process(&name)
                .ok_or_else(|| bad(format!("unknown process {name:?}")))?;
            if states[p.index()].replace(state).is_some() {
                return Err(bad(format!("process {name:?} is listed twice")));
            }
        }
        let mut channels: Vec<Option<Vec<M>>> =
            (0..topology.channel_count()).map(|_| None).collect();
        for ch in doc.channels {
            let lane = ch.lane.unwrap_or(1).saturating_sub(1);
            let name = format!("{}->{} (lane {})", ch.from, ch.to, lane + 1);
            let c = topology
                .process(&ch.from)
                .zip(topology.process(&ch.to))
                .and_then(|(f, t)| topology.find_channel(f, t, lane))
                .ok_or_else(|| bad(format!("unknown channel {name}")))?;
            if channels[c.index()].replace(ch.messages).is_some() {
                return Err(bad(format!("channel {name} is listed twice")));
            }
        }
        if let Some(p) = topology.processes().find(|p| states[p.index()].is_none()) {
            return Err(bad(format!("process {:?} is missing", topology.name(p))));
        }
        if let Some(c) = topology
            .channel_ids()
            .find(|c| channels[c.index()].is_none())
        {
            return Err(bad(format!(
                "channel {} is missing",
                topology.channel_name(c)
            )));
        }
        Ok(GlobalSnapshot {
            id: doc.id,
            states: states.into_iter().flatten().collect(),
            channels: channels.into_iter().flatten().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Arc<Topology> {
        Arc::new(Topology::new(["p", "q"], &[("p", "q"), ("q", "p"), ("p", "q")]).unwrap())
    }

    fn local(p: u32, channels: &[(u32, &[u8])]) -> LocalSnapshot<u8, u8> {
        LocalSnapshot {
            snapshot: SnapshotId(4),
            process: ProcessId(p),
            state: p as u8 * 10,
            channels: channels
                .iter()
                .map(|(c, m)| RecordedChannel {
                    channel: ChannelId(*c),
                    messages: m.to_vec(),
                })
                .collect(),
            overtaken: Vec::new(),
        }
    }

    #[test]
    fn complete_exactly_when_every_process_and_channel_is_in() {
        let mut a = Assembler::new(topo(), SnapshotId(4));
        a.add(local(1, &[(0, &[1, 2]), (2, &[])])).unwrap();
        assert!(!a.is_complete());
        assert_eq!(
            a.missing(),
            (vec!["p".to_string()], vec!["q->p".to_string()])
        );
        let err = a.finish().unwrap_err();
        assert!(matches!(err, Error::Incomplete { .. }), "{err}");
        a.add(local(0, &[(1, &[7])])).unwrap();
        let g = a.finish().unwrap();
        assert!(!a.is_complete(), "finishing empties the assembly");
        assert_eq!(g.states, vec![0, 10]);
        assert_eq!(g.channels, vec![vec![1, 2], vec![7], vec![]]);
    }

    #[test]
    fn bad_and_duplicate_reports_are_errors_that_change_nothing() {
        let mut a = Assembler::new(topo(), SnapshotId(4));
        a.add(local(0, &[(1, &[])])).unwrap();
        let dup = a.add(local(0, &[(1, &[])])).unwrap_err();
        assert!(dup.to_string().contains("already reported"), "{dup}");
        let wrong = a.add(local(1, &[(0, &[]), (1, &[])])).unwrap_err();
        assert!(
            wrong.to_string().contains("q->p is not incoming"),
            "{wrong}"
        );
        let twice = a
            .add(local(1, &[(0, &[]), (0, &[]), (2, &[])]))
            .unwrap_err();
        assert!(twice.to_string().contains("reported twice"), "{twice}");
        let missing = a.add(local(1, &[(0, &[])])).unwrap_err();
        assert!(
            missing.to_string().contains("p->q#2 is missing"),
            "{missing}"
        );
        let mut other = local(1, &[(0, &[]), (2, &[])]);
        other.snapshot = SnapshotId(5);
        assert!(a.add(other).unwrap_err().to_string().contains("snapshot 5"));
        assert!(
            a.add(local(9, &[]))
                .unwrap_err()
                .to_string()
                .contains("no such process")
        );
        // None of the rejected reports left a trace.
        assert_eq!(a.missing().0, vec!["q".to_string()]);
        a.add(local(1, &[(0, &[]), (2, &[])])).unwrap();
        assert!(a.is_complete());
    }

    #[test]
    fn json_shape_lists_every_channel_in_order_and_reads_back() {
        let topo = topo();
        let g = GlobalSnapshot {
            id: SnapshotId(4),
            states: vec![1u8, 2],
            channels: vec![vec![5u8], vec![], vec![]],
        };
        let json = serde_json_like(&g.to_doc(&topo));
        assert_eq!(
            json,
            r#"{"id":4,"processes":{"p":1,"q":2},"channels":[{"from":"p","to":"q","messages":[5]},{"from":"q","to":"p","messages":[]},{"from":"p","to":"q","lane":2,"messages":[]}]}"#
        );
        let doc: SnapshotDoc<u8, u8> = serde_json::from_str(&json).unwrap();
        assert_eq!(GlobalSnapshot::from_doc(&topo, doc).unwrap(), g);
        let missing: SnapshotDoc<u8, u8> =
            serde_json::from_str(r#"{"id":4,"processes":{"p":1},"channels":[]}"#).unwrap();
        let err = GlobalSnapshot::from_doc(&topo, missing).unwrap_err();
        assert!(
            err.to_string().contains("process \"q\" is missing"),
            "{err}"
        );
    }

    fn serde_json_like<T: Serialize>(t: &T) -> String {
        serde_json::to_string(t).unwrap()
    }
}
