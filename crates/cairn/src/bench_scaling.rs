//! `cairn bench`, state-size scaling: snapshots of large states, stored in
//! chunks or whole, what they write, the pauses they cause, and recovery
//! from them; and the write floor they are measured against.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_store::{Manifest, Part, Store};
use serde::Serialize;
use serde_json::{Value, json};

use crate::bench_cmds::{Plan, Running, Variant, percentile};
/// How one state size fared.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Scaling {
    pub state_bytes: usize,
    pub nodes: usize,
    /// `chunks`: the bank's ballast stored in chunks, only changed ones
    /// written (the default); `paced`: the same, hashed and written at
    /// [`PACED_MB_PER_S`] past the burst (`snapshots.write_mb_per_s`);
    /// `whole`: stored in the part, every time.
    pub storage: &'static str,
    /// Bytes written per snapshot after the first (parts and new chunks),
    /// as a share of the states' bytes.
    pub written_share: Option<f64>,
    /// Bytes of state rewritten between two snapshots, as a share.
    pub changed_share: Option<f64>,
    pub snapshots: usize,
    pub latency_p50_ms: Option<f64>,
    pub floor_ms: Option<f64>,
    pub longest_pause_ms: f64,
    /// The longest pause over the snapshots after the first, which (in
    /// chunks) write only what changed: the first writes every chunk.
    pub later_pause_ms: Option<f64>,
    /// The longest pause in the same cluster over as long a stretch with no
    /// snapshot: the machine's own noise, to compare with.
    pub idle_pause_ms: f64,
    /// `POST /rollback` of the last snapshot, until every node runs it.
    pub recovery_ms: Option<f64>,
    /// Reading that snapshot's part files from the store, one after another.
    pub read_ms: Option<f64>,
    pub stored_bytes: u64,
    pub conserved: usize,
}

/// Median time to write `nodes` parts of `state_bytes` each, in parallel,
/// and commit their manifest, in a local store: the durable part of a
/// snapshot's latency floor.
pub async fn write_floor(root: &Path, nodes: usize, state_bytes: usize) -> Result<f64> {
    let dir = root.join(format!("floor-{nodes}-{state_bytes}"));
    let store = Store::open(&dir.display().to_string())?;
    let state = json!({"balance": 1, "ballast": "b".repeat(state_bytes)});
    let mut times = Vec::new();
    for id in 0..3u64 {
        let parts: Vec<Part> = (0..nodes)
            .map(|i| Part {
                snapshot: id,
                process: format!("n{}", i + 1),
                state: state.clone(),
                channels: Vec::new(),
                initial: None,
                epoch: 0,
                overtaken: Vec::new(),
            })
            .collect();
        let t = Instant::now();
        let mut writes = tokio::task::JoinSet::new();
        for p in parts {
            let store = store.clone();
            writes.spawn(async move { store.write_part(&p).await });
        }
        let mut refs = Vec::new();
        while let Some(r) = writes.join_next().await {
            refs.push(r.context("a part write panicked")??);
        }
        store
            .commit(&Manifest::new(id, 0, "floor", "bank", refs, Vec::new()))
            .await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_dir_all(&dir);
    times.sort_by(f64::total_cmp);
    Ok(times[1])
}

/// The share of the ballast rewritten each time, and how many transfers a
/// node receives between two rewrites: about 1% of it changes between two
/// snapshots at full load on this machine (the report gives the measured
/// share).
const CHURN: f64 = 0.001;
const CHURN_EVERY: u64 = 5000;

/// The pause between two snapshots of the scaling runs.
const SCALING_GAP: Duration = Duration::from_millis(100);

/// The pace of the `paced` scaling run: a 64 MiB state's first snapshot
/// takes about a second per node to hash and another to write.
pub const PACED_MB_PER_S: u64 = 64;

/// State-size scaling: Chandy–Lamport snapshots one after another on 4 nodes
/// whose state carries `state_bytes` of ballast that changes as it runs,
/// stored as `storage` says (see [`Scaling::storage`]); then a rollback to
/// the last.
pub async fn scale(
    root: &Path,
    plan: &Plan,
    state_bytes: usize,
    storage: &'static str,
    hop_ms: f64,
) -> Result<Scaling> {
    let nodes = 4;
    let variant = Variant {
        name: "scaling",
        raw: false,
        insecure: false,
        mode: "chandy-lamport",
        interval: None,
        overtake: "none",
        named_only: false,
        write_mb_per_s: if storage == "paced" {
            PACED_MB_PER_S
        } else {
            0
        },
    };
    let whole = storage == "whole";
    let label = format!("scale-{state_bytes}-{storage}");
    let app = format!(
        "state_bytes = {state_bytes}\nballast_churn = {CHURN}\nchurn_every = {CHURN_EVERY}\nchunked = {}",
        !whole
    );
    // What earlier runs left for the disk to write back is written now,
    // not during this run's idle window.
    let _ = tokio::process::Command::new("sync").status().await;
    let run = Running::start(root, &label, nodes, "complete", &variant, &app).await?;
    let diameter = run.config.topology.diameter().unwrap_or(0);
    let result = scale_running(&run, plan, state_bytes, storage).await;
    run.stop().await;
    let mut s = result?;
    s.floor_ms = Some(
        hop_ms * crate::bench_cmds::marker_hops(diameter) as f64
            + write_floor(root, nodes, state_bytes).await?,
    );
    Ok(s)
}

async fn scale_running(
    run: &Running,
    plan: &Plan,
    state_bytes: usize,
    storage: &'static str,
) -> Result<Scaling> {
    let mut s = Scaling {
        state_bytes,
        nodes: run.config.nodes.len(),
        storage,
        ..Scaling::default()
    };
    let store = Store::open(&run.config.store)?;
    let mut churn = Churned::default();
    tokio::time::sleep(plan.warm_up).await;
    run.reset_peaks().await?;
    let idle_from = Instant::now();
    let mut latencies = Vec::new();
    let mut last = None;
    let mut first_pause_ms = 0.0;
    for i in 0..plan.scaling_snapshots {
        if i == 0 {
            // First the noise: as long with no snapshot as the window.
            tokio::time::sleep(plan.window.saturating_sub(idle_from.elapsed())).await;
            s.idle_pause_ms = longest_pause_ms(run).await?;
            run.reset_peaks().await?;
        }
        if i > 0 {
            tokio::time::sleep(SCALING_GAP).await;
        }
        let Some(id) = run.snapshot().await? else {
            bail!("the coordinator refused a snapshot");
        };
        let summary = run.settled(&[id], Duration::from_secs(120)).await?;
        match summary.first().and_then(|v| v["durable_ms"].as_f64()) {
            Some(ms) => latencies.push(ms),
            None => bail!(
                "snapshot {id} of {state_bytes}-byte states did not become durable: {summary:?}"
            ),
        }
        churn.add(&store, id, state_bytes).await?;
        if i == 0 {
            first_pause_ms = longest_pause_ms(run).await?;
            run.reset_peaks().await?;
        }
        last = Some(id);
    }
    (s.written_share, s.changed_share) = churn.shares(s.nodes * state_bytes);
    s.snapshots = latencies.len();
    latencies.sort_by(f64::total_cmp);
    s.latency_p50_ms = percentile(&latencies, 0.5);
    let later = longest_pause_ms(run).await?;
    s.longest_pause_ms = later.max(first_pause_ms);
    s.later_pause_ms = (plan.scaling_snapshots > 1).then_some(later);
    let Some(id) = last else { return Ok(s) };
    // Conservation, from the store itself.
    let stored = store.load(id, &mut |_, _| {}).await?;
    let doc =
        serde_json::from_value(stored.to_json(crate::cluster_cmds::message_decoder("bank"))?)?;
    let total = 100_000 * s.nodes as u64;
    match cairn_apps::conserved_totals("bank", &doc) {
        Some(Ok((held, flying))) if held + flying == total => s.conserved = 1,
        other => bail!("snapshot {id} does not conserve {total}: {other:?}"),
    }
    // The bytes a recovery must read, read plainly.
    let manifest = store.manifest(id).await?;
    let t = Instant::now();
    for p in &manifest.parts {
        s.stored_bytes += store.raw(&p.key).await?.len() as u64;
        for c in &p.chunks {
            s.stored_bytes += store.raw(&c.object).await?.len() as u64;
        }
    }
    s.read_ms = Some(t.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    let (status, answer): (_, Value) = run
        .client
        .post_json(
            run.config.coordinator_admin(),
            "/rollback",
            &json!({ "snapshot": id }),
        )
        .await?;
    if !status.is_success() {
        bail!("rollback to snapshot {id} failed: {answer}");
    }
    s.recovery_ms = Some(t.elapsed().as_secs_f64() * 1e3);
    Ok(s)
}

/// What the scaling snapshots wrote and how much the states changed between
/// them, from the store: a chunk object the previous snapshot did not name
/// was written for this one; a state's churn counter says how many windows
/// of its ballast were rewritten.
#[derive(Default)]
struct Churned {
    objects: std::collections::BTreeSet<String>,
    received: std::collections::BTreeMap<String, u64>,
    snapshots: u64,
    written: u64,
    changed: u64,
}

impl Churned {
    async fn add(&mut self, store: &Store, id: u64, state_bytes: usize) -> Result<()> {
        let m = store.manifest(id).await?;
        let window = (state_bytes as f64 * CHURN).ceil() as u64;
        let (mut written, mut changed) = (0, 0);
        let mut objects = std::collections::BTreeSet::new();
        for p in &m.parts {
            written += p.bytes;
            for c in &p.chunks {
                if !self.objects.contains(&c.object) {
                    written += c.bytes;
                }
                objects.insert(c.object.clone());
            }
            let part = store.read_part(p).await?;
            let received = part.state["churn"]["received"].as_u64().unwrap_or(0);
            let before = self.received.insert(p.process.clone(), received);
            let turns = received / CHURN_EVERY - before.unwrap_or(0) / CHURN_EVERY;
            changed += (turns * window).min(state_bytes as u64);
        }
        self.objects = objects;
        if self.snapshots > 0 {
            self.written += written;
            self.changed += changed;
        }
        self.snapshots += 1;
        Ok(())
    }

    /// Mean written and changed shares over every snapshot but the first.
    fn shares(&self, total: usize) -> (Option<f64>, Option<f64>) {
        let n = self.snapshots.saturating_sub(1);
        if n == 0 || total == 0 {
            return (None, None);
        }
        let share = |b: u64| Some(b as f64 / n as f64 / total as f64);
        (share(self.written), share(self.changed))
    }
}

/// The longest pause at any node since the peaks were reset, in ms.
async fn longest_pause_ms(run: &Running) -> Result<f64> {
    Ok(run
        .statuses()
        .await?
        .iter()
        .filter_map(|v| v["longest_pause_us"].as_u64())
        .max()
        .unwrap_or(0) as f64
        / 1e3)
}
