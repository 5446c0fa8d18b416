//! Channels over TCP. Each directed channel has one connection, opened by its
//! sender. The sender numbers frames, keeps them until acknowledged and
//! resends them after a reconnect; the receiver drops duplicates and refuses
//! gaps, so every channel stays FIFO and exactly-once across dropped
//! connections. This file is the sending side; [`crate::inbound`] the
//! receiving one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cairn_core::ChannelId;
use futures_util::{Sink, SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::codec::{Encoder, FramedRead, FramedWrite};
use tracing::{debug, error, info, warn};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::peers::PeerBook;
use crate::send_queue::SendQueue;
use crate::tls::{BoxWrite, Security, split_tcp, split_tls};
use crate::wire::{self, Frame, FrameWriter, WriteError};
use backon::{BackoffBuilder, ExponentialBuilder};
use cairn_core::link::SendHalf;

/// How long a peer has to say hello, or to answer one.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames a sender keeps queued or unacknowledged before the application waits.
pub(crate) const HIGH_WATER: usize = 2048;

/// What the driver hands a channel's sender.
#[derive(Debug)]
pub(crate) enum Out<M> {
    Data {
        epoch: u64,
        message: M,
        vc: Option<Vec<u64>>,
    },
    Marker {
        epoch: u64,
        snapshot: u64,
        vc: Option<Vec<u64>>,
    },
}

impl<M> Out<M> {
    pub(crate) fn epoch(&self) -> u64 {
        match self {
            Out::Data { epoch, .. } | Out::Marker { epoch, .. } => *epoch,
        }
    }
}

/// What a channel's receiver hands the driver.
#[derive(Debug)]
pub(crate) enum In<M> {
    Data {
        channel: ChannelId,
        epoch: u64,
        message: M,
        vc: Option<Vec<u64>>,
        /// The frame's size on the wire (0 for a re-delivered message).
        bytes: u64,
    },
    Marker {
        channel: ChannelId,
        epoch: u64,
        snapshot: u64,
        vc: Option<Vec<u64>>,
    },
}

/// The driver's end of one outgoing channel. What the driver sends during
/// one step of its loop is held here and handed to the channel's queue
/// together when the step ends ([`Outbound::flush`]): one lock and one
/// wake-up of the channel's sender per step instead of per message.
#[derive(Debug)]
pub(crate) struct Outbound<M> {
    pub queue: Arc<SendQueue<M>>,
    /// Frames held, queued or unacknowledged.
    pub pending: Arc<AtomicUsize>,
    /// Frames sent in this step, not yet queued.
    held: Vec<Out<M>>,
}

impl<M> Outbound<M> {
    pub fn new(queue: Arc<SendQueue<M>>, pending: Arc<AtomicUsize>) -> Self {
        Outbound {
            queue,
            pending,
            held: Vec::new(),
        }
    }

    pub fn has_room(&self) -> bool {
        self.pending.load(Ordering::Relaxed) < HIGH_WATER
    }

    /// Sends a frame, behind every frame sent before it.
    pub fn push(&mut self, out: Out<M>) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.held.push(out);
    }

    /// Queues the frames held, in order.
    pub fn flush(&mut self) {
        if !self.held.is_empty() {
            self.queue.push_all(self.held.drain(..));
        }
    }

    /// Puts a marker ahead of the messages not yet taken to be written
    /// (those held included) and returns copies of them (see
    /// [`SendQueue::place_marker`]).
    pub fn place_marker(&mut self, marker: Out<M>) -> Vec<M>
    where
        M: Clone,
    {
        self.flush();
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.queue.place_marker(marker)
    }
}

impl<M> Drop for Outbound<M> {
    /// The driver is gone: its channel's sender sends what it was given,
    /// then ends.
    fn drop(&mut self) {
        self.flush();
        self.queue.close();
    }
}

/// The driver's ends of its outgoing channels, indexed by channel id (the
/// driver looks one up for every message it sends).
#[derive(Debug)]
pub(crate) struct Outbounds<M>(Vec<Option<Outbound<M>>>);

impl<M> Outbounds<M> {
    /// Room for the channels of a topology of `channels` channels.
    pub fn new(channels: usize) -> Self {
        Outbounds((0..channels).map(|_| None).collect())
    }

    pub fn insert(&mut self, channel: ChannelId, o: Outbound<M>) {
        self.0[channel.index()] = Some(o);
    }

    pub fn get(&self, channel: ChannelId) -> Option<&Outbound<M>> {
        self.0.get(channel.index())?.as_ref()
    }

    pub fn get_mut(&mut self, channel: ChannelId) -> Option<&mut Outbound<M>> {
        self.0.get_mut(channel.index())?.as_mut()
    }

    /// Queues what every channel holds: the end of a driver step.
    pub fn flush_all(&mut self) {
        self.0.iter_mut().flatten().for_each(Outbound::flush);
    }

    /// Whether any channel has room for another frame.
    pub fn any_room(&self) -> bool {
        self.0.iter().flatten().any(Outbound::has_room)
    }

    /// Whether any channel holds more than `limit` frames.
    pub fn any_over(&self, limit: usize) -> bool {
        self.0
            .iter()
            .flatten()
            .any(|o| o.pending.load(Ordering::Relaxed) > limit)
    }
}

/// Who this node is, as its channel senders introduce it.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub cluster: String,
    pub node: String,
    pub max_frame_bytes: usize,
    /// This process's incarnation and what it knows of its peers'.
    pub peers: Arc<PeerBook>,
    /// Certificates: every link is TLS when set.
    pub security: Option<Arc<Security>>,
}

/// Reconnect delays: exponential from 250 ms to 2 s with jitter, so a
/// channel never tries more than about four times a second, and channels
/// that failed together do not retry in step. The jitter is drawn from
/// `seeds`, which each channel derives from its process's incarnation and
/// its own name: random in production (incarnations are), and the same on
/// every replay of a seeded simulation.
fn backoff(seeds: &mut u64) -> impl Iterator<Item = Duration> + use<> {
    *seeds = seeds.wrapping_add(0x9E37_79B9_7F4A_7C15);
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .with_jitter_seed(*seeds)
        .without_max_times()
        .build()
}

/// A connection that stayed up this long starts the back-off afresh.
const HEALTHY: Duration = Duration::from_secs(1);

/// A connection with frames unacknowledged this long, while the peer
/// acknowledges nothing, is taken for dead and replaced: a path that drops
/// everything (a cut, a middlebox that lost its state) would otherwise hold
/// the channel until the kernel gives up on the connection, many minutes
/// later. The new connection resends what is unacknowledged, exactly once.
const STALLED: Duration = Duration::from_secs(3);

/// While a channel has never connected and the process is this young, a
/// refused connection (the peer's process is still starting) is retried
/// after `STARTING_RETRY`: a cluster whose nodes start together links up in
/// moments. After that, every failure backs off.
const STARTING: Duration = Duration::from_secs(3);
const STARTING_RETRY: Duration = Duration::from_millis(50);

/// Runs the sender of one channel until shutdown: connect, say hello, resend
/// what the peer has not acknowledged, then stream frames and read acks.
/// A `cut` drops the connection (a test hook); it is re-established.
/// A channel sender's view of the node: its identity, its epoch, and the
/// signals that stop or cut it.
#[derive(Debug)]
pub(crate) struct SenderLinks {
    pub pending: Arc<AtomicUsize>,
    /// Whether the channel's connection is up (welcomed by the receiver).
    pub connected: Arc<std::sync::atomic::AtomicBool>,
    pub room: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub epoch: watch::Receiver<u64>,
    pub cut: watch::Receiver<u64>,
    pub shutdown: watch::Receiver<bool>,
}

/// Runs the sender of one channel until shutdown: connect, say hello, resend
/// what the peer has not acknowledged, then stream frames and read acks.
/// A `cut` drops the connection (a test hook); it is re-established. A new
/// epoch (a rollback) discards everything of the old one and starts the
/// channel afresh.
pub(crate) async fn run_outbound<M: Serialize>(
    id: Identity,
    channel: String,
    peer: usize,
    address: String,
    queue: Arc<SendQueue<M>>,
    links: SenderLinks,
) {
    let SenderLinks {
        pending,
        connected,
        room,
        metrics,
        mut epoch,
        mut cut,
        mut shutdown,
    } = links;
    let mut current = *epoch.borrow_and_update();
    // The link protocol's sending end. Unacknowledged frames are kept as
    // they came (not encoded), so a frame is encoded once, and again only
    // if it must be resent.
    let mut link: SendHalf<Out<M>> = SendHalf::new(current);
    let mut carry: Vec<Out<M>> = Vec::new();
    let mut seeds = channel.bytes().fold(id.peers.me, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut delays = backoff(&mut seeds);
    // The first attempt, and the first after a healthy connection ends, go
    // at once; every attempt after a failure waits for the next delay.
    let mut wait: Option<Duration> = None;
    let born = tokio::time::Instant::now();
    let mut ever_connected = false;
    let freed = |n: usize| {
        if n > 0 {
            pending.fetch_sub(n, Ordering::Relaxed);
            room.notify_waiters();
        }
    };
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Some(d) = wait.take() {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(d) => {}
                // A rollback settles restarts and epochs: try again at once.
                _ = epoch.changed() => delays = backoff(&mut seeds),
            }
        }
        let now = *epoch.borrow_and_update();
        if now != current {
            // Forgets the old epoch: its unacknowledged frames are never wanted.
            current = now;
            freed(link.set_epoch(now));
        }
        let next_wait = delays.next().unwrap_or(Duration::from_secs(2));
        if id.peers.needs_restore() {
            // This node lost its state: it sends nothing until a rollback.
            wait = Some(next_wait);
            continue;
        }
        Metrics::inc(&metrics.connect_attempts, 1);
        let stream = tokio::select! {
            _ = shutdown.changed() => return,
            s = crate::net::connect(&address) => s,
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                debug!(%channel, %address, "connect failed: {e}");
                wait = Some(if !ever_connected && born.elapsed() < STARTING {
                    delays = backoff(&mut seeds);
                    STARTING_RETRY
                } else {
                    next_wait
                });
                continue;
            }
        };
        stream.set_nodelay();
        let (r, w) = match &id.security {
            Some(sec) => {
                let tls = tokio::select! {
                    _ = shutdown.changed() => return,
                    t = tokio::time::timeout(HANDSHAKE_TIMEOUT, sec.connect(stream, Some(id.peers.name(peer)))) => t,
                };
                match tls {
                    Ok(Ok(t)) => split_tls(t),
                    Ok(Err(e)) => {
                        warn!(%channel, %address, "{e}");
                        wait = Some(next_wait);
                        continue;
                    }
                    Err(_) => {
                        debug!(%channel, %address, "no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                        wait = Some(next_wait);
                        continue;
                    }
                }
            }
            None => split_tcp(stream),
        };
        let mut reader = FramedRead::new(r, wire::codec(id.max_frame_bytes));
        let mut writer = FramedWrite::new(w, FrameWriter::new(id.max_frame_bytes));
        let resume = match handshake(
            &id,
            &channel,
            peer,
            current,
            &epoch,
            &mut reader,
            &mut writer,
        )
        .await
        {
            Ok(n) => n,
            Err(e) => {
                debug!(%channel, %address, "handshake failed: {e}");
                wait = Some(next_wait);
                continue;
            }
        };
        let connected_at = tokio::time::Instant::now();
        ever_connected = true;
        connected.store(true, Ordering::Relaxed);
        // Whatever ends this connection, the next attempt waits unless it
        // stayed up long enough to count as healthy.
        wait = Some(next_wait);
        freed(link.on_ack(resume));
        info!(%channel, epoch = current, resend = link.unacked(), "channel connected");
        Metrics::inc(&metrics.connections, 1);
        Metrics::inc(&metrics.frames_resent, link.unacked() as u64);
        // Every one of them was encoded once already, so it encodes again;
        // all go into the buffer (at most a window of them) and out at once.
        let failed = link
            .on_welcome(resume)
            .any(|(seq, out)| put(&mut writer, seq, out).is_err());
        if failed || flush(&mut writer).await.is_err() {
            continue;
        }
        cut.borrow_and_update();
        let mut moved = false;
        // The peer acknowledged something on this connection.
        let mut progressed = false;
        // Since when frames have waited for an acknowledgement with none coming.
        let mut waiting_since = (link.unacked() > 0).then(tokio::time::Instant::now);
        let mut watch_stall = tokio::time::interval(STALLED / 4);
        watch_stall.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Frames held over from an epoch change go first.
            let batch: Vec<Out<M>> = if carry.is_empty() {
                tokio::select! {
                    _ = shutdown.changed() => {
                        let _ = flush(&mut writer).await;
                        return;
                    }
                    _ = cut.changed() => {
                        info!(%channel, "connection cut on request");
                        break;
                    }
                    _ = epoch.changed() => {
                        moved = true;
                        break;
                    }
                    _ = watch_stall.tick() => {
                        if waiting_since.is_some_and(|t| t.elapsed() >= STALLED) {
                            warn!(%channel, unacked = link.unacked(), "no acknowledgement for {STALLED:?}: replacing the connection");
                            break;
                        }
                        continue;
                    }
                    batch = queue.next_batch(256) => {
                        let Some(batch) = batch else { return };
                        batch
                    }
                    frame = reader.next() => {
                        match frame.map(|f| f.map_err(|e| wire::read_error("reading acks", e)).and_then(|b| wire::decode::<Frame<()>>(&b))) {
                            Some(Ok(Frame::Ack { next_seq })) => {
                                let n = link.on_ack(next_seq);
                                progressed |= n > 0;
                                freed(n);
                                if n > 0 || link.unacked() == 0 {
                                    waiting_since = (link.unacked() > 0).then(tokio::time::Instant::now);
                                }
                            }
                            Some(Ok(other)) => {
                                warn!(%channel, "unexpected frame from the receiver: {other:?}");
                                break;
                            }
                            Some(Err(e @ Error::Io { .. })) => {
                                debug!(%channel, "{e}");
                                break;
                            }
                            Some(Err(e)) => {
                                warn!(%channel, "{e}");
                                break;
                            }
                            None => {
                                debug!(%channel, "receiver closed the connection");
                                break;
                            }
                        }
                        continue;
                    }
                }
            } else {
                std::mem::take(&mut carry)
            };
            if *epoch.borrow() != current {
                // The node rolled back: keep the new epoch's frames for the new connection.
                carry = batch;
                moved = true;
                break;
            }
            // Each frame is encoded straight into the connection's write
            // buffer, and the batch goes out in one flush.
            let mut ok = true;
            for out in batch {
                if out.epoch() != current {
                    pending.fetch_sub(1, Ordering::Relaxed);
                    continue; // from before a rollback: never sent
                }
                let written = if ok {
                    match ready(&mut writer).await {
                        Ok(()) => put(&mut writer, link.next_seq(), &out),
                        Err(e) => Err(e),
                    }
                } else {
                    // The connection failed: only check that it would encode.
                    wire::FrameWriter::new(id.max_frame_bytes)
                        .encode(frame(link.next_seq(), &out), &mut bytes::BytesMut::new())
                };
                match written {
                    Ok(()) => {}
                    Err(WriteError::Unsendable(e)) => {
                        // Never numbered: the frames after it keep the
                        // sequence whole. The receiver could not take it.
                        error!(%channel, "dropping a message that cannot be sent: {e}");
                        Metrics::inc(&metrics.messages_unsendable, 1);
                        pending.fetch_sub(1, Ordering::Relaxed);
                        continue;
                    }
                    // Keep numbering the rest: they are resent after the reconnect.
                    Err(WriteError::Io(_)) => ok = false,
                }
                link.push(out);
                waiting_since.get_or_insert_with(tokio::time::Instant::now);
            }
            if !ok || flush(&mut writer).await.is_err() {
                break;
            }
        }
        connected.store(false, Ordering::Relaxed);
        // A connection that carried traffic or lasted, or a rollback, is no
        // failure: reconnect at once. One that broke without the peer
        // acknowledging anything counts as a failed attempt.
        if moved || progressed || connected_at.elapsed() >= HEALTHY {
            delays = backoff(&mut seeds);
            wait = None;
        }
    }
}

/// The frame that carries `out` as number `seq`, borrowing its message.
fn frame<M>(seq: u64, out: &Out<M>) -> Frame<&M> {
    match out {
        Out::Data { epoch, message, vc } => Frame::Data {
            seq,
            epoch: *epoch,
            message,
            vc: vc.clone(),
        },
        Out::Marker {
            epoch,
            snapshot,
            vc,
        } => Frame::Marker {
            seq,
            epoch: *epoch,
            snapshot: *snapshot,
            vc: vc.clone(),
        },
    }
}

/// Waits until the connection's write buffer has room (writing out what
/// it holds if it is full).
async fn ready(writer: &mut FramedWrite<BoxWrite, FrameWriter>) -> Result<(), WriteError> {
    std::future::poll_fn(|cx| Sink::<Frame<()>>::poll_ready(std::pin::Pin::new(&mut *writer), cx))
        .await
}

/// Encodes `out` as frame `seq` straight into the connection's write
/// buffer. Not async: the message is borrowed only while it is encoded,
/// never across a wait (so it need not be `Sync`).
fn put<M: Serialize>(
    writer: &mut FramedWrite<BoxWrite, FrameWriter>,
    seq: u64,
    out: &Out<M>,
) -> Result<(), WriteError> {
    std::pin::Pin::new(writer).start_send(frame(seq, out))
}

/// Writes out what the connection's buffer holds.
async fn flush(writer: &mut FramedWrite<BoxWrite, FrameWriter>) -> Result<(), WriteError> {
    SinkExt::<Frame<()>>::flush(writer).await
}

mod handshake;
use handshake::handshake;

#[cfg(test)]
mod tests;
