//! The two baseline snapshot modes, carried out by the driver beside
//! Chandy–Lamport so that their cost can be measured on the same runtime:
//!
//! - **Aligned barriers** (as Flink checkpoints a stream job). On its first
//!   marker (or when it initiates) a node forwards a marker on every outgoing
//!   channel and holds its own sends. Each input whose marker has arrived is
//!   blocked: its messages wait, unprocessed. When markers have arrived on
//!   every input the node records its state — every channel is empty in the
//!   snapshot — then processes what it blocked and resumes sending. Markers
//!   go out before alignment, which a graph with cycles needs (a node that
//!   waited for all its markers before forwarding its own would deadlock on
//!   any cycle); holding sends until the state is recorded keeps the cut
//!   consistent.
//! - **Stop the world**: the coordinator first pauses every node's sends,
//!   then runs an aligned snapshot (the channels drain behind the markers),
//!   and resumes every node once the snapshot is durable.
//!
//! An application that sends while handling a message cannot be snapshotted
//! this way without recording channel state: its held sends would be part of
//! the recorded state but of no channel. Such a snapshot is refused (the
//! node logs why and does not report it), never recorded wrong.
//!
//! This file holds the alignment itself, with no I/O and no reference to the
//! driver; the driver carries out its steps (`driver/alignment.rs`).

use std::collections::VecDeque;
use tokio::time::Instant;

use cairn_core::{ChannelId, SnapshotId};

/// Messages blocked on inputs whose marker has come, in arrival order, with
/// their vector clocks when tracing.
pub(crate) type Blocked<M> = VecDeque<(ChannelId, M, Option<Vec<u64>>)>;

/// An aligned snapshot under way at one node.
#[derive(Debug)]
pub(crate) struct Aligning<M> {
    id: SnapshotId,
    /// Per incoming channel (topology order): has its marker arrived?
    marked: Vec<bool>,
    remaining: usize,
    since: Instant,
    blocked: Blocked<M>,
    /// Sends the application made while the node was aligning.
    held: Vec<(ChannelId, M)>,
}

impl<M> Aligning<M> {
    /// Snapshot `id` begins aligning over `inputs` incoming channels.
    pub fn new(id: SnapshotId, inputs: usize) -> Self {
        Aligning {
            id,
            marked: vec![false; inputs],
            remaining: inputs,
            since: Instant::now(),
            blocked: VecDeque::new(),
            held: Vec::new(),
        }
    }

    /// The snapshot.
    pub fn id(&self) -> SnapshotId {
        self.id
    }

    /// Since when it has been aligning.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// The marker of snapshot `id` on input `input` (its index among the
    /// incoming channels). Returns whether it counted: a marker of another
    /// snapshot, or a second one on the same input, does not.
    pub fn mark(&mut self, id: SnapshotId, input: Option<usize>) -> bool {
        match input {
            Some(i) if id == self.id && !self.marked[i] => {
                self.marked[i] = true;
                self.remaining -= 1;
                true
            }
            _ => false,
        }
    }

    /// Whether markers have arrived on every input.
    pub fn is_aligned(&self) -> bool {
        self.remaining == 0
    }

    /// Takes a message from input `input`: blocked if that input's marker
    /// came, else given back to be processed now.
    pub fn admit(
        &mut self,
        input: Option<usize>,
        channel: ChannelId,
        message: M,
        vc: Option<Vec<u64>>,
    ) -> Option<(M, Option<Vec<u64>>)> {
        if input.is_some_and(|i| self.marked[i]) {
            self.blocked.push_back((channel, message, vc));
            None
        } else {
            Some((message, vc))
        }
    }

    /// Holds the application's sends (leaving `sends` empty).
    pub fn hold(&mut self, sends: &mut Vec<(ChannelId, M)>) {
        self.held.append(sends);
    }

    /// How many sends are held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Ends the alignment: what was held (to send first), and what was
    /// blocked (to process after).
    pub fn into_parts(self) -> (Vec<(ChannelId, M)>, Blocked<M>) {
        (self.held, self.blocked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_is_blocked_once_its_marker_came_until_all_are_in() {
        let (a, b) = (ChannelId(0), ChannelId(1));
        let mut al: Aligning<u8> = Aligning::new(SnapshotId(3), 2);
        assert_eq!(al.admit(Some(0), a, 1, None), Some((1, None)));
        assert!(al.mark(SnapshotId(3), Some(0)));
        assert!(
            !al.mark(SnapshotId(3), Some(0)),
            "a second marker on one input"
        );
        assert!(
            !al.mark(SnapshotId(4), Some(1)),
            "another snapshot's marker"
        );
        assert_eq!(al.admit(Some(0), a, 2, None), None, "blocked");
        assert_eq!(al.admit(Some(1), b, 3, None), Some((3, None)));
        al.hold(&mut vec![(b, 9)]);
        assert!(!al.is_aligned());
        assert!(al.mark(SnapshotId(3), Some(1)));
        assert!(al.is_aligned());
        let (held, blocked) = al.into_parts();
        assert_eq!(held, vec![(b, 9)]);
        assert_eq!(blocked, VecDeque::from(vec![(a, 2, None)]));
    }
}
