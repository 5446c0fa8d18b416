//! The physical floor `cairn bench` measures Cairn against: the same
//! application, the same message pattern and the same framing (length-delimited
//! postcard [`Frame::Data`](crate::wire::Frame::Data)) over one TCP connection
//! per channel — and nothing of Cairn: no engine, hello, sequence numbers,
//! acknowledgements, resends, markers or coordinator. Its driver loop has the
//! same shape and batch sizes as Cairn's, and its senders the same window.
//!
//! It also measures what a marker would need to cross one channel under that
//! load: about once a millisecond per channel, a message carries its send
//! time (in the frame's clock field) and the receiver notes how long it took
//! from the sender's application to its own.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_core::{ChannelId, Context, Pace, Process, ProcessId};
use futures_util::{FutureExt, SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::{info, warn};

use crate::config::ClusterConfig;
use crate::driver::quiet::{Quiet, Tick};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::transport::HIGH_WATER;
use crate::wire::{self, Frame};

/// Latency samples kept between resets.
const MAX_SAMPLES: usize = 100_000;

/// A message and its probe (the send time, about once a millisecond).
type Probed<M> = (M, Option<Vec<u64>>);

/// One outgoing channel: the application's end. As in Cairn's driver, what
/// one step sends is held and handed to the channel's sender together.
struct RawOut<M> {
    tx: mpsc::UnboundedSender<Vec<Probed<M>>>,
    held: Vec<Probed<M>>,
    pending: Arc<AtomicUsize>,
    last_probe: Instant,
}

#[derive(Default)]
struct Stats {
    metrics: Metrics,
    latencies_us: Mutex<Vec<u64>>,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Runs node `me` of `config` as the raw baseline until `shutdown` turns true.
///
/// # Errors
/// The config does not say `insecure = true` (the baseline is plain TCP,
/// and never runs so unasked), the application's parameters are unusable,
/// or an address cannot be bound.
pub async fn run_raw_node<P: Process>(
    config: Arc<ClusterConfig>,
    me: ProcessId,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    if !config.security.insecure {
        return Err(Error::Config {
            file: config.file.display().to_string(),
            key: "insecure".into(),
            problem: "the raw baseline is plain framed TCP with no TLS: it runs only where the config says insecure = true".into(),
        });
    }
    let topo = config.topology.clone();
    let node = &config.nodes[me.index()];
    let mut process: P = crate::node::new_process(&config, me)?;
    let listener = TcpListener::bind(&node.listen).await.map_err(|e| {
        Error::io(
            format!("node {}: cannot listen on {}", node.id, node.listen),
            e,
        )
    })?;
    let admin = TcpListener::bind(node.admin).await.map_err(|e| {
        Error::io(
            format!("node {}: cannot serve on {}", node.id, node.admin),
            e,
        )
    })?;
    let stats = Arc::new(Stats::default());
    let room = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut outbound: HashMap<ChannelId, RawOut<P::Message>> = HashMap::new();
    for &c in topo.outgoing(me) {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let address = config.nodes[topo.channel(c).to.index()].address.clone();
        tokio::spawn(raw_sender::<P::Message>(
            c,
            address,
            rx,
            pending.clone(),
            room.clone(),
            stop_rx.clone(),
        ));
        outbound.insert(
            c,
            RawOut {
                tx,
                held: Vec::new(),
                pending,
                last_probe: Instant::now(),
            },
        );
    }
    let (in_tx, mut inbound) =
        crate::batch_queue::batch_queue::<(ChannelId, P::Message, Option<Vec<u64>>)>();
    tokio::spawn(raw_listener::<P::Message>(
        listener,
        in_tx,
        config.max_frame_bytes,
        stop_rx.clone(),
    ));
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics/reset-peaks", post(reset))
        .with_state((stats.clone(), node.id.clone()));
    let mut admin_stop = stop_rx.clone();
    tokio::spawn(async move {
        let serve = axum::serve(admin, app).with_graceful_shutdown(async move {
            let _ = admin_stop.changed().await;
        });
        if let Err(e) = serve.await {
            warn!("status API stopped: {e}");
        }
    });
    info!(node = %node.id, "raw baseline node running");

    let seed = RandomState::new().hash_one((std::process::id(), me.0));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let outgoing: Vec<ChannelId> = topo.outgoing(me).to_vec();
    let continuous = process.pace() == Pace::Continuous;
    let mut quiet = Quiet::default();
    let send = |sends: Vec<(ChannelId, P::Message)>,
                outbound: &mut HashMap<ChannelId, RawOut<P::Message>>| {
        for (c, m) in sends {
            if let Some(o) = outbound.get_mut(&c) {
                let probe = (o.last_probe.elapsed() >= Duration::from_millis(1)).then(|| {
                    o.last_probe = Instant::now();
                    vec![unix_nanos()]
                });
                o.pending.fetch_add(1, Ordering::Relaxed);
                o.held.push((m, probe));
                Metrics::inc(&stats.metrics.messages_sent, 1);
            }
        }
    };
    loop {
        for o in outbound.values_mut().filter(|o| !o.held.is_empty()) {
            let _ = o.tx.send(std::mem::take(&mut o.held));
        }
        let has_room = |o: &HashMap<ChannelId, RawOut<P::Message>>| {
            o.values()
                .any(|r| r.pending.load(Ordering::Relaxed) < HIGH_WATER)
        };
        let quiet_now = continuous && quiet.is_quiet();
        let room_now = continuous && !quiet_now && has_room(&outbound);
        let full = continuous && !quiet_now && !room_now;
        let freed = room.clone();
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(first) = inbound.recv() => {
                let step = Instant::now();
                quiet.wake();
                let mut next = Some(first);
                let mut n = 0;
                while let Some((channel, message, probe)) = next.take() {
                    if let Some(sent) = probe.and_then(|p| p.first().copied()) {
                        let us = unix_nanos().saturating_sub(sent) / 1000;
                        let mut l = stats.latencies_us.lock().unwrap_or_else(|p| p.into_inner());
                        if l.len() < MAX_SAMPLES {
                            l.push(us);
                        }
                    }
                    Metrics::inc(&stats.metrics.messages_received, 1);
                    let mut sends = Vec::new();
                    let mut random = || rng.random::<u64>();
                    process.on_message(channel, message, &mut Context::new(&outgoing, &mut random, &mut sends));
                    send(sends, &mut outbound);
                    n += 1;
                    if n < 256 {
                        next = inbound.try_recv();
                    }
                }
                stats.metrics.note_pause(step.elapsed());
            }
            _ = tokio::task::yield_now(), if room_now => {
                let step = Instant::now();
                for _ in 0..crate::driver::TICKS_PER_STEP {
                    let open: Vec<ChannelId> = outgoing
                        .iter()
                        .copied()
                        .filter(|c| outbound.get(c).is_some_and(|o| o.pending.load(Ordering::Relaxed) < HIGH_WATER))
                        .collect();
                    let mut sends = Vec::new();
                    let mut random = || rng.random::<u64>();
                    process.on_tick(&mut Context::new(&open, &mut random, &mut sends));
                    let tick = Tick::of(!sends.is_empty(), !open.is_empty());
                    send(sends, &mut outbound);
                    if quiet.after(tick) {
                        break;
                    }
                }
                stats.metrics.note_pause(step.elapsed());
            }
            _ = freed.notified(), if full => {}
            _ = tokio::time::sleep(Duration::from_millis(5)), if full => {}
            _ = tokio::time::sleep_until(quiet.retry_at()), if quiet_now => quiet.wake(),
        }
    }
    let _ = stop_tx.send(true);
    info!(node = %node.id, "raw baseline node stopped");
    Ok(())
}

/// Streams one channel's messages: connect, name the channel, then frames.
async fn raw_sender<M: Serialize>(
    channel: ChannelId,
    address: String,
    mut rx: mpsc::UnboundedReceiver<Vec<Probed<M>>>,
    pending: Arc<AtomicUsize>,
    room: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let stream = loop {
        tokio::select! {
            _ = stop.changed() => return,
            s = TcpStream::connect(&address) => match s {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    let _ = stream.set_nodelay(true);
    // As Cairn's senders do, frames are encoded straight into the
    // connection's write buffer.
    let mut writer = FramedWrite::new(
        stream,
        wire::FrameWriter::new(crate::config::DEFAULT_MAX_FRAME_BYTES),
    );
    if writer.send(channel.0).await.is_err() {
        return;
    }
    loop {
        let first = tokio::select! {
            _ = stop.changed() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let mut batch = first;
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let n = batch.len();
        for (message, vc) in batch {
            let frame = Frame::Data {
                seq: 0,
                epoch: 0,
                message,
                vc,
            };
            match writer.feed(frame).await {
                Ok(()) | Err(wire::WriteError::Unsendable(_)) => {}
                Err(wire::WriteError::Io(_)) => return,
            }
        }
        if SinkExt::<Frame<()>>::flush(&mut writer).await.is_err() {
            return;
        }
        pending.fetch_sub(n, Ordering::Relaxed);
        room.notify_waiters();
    }
}

/// Accepts the peers' channels and hands their messages to the driver loop.
async fn raw_listener<M: DeserializeOwned + Send + 'static>(
    listener: TcpListener,
    to_app: crate::batch_queue::BatchSender<(ChannelId, M, Option<Vec<u64>>)>,
    max_frame_bytes: usize,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let to_app = to_app.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut reader = FramedRead::new(stream, wire::codec(max_frame_bytes));
            let Some(Ok(first)) = reader.next().await else {
                return;
            };
            let Ok(id) = wire::decode::<u32>(&first) else {
                return;
            };
            let channel = ChannelId(id);
            // As Cairn's receivers do: every frame already buffered (up to
            // 256) goes to the driver loop as one batch.
            while let Some(Ok(bytes)) = reader.next().await {
                let mut batch = Vec::new();
                let mut next = Some(bytes);
                while let Some(bytes) = next.take() {
                    match wire::decode::<Frame<M>>(&bytes) {
                        Ok(Frame::Data { message, vc, .. }) => batch.push((channel, message, vc)),
                        Ok(_) => {}
                        Err(e) => {
                            warn!("raw baseline: {e}");
                            return;
                        }
                    }
                    if batch.len() < 256 {
                        next = reader.next().now_or_never().flatten().and_then(Result::ok);
                    }
                }
                if to_app.send(batch).await.is_err() {
                    return;
                }
            }
        });
    }
}

type RawState = State<(Arc<Stats>, String)>;

async fn status(State((stats, node)): RawState) -> Json<Value> {
    let m = &stats.metrics;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut l = stats
        .latencies_us
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    l.sort_unstable();
    let pct = |q: f64| {
        l.get(((l.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    Json(json!({
        "node": node,
        "pid": std::process::id(),
        "raw_baseline": true,
        "messages_sent": m.messages_sent.get(),
        "messages_received": m.messages_received.get(),
        "longest_pause_us": load(&m.longest_pause_us),
        "latency_us": { "samples": l.len(), "p50": pct(0.5), "p99": pct(0.99) },
    }))
}

async fn reset(State((stats, _)): RawState) -> Json<Value> {
    stats.metrics.reset_peaks();
    stats
        .latencies_us
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    Json(json!({ "ok": true }))
}
