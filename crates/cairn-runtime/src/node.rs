//! One node: its listener, channel senders, driver, reporter, admin API and,
//! on the coordinator, the snapshot timer.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::time::Instant;

use cairn_core::{Process, ProcessId};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::admin;
use crate::admin_auth::Tokens;
use crate::client::AdminClient;
use crate::config::ClusterConfig;
use crate::control::commit::accept_report;
use crate::control::role::{Role, run_role};
use crate::coordinator::LocalReport;
use crate::driver::{ChannelCounts, Driver, Encoded, PendingReport, REPORT_QUEUE};
use crate::error::{Error, Result};
use crate::inbound::Inbound;
use crate::metrics::Metrics;
use crate::peers::{PeerBook, new_incarnation};
use crate::shared::Shared;
use crate::tls::listener::{AdminListener, Caller};
use crate::tls::{self, Security};
use crate::tracefile::TraceWriter;
use crate::transport::{Identity, Outbound, Outbounds, SenderLinks, run_outbound};
use cairn_store::Part;

/// Runs node `me` of `config` with application `P` until `shutdown` turns true.
///
/// # Errors
/// The application's parameters are unusable, an address cannot be bound, or
/// the trace cannot be written.
pub async fn run_node<P: Process>(
    config: Arc<ClusterConfig>,
    me: ProcessId,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    run_node_with::<P>(config, me, shutdown, None, None).await
}

/// As [`run_node`], for a reproducible run: `seed` gives the application's
/// randomness and this life's incarnation (so a restarted node must be
/// given another seed), and the reporter runs on the caller's runtime
/// rather than a thread of its own. For deterministic simulations (the
/// `turmoil` feature), where everything must run on the simulated host.
///
/// # Errors
/// As [`run_node`].
pub async fn run_node_seeded<P: Process>(
    config: Arc<ClusterConfig>,
    me: ProcessId,
    shutdown: watch::Receiver<bool>,
    seed: u64,
) -> Result<()> {
    run_node_with::<P>(config, me, shutdown, Some(seed), None).await
}

/// What a program that embeds a node (see [`crate::Node`]) gets from it:
/// the node's shared state once it runs, and a way in for outside input.
pub(crate) struct Embedding<M> {
    pub inputs: mpsc::Receiver<crate::driver::Input<M>>,
    pub ready: tokio::sync::oneshot::Sender<Arc<Shared>>,
}

pub(crate) async fn run_node_with<P: Process>(
    config: Arc<ClusterConfig>,
    me: ProcessId,
    shutdown: watch::Receiver<bool>,
    seeded: Option<u64>,
    embedding: Option<Embedding<P::Message>>,
) -> Result<()> {
    let topo = config.topology.clone();
    let node = &config.nodes[me.index()];
    let name = node.id.clone();
    let process: P = new_process(&config, me)?;
    let initial = process.state();
    let initial_json = serde_json::to_value(&initial)
        .map_err(|e| Error::io("encoding the initial state", e.into()))?;
    let store = cairn_store::Store::open(&config.store).map_err(|e| Error::Config {
        file: config.file.display().to_string(),
        key: "store".into(),
        problem: e.to_string(),
    })?;
    let security = match config.certs_dir()? {
        Some(dir) => Some(Arc::new(Security::load(
            dir,
            Some(&tls::Identity::node(&name)),
        )?)),
        None => {
            warn!(node = %name, "running INSECURE (insecure = true): peer links and the admin API are open to anyone who can reach them");
            None
        }
    };
    let tokens = Tokens::load(&config)?;
    let listener = crate::net::Listener::bind(&node.listen)
        .await
        .map_err(|e| Error::io(format!("node {name}: cannot listen on {}", node.listen), e))?;
    let admin_listener = crate::net::Listener::bind(&node.admin.to_string())
        .await
        .map_err(|e| {
            Error::io(
                format!("node {name}: cannot serve the admin API on {}", node.admin),
                e,
            )
        })?;
    let trace = match &config.trace_dir {
        Some(dir) => Some(TraceWriter::create(dir, &name, 0)?.with_limit(config.trace_limit_bytes)),
        None => None,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let (cut_tx, cut_rx) = watch::channel(0u64);
    let (epoch_tx, epoch_rx) = watch::channel(0u64);
    let metrics = Arc::new(Metrics::new(&name));
    let client = security
        .clone()
        .map_or_else(AdminClient::insecure, AdminClient::with_security)
        .with_metrics(metrics.clone());
    let room = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let names: Vec<String> = config.nodes.iter().map(|n| n.id.clone()).collect();
    let incarnation = match seeded {
        // Never 0, and odd like every other incarnation.
        Some(seed) => seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        None => new_incarnation(),
    };
    let peers = Arc::new(PeerBook::new(incarnation, names, metrics.clone()));
    let counts = Arc::new(ChannelCounts::new(topo.channel_count()));
    let mut pendings = std::collections::HashMap::new();

    // Channel senders.
    let id = Identity {
        cluster: config.cluster.clone(),
        node: name.clone(),
        max_frame_bytes: config.max_frame_bytes,
        peers: peers.clone(),
        security: security.clone(),
    };
    let mut outbound = Outbounds::new(topo.channel_count());
    for &c in topo.outgoing(me) {
        let queue = Arc::new(crate::send_queue::SendQueue::default());
        let pending = Arc::new(AtomicUsize::new(0));
        outbound.insert(c, Outbound::new(queue.clone(), pending.clone()));
        let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        pendings.insert(c, (pending.clone(), connected.clone()));
        let to = topo.channel(c).to.index();
        let address = config.nodes[to].address.clone();
        tasks.spawn(run_outbound::<P::Message>(
            id.clone(),
            topo.channel_name(c),
            to,
            address,
            queue,
            SenderLinks {
                pending,
                connected,
                room: room.clone(),
                metrics: metrics.clone(),
                epoch: epoch_rx.clone(),
                cut: cut_rx.clone(),
                shutdown: stop_rx.clone(),
            },
        ));
    }

    // Channel receivers.
    let (in_tx, in_rx) = crate::batch_queue::batch_queue();
    let inbound = Arc::new(Inbound::<P::Message>::new(
        &id,
        me,
        topo.clone(),
        in_tx,
        epoch_rx.clone(),
    ));
    let markers_queued = inbound.markers.clone();
    tasks.spawn(inbound.run(listener, stop_rx.clone(), cut_rx.clone()));

    // Reporter, admin API, and the node's part in choosing the coordinator.
    let (control_tx, control_rx) = mpsc::channel(64);
    let shared = Arc::new(Shared {
        decode_message: cairn_store::message_json::<P::Message>,
        config: config.clone(),
        me,
        control: control_tx,
        metrics: metrics.clone(),
        role: Role::new(config.coordinator),
        cut: cut_tx,
        started: Instant::now(),
        store,
        epoch: epoch_rx.clone(),
        initial: initial_json.clone(),
        stop_world: tokio::sync::Mutex::new(()),
        peers: peers.clone(),
        ids: tokio::sync::Mutex::new(Default::default()),
        gate: tokio::sync::Mutex::new(()),
        counts: counts.clone(),
        security: security.clone(),
        client,
        tokens,
        pending: pendings,
        given_up: Default::default(),
        unusable: Default::default(),
        joined: crate::shared::NO_EPOCH.into(),
        coordinator_heard: std::sync::Mutex::new(Instant::now()),
    });
    let (report_tx, report_rx) = mpsc::channel(REPORT_QUEUE);
    // The reporter encodes and persists local snapshots on a thread of its
    // own, so that a large state never stalls the driver's thread.
    let kept_initial = serde_json::to_vec(&initial_json)
        .is_ok_and(|b| b.len() <= KEEP_INITIAL_BYTES)
        .then(|| initial_json.clone());
    if seeded.is_some() {
        tasks.spawn(run_reporter(
            shared.clone(),
            kept_initial,
            report_rx,
            stop_rx.clone(),
        ));
    } else {
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        std::thread::Builder::new()
            .name(format!("{name}-reporter"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(run_reporter(shared, kept_initial, report_rx, stop)),
                    Err(e) => error!("cannot start the reporter: {e}"),
                }
            })
            .map_err(|e| Error::io("starting the reporter thread", e))?;
    }
    let app = admin::router(shared.clone());
    let mut admin_stop = stop_rx.clone();
    tasks.spawn(async move {
        let listener = match AdminListener::new(admin_listener, security) {
            Ok(l) => l,
            Err(e) => return error!("admin API cannot start: {e}"),
        };
        let app = app.into_make_service_with_connect_info::<Caller>();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = admin_stop.changed().await;
        });
        if let Err(e) = serve.await {
            error!("admin API stopped: {e}");
        }
    });
    tasks.spawn(run_role(shared.clone(), stop_rx.clone()));

    let seed = seeded.unwrap_or_else(|| RandomState::new().hash_one((std::process::id(), me.0)));
    let driver = Driver::new(
        me,
        topo.clone(),
        process,
        outbound,
        in_rx,
        control_rx,
        report_tx,
        room,
        metrics,
        trace,
        seed,
        epoch_tx,
    )?;
    info!(node = %name, address = %node.address, admin = %node.admin, app = %config.app.name, incarnation = format_args!("{:016x}", shared.peers.me), "node running");
    let mut driver = driver;
    driver.trace_dir = config.trace_dir.clone();
    driver.trace_limit = config.trace_limit_bytes;
    driver.name = name.clone();
    driver.epoch_initial = Some(initial);
    driver.mode = config.snapshots.mode;
    driver.peers = Some(peers);
    driver.counts = counts;
    driver.snapshot_timeout = config.snapshots.timeout;
    driver.engine_limit = Some(config.snapshots.max_recorded_bytes);
    driver.engine.set_recording_limit(driver.engine_limit);
    driver.overtaking = config.snapshots.overtake;
    driver.markers_queued = markers_queued;
    driver.engine.set_overtaking(driver.overtaking);
    if let Some(e) = embedding {
        driver.inputs = Some(e.inputs);
        let _ = e.ready.send(shared.clone());
    }
    let written = driver.run(shutdown).await;
    let _ = stop_tx.send(true);
    written?;
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .is_err()
    {
        warn!("some tasks did not stop within 3 s");
    }
    info!(node = %name, "node stopped");
    Ok(())
}

/// Process `me` of `config`'s application, from the `[app]` parameters.
///
/// # Errors
/// [`Error::Config`] naming the parameters that are unusable.
pub(crate) fn new_process<P: Process>(config: &ClusterConfig, me: ProcessId) -> Result<P> {
    let bad = |problem: String| Error::Config {
        file: config.file.display().to_string(),
        key: "app".into(),
        problem,
    };
    let params: P::Params = serde_json::from_value(config.app.params.clone())
        .map_err(|e| bad(format!("bad parameters for {}: {e}", config.app.name)))?;
    P::new(&params, me, &config.topology).map_err(bad)
}

/// A part larger than this (in bytes) leaves its state out of the report:
/// the coordinator reads that snapshot from the store instead.
const INLINE_STATE_BYTES: u64 = 1 << 20;

/// Parts carry the process's initial state (for checking conservation from
/// the store alone) only when it is at most this large.
const KEEP_INITIAL_BYTES: usize = 64 << 10;

/// Persists each local snapshot as this node's part in the store (off the
/// driver, which keeps processing messages meanwhile), then hands the report
/// to the coordinator: in-process on the coordinator; elsewhere over the
/// open HTTP/2 connection, each report on its own so that one held up by a
/// lost packet does not hold up those behind it. A report is worth sending
/// until the snapshot timeout after this node began recording, and not for
/// a snapshot the coordinator already gave up.
async fn run_reporter(
    shared: Arc<Shared>,
    initial: Option<serde_json::Value>,
    mut reports: mpsc::Receiver<PendingReport>,
    mut stop: watch::Receiver<bool>,
) {
    let config = shared.config.clone();
    let mut chunk_cache =
        cairn_store::ChunkCache::paced(config.snapshots.write_bytes_per_s.map(|bytes_per_s| {
            cairn_store::Pace {
                bytes_per_s,
                burst: crate::config::WRITE_BURST,
            }
        }));
    loop {
        let pending = tokio::select! {
            _ = stop.changed() => return,
            r = reports.recv() => match r { Some(r) => r, None => return },
        };
        let began = Instant::now();
        let deadline = pending.since + config.snapshots.timeout;
        let Encoded {
            mut report,
            channels,
            overtaken,
            chunks,
        } = match (pending.encode)() {
            Ok(r) => r,
            Err(e) => {
                error!("cannot encode a local snapshot: {e}");
                continue;
            }
        };
        let encoded = began.elapsed();
        let mut part = Part {
            snapshot: report.snapshot.0,
            process: report.process.clone(),
            state: std::mem::take(&mut report.state),
            channels,
            initial: initial.clone(),
            epoch: report.epoch,
            overtaken,
        };
        while report.refused.is_none() {
            chunk_cache.finish_by(deadline);
            let written = shared
                .store
                .write_part_chunked(&part, &chunks, &mut chunk_cache)
                .await;
            match written {
                Ok((r, stats)) => {
                    Metrics::inc(&shared.metrics.chunk_bytes_written, stats.written_bytes);
                    Metrics::inc(&shared.metrics.chunk_bytes_reused, stats.reused_bytes);
                    debug!(snapshot = %report.snapshot, bytes = r.bytes, chunks_written = stats.written, chunk_bytes_written = stats.written_bytes, chunks_reused = stats.reused, encode_ms = encoded.as_secs_f64() * 1e3, write_ms = (began.elapsed() - encoded).as_secs_f64() * 1e3, "part durable");
                    // A large state travels no further than the store.
                    if r.bytes > INLINE_STATE_BYTES {
                        report.state_in_store = true;
                    } else {
                        report.state = std::mem::take(&mut part.state);
                    }
                    report.part = Some(r);
                    break;
                }
                Err(e @ cairn_store::Error::Conflict { .. }) => {
                    // Never replaced: this snapshot fails, saying why.
                    error!(snapshot = %report.snapshot, "{e}");
                    report.refused = Some(format!("its part could not be written: {e}"));
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    warn!(snapshot = %report.snapshot, "writing the part failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    // The recorded messages are only in the part: without
                    // it this snapshot cannot be served or restored.
                    error!(snapshot = %report.snapshot, "giving up on writing the part: {e}");
                    report.refused = Some(format!("its part could not be written in time: {e}"));
                    break;
                }
            }
        }
        drop(part);
        if let Some(c) = shared.coordinator() {
            if let Err(e) = accept_report(&shared, &c, report) {
                warn!("own report refused: {e}");
            }
            continue;
        }
        tokio::spawn(send_report(shared.clone(), report, deadline));
    }
}

/// The pause between attempts to send a report. Never shortened to what is
/// left before the deadline: with less than a timer tick left, the attempt
/// and the pause would both end at once, again and again, without time
/// moving on (a busy loop that froze a simulated host); after a whole pause
/// the deadline is simply past.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Sends one report to the coordinator, retrying a failed request (or one
/// that reached a former coordinator) until `deadline`; drops it once the
/// coordinator has given its snapshot up.
async fn send_report(shared: Arc<Shared>, report: LocalReport, deadline: Instant) {
    let id = report.snapshot;
    let body = match serde_json::to_vec(&report) {
        Ok(b) => b,
        Err(e) => {
            error!(snapshot = %id, "cannot encode the report: {e}");
            return;
        }
    };
    drop(report);
    loop {
        if shared.given_up(id.0) {
            debug!(snapshot = %id, "the coordinator gave this snapshot up: its report is dropped");
            return;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            warn!(snapshot = %id, "giving up on the report: the snapshot timed out");
            return;
        };
        let sent = shared
            .client
            .request_within(
                left,
                shared.coordinator_admin(),
                hyper::Method::POST,
                "/internal/reports",
                Some(body.clone()),
            )
            .await;
        match sent {
            Ok((status, _)) if status.is_success() => return,
            Ok((status, _)) if status == hyper::StatusCode::MISDIRECTED_REQUEST => {
                // A new coordinator took over; this node learns which
                // within moments (from the store), and the report follows.
                debug!(snapshot = %id, "the report went to a former coordinator; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Ok((status, body)) => {
                let body = String::from_utf8_lossy(&body);
                if status == hyper::StatusCode::CONFLICT {
                    // The snapshot ended (it failed) while the report travelled.
                    debug!(snapshot = %id, "coordinator refused the report: {status} {body}");
                } else {
                    warn!(snapshot = %id, "coordinator refused the report: {status} {body}");
                }
                return;
            }
            Err(e) => {
                warn!(snapshot = %id, "report failed, retrying: {e}");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
