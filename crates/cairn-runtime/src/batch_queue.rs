//! A bounded queue of batches between tasks, read one item at a time.
//!
//! A channel's receiver hands the driver every frame it decoded from one
//! read of its connection as one batch: one queue operation (and at most one
//! wake-up) per batch instead of per message, which is what a hand-off per
//! message cost (the semaphore, the waker and the queue's own bookkeeping,
//! about a tenth of all CPU under load). The driver still takes items one at
//! a time, in order, from the batch it holds.

use std::collections::VecDeque;

use tokio::sync::mpsc;

/// Batches in flight between the receivers and the driver. With batches of
/// up to 256 frames this bounds the receiving side's queue as the per-frame
/// queue of 4096 frames did, on average, and never by more than 16 times.
pub(crate) const BATCHES: usize = 256;

/// The sending ends: one per channel receiver.
pub(crate) type BatchSender<T> = mpsc::Sender<Vec<T>>;

/// A bounded queue of batches and its receiving end, read item by item.
pub(crate) fn batch_queue<T>() -> (BatchSender<T>, BatchReceiver<T>) {
    let (tx, rx) = mpsc::channel(BATCHES);
    (
        tx,
        BatchReceiver {
            rx,
            current: VecDeque::new(),
        },
    )
}

/// The receiving end: the batch being read, then the queue.
#[derive(Debug)]
pub(crate) struct BatchReceiver<T> {
    rx: mpsc::Receiver<Vec<T>>,
    current: VecDeque<T>,
}

impl<T> BatchReceiver<T> {
    /// The next item, waiting for a batch if none is held; `None` once every
    /// sender is gone and everything was read. Cancel-safe: nothing is taken
    /// unless it is returned.
    pub async fn recv(&mut self) -> Option<T> {
        if let Some(item) = self.current.pop_front() {
            return Some(item);
        }
        loop {
            let batch = self.rx.recv().await?;
            self.current = batch.into();
            if let Some(item) = self.current.pop_front() {
                return Some(item);
            }
        }
    }

    /// The next item if one is at hand, without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.current.pop_front() {
                return Some(item);
            }
            self.current = self.rx.try_recv().ok()?.into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_come_out_in_order_across_batches() {
        let (tx, mut rx) = batch_queue();
        tx.send(vec![1, 2]).await.unwrap();
        tx.send(vec![]).await.unwrap();
        tx.send(vec![3]).await.unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), Some(3));
        assert_eq!(rx.try_recv(), None);
        tx.send(vec![4, 5]).await.unwrap();
        drop(tx);
        assert_eq!(rx.recv().await, Some(4));
        assert_eq!(rx.recv().await, Some(5));
        assert_eq!(rx.recv().await, None);
    }
}
