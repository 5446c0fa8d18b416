//! The receiving side of channels: each incoming connection is checked
//! against the configuration by its hello, then its frames are numbered
//! into the driver in order, duplicates dropped and gaps refused, with
//! acknowledgements back to the sender (see [`crate::transport`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_core::{ChannelId, ProcessId, Topology};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::{debug, info, warn};

use crate::batch_queue::BatchSender;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::peers::{PeerBook, Seen};
use crate::tls::{BoxRead, BoxWrite, Identity, Role, Security, split_tcp, split_tls};
use crate::transport::{HANDSHAKE_TIMEOUT, In};
use crate::wire::{self, Frame, Hello, RejectKind};
use cairn_core::link::{Delivery, RecvHalf};

/// The receiving side of every incoming channel of one node.
#[derive(Debug)]
pub(crate) struct Inbound<M> {
    pub cluster: String,
    pub me: ProcessId,
    pub topology: Arc<Topology>,
    pub max_frame_bytes: usize,
    pub to_driver: BatchSender<In<M>>,
    /// Markers put in `to_driver` and not yet taken out by the driver: while
    /// there are some, a driver with receiver-side overtaking reads ahead.
    pub markers: Arc<std::sync::atomic::AtomicUsize>,
    /// This node's epoch: only senders in the same epoch are admitted.
    pub epoch: watch::Receiver<u64>,
    /// The incarnations of this node and its peers.
    pub peers: Arc<PeerBook>,
    /// Certificates: every incoming link must be TLS from a node certificate when set.
    pub security: Option<Arc<Security>>,
    /// Per incoming channel: the next sequence number, and which connection owns it.
    slots: Mutex<HashMap<ChannelId, Arc<Slot>>>,
}

#[derive(Debug)]
struct Slot {
    /// The channel's receiving end of the link protocol; the connection
    /// that owns the channel holds it.
    link: tokio::sync::Mutex<RecvHalf>,
    owner: watch::Sender<u64>,
}

/// Why a hello was refused.
#[derive(Debug)]
struct Refusal {
    kind: RejectKind,
    reason: String,
}

impl Refusal {
    fn new(kind: RejectKind, reason: impl Into<String>) -> Self {
        Refusal {
            kind,
            reason: reason.into(),
        }
    }
}

impl<M: DeserializeOwned + Send + 'static> Inbound<M> {
    /// The receiving side for node `me`, speaking as `id` describes.
    pub fn new(
        id: &crate::transport::Identity,
        me: ProcessId,
        topology: Arc<Topology>,
        to_driver: BatchSender<In<M>>,
        epoch: watch::Receiver<u64>,
    ) -> Self {
        Inbound {
            security: id.security.clone(),
            cluster: id.cluster.clone(),
            me,
            topology,
            max_frame_bytes: id.max_frame_bytes,
            to_driver,
            markers: Arc::default(),
            epoch,
            peers: id.peers.clone(),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts connections until shutdown; each is served by its own task.
    pub async fn run(
        self: Arc<Self>,
        listener: crate::net::Listener,
        mut shutdown: watch::Receiver<bool>,
        cut: watch::Receiver<u64>,
    ) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.changed() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let this = self.clone();
                    let (sd, cut) = (shutdown.clone(), cut.clone());
                    tokio::spawn(async move {
                        stream.set_nodelay();
                        let (halves, who) = match &this.security {
                            None => (split_tcp(stream), None),
                            Some(sec) => {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, sec.accept(stream))
                                    .await
                                {
                                    Ok(Ok((tls, who))) => (split_tls(tls), Some(who)),
                                    Ok(Err(e)) => {
                                        return this.refused_at_door(peer, &e.to_string());
                                    }
                                    Err(_) => {
                                        return this
                                            .refused_at_door(peer, "no TLS handshake within 5 s");
                                    }
                                }
                            }
                        };
                        match this.serve(halves, who, sd, cut).await {
                            Ok(()) => {}
                            Err(e @ Error::Protocol(_)) => {
                                warn!(%peer, "closed an incoming connection: {e}")
                            }
                            Err(e) => debug!(%peer, "incoming connection ended: {e}"),
                        }
                    });
                }
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn refused_at_door(&self, peer: std::net::SocketAddr, why: &str) {
        Metrics::inc(&self.peers.metrics.peers_refused, 1);
        warn!(%peer, "refused a peer connection: {why}");
    }

    /// Serves one connection; `who` is the certificate's identity when
    /// the link is TLS (`Some(None)`: no client certificate).
    async fn serve(
        &self,
        (r, w): (BoxRead, BoxWrite),
        who: Option<Option<Identity>>,
        mut shutdown: watch::Receiver<bool>,
        mut cut: watch::Receiver<u64>,
    ) -> Result<()> {
        let mut reader = FramedRead::new(r, wire::codec(self.max_frame_bytes));
        let mut writer = FramedWrite::new(w, wire::codec(self.max_frame_bytes));
        let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next())
            .await
            .map_err(|_| Error::Protocol("no hello within 5 s".into()))?
            .ok_or_else(|| Error::Protocol("closed before hello".into()))?
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let admitted = match wire::decode_hello(&first) {
            Ok(h) => self
                .member(&h, who.as_ref())
                .and_then(|()| self.admit(&h))
                .map(|(c, seen_as)| (c, h, seen_as)),
            Err(e) => Err(Refusal::new(RejectKind::Refused, e.to_string())),
        };
        let (channel, hello, seen_as) = match admitted {
            Ok(c) => c,
            Err(refusal) => {
                let reject = Frame::<()>::Reject {
                    reason: refusal.reason.clone(),
                    kind: refusal.kind,
                };
                if let Ok(bytes) = wire::encode(&reject) {
                    let _ = writer.send(bytes).await;
                }
                return Err(match refusal.kind {
                    RejectKind::Epoch => Error::Epoch(refusal.reason),
                    // Logged once, when the restart was first seen.
                    RejectKind::SenderRestarted | RejectKind::ReceiverRestarted => {
                        Error::Restarted(refusal.reason)
                    }
                    RejectKind::Refused => Error::Protocol(refusal.reason),
                });
            }
        };
        let their_epoch = hello.epoch;
        let name = self.topology.channel_name(channel);
        let slot = self.slot(channel);
        // Take the channel over from any older connection, then wait for it to let go.
        slot.owner.send_modify(|g| *g += 1);
        let generation = *slot.owner.borrow();
        let mut owner = slot.owner.subscribe();
        let mut link = slot.link.lock().await;
        let next_seq = link.on_hello(their_epoch, hello.incarnation);
        let mut epoch = self.epoch.clone();
        epoch.borrow_and_update();
        writer
            .send(wire::encode(&Frame::<()>::Welcome {
                next_seq,
                incarnation: self.peers.me,
                peer_incarnation: seen_as,
            })?)
            .await
            .map_err(|e| Error::io("sending welcome", e))?;
        info!(channel = %name, next_seq, "incoming channel connected");
        cut.borrow_and_update();
        let mut ack_timer = tokio::time::interval(Duration::from_millis(5));
        loop {
            let frame = tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                _ = cut.changed() => return Ok(()),
                _ = epoch.changed() => return Ok(()),
                _ = owner.changed() => {
                    if *owner.borrow() != generation {
                        debug!(channel = %name, "a newer connection took the channel over");
                        return Ok(());
                    }
                    continue;
                }
                _ = ack_timer.tick() => {
                    if let Some(next_seq) = link.poll_ack(true) {
                        let ack = wire::encode(&Frame::<()>::Ack { next_seq })?;
                        writer.send(ack).await.map_err(|e| Error::io("sending ack", e))?;
                    }
                    continue;
                }
                f = reader.next() => f,
            };
            // Take every frame already buffered before selecting again
            // (up to a batch): the select's futures cost more than a frame.
            // What they deliver goes to the driver as one batch.
            let mut frame = frame;
            let mut budget = 256;
            let mut batch = Vec::new();
            let outcome = loop {
                let bytes = match frame {
                    None => break Ok(false),
                    Some(Err(e)) => break Err(wire::read_error(&format!("channel {name}"), e)),
                    Some(Ok(b)) => b,
                };
                let decoded = wire::decode::<Frame<M>>(&bytes)
                    .map_err(|e| Error::Protocol(format!("channel {name}: {e}")));
                let (seq, item) = match decoded {
                    Err(e) => break Err(e),
                    Ok(Frame::Data {
                        seq,
                        epoch: e,
                        message,
                        vc,
                    }) if e == their_epoch => (
                        seq,
                        In::Data {
                            channel,
                            epoch: e,
                            message,
                            vc,
                            bytes: bytes.len() as u64,
                        },
                    ),
                    Ok(Frame::Marker {
                        seq,
                        epoch: e,
                        snapshot,
                        vc,
                    }) if e == their_epoch => (
                        seq,
                        In::Marker {
                            channel,
                            epoch: e,
                            snapshot,
                            vc,
                        },
                    ),
                    Ok(other) => {
                        break Err(Error::Protocol(format!(
                            "channel {name}: unexpected frame {:?}",
                            std::mem::discriminant(&other)
                        )));
                    }
                };
                match link.on_frame(seq) {
                    Err(gap) => break Err(Error::Protocol(format!("channel {name}: {gap}"))),
                    Ok(Delivery::Duplicate) => {} // resent, already delivered
                    Ok(Delivery::Deliver) => {
                        // Counted before it is queued, so the driver never
                        // takes out one it was not told of.
                        if matches!(item, In::Marker { .. }) {
                            self.markers
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        batch.push(item);
                    }
                }
                budget -= 1;
                if budget == 0 {
                    break Ok(true);
                }
                match reader.next().now_or_never() {
                    Some(f) => frame = f,
                    None => break Ok(true),
                }
            };
            // What the link counted as delivered is queued before anything
            // else happens, also when the connection then ends: a resend
            // resumes after it.
            if !batch.is_empty() {
                if self.to_driver.send(batch).await.is_err() {
                    return Ok(()); // the node is shutting down
                }
                if outcome.as_ref().is_ok_and(|open| *open)
                    && let Some(next_seq) = link.poll_ack(false)
                {
                    let ack = wire::encode(&Frame::<()>::Ack { next_seq })?;
                    writer
                        .send(ack)
                        .await
                        .map_err(|e| Error::io("sending ack", e))?;
                }
            }
            if !outcome? {
                return Ok(());
            }
        }
    }

    /// Checks a hello against the configuration (the cluster, a known node,
    /// and a channel from that node to this one), then the lives and epochs
    /// of both ends (see [`crate::peers`]). Returns the channel and how this
    /// node knew the sender before.
    /// In a secure cluster, the hello must come from the node its
    /// certificate names.
    fn member(
        &self,
        hello: &Hello,
        who: Option<&Option<Identity>>,
    ) -> std::result::Result<(), Refusal> {
        let Some(who) = who else { return Ok(()) };
        let problem = match who {
            Some(w) if *w == Identity::node(&hello.node) => return Ok(()),
            None => "it presented no client certificate".to_string(),
            Some(w) if w.role == Role::Client => format!(
                "its certificate is {w}'s, a client certificate, which cannot open a peer link"
            ),
            Some(w) => format!("its certificate is {w}'s"),
        };
        Metrics::inc(&self.peers.metrics.peers_refused, 1);
        Err(Refusal::new(
            RejectKind::Refused,
            format!(
                "a hello naming node {:?} was refused: {problem}",
                hello.node
            ),
        ))
    }

    fn admit(
        &self,
        hello: &Hello,
    ) -> std::result::Result<(ChannelId, Option<(u64, u64)>), Refusal> {
        let refused = |reason: String| Refusal::new(RejectKind::Refused, reason);
        if hello.cluster != self.cluster {
            return Err(refused(format!(
                "node {:?} belongs to cluster {:?}, this node to {:?}",
                hello.node, hello.cluster, self.cluster
            )));
        }
        let from = self
            .topology
            .process(&hello.node)
            .ok_or_else(|| refused(format!("unknown node id {:?}", hello.node)))?;
        let channel = self
            .topology
            .channel_by_name(&hello.channel)
            .filter(|&c| {
                let ch = self.topology.channel(c);
                ch.from == from && ch.to == self.me
            })
            .ok_or_else(|| {
                refused(format!(
                    "node {:?} has no channel {:?} to {}",
                    hello.node,
                    hello.channel,
                    self.topology.name(self.me)
                ))
            })?;
        let mine = *self.epoch.borrow();
        let me = self.topology.name(self.me);
        if self.peers.judge_me(hello.peer_incarnation, mine) == Seen::Restarted
            || self.peers.needs_restore()
        {
            return Err(Refusal::new(
                RejectKind::ReceiverRestarted,
                format!("node {me} restarted and lost its state; it needs a restore"),
            ));
        }
        if self
            .peers
            .judge(from.index(), hello.incarnation, hello.epoch, mine)
            == Seen::Restarted
        {
            return Err(Refusal::new(
                RejectKind::SenderRestarted,
                format!(
                    "node {} restarted (incarnation {:016x}) and lost its state; it needs a restore",
                    hello.node, hello.incarnation
                ),
            ));
        }
        if hello.epoch != mine {
            return Err(Refusal::new(
                RejectKind::Epoch,
                format!(
                    "node {:?} is in epoch {}, this node in epoch {mine}",
                    hello.node, hello.epoch
                ),
            ));
        }
        let seen_as = self.peers.known(from.index());
        self.peers
            .adopt(from.index(), hello.incarnation, hello.epoch);
        Ok((channel, seen_as))
    }

    fn slot(&self, channel: ChannelId) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(channel)
            .or_insert_with(|| {
                Arc::new(Slot {
                    link: tokio::sync::Mutex::new(RecvHalf::new()),
                    owner: watch::channel(0).0,
                })
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{MAGIC, PROTOCOL_VERSION};
    use bytes::Bytes;

    /// Invariant: what the link counts as delivered reaches the driver, in
    /// order and once, even when the same read ends with a frame that
    /// breaks the connection; the sender then resumes right after it.
    #[tokio::test]
    async fn frames_before_a_bad_one_in_the_same_read_are_delivered_once() {
        let names = vec!["n1".to_string(), "n2".to_string()];
        let topo = Arc::new(Topology::new(&names, &[("n1", "n2"), ("n2", "n1")]).unwrap());
        let id = crate::transport::Identity {
            cluster: "c".into(),
            node: "n2".into(),
            max_frame_bytes: 1 << 16,
            peers: Arc::new(PeerBook::new(7, names.clone(), Arc::default())),
            security: None,
        };
        let (tx, mut rx) = crate::batch_queue::batch_queue();
        let (_epoch_tx, epoch_rx) = watch::channel(0u64);
        let me = topo.process("n2").unwrap();
        let inbound = Arc::new(Inbound::<u64>::new(&id, me, topo, tx, epoch_rx));
        let listener = crate::net::Listener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let (_cut_tx, cut_rx) = watch::channel(0u64);
        tokio::spawn(inbound.run(listener, stop_rx, cut_rx));

        // Connects as n1 and returns the connection and where to resume.
        let connect = |peer: Option<(u64, u64)>| async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (r, w) = stream.into_split();
            let mut reader = FramedRead::new(r, wire::codec(1 << 16));
            let mut writer = FramedWrite::new(w, wire::codec(1 << 16));
            let hello = Hello {
                magic: MAGIC,
                version: PROTOCOL_VERSION,
                cluster: "c".into(),
                node: "n1".into(),
                channel: "n1->n2".into(),
                epoch: 0,
                incarnation: 42,
                peer_incarnation: peer,
            };
            writer.send(wire::encode(&hello).unwrap()).await.unwrap();
            let reply = reader.next().await.unwrap().unwrap();
            match wire::decode::<Frame<()>>(&reply).unwrap() {
                Frame::Welcome {
                    next_seq,
                    incarnation,
                    ..
                } => (reader, writer, next_seq, incarnation),
                other => panic!("not welcomed: {other:?}"),
            }
        };
        let (mut reader, mut writer, next, theirs) = connect(None).await;
        assert_eq!(next, 1, "frames are numbered from 1");
        for seq in 1..=3 {
            let data = Frame::Data {
                seq,
                epoch: 0,
                message: 9 + seq,
                vc: None,
            };
            writer.feed(wire::encode(&data).unwrap()).await.unwrap();
        }
        writer
            .feed(Bytes::from_static(&[0xff, 0xff, 0xff]))
            .await
            .unwrap();
        SinkExt::<Bytes>::flush(&mut writer).await.unwrap();
        let limit = Duration::from_secs(5);
        for want in 10..13 {
            let got = tokio::time::timeout(limit, rx.recv()).await.unwrap();
            match got {
                Some(In::Data { message, .. }) => assert_eq!(message, want),
                other => panic!("expected message {want}, got {other:?}"),
            }
        }
        // The bad frame ended the connection.
        let end = tokio::time::timeout(limit, async {
            while let Some(Ok(_)) = reader.next().await {}
        });
        end.await.unwrap();
        // The sender comes back and resumes after what was delivered.
        let (_r, _w, next, _) = connect(Some((theirs, 0))).await;
        assert_eq!(next, 4, "a resend would repeat or lose a delivered frame");
        assert!(rx.try_recv().is_none(), "nothing else was delivered");
    }
}
