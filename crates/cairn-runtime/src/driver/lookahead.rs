//! Receiver-side overtaking (see [`cairn_core::Overtaking`]): the driver
//! reads its inbound queue ahead of what it has handled, and a marker found
//! there is taken at once, ahead of the messages before it on its channel.
//! Those messages become the end of the channel's recorded state and are
//! still handled afterwards, in order.
//!
//! Without it the driver takes frames in arrival order, and a marker waits
//! behind every message queued before it, on its channel and on the others.
//! The driver reads ahead only while the receiving side has told it of a
//! queued marker (and until what it read is handled), so between snapshots
//! frames take the same path as without overtaking.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use cairn_core::trace::Event;
use cairn_core::{ChannelId, Process, SnapshotId};
use tracing::warn;

use super::Driver;
use crate::config::SnapshotMode;
use crate::metrics::Metrics;
use crate::transport::In;

/// How many inbound frames the driver reads ahead of what it has handled,
/// with receiver-side overtaking. Together with the inbound queue this
/// bounds the frames a node holds in memory on the receiving side.
pub(crate) const LOOKAHEAD: usize = 4096;

/// How many inbound frames the driver handles in one step, between looks at
/// its other inputs.
pub(crate) const STEP: usize = 256;

/// Inbound frames read but not yet handled, in arrival order.
#[derive(Debug)]
pub(crate) struct Backlog<M> {
    frames: VecDeque<In<M>>,
    /// How many of `frames` are markers.
    markers: usize,
}

impl<M> Default for Backlog<M> {
    fn default() -> Self {
        Backlog {
            frames: VecDeque::new(),
            markers: 0,
        }
    }
}

impl<M: Clone> Backlog<M> {
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn push(&mut self, frame: In<M>) {
        if matches!(frame, In::Marker { .. }) {
            self.markers += 1;
        }
        self.frames.push_back(frame);
    }

    pub fn pop(&mut self) -> Option<In<M>> {
        let frame = self.frames.pop_front()?;
        if matches!(frame, In::Marker { .. }) {
            self.markers -= 1;
        }
        Some(frame)
    }

    /// Takes the first marker out of the backlog, with the messages of
    /// `epoch` before it on its channel (copies: the messages stay).
    pub fn take_marker(&mut self, epoch: u64) -> Option<(In<M>, Vec<M>)> {
        if self.markers == 0 {
            return None;
        }
        let at = self
            .frames
            .iter()
            .position(|f| matches!(f, In::Marker { .. }))?;
        let marker = self.frames.remove(at)?;
        self.markers -= 1;
        let In::Marker { channel, .. } = &marker else {
            unreachable!("the frame found is a marker")
        };
        let ahead = self
            .frames
            .iter()
            .take(at)
            .filter_map(|f| match f {
                In::Data {
                    channel: c,
                    epoch: e,
                    message,
                    ..
                } if c == channel && *e == epoch => Some(message.clone()),
                _ => None,
            })
            .collect();
        Some((marker, ahead))
    }
}

impl<P: Process> Driver<P> {
    /// Whether the driver reads ahead now: with receiver-side overtaking
    /// while a marker is queued, and until what it read ahead is handled.
    pub(crate) fn reads_ahead(&self) -> bool {
        !self.backlog.is_empty()
            || (self.overtaking.receiver
                && self.mode == SnapshotMode::ChandyLamport
                && self.markers_queued.load(Ordering::Relaxed) > 0)
    }

    /// Notes a frame taken out of the inbound queue.
    pub(crate) fn taken_out(&self, frame: &In<P::Message>) {
        if matches!(frame, In::Marker { .. }) {
            self.markers_queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Reads the inbound queue into the backlog, up to [`LOOKAHEAD`] frames
    /// while markers are queued, takes every marker found there ahead of its
    /// channel's messages, then, when `taking`, handles up to [`STEP`]
    /// frames in order.
    pub(crate) fn look_ahead(&mut self, taking: bool) {
        while self.backlog.len() < LOOKAHEAD
            && (self.backlog.len() < STEP || self.markers_queued.load(Ordering::Relaxed) > 0)
        {
            match self.inbound.try_recv() {
                Some(frame) => {
                    self.taken_out(&frame);
                    self.backlog.push(frame);
                }
                None => break,
            }
        }
        while let Some((marker, ahead)) = self.backlog.take_marker(self.epoch) {
            if let In::Marker {
                channel,
                epoch,
                snapshot,
                vc,
            } = marker
                && epoch == self.epoch
            {
                Metrics::inc(&self.metrics.messages_overtaken, ahead.len() as u64);
                self.on_marker(channel, SnapshotId(snapshot), vc, &ahead);
            }
        }
        if taking {
            for _ in 0..STEP {
                match self.backlog.pop() {
                    Some(frame) => self.on_inbound(frame),
                    None => break,
                }
            }
        }
    }

    /// A marker of `snapshot` on `channel`, taken ahead of `ahead` (empty
    /// when it is taken in its FIFO place).
    pub(crate) fn on_marker(
        &mut self,
        channel: ChannelId,
        snapshot: SnapshotId,
        vc: Option<Vec<u64>>,
        ahead: &[P::Message],
    ) {
        if self.trace.is_some() {
            let vc = self.clock.receive(vc.as_deref().unwrap_or(&[])).to_vec();
            self.write_trace(Event::MarkerReceive { channel, snapshot }, vc);
        }
        if self.mode != SnapshotMode::ChandyLamport {
            self.on_aligned_marker(channel, snapshot);
            return;
        }
        if let Err(e) = self.engine.handle_marker_ahead(channel, snapshot, ahead) {
            if let cairn_core::Error::LateMarker { .. } = e {
                tracing::debug!("{e}");
            } else {
                warn!("ignored a marker: {e}");
            }
        }
        self.pump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(channel: u32, epoch: u64, message: u32) -> In<u32> {
        In::Data {
            channel: ChannelId(channel),
            epoch,
            message,
            vc: None,
            bytes: 4,
        }
    }

    fn marker(channel: u32, snapshot: u64) -> In<u32> {
        In::Marker {
            channel: ChannelId(channel),
            epoch: 0,
            snapshot,
            vc: None,
        }
    }

    fn order(b: &mut Backlog<u32>) -> Vec<String> {
        std::iter::from_fn(|| b.pop())
            .map(|f| match f {
                In::Data {
                    channel, message, ..
                } => format!("{}:{message}", channel.0),
                In::Marker {
                    channel, snapshot, ..
                } => format!("{}:m{snapshot}", channel.0),
            })
            .collect()
    }

    #[test]
    fn a_marker_takes_its_own_channels_messages_of_its_epoch_and_leaves_them_queued() {
        let mut b = Backlog::default();
        for f in [
            data(0, 0, 1),
            data(1, 0, 2),
            data(0, 1, 9), // another epoch: never part of this epoch's state
            data(0, 0, 3),
            marker(0, 7),
            data(0, 0, 4), // after the marker: not ahead of it
        ] {
            b.push(f);
        }
        let (m, ahead) = b.take_marker(0).expect("a marker is queued");
        assert!(matches!(m, In::Marker { snapshot: 7, .. }));
        assert_eq!(ahead, vec![1, 3]);
        assert!(b.take_marker(0).is_none());
        assert_eq!(order(&mut b), ["0:1", "1:2", "0:9", "0:3", "0:4"]);
    }

    #[test]
    fn markers_are_taken_in_arrival_order_and_each_sees_what_is_ahead_of_it() {
        let mut b = Backlog::default();
        for f in [
            data(0, 0, 1),
            marker(0, 1),
            data(0, 0, 2),
            marker(1, 1),
            marker(0, 2),
        ] {
            b.push(f);
        }
        let (first, ahead) = b.take_marker(0).unwrap();
        assert!(matches!(
            first,
            In::Marker {
                snapshot: 1,
                channel: ChannelId(0),
                ..
            }
        ));
        assert_eq!(ahead, vec![1]);
        let (second, ahead) = b.take_marker(0).unwrap();
        assert!(matches!(
            second,
            In::Marker {
                snapshot: 1,
                channel: ChannelId(1),
                ..
            }
        ));
        assert!(ahead.is_empty());
        let (third, ahead) = b.take_marker(0).unwrap();
        assert!(matches!(third, In::Marker { snapshot: 2, .. }));
        assert_eq!(ahead, vec![1, 2]);
        assert_eq!(order(&mut b), ["0:1", "0:2"]);
    }
}
