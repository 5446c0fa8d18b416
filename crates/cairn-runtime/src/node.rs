//! One node: its listener, channel senders, driver, reporter, admin API and,
//! on the coordinator, the snapshot timer.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_core::{Process, ProcessId};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::admin::{self, Shared};
use crate::client;
use crate::config::ClusterConfig;
use crate::coordinator::Coordinator;
use crate::driver::{Driver, PendingReport};
use crate::error::{Error, Result};
use crate::inbound::Inbound;
use crate::metrics::Metrics;
use crate::tracefile::TraceWriter;
use crate::transport::{Identity, Outbound, Outbounds, SenderLinks, run_outbound};
use cairn_store::{Part, StoredChannel};

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
    let listener = TcpListener::bind(&node.listen)
        .await
        .map_err(|e| Error::io(format!("node {name}: cannot listen on {}", node.listen), e))?;
    let admin_listener = TcpListener::bind(node.admin).await.map_err(|e| {
        Error::io(
            format!("node {name}: cannot serve the admin API on {}", node.admin),
            e,
        )
    })?;
    let trace = match &config.trace_dir {
        Some(dir) => Some(TraceWriter::create(dir, &name, 0)?),
        None => None,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let (cut_tx, cut_rx) = watch::channel(0u64);
    let (epoch_tx, epoch_rx) = watch::channel(0u64);
    let metrics = Arc::new(Metrics::default());
    let room = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();

    // Channel senders.
    let id = Identity {
        cluster: config.cluster.clone(),
        node: name.clone(),
        max_frame_bytes: config.max_frame_bytes,
    };
    let mut outbound = Outbounds::new(topo.channel_count());
    for &c in topo.outgoing(me) {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        outbound.insert(
            c,
            Outbound {
                tx,
                pending: pending.clone(),
            },
        );
        let address = config.nodes[topo.channel(c).to.index()].address.clone();
        tasks.spawn(run_outbound::<P::Message>(
            id.clone(),
            topo.channel_name(c),
            address,
            rx,
            SenderLinks {
                pending,
                room: room.clone(),
                metrics: metrics.clone(),
                epoch: epoch_rx.clone(),
                cut: cut_rx.clone(),
                shutdown: stop_rx.clone(),
            },
        ));
    }

    // Channel receivers.
    let (in_tx, in_rx) = mpsc::channel(4096);
    let inbound = Arc::new(Inbound::<P::Message>::new(
        config.cluster.clone(),
        me,
        topo.clone(),
        config.max_frame_bytes,
        in_tx,
        epoch_rx.clone(),
    ));
    tasks.spawn(inbound.run(listener, stop_rx.clone(), cut_rx.clone()));

    // Coordinator, reporter, admin API.
    let coordinator = (me == config.coordinator).then(|| {
        Arc::new(Mutex::new(Coordinator::new(
            topo.clone(),
            &config.cluster,
            &config.app.name,
            config.snapshots.timeout,
            config.snapshots.keep,
            metrics.clone(),
        )))
    });
    let (control_tx, control_rx) = mpsc::channel(64);
    let (commit_tx, commit_rx) = mpsc::unbounded_channel();
    if let Some(c) = &coordinator {
        tasks.spawn(admin::run_committer(
            store.clone(),
            c.clone(),
            config.snapshots.retain,
            commit_rx,
            stop_rx.clone(),
        ));
    }
    let shared = Arc::new(Shared {
        config: config.clone(),
        me,
        control: control_tx,
        metrics: metrics.clone(),
        coordinator: coordinator.clone(),
        cut: cut_tx,
        started: Instant::now(),
        store,
        commits: commit_tx,
        epoch: epoch_rx.clone(),
        initial: initial_json.clone(),
        stop_world: tokio::sync::Mutex::new(()),
    });
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    // The reporter encodes and persists local snapshots on a thread of its
    // own, so that a large state never stalls the driver's thread.
    let kept_initial = serde_json::to_vec(&initial_json)
        .is_ok_and(|b| b.len() <= KEEP_INITIAL_BYTES)
        .then(|| initial_json.clone());
    {
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
        let serve = axum::serve(admin_listener, app).with_graceful_shutdown(async move {
            let _ = admin_stop.changed().await;
        });
        if let Err(e) = serve.await {
            error!("admin API stopped: {e}");
        }
    });
    if let Some(c) = &coordinator {
        tasks.spawn(run_coordinator_timers(
            shared.clone(),
            c.clone(),
            stop_rx.clone(),
        ));
    }

    let seed = RandomState::new().hash_one((std::process::id(), me.0));
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
    info!(node = %name, address = %node.address, admin = %node.admin, app = %config.app.name, "node running");
    let mut driver = driver;
    driver.trace_dir = config.trace_dir.clone();
    driver.name = name.clone();
    driver.epoch_initial = Some(initial);
    driver.mode = config.snapshots.mode;
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
/// to the coordinator: in-process on the coordinator, over HTTP elsewhere,
/// retrying until the snapshot timeout.
async fn run_reporter(
    shared: Arc<Shared>,
    initial: Option<serde_json::Value>,
    mut reports: mpsc::UnboundedReceiver<PendingReport>,
    mut stop: watch::Receiver<bool>,
) {
    let config = shared.config.clone();
    loop {
        let pending = tokio::select! {
            _ = stop.changed() => return,
            r = reports.recv() => match r { Some(r) => r, None => return },
        };
        let began = Instant::now();
        let mut report = match pending() {
            Ok(r) => r,
            Err(e) => {
                error!("cannot encode a local snapshot: {e}");
                continue;
            }
        };
        let encoded = began.elapsed();
        let deadline = Instant::now() + config.snapshots.timeout;
        let mut part = Part {
            snapshot: report.snapshot.0,
            process: report.process.clone(),
            state: std::mem::take(&mut report.state),
            // Moved into the part and back after writing it, never copied.
            channels: std::mem::take(&mut report.channels)
                .into_iter()
                .map(|(name, messages)| StoredChannel { name, messages })
                .collect(),
            initial: initial.clone(),
        };
        while report.refused.is_none() {
            match shared.store.write_part(&part).await {
                Ok(r) => {
                    debug!(snapshot = %report.snapshot, bytes = r.bytes, encode_ms = encoded.as_secs_f64() * 1e3, write_ms = (began.elapsed() - encoded).as_secs_f64() * 1e3, "part durable");
                    // A large state travels no further than the store.
                    if r.bytes > INLINE_STATE_BYTES {
                        report.state_in_store = true;
                    } else {
                        report.state = std::mem::take(&mut part.state);
                    }
                    report.part = Some(r);
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    warn!(snapshot = %report.snapshot, "writing the part failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    error!(snapshot = %report.snapshot, "giving up on writing the part: {e}");
                    break;
                }
            }
        }
        report.channels = part
            .channels
            .into_iter()
            .map(|c| (c.name, c.messages))
            .collect();
        if let Some(c) = &shared.coordinator {
            if let Err(e) = admin::accept_report(&shared, c, report) {
                warn!("own report refused: {e}");
            }
            continue;
        }
        loop {
            match client::post_json::<_, serde_json::Value>(
                config.coordinator_admin(),
                "/internal/reports",
                &report,
            )
            .await
            {
                Ok((status, _)) if status.is_success() => break,
                Ok((status, body)) => {
                    warn!(snapshot = %report.snapshot, "coordinator refused the report: {status} {body}");
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    warn!("report failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    error!(snapshot = %report.snapshot, "giving up on the report: {e}");
                    break;
                }
            }
        }
    }
}

/// The coordinator starts a snapshot every interval, expires late ones, and
/// watches every node's heartbeat: a node silent for the failure timeout is
/// failed, and once every node answers again (a supervisor restarts the
/// dead) the cluster rolls back to the newest good snapshot.
async fn run_coordinator_timers(
    shared: Arc<Shared>,
    coordinator: Arc<Mutex<Coordinator>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut expire = tokio::time::interval(Duration::from_millis(50));
    let mut interval = shared.config.snapshots.interval.map(|d| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let failure_timeout = shared.config.snapshots.failure_timeout;
    let mut heartbeat = tokio::time::interval(Duration::from_millis(100));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let nodes = shared.config.nodes.clone();
    let mut last_ok: Vec<Instant> = vec![Instant::now(); nodes.len()];
    let mut failed: std::collections::BTreeSet<usize> = std::collections::BTreeSet::new();
    let mut pids: Vec<Option<u64>> = vec![None; nodes.len()];
    // A cluster that starts over a store with snapshots resumes from one:
    // the operator's restore point if `cairn restore` left one, else the newest good one.
    let mut resume: Option<Option<u64>> = match shared.store.take_restore_point().await {
        Ok(Some(id)) => Some(Some(id)),
        Ok(None) => match shared.store.list().await {
            Ok(ids) if !ids.is_empty() => Some(None),
            _ => None,
        },
        Err(e) => {
            warn!("cannot read the restore point: {e}");
            None
        }
    };
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = expire.tick() => coordinator.lock().unwrap_or_else(|p| p.into_inner()).expire(),
            _ = heartbeat.tick(), if failure_timeout.is_some() || resume.is_some() => {
                let limit = failure_timeout.unwrap_or_default();
                let before = coordinator.lock().unwrap_or_else(|p| p.into_inner()).epoch_state();
                let polls = nodes.iter().enumerate().filter(|(i, _)| *i != shared.me.index()).map(|(i, n)| async move {
                    let answer = tokio::time::timeout(Duration::from_millis(250), client::get_json::<serde_json::Value>(n.admin, "/status")).await;
                    (i, answer.ok().and_then(|r| r.ok()).map(|(_, v)| v))
                });
                let answers = futures_util::future::join_all(polls).await;
                let all_up = answers.iter().all(|(_, a)| a.is_some());
                let after = coordinator.lock().unwrap_or_else(|p| p.into_inner()).epoch_state();
                // Mid-rollback, a node not yet rolled back is behind without having failed.
                let settled = before == after && !after.1;
                let epoch = after.0;
                for (i, answer) in answers {
                    match answer {
                        Some(v) => {
                            last_ok[i] = Instant::now();
                            // A node that restarted lost its state, however fast it came back.
                            let pid = v["pid"].as_u64();
                            let restarted = pids[i].is_some() && pid != pids[i];
                            let behind = settled && v["epoch"].as_u64().is_some_and(|e| e < epoch);
                            if (restarted || behind) && failed.insert(i) {
                                warn!(node = %nodes[i].id, "node failed: it restarted and lost its state");
                            }
                            pids[i] = pid;
                        }
                        None if last_ok[i].elapsed() > limit && failed.insert(i) => {
                            warn!(node = %nodes[i].id, "node failed: no heartbeat for {limit:?}");
                        }
                        None => {}
                    }
                }
                if (!failed.is_empty() || resume.is_some()) && all_up {
                    match admin::roll_back(&shared, &coordinator, resume.flatten()).await {
                        Ok(v) => {
                            info!(snapshot = %v["snapshot"], epoch = %v["epoch"], "recovered: the cluster rolled back");
                            failed.clear();
                            resume = None;
                        }
                        Err((_, e)) => warn!("recovery failed, retrying: {e}"),
                    }
                }
            }
            _ = async { match &mut interval { Some(i) => { i.tick().await; } None => std::future::pending().await } } => {
                if !failed.is_empty() || resume.is_some() {
                    continue; // no snapshots while a node is down or the cluster resumes
                }
                if let Err(e) = admin::start_here(&shared).await {
                    warn!("could not start a scheduled snapshot: {e}");
                }
            }
        }
    }
}
