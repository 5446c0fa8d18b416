//! The queue between a node's driver and one outgoing channel's sender:
//! what the application has sent that the link has not yet taken to write.
//!
//! A queue rather than a channel, because a marker may overtake what is in
//! it: with sender-side overtaking the driver puts a marker ahead of the
//! messages still waiting here and records them as the tail of the
//! channel's state (see [`cairn_core::Overtaking`]). Whatever the sender has
//! taken is being written, and is in the channel; a marker never jumps it.
//! Sequence numbers are given as the sender writes, so numbering, acks and
//! resend are the same whether or not a marker jumped the queue.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use crate::transport::Out;

/// One outgoing channel's unwritten frames, shared by its driver (pushing)
/// and its sender (taking).
#[derive(Debug)]
pub(crate) struct SendQueue<M> {
    items: Mutex<VecDeque<Out<M>>>,
    ready: Notify,
    closed: AtomicBool,
}

impl<M> Default for SendQueue<M> {
    fn default() -> Self {
        SendQueue {
            items: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }
}

impl<M> SendQueue<M> {
    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<Out<M>>> {
        // No code panics while holding the lock; a poisoned queue still
        // holds whole frames.
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends frames in order, with one lock and one wake-up.
    pub fn push_all(&self, outs: impl IntoIterator<Item = Out<M>>) {
        self.items().extend(outs);
        self.ready.notify_one();
    }

    /// The driver is gone: the sender ends once it has taken what is left.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// Takes up to `max` frames, waiting for at least one; `None` once the
    /// queue is closed and empty. Cancel-safe: frames are taken only in the
    /// poll that returns them.
    pub async fn next_batch(&self, max: usize) -> Option<Vec<Out<M>>> {
        loop {
            {
                let mut items = self.items();
                if !items.is_empty() {
                    let n = items.len().min(max);
                    return Some(items.drain(..n).collect());
                }
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            // A push after the check above left a permit: this returns at once.
            self.ready.notified().await;
        }
    }

    /// Puts `marker` ahead of every data frame of its epoch still waiting
    /// here, but behind any marker already waiting (markers keep their
    /// order), and returns copies of the messages it overtook, in order.
    pub fn place_marker(&self, marker: Out<M>) -> Vec<M>
    where
        M: Clone,
    {
        let epoch = marker.epoch();
        let mut items = self.items();
        let at = items
            .iter()
            .rposition(|o| matches!(o, Out::Marker { .. }))
            .map_or(0, |i| i + 1);
        let overtaken = items
            .range(at..)
            .filter_map(|o| match o {
                Out::Data {
                    epoch: e, message, ..
                } if *e == epoch => Some(message.clone()),
                _ => None,
            })
            .collect();
        items.insert(at, marker);
        drop(items);
        self.ready.notify_one();
        overtaken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(epoch: u64, message: u32) -> Out<u32> {
        Out::Data {
            epoch,
            message,
            vc: None,
        }
    }

    fn marker(snapshot: u64) -> Out<u32> {
        Out::Marker {
            epoch: 1,
            snapshot,
            vc: None,
        }
    }

    fn order(q: &SendQueue<u32>) -> Vec<String> {
        q.items()
            .iter()
            .map(|o| match o {
                Out::Data { message, .. } => format!("m{message}"),
                Out::Marker { snapshot, .. } => format!("S{snapshot}"),
            })
            .collect()
    }

    /// Invariant: a marker jumps exactly the unwritten data after the last
    /// waiting marker, of its own epoch, reports them in order, and never
    /// jumps what the link has taken.
    #[test]
    fn a_marker_overtakes_the_data_behind_the_last_marker() {
        let q = SendQueue::default();
        assert!(q.place_marker(marker(1)).is_empty());
        for m in [1, 2] {
            q.push_all([data(1, m)]);
        }
        assert_eq!(q.place_marker(marker(2)), [1, 2]);
        q.push_all([data(0, 9)]); // from before a rollback: never sent, never recorded
        q.push_all([data(1, 3)]);
        // m1 and m2 were sent before this process recorded snapshot 3 too,
        // and still wait: they are in flight for it as well.
        assert_eq!(q.place_marker(marker(3)), [1, 2, 3]);
        assert_eq!(order(&q), ["S1", "S2", "S3", "m1", "m2", "m9", "m3"]);
        // Once the link has taken frames, a marker no longer jumps them.
        let taken = q.items().drain(..5).count();
        assert_eq!(taken, 5);
        assert_eq!(q.place_marker(marker(4)), [3]);
    }

    #[tokio::test]
    async fn batches_keep_order_and_end_when_closed() {
        let q = std::sync::Arc::new(SendQueue::default());
        for m in 0..5 {
            q.push_all([data(1, m)]);
        }
        let first = q.next_batch(3).await.unwrap();
        assert_eq!(first.len(), 3);
        let waiter = tokio::spawn({
            let q = q.clone();
            async move {
                let mut got = Vec::new();
                while let Some(b) = q.next_batch(3).await {
                    got.extend(b.into_iter().map(|o| match o {
                        Out::Data { message, .. } => message,
                        Out::Marker { .. } => u32::MAX,
                    }));
                }
                got
            }
        });
        tokio::task::yield_now().await;
        q.push_all([data(1, 5)]);
        q.close();
        assert_eq!(waiter.await.unwrap(), [3, 4, 5]);
    }
}
