//! The link protocol of one channel, as pure state machines with no
//! sockets and no clock: sequence numbers, acknowledgements, resend,
//! duplicate removal, epochs and incarnations. The runtime drives one
//! [`SendHalf`] per outgoing channel and one [`RecvHalf`] per incoming
//! channel over whatever connection it has, and asks [`Incarnations`] about
//! every peer it meets.
//!
//! # The protocol
//! - A connection carries one channel. The sender opens it with a hello
//!   (its node, epoch and incarnation, and how it last saw the receiver);
//!   the receiver answers with the sequence number it expects next
//!   ([`RecvHalf::on_hello`]), and the sender resends every frame from there
//!   on ([`SendHalf::on_welcome`]). Frames are numbered from 1 per epoch and
//!   per life of the sender.
//! - The receiver delivers a frame only if it is the next one; an older one
//!   is a duplicate and is dropped; a newer one means frames went missing,
//!   and the connection is closed so the sender resends
//!   ([`RecvHalf::on_frame`]).
//! - The receiver acknowledges what it delivered ([`RecvHalf::poll_ack`]),
//!   and the sender forgets what is acknowledged ([`SendHalf::on_ack`]).
//! - A new epoch (a rollback) starts every channel afresh: the sender drops
//!   what the old epoch left unacknowledged ([`SendHalf::set_epoch`]).
//! - A peer whose incarnation changed within an epoch restarted and lost its
//!   state: [`Incarnations`] says so, and the link is refused until a
//!   rollback, instead of taking its fresh sequence numbers for old ones.
//!
//! ```
//! use cairn_core::link::{Delivery, RecvHalf, SendHalf};
//!
//! let (mut tx, mut rx) = (SendHalf::new(0), RecvHalf::new());
//! let next = rx.on_hello(0, 7);
//! assert_eq!(tx.on_welcome(next).count(), 0, "nothing to resend");
//! let a = tx.push("a");
//! let b = tx.push("b");
//! assert_eq!(rx.on_frame(a), Ok(Delivery::Deliver));
//! // The connection drops before "b" arrives; the sender reconnects.
//! let next = rx.on_hello(0, 7);
//! let resend: Vec<_> = tx.on_welcome(next).map(|(seq, m)| (seq, *m)).collect();
//! assert_eq!(resend, vec![(b, "b")]);
//! assert_eq!(rx.on_frame(a), Ok(Delivery::Duplicate));
//! assert_eq!(rx.on_frame(b), Ok(Delivery::Deliver));
//! ```

use std::collections::VecDeque;

/// The receiver acknowledges at least every this many frames (and the
/// runtime also on a short timer).
pub const ACK_EVERY: u64 = 128;

/// The sending end of one channel.
#[derive(Clone, Debug)]
pub struct SendHalf<T> {
    epoch: u64,
    next_seq: u64,
    unacked: VecDeque<(u64, T)>,
}

impl<T> SendHalf<T> {
    /// A channel's sending end in `epoch`, numbering frames from 1.
    pub fn new(epoch: u64) -> Self {
        SendHalf {
            epoch,
            next_seq: 1,
            unacked: VecDeque::new(),
        }
    }

    /// The epoch frames are numbered in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Moves to `epoch`: numbering starts again at 1, and what the old epoch
    /// left unacknowledged is dropped (a rollback discards it). Returns how
    /// many frames were dropped.
    pub fn set_epoch(&mut self, epoch: u64) -> usize {
        if epoch == self.epoch {
            return 0;
        }
        self.epoch = epoch;
        self.next_seq = 1;
        let dropped = self.unacked.len();
        self.unacked.clear();
        dropped
    }

    /// Numbers `item` and keeps it until acknowledged; returns its number.
    pub fn push(&mut self, item: T) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unacked.push_back((seq, item));
        seq
    }

    /// The receiver acknowledged every frame before `next_seq`: forget them.
    /// Returns how many were forgotten.
    pub fn on_ack(&mut self, next_seq: u64) -> usize {
        let mut freed = 0;
        while self.unacked.front().is_some_and(|(s, _)| *s < next_seq) {
            self.unacked.pop_front();
            freed += 1;
        }
        freed
    }

    /// A new connection was welcomed with the receiver expecting `next_seq`:
    /// forgets what that acknowledges, and returns what must be sent again,
    /// in order.
    pub fn on_welcome(&mut self, next_seq: u64) -> impl Iterator<Item = (u64, &T)> {
        self.on_ack(next_seq);
        self.unacked.iter().map(|(s, t)| (*s, t))
    }

    /// The number the next frame pushed will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Frames sent (or to be sent) and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }
}

/// What to do with a frame that arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The next frame: hand it on.
    Deliver,
    /// Already delivered (resent after a reconnect): drop it.
    Duplicate,
}

/// Frames went missing: the one that arrived is ahead of the next expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("frame {arrived} arrived, expected {expected}")]
pub struct Gap {
    /// The frame that arrived.
    pub arrived: u64,
    /// The frame expected.
    pub expected: u64,
}

/// The receiving end of one channel.
#[derive(Clone, Debug)]
pub struct RecvHalf {
    epoch: u64,
    incarnation: u64,
    next_seq: u64,
    acked: u64,
}

impl Default for RecvHalf {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvHalf {
    /// A channel's receiving end that has heard from nobody yet.
    pub fn new() -> Self {
        RecvHalf {
            epoch: 0,
            incarnation: 0,
            next_seq: 1,
            acked: 1,
        }
    }

    /// A sender in `epoch`, of life `incarnation`, connected (its hello was
    /// admitted). Another epoch or another life than before starts the
    /// numbering afresh. Returns the number to welcome it with.
    pub fn on_hello(&mut self, epoch: u64, incarnation: u64) -> u64 {
        if (epoch, incarnation) != (self.epoch, self.incarnation) {
            self.epoch = epoch;
            self.incarnation = incarnation;
            self.next_seq = 1;
        }
        self.acked = self.next_seq;
        self.next_seq
    }

    /// Frame `seq` arrived on the current connection.
    ///
    /// # Errors
    /// [`Gap`] if frames before it are missing: close the connection.
    pub fn on_frame(&mut self, seq: u64) -> Result<Delivery, Gap> {
        if seq < self.next_seq {
            return Ok(Delivery::Duplicate);
        }
        if seq > self.next_seq {
            return Err(Gap {
                arrived: seq,
                expected: self.next_seq,
            });
        }
        self.next_seq += 1;
        Ok(Delivery::Deliver)
    }

    /// The acknowledgement to send, if one is due: at least every
    /// [`ACK_EVERY`] frames, or whenever anything is unacknowledged and
    /// `timer` says it is time.
    pub fn poll_ack(&mut self, timer: bool) -> Option<u64> {
        let due = self.next_seq - self.acked >= ACK_EVERY || (timer && self.next_seq != self.acked);
        due.then(|| {
            self.acked = self.next_seq;
            self.next_seq
        })
    }

    /// The next frame expected.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// What a peer's incarnation means (see [`Incarnations`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// As known, or never seen before.
    Known,
    /// The peer restarted since it was last seen, and lost its state.
    Restarted,
}

/// This node's incarnation, and the last `(incarnation, epoch)` in which a
/// link with each peer (by index) was accepted.
///
/// The rules: a different incarnation in an epoch no newer than the one a
/// peer was last seen in means the peer restarted and lost its state; a
/// different incarnation in a newer epoch is the peer restored by a
/// rollback, and is adopted. Applied by a peer to this node (a hello and a
/// welcome carry how each side last saw the other), the same rule tells a
/// node that it is the one that restarted.
#[derive(Clone, Debug)]
pub struct Incarnations {
    me: u64,
    known: Vec<Option<(u64, u64)>>,
}

impl Incarnations {
    /// A node of incarnation `me` among `peers` nodes (itself included).
    pub fn new(me: u64, peers: usize) -> Self {
        Incarnations {
            me,
            known: vec![None; peers],
        }
    }

    /// This node's incarnation.
    pub fn me(&self) -> u64 {
        self.me
    }

    /// How `peer` was last seen: `(incarnation, epoch)`.
    pub fn known(&self, peer: usize) -> Option<(u64, u64)> {
        self.known.get(peer).copied().flatten()
    }

    /// Judges `peer` presenting `incarnation` in `epoch`, to this node in
    /// epoch `mine`. What this node knew of the peer from an epoch older
    /// than `mine` predates this node's own last rollback, which settled
    /// any restart it would show: a late hello of the old epoch is then
    /// only stale, not news of a restart.
    pub fn judge(&self, peer: usize, incarnation: u64, epoch: u64, mine: u64) -> Seen {
        match self.known(peer) {
            Some((i, e)) if i != incarnation && epoch <= e && e >= mine => Seen::Restarted,
            _ => Seen::Known,
        }
    }

    /// Records that a link with `peer` was accepted in `epoch`.
    pub fn adopt(&mut self, peer: usize, incarnation: u64, epoch: u64) {
        if let Some(slot) = self.known.get_mut(peer) {
            if slot.is_none_or(|(_, e)| epoch >= e) {
                *slot = Some((incarnation, epoch));
            }
        }
    }

    /// Judges how a peer last saw this node against this node's life in
    /// `my_epoch`: [`Seen::Restarted`] if the peer saw another life in an
    /// epoch no older than this node's.
    pub fn judge_me(&self, seen_as: Option<(u64, u64)>, my_epoch: u64) -> Seen {
        match seen_as {
            Some((i, e)) if i != self.me && my_epoch <= e => Seen::Restarted,
            _ => Seen::Known,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_refused_and_acks_come_every_batch_or_on_the_timer() {
        let mut rx = RecvHalf::new();
        assert_eq!(rx.on_hello(0, 1), 1);
        assert_eq!(
            rx.on_frame(3),
            Err(Gap {
                arrived: 3,
                expected: 1
            })
        );
        assert_eq!(rx.poll_ack(true), None, "nothing delivered");
        for s in 1..=ACK_EVERY {
            assert_eq!(rx.on_frame(s), Ok(Delivery::Deliver));
        }
        assert_eq!(rx.poll_ack(false), Some(ACK_EVERY + 1));
        rx.on_frame(ACK_EVERY + 1).unwrap();
        assert_eq!(rx.poll_ack(false), None);
        assert_eq!(rx.poll_ack(true), Some(ACK_EVERY + 2));
        // Another life of the sender starts the numbering afresh.
        assert_eq!(rx.on_hello(0, 2), 1);
        assert_eq!(rx.on_hello(1, 2), 1);
    }

    #[test]
    fn a_new_epoch_drops_what_the_old_left_unacknowledged() {
        let mut tx = SendHalf::new(0);
        tx.push(1);
        tx.push(2);
        assert_eq!(tx.on_ack(2), 1);
        assert_eq!(tx.set_epoch(0), 0);
        assert_eq!(tx.set_epoch(1), 1);
        assert_eq!(tx.push(3), 1, "numbering starts again");
    }

    #[test]
    fn incarnations_tell_a_restart_from_a_restore() {
        let mut b = Incarnations::new(100, 2);
        assert_eq!(b.judge(1, 7, 0, 0), Seen::Known);
        b.adopt(1, 7, 0);
        assert_eq!(b.judge(1, 8, 0, 0), Seen::Restarted);
        assert_eq!(
            b.judge(1, 8, 0, 1),
            Seen::Known,
            "a hello sent before the rollback this node already took: stale, and settled by it"
        );
        assert_eq!(
            b.judge(1, 8, 1, 1),
            Seen::Known,
            "restored into a newer epoch"
        );
        b.adopt(1, 8, 1);
        assert_eq!(
            b.judge(1, 9, 0, 1),
            Seen::Restarted,
            "a fresh process is in epoch 0"
        );
        assert_eq!(b.judge_me(Some((100, 5)), 0), Seen::Known);
        assert_eq!(b.judge_me(Some((55, 5)), 5), Seen::Restarted);
        assert_eq!(
            b.judge_me(Some((55, 4)), 5),
            Seen::Known,
            "the peer is behind"
        );
    }
}
