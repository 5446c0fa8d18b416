//! The correctness oracle. It judges recorded snapshots against the trace of
//! the run alone, without looking at the engine's bookkeeping:
//!
//! - (a) the cut is consistent: no message is received before its receiver
//!   recorded yet sent after its sender recorded;
//! - (b) each channel's recorded state is exactly the messages sent before
//!   the sender recorded and received after the receiver recorded, in order;
//! - (c) Theorem 1: the run reordered into all pre-recording events, then all
//!   post-recording events, replays from the initial state (every event
//!   enabled at its turn), passes through the recorded state at the boundary
//!   and ends in the run's final state.

use std::collections::VecDeque;
use std::fmt;

use crate::ids::{ChannelId, ProcessId, SnapshotId};
use crate::snapshot::GlobalSnapshot;
use crate::topology::Topology;
use crate::trace::{Event, TraceEvent};

/// An application event, as the oracle replays it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEvent<'a, M> {
    /// The process sends `message` on `channel`.
    Send {
        /// The outgoing channel.
        channel: ChannelId,
        /// The message.
        message: &'a M,
    },
    /// The process receives `message` from `channel`.
    Receive {
        /// The incoming channel.
        channel: ChannelId,
        /// The message.
        message: &'a M,
    },
}

/// The application's transition function: the paper's events ⟨p, s, s′, M, c⟩.
pub trait Model {
    /// A process's state.
    type State: Clone + PartialEq + fmt::Debug;
    /// An application message.
    type Message: Clone + PartialEq + fmt::Debug;

    /// The state after `event` at `process` in `state`, or `None` if the
    /// event cannot happen in that state.
    fn apply(
        &self,
        process: ProcessId,
        state: &Self::State,
        event: AppEvent<'_, Self::Message>,
    ) -> Option<Self::State>;
}

/// Which of the oracle's checks a violation broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The trace itself is malformed (not FIFO, a receive without a send, ...).
    Trace,
    /// A process did not record exactly once.
    Record,
    /// (a) the cut is not consistent.
    Cut,
    /// (b) a channel's recorded state is wrong.
    ChannelState,
    /// (c) the reordered run is not a valid computation.
    Replay,
    /// (c) the state at the boundary differs from the recorded state.
    Boundary,
    /// (c) the reordered run does not end where the run ended.
    Final,
}

/// One way a snapshot is wrong, naming the snapshot, the channel and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The check that failed.
    pub check: Check,
    /// The snapshot, if the violation belongs to one.
    pub snapshot: Option<SnapshotId>,
    /// The process involved, by name.
    pub process: Option<String>,
    /// The channel involved, by name.
    pub channel: Option<String>,
    /// The message involved: its per-channel sequence number.
    pub seq: Option<u64>,
    /// What is wrong.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.snapshot {
            Some(s) => write!(f, "snapshot {s}")?,
            None => write!(f, "trace")?,
        }
        if let Some(p) = &self.process {
            write!(f, ", process {p}")?;
        }
        if let Some(c) = &self.channel {
            write!(f, ", channel {c}")?;
        }
        if let Some(s) = &self.seq {
            write!(f, ", message #{s}")?;
        }
        write!(f, " [{:?}]: {}", self.check, self.detail)
    }
}

/// A finished run, as the oracle sees it.
#[derive(Debug)]
pub struct Run<'a, M, S> {
    /// The system.
    pub topology: &'a Topology,
    /// Every event, in execution order.
    pub trace: &'a [TraceEvent<M>],
    /// Each process's state before the run.
    pub initial: &'a [S],
    /// Messages already in each channel before the run, oldest first (empty
    /// for a run from the start; a run after a rollback begins with the
    /// restored snapshot's channel states). They take sequence numbers 0,
    /// 1, ... and the trace's sends on that channel continue from there.
    pub initial_channels: &'a [Vec<M>],
    /// Each process's state after the run.
    pub final_states: &'a [S],
}

struct Msg<'a, M> {
    /// Where it was sent in the trace; `None` if it was in the channel before the run.
    send_at: Option<usize>,
    receive_at: Option<usize>,
    message: &'a M,
}

/// Checks every snapshot against the run; an empty result means all hold.
pub fn check<D: Model>(
    model: &D,
    run: &Run<'_, D::Message, D::State>,
    snapshots: &[GlobalSnapshot<D::Message, D::State>],
) -> Vec<Violation> {
    let mut out = Vec::new();
    let msgs = index_messages(run, &mut out);
    for snap in snapshots {
        check_snapshot(model, run, &msgs, snap, &mut out);
    }
    out
}

/// The order Theorem 1 builds for `snapshot`: indices into the trace of every
/// event that happened before its process recorded, then of every event
/// after, each part in execution order. `None` if some process never recorded.
pub fn permuted_order<M>(
    topology: &Topology,
    trace: &[TraceEvent<M>],
    snapshot: SnapshotId,
) -> Option<Vec<usize>> {
    let rec = record_points(topology, trace, snapshot).ok()?;
    let pre = (0..trace.len()).filter(|&i| i < rec[trace[i].process.index()]);
    let post = (0..trace.len()).filter(|&i| i > rec[trace[i].process.index()]);
    Some(pre.chain(post).collect())
}

fn violation(check: Check, snapshot: Option<SnapshotId>, detail: String) -> Violation {
    Violation {
        check,
        snapshot,
        process: None,
        channel: None,
        seq: None,
        detail,
    }
}

/// Per channel, every application message by sequence number, checking that
/// the trace is FIFO and that every receive matches a send.
fn index_messages<'a, M: PartialEq, S>(
    run: &Run<'a, M, S>,
    out: &mut Vec<Violation>,
) -> Vec<Vec<Msg<'a, M>>> {
    let topo = run.topology;
    let mut msgs: Vec<Vec<Msg<'a, M>>> = (0..topo.channel_count())
        .map(|c| {
            run.initial_channels
                .get(c)
                .map(|ms| {
                    ms.iter()
                        .map(|message| Msg {
                            send_at: None,
                            receive_at: None,
                            message,
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let mut next_receive = vec![0u64; topo.channel_count()];
    for (i, ev) in run.trace.iter().enumerate() {
        let mut bad = |c: ChannelId, seq: u64, detail: String| {
            let mut v = violation(Check::Trace, None, detail);
            v.channel = Some(topo.channel_name(c));
            v.seq = Some(seq);
            v.process = Some(topo.name(ev.process).to_string());
            out.push(v);
        };
        match &ev.event {
            Event::Send {
                channel,
                seq,
                message,
            } => {
                let list = &mut msgs[channel.index()];
                if topo.channel(*channel).from != ev.process || *seq != list.len() as u64 {
                    bad(
                        *channel,
                        *seq,
                        format!("send is out of sequence (expected #{})", list.len()),
                    );
                    continue;
                }
                list.push(Msg {
                    send_at: Some(i),
                    receive_at: None,
                    message,
                });
            }
            Event::Receive {
                channel,
                seq,
                message,
            } => {
                let expected = next_receive[channel.index()];
                let sent = msgs[channel.index()].get_mut(*seq as usize);
                match sent {
                    _ if topo.channel(*channel).to != ev.process => bad(
                        *channel,
                        *seq,
                        "received by a process the channel does not lead to".into(),
                    ),
                    _ if *seq != expected => bad(
                        *channel,
                        *seq,
                        format!("received out of FIFO order (expected #{expected})"),
                    ),
                    None => bad(*channel, *seq, "received but never sent".into()),
                    Some(m) if m.message != message => bad(
                        *channel,
                        *seq,
                        "received message differs from the one sent".into(),
                    ),
                    Some(m) => {
                        m.receive_at = Some(i);
                        next_receive[channel.index()] += 1;
                    }
                }
            }
            _ => {}
        }
    }
    msgs
}

/// The trace index of each process's record event for `snapshot`.
fn record_points<M>(
    topology: &Topology,
    trace: &[TraceEvent<M>],
    snapshot: SnapshotId,
) -> Result<Vec<usize>, Vec<Violation>> {
    let mut at: Vec<Vec<usize>> = vec![Vec::new(); topology.process_count()];
    for (i, ev) in trace.iter().enumerate() {
        if matches!(ev.event, Event::Record { snapshot: s } if s == snapshot) {
            at[ev.process.index()].push(i);
        }
    }
    let mut problems = Vec::new();
    for p in topology.processes() {
        let n = at[p.index()].len();
        if n != 1 {
            let mut v = violation(
                Check::Record,
                Some(snapshot),
                format!("recorded its state {n} times, not once"),
            );
            v.process = Some(topology.name(p).to_string());
            problems.push(v);
        }
    }
    if problems.is_empty() {
        Ok(at.into_iter().map(|v| v[0]).collect())
    } else {
        Err(problems)
    }
}

fn check_snapshot<D: Model>(
    model: &D,
    run: &Run<'_, D::Message, D::State>,
    msgs: &[Vec<Msg<'_, D::Message>>],
    snap: &GlobalSnapshot<D::Message, D::State>,
    out: &mut Vec<Violation>,
) {
    let topo = run.topology;
    let id = Some(snap.id);
    let rec = match record_points(topo, run.trace, snap.id) {
        Ok(r) => r,
        Err(v) => return out.extend(v),
    };
    if snap.states.len() != topo.process_count() || snap.channels.len() != topo.channel_count() {
        return out.push(violation(
            Check::Boundary,
            id,
            "snapshot does not have one state per process and one entry per channel".into(),
        ));
    }
    let on = |check, c: ChannelId, seq: Option<u64>, detail: String| {
        let mut v = violation(check, id, detail);
        v.channel = Some(topo.channel_name(c));
        v.seq = seq;
        v
    };
    for c in topo.channel_ids() {
        let ch = topo.channel(c);
        let (rp, rq) = (rec[ch.from.index()], rec[ch.to.index()]);
        // (a) consistency of the cut.
        for (seq, m) in msgs[c.index()].iter().enumerate() {
            if m.receive_at.is_some_and(|r| r < rq) && m.send_at.is_some_and(|s| s > rp) {
                out.push(on(
                    Check::Cut,
                    c,
                    Some(seq as u64),
                    format!(
                        "received by {} before it recorded, but sent by {} after it recorded",
                        topo.name(ch.to),
                        topo.name(ch.from)
                    ),
                ));
            }
        }
        // (b) the channel's recorded state.
        let expected: Vec<(u64, &D::Message)> = msgs[c.index()]
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                m.send_at.is_none_or(|s| s < rp) && m.receive_at.is_none_or(|r| r > rq)
            })
            .map(|(s, m)| (s as u64, m.message))
            .collect();
        if let Some(v) = compare_channel(&expected, &snap.channels[c.index()]) {
            out.push(on(Check::ChannelState, c, v.0, v.1));
        }
    }
    replay(model, run, &rec, snap, out);
}

/// The first difference between the expected and the recorded channel state.
fn compare_channel<M: PartialEq + fmt::Debug>(
    expected: &[(u64, &M)],
    recorded: &[M],
) -> Option<(Option<u64>, String)> {
    for (i, rec) in recorded.iter().enumerate() {
        match expected.get(i) {
            None => {
                return Some((
                    None,
                    format!("recorded message {rec:?} at position {i} was not in flight"),
                ));
            }
            Some((seq, m)) if *m != rec => {
                return Some((
                    Some(*seq),
                    format!("expected {m:?} at position {i}, recorded {rec:?}"),
                ));
            }
            _ => {}
        }
    }
    expected.get(recorded.len()).map(|(seq, m)| {
        (
            Some(*seq),
            format!("message {m:?} was in flight but is missing from the recording"),
        )
    })
}

/// (c): replays the Theorem 1 permutation and compares the boundary and the end.
fn replay<D: Model>(
    model: &D,
    run: &Run<'_, D::Message, D::State>,
    rec: &[usize],
    snap: &GlobalSnapshot<D::Message, D::State>,
    out: &mut Vec<Violation>,
) {
    let topo = run.topology;
    let id = Some(snap.id);
    let mut states: Vec<D::State> = run.initial.to_vec();
    let mut queues: Vec<VecDeque<(u64, &D::Message)>> = (0..topo.channel_count())
        .map(|c| {
            run.initial_channels
                .get(c)
                .map(|ms| ms.iter().enumerate().map(|(i, m)| (i as u64, m)).collect())
                .unwrap_or_default()
        })
        .collect();
    let pre = (0..run.trace.len()).filter(|&i| i < rec[run.trace[i].process.index()]);
    let post = (0..run.trace.len()).filter(|&i| i > rec[run.trace[i].process.index()]);
    let boundary = pre.clone().count();
    let order: Vec<usize> = pre.chain(post).collect();
    for (k, &i) in order.iter().enumerate() {
        if k == boundary {
            compare_boundary(topo, snap, &states, &queues, out);
        }
        let ev = &run.trace[i];
        let p = ev.process.index();
        let (channel, seq, app) = match &ev.event {
            Event::Send {
                channel,
                seq,
                message,
            } => {
                queues[channel.index()].push_back((*seq, message));
                (
                    *channel,
                    *seq,
                    AppEvent::Send {
                        channel: *channel,
                        message,
                    },
                )
            }
            Event::Receive {
                channel,
                seq,
                message,
            } => {
                if queues[channel.index()].front().map(|h| h.0) != Some(*seq) {
                    let mut v = violation(
                        Check::Replay,
                        id,
                        "in the reordered run this receive is not enabled: the message is not at the head of the channel".into(),
                    );
                    v.channel = Some(topo.channel_name(*channel));
                    v.seq = Some(*seq);
                    return out.push(v);
                }
                queues[channel.index()].pop_front();
                (
                    *channel,
                    *seq,
                    AppEvent::Receive {
                        channel: *channel,
                        message,
                    },
                )
            }
            _ => continue,
        };
        match model.apply(ev.process, &states[p], app) {
            Some(s) => states[p] = s,
            None => {
                let mut v = violation(
                    Check::Replay,
                    id,
                    format!(
                        "in the reordered run, {} cannot take this step from state {:?}",
                        topo.name(ev.process),
                        states[p]
                    ),
                );
                v.channel = Some(topo.channel_name(channel));
                v.seq = Some(seq);
                return out.push(v);
            }
        }
    }
    if boundary == order.len() {
        compare_boundary(topo, snap, &states, &queues, out);
    }
    for p in topo.processes() {
        if run.final_states.get(p.index()) != Some(&states[p.index()]) {
            let mut v = violation(
                Check::Final,
                id,
                format!(
                    "the reordered run ends in {:?}, the run ended in {:?}",
                    states[p.index()],
                    run.final_states.get(p.index())
                ),
            );
            v.process = Some(topo.name(p).to_string());
            out.push(v);
        }
    }
}

fn compare_boundary<M: PartialEq + fmt::Debug, S: PartialEq + fmt::Debug>(
    topo: &Topology,
    snap: &GlobalSnapshot<M, S>,
    states: &[S],
    queues: &[VecDeque<(u64, &M)>],
    out: &mut Vec<Violation>,
) {
    let id = Some(snap.id);
    for p in topo.processes() {
        if states[p.index()] != snap.states[p.index()] {
            let mut v = violation(
                Check::Boundary,
                id,
                format!(
                    "recorded state {:?}, but the reordered run is in {:?} at the boundary",
                    snap.states[p.index()],
                    states[p.index()]
                ),
            );
            v.process = Some(topo.name(p).to_string());
            out.push(v);
        }
    }
    for c in topo.channel_ids() {
        let expected: Vec<(u64, &M)> = queues[c.index()].iter().copied().collect();
        if let Some((seq, detail)) = compare_channel(&expected, &snap.channels[c.index()]) {
            let mut v = violation(Check::Boundary, id, format!("at the boundary: {detail}"));
            v.channel = Some(topo.channel_name(c));
            v.seq = seq;
            out.push(v);
        }
    }
}
