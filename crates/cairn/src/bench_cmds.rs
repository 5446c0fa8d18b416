//! `cairn bench`: what a snapshot costs a running cluster, side by side with
//! the physical floor and the alternatives. Every variant runs the same bank
//! application at full speed on loopback, one variant after another in one
//! run (these machines are noisy, so the figures that matter are ratios):
//!
//! 1. `raw`: the raw framed-TCP baseline (`cairn node --raw-baseline`);
//! 2. `off`: Cairn with no snapshots;
//! 3. `cl-1s`, `cl-100ms`: Chandy–Lamport every second and every 100 ms;
//!    `cl-100ms-overtake`: every 100 ms with markers that overtake queued
//!    messages on both sides (`cl-100ms-sender` and `cl-100ms-receiver`,
//!    one side each, run only when `--only` names them);
//! 4. `stw-100ms`: stop-the-world every 100 ms;
//! 5. `aligned-100ms`: aligned barriers every 100 ms.
//!
//! Snapshots are persisted to a local store in a temporary folder. The
//! state-size section and the report live in `bench_report.rs`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_runtime::ClusterConfig;
use cairn_runtime::client::AdminClient;
use cairn_runtime::cluster::Supervisor;
use serde::Serialize;
use serde_json::{Value, json};

use crate::demo_cluster::loopback_nodes;

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub nodes: Vec<usize>,
    pub topologies: Vec<String>,
    pub warm_up: Duration,
    pub window: Duration,
    pub state_sizes: Vec<usize>,
    pub scaling_snapshots: usize,
    /// Variants to run; all when empty.
    pub only: Vec<String>,
    /// Each shape runs every variant this many times, interleaved; the
    /// report takes medians (the machine is noisy).
    pub rounds: usize,
    /// Pairs of 0.5 s windows (snapshots off, then every 100 ms) in the
    /// paired comparison.
    pub pairs: usize,
}

impl Plan {
    /// Whether the paired on/off comparison runs: in a full run, or when
    /// `--only` names both its halves (`off` and `cl-100ms`).
    pub fn runs_paired(&self) -> bool {
        let named = |v: &str| self.only.iter().any(|o| o == v);
        self.only.is_empty() || (named("off") && named("cl-100ms"))
    }

    /// The variants this plan runs.
    pub fn variants(&self) -> Vec<Variant> {
        VARIANTS
            .into_iter()
            .filter(|v| match self.only.is_empty() {
                true => !v.named_only,
                false => self.only.iter().any(|o| o == v.name),
            })
            .collect()
    }

    /// The full run, or the quick one CI takes (every figure, fewer and shorter runs).
    pub fn new(quick: bool) -> Self {
        if quick {
            Plan {
                nodes: vec![4],
                topologies: vec!["complete".into()],
                warm_up: Duration::from_millis(500),
                window: Duration::from_millis(1500),
                state_sizes: vec![1 << 10, 1 << 20],
                scaling_snapshots: 2,
                only: Vec::new(),
                rounds: 1,
                pairs: 2,
            }
        } else {
            Plan {
                nodes: vec![4, 8],
                topologies: vec!["complete".into(), "ring".into()],
                warm_up: Duration::from_secs(1),
                window: Duration::from_secs(4),
                state_sizes: vec![1 << 10, 1 << 20, 64 << 20],
                scaling_snapshots: 4,
                only: Vec::new(),
                rounds: 3,
                pairs: 10,
            }
        }
    }
}

/// One variant of a cluster run.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub name: &'static str,
    pub raw: bool,
    /// Plain TCP and HTTP instead of TLS (to measure what TLS costs).
    pub insecure: bool,
    pub mode: &'static str,
    pub interval: Option<Duration>,
    /// Where markers overtake queued messages: `snapshots.overtake`.
    pub overtake: &'static str,
    /// Runs only when `--only` names it (one side of overtaking at a time,
    /// to tell the sides apart).
    pub named_only: bool,
    /// `snapshots.write_mb_per_s` (0: no limit).
    pub write_mb_per_s: u64,
}

pub const VARIANTS: [Variant; 11] = [
    Variant {
        name: "raw",
        raw: true,
        insecure: false,
        mode: "chandy-lamport",
        interval: None,
        overtake: "none",
        named_only: false,
        write_mb_per_s: 0,
    },
    Variant {
        name: "off",
        raw: false,
        insecure: false,
        mode: "chandy-lamport",
        interval: None,
        overtake: "none",
        named_only: false,
        write_mb_per_s: 0,
    },
    Variant {
        name: "off-insecure",
        raw: false,
        insecure: true,
        mode: "chandy-lamport",
        interval: None,
        overtake: "none",
        named_only: false,
        write_mb_per_s: 0,
    },
    Variant {
        name: "cl-1s",
        raw: false,
        insecure: false,
        mode: "chandy-lamport",
        interval: Some(Duration::from_secs(1)),
        overtake: "none",
        named_only: false,
        write_mb_per_s: 0,
    },
    Variant {
        name: "cl-100ms",
        raw: false,
        insecure: false,
        mode: "chandy-lamport",
        interval: Some(Duration::from_millis(100)),
        overtake: "none",
        named_only: false,
        write_mb_per_s: 0,
    },
    Variant {
        name: "cl-100ms-overtake",
        raw: false,
        insecure: false,
        mode: "chandy-lamport",
        interval: Some(Duration::from_millis(100)),
        overtake: "both",
        named_only: false,
        write_mb_per_s: 0,
    },
    Variant {
        name: "cl-100ms-sender",
        raw: false,
        insecure: false,
        mode: "chandy-lamport",
        interval: Some(Duration::from_millis(100)),
        overtake: "sender",
        named_only: true,
        write_mb_per_s: 0,
    },
    Variant {
        name: "cl-100ms-receiver",
        raw: false,
        insecure: false,
        mode: "chandy-lamport",
        interval: Some(Duration::from_millis(100)),
        overtake: "receiver",
        named_only: true,
        write_mb_per_s: 0,
    },
    Variant {
        name: "cl-100ms-insecure",
        raw: false,
        insecure: true,
        mode: "chandy-lamport",
        interval: Some(Duration::from_millis(100)),
        overtake: "none",
        named_only: false,
        write_mb_per_s: 0,
    },
    Variant {
        name: "stw-100ms",
        raw: false,
        insecure: false,
        mode: "stop-the-world",
        interval: Some(Duration::from_millis(100)),
        overtake: "none",
        named_only: false,
        write_mb_per_s: 0,
    },
    Variant {
        name: "aligned-100ms",
        raw: false,
        insecure: false,
        mode: "aligned",
        interval: Some(Duration::from_millis(100)),
        overtake: "none",
        named_only: false,
        write_mb_per_s: 0,
    },
];

/// What one variant measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Measured {
    pub variant: String,
    pub nodes: usize,
    pub topology: String,
    pub channels: usize,
    pub diameter: usize,
    /// Application messages received per second, all nodes together.
    pub throughput: f64,
    pub vs_raw: Option<f64>,
    pub vs_off: Option<f64>,
    /// Against the same variant without TLS, in the same round (secure
    /// variants that have an insecure twin only).
    pub vs_insecure: Option<f64>,
    /// Snapshots started in the window, and how many became durable.
    pub snapshots: usize,
    pub durable: usize,
    /// Start to durable, in milliseconds.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Hop latency × [`marker_hops`] + the time to write the state bytes.
    pub floor_ms: Option<f64>,
    /// The longest pause in message processing at any node, in milliseconds.
    pub longest_pause_ms: f64,
    /// Markers sent per snapshot; must equal `channels`.
    pub markers_per_snapshot: Option<f64>,
    pub markers_exact: Option<bool>,
    /// Snapshots whose money added up (each one fetched and checked).
    pub conserved: usize,
    /// CPU time the node processes spent per message received, in
    /// nanoseconds (user + system, from /proc): steadier than throughput on
    /// a shared machine, since time the machine gives to others is not in it.
    pub cpu_ns_per_msg: Option<f64>,
    /// That cost relative to snapshots off (below 1 is cheaper).
    pub cpu_vs_off: Option<f64>,
    /// Frames sent again after a reconnect: must be 0 on loopback.
    pub frames_resent: u64,
    /// Messages markers overtook (`cl-100ms-overtake`), all nodes together.
    pub messages_overtaken: u64,
    /// Raw only: one hop's latency under load, send to processing (µs).
    pub hop_p50_us: Option<f64>,
    /// How many runs these figures come from.
    pub rounds: usize,
    /// Every durable snapshot's latency, pooled over the rounds.
    #[serde(skip)]
    pub latencies: Vec<f64>,
}

/// A cluster of one variant: its folder, config and children.
pub struct Running {
    pub dir: PathBuf,
    pub config: ClusterConfig,
    pub client: AdminClient,
    sup: Option<Supervisor>,
}

impl Running {
    /// Writes a config for `nodes` bank nodes in `topology` and starts them;
    /// `app` adds lines to the bank's parameters.
    pub async fn start(
        root: &Path,
        label: &str,
        nodes: usize,
        topology: &str,
        variant: &Variant,
        app: &str,
    ) -> Result<Self> {
        let dir = root.join(label);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut toml = format!(
            "cluster = \"bench\"\ncoordinator = \"n1\"\nchannels = \"{topology}\"\ndata_dir = {:?}\n\n\
             [app]\nname = \"bank\"\ninitial_balance = 100000\nmax_transfer = 10\n{app}\n\
             [snapshots]\nmode = \"{}\"\novertake = \"{}\"\ntimeout_ms = 20000\nkeep = 100000\nretain = {}\nfailure_timeout_ms = 0\nwrite_mb_per_s = {}\n",
            dir.join("data"),
            variant.mode,
            variant.overtake,
            // Every snapshot is checked for conservation after the run, read
            // from the store (where channel states are); the scaling runs,
            // whose states are large, check only their last one.
            if app.is_empty() { 100_000 } else { 3 },
            variant.write_mb_per_s,
        );
        // Secure like any real cluster, unless the variant measures without
        // TLS (the raw baseline is plain framed TCP by definition).
        let ids: Vec<String> = (1..=nodes).map(|i| format!("n{i}")).collect();
        let certs = root.join("certs");
        cairn_runtime::tls::certs::ensure_cluster(&certs, &ids)?;
        toml = if variant.insecure || variant.raw {
            format!("insecure = true\n{toml}")
        } else {
            format!("tls = {{ certs_dir = {certs:?} }}\n{toml}")
        };
        toml += &loopback_nodes(nodes)?;
        let path = dir.join("cluster.toml");
        std::fs::write(&path, toml)?;
        let config = ClusterConfig::load(&path)?;
        let client = crate::cluster_cmds::operator(&config)?;
        let exe = std::env::current_exe().context("cannot find the cairn executable")?;
        let args: &[&str] = if variant.raw {
            &["--raw-baseline"]
        } else {
            &[]
        };
        // The nodes log errors only, unless CAIRN_BENCH_LOG asks for more.
        let log = std::env::var("CAIRN_BENCH_LOG").unwrap_or_else(|_| "error".into());
        let mut sup =
            Supervisor::spawn_with_args(&exe, &path, &config, &[("RUST_LOG", &log)], args)?;
        if let Err(e) = sup
            .wait_ready(&config, &client, Duration::from_secs(30))
            .await
        {
            sup.stop(Duration::from_secs(3)).await;
            bail!(e);
        }
        Ok(Running {
            dir,
            config,
            client,
            sup: Some(sup),
        })
    }

    /// Every node's `/status`.
    pub async fn statuses(&self) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for n in &self.config.nodes {
            let (_, v): (_, Value) = self.client.get_json(n.admin, "/status").await?;
            out.push(v);
        }
        Ok(out)
    }

    /// Sum of one counter over the nodes.
    pub async fn total(&self, key: &str) -> Result<u64> {
        Ok(sum(&self.statuses().await?, key))
    }

    /// Forgets every node's longest pause.
    pub async fn reset_peaks(&self) -> Result<()> {
        for n in &self.config.nodes {
            self.client
                .post_json::<_, Value>(n.admin, "/metrics/reset-peaks", &json!({}))
                .await?;
        }
        Ok(())
    }

    /// Starts one snapshot at the coordinator; its id.
    pub async fn snapshot(&self) -> Result<Option<u64>> {
        let (status, v): (_, Value) = self
            .client
            .post_json(self.config.coordinator_admin(), "/snapshots", &json!({}))
            .await?;
        Ok(status.is_success().then(|| v["id"].as_u64()).flatten())
    }

    /// The coordinator's summaries of `ids`, once none is in progress (or
    /// `timeout` passed).
    pub async fn settled(&self, ids: &[u64], timeout: Duration) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, list): (_, Vec<Value>) = self
                .client
                .get_json(self.config.coordinator_admin(), "/snapshots")
                .await?;
            let mine: Vec<Value> = list
                .into_iter()
                .filter(|s| s["id"].as_u64().is_some_and(|id| ids.contains(&id)))
                .collect();
            let waiting = mine.iter().any(|s| {
                s["status"] == "in_progress"
                    || (s["status"] == "complete" && s["durable_ms"].is_null())
            });
            if !waiting || Instant::now() > deadline {
                return Ok(mine);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// CPU time (user + system) the node processes have used, in clock
    /// ticks; `None` where /proc does not tell.
    pub fn cpu_ticks(&self) -> Option<u64> {
        let sup = self.sup.as_ref()?;
        let mut total = 0;
        for n in &self.config.nodes {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", sup.pid(&n.id)?)).ok()?;
            // The fields after the command name, which is in parentheses.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            total += f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        }
        Some(total)
    }

    /// Stops the nodes and removes the folder.
    pub async fn stop(mut self) {
        if let Some(sup) = self.sup.take() {
            sup.stop(Duration::from_secs(10)).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs one variant on one cluster shape and measures it.
pub async fn measure(
    root: &Path,
    plan: &Plan,
    nodes: usize,
    topology: &str,
    variant: &Variant,
) -> Result<Measured> {
    let label = format!("{}-{nodes}-{topology}", variant.name);
    let run = Running::start(root, &label, nodes, topology, variant, "").await?;
    let result = measure_running(&run, plan, variant).await;
    run.stop().await;
    let mut m = result?;
    m.rounds = 1;
    m.variant = variant.name.to_string();
    m.nodes = nodes;
    m.topology = topology.to_string();
    Ok(m)
}

async fn measure_running(run: &Running, plan: &Plan, variant: &Variant) -> Result<Measured> {
    let topo = &run.config.topology;
    let mut m = Measured {
        channels: topo.channel_count(),
        diameter: topo.diameter().unwrap_or(0),
        ..Measured::default()
    };
    tokio::time::sleep(plan.warm_up).await;
    run.reset_peaks().await?;
    let before = run.statuses().await?;
    let markers_before = sum(&before, "markers_sent");
    let received_before = sum(&before, "messages_received");
    let cpu_before = run.cpu_ticks();
    let started = Instant::now();
    let mut ids = Vec::new();
    if let Some(every) = variant.interval {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        while started.elapsed() + every <= plan.window {
            tick.tick().await;
            if let Some(id) = run.snapshot().await? {
                ids.push(id);
            }
        }
    }
    let left = plan.window.saturating_sub(started.elapsed());
    tokio::time::sleep(left).await;
    let statuses = run.statuses().await?;
    let received = sum(&statuses, "messages_received") - received_before;
    if let (Some(a), Some(b)) = (cpu_before, run.cpu_ticks()) {
        // Linux counts CPU time in ticks of 1/100 s (USER_HZ).
        let cpu_ns = (b - a) as f64 * 1e7;
        m.cpu_ns_per_msg = (received > 0).then(|| cpu_ns / received as f64);
    }
    let elapsed = started.elapsed().as_secs_f64();
    m.throughput = received as f64 / elapsed;
    m.frames_resent = sum(&statuses, "frames_resent");
    m.messages_overtaken = sum(&statuses, "messages_overtaken");
    m.longest_pause_ms = statuses
        .iter()
        .filter_map(|v| v["longest_pause_us"].as_u64())
        .max()
        .unwrap_or(0) as f64
        / 1e3;
    if variant.raw {
        let mut p50s: Vec<f64> = statuses
            .iter()
            .filter_map(|v| v["latency_us"]["p50"].as_f64())
            .collect();
        p50s.sort_by(f64::total_cmp);
        m.hop_p50_us = p50s.get(p50s.len() / 2).copied();
        return Ok(m);
    }
    m.snapshots = ids.len();
    if ids.is_empty() {
        return Ok(m);
    }
    let summaries = run.settled(&ids, Duration::from_secs(30)).await?;
    let markers = run.total("markers_sent").await? - markers_before;
    m.markers_per_snapshot = Some(markers as f64 / ids.len() as f64);
    m.markers_exact = Some(markers == (ids.len() * m.channels) as u64);
    let mut latencies: Vec<f64> = summaries
        .iter()
        .filter_map(|s| s["durable_ms"].as_f64())
        .collect();
    m.durable = latencies.len();
    latencies.sort_by(f64::total_cmp);
    m.latency_p50_ms = percentile(&latencies, 0.5);
    m.latency_p99_ms = percentile(&latencies, 0.99);
    m.latencies = latencies;
    m.conserved = conserved(run, &summaries).await?;
    Ok(m)
}

/// The paired comparison: one Chandy–Lamport cluster, alternating windows
/// with no snapshot and with one every 100 ms, so that both halves of each
/// pair share processes, connections and the machine's mood. Returns the
/// median throughput ratio and the median CPU-per-message ratio (on / off).
pub async fn paired(
    root: &Path,
    plan: &Plan,
    nodes: usize,
    topology: &str,
) -> Result<(f64, Option<f64>, usize)> {
    let variant = VARIANTS
        .into_iter()
        .find(|v| v.name == "cl-100ms")
        .expect("cl-100ms is a variant");
    let label = format!("paired-{nodes}-{topology}");
    let run = Running::start(root, &label, nodes, topology, &variant, "").await?;
    let result = async {
        tokio::time::sleep(plan.warm_up).await;
        let half = Duration::from_millis(500);
        let (mut ratios, mut cpu_ratios, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for pair in 0..plan.pairs {
            let mut figures = [(0.0, None); 2];
            // Alternate which half goes first, so drift cancels.
            let order = if pair % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for on in order {
                let received = run.total("messages_received").await?;
                let cpu = run.cpu_ticks();
                let started = Instant::now();
                if on {
                    let mut tick = tokio::time::interval(Duration::from_millis(100));
                    tick.tick().await;
                    while started.elapsed() + Duration::from_millis(100) <= half {
                        tick.tick().await;
                        ids.extend(run.snapshot().await?);
                    }
                }
                tokio::time::sleep(half.saturating_sub(started.elapsed())).await;
                let n = run.total("messages_received").await? - received;
                let rate = n as f64 / started.elapsed().as_secs_f64();
                let cpu = cpu
                    .zip(run.cpu_ticks())
                    .filter(|_| n > 0)
                    .map(|(a, b)| (b - a) as f64 / n as f64);
                figures[usize::from(on)] = (rate, cpu);
            }
            let [(off, off_cpu), (on, on_cpu)] = figures;
            if off > 0.0 {
                ratios.push(on / off);
            }
            if let (Some(a), Some(b)) = (off_cpu, on_cpu) {
                if a > 0.0 {
                    cpu_ratios.push(b / a);
                }
            }
        }
        let summaries = run.settled(&ids, Duration::from_secs(30)).await?;
        let good = conserved(&run, &summaries).await?;
        if good != ids.len() {
            bail!(
                "paired run: {good} of {} snapshots conserved the money",
                ids.len()
            );
        }
        ratios.sort_by(f64::total_cmp);
        cpu_ratios.sort_by(f64::total_cmp);
        Ok((
            percentile(&ratios, 0.5).unwrap_or(0.0),
            percentile(&cpu_ratios, 0.5),
            ratios.len(),
        ))
    }
    .await;
    run.stop().await;
    result
}

/// Fetches every complete snapshot and counts those whose money adds up.
pub async fn conserved(run: &Running, summaries: &[Value]) -> Result<usize> {
    let total = 100_000 * run.config.nodes.len() as u64;
    let mut good = 0;
    for s in summaries.iter().filter(|s| s["status"] == "complete") {
        let (status, doc): (_, Value) = run
            .client
            .get_json(
                run.config.coordinator_admin(),
                &format!("/snapshots/{}", s["id"]),
            )
            .await?;
        if !status.is_success() {
            continue;
        }
        let doc = serde_json::from_value(doc)?;
        match cairn_apps::conserved_totals("bank", &doc) {
            Some(Ok((held, flying))) if held + flying == total => good += 1,
            other => bail!("snapshot {} does not conserve {total}: {other:?}", s["id"]),
        }
    }
    Ok(good)
}

/// Sum of one counter over the nodes' statuses.
fn sum(statuses: &[Value], key: &str) -> u64 {
    statuses.iter().map(|v| v[key].as_u64().unwrap_or(0)).sum()
}

/// The `q`-quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied()
}

/// The fewest marker hops before a snapshot can be complete, on a
/// topology whose diameter is `diameter` (a symmetric one, as `cairn bench`
/// runs, where the initiator's farthest process is `diameter` hops away).
/// That process records `diameter` hops after the initiator, and its own
/// markers take one more hop to record its outgoing channels: a complete
/// graph needs 2 hops, a ring of n processes n.
pub fn marker_hops(diameter: usize) -> usize {
    if diameter == 0 { 0 } else { diameter + 1 }
}

#[cfg(test)]
mod tests {
    use super::marker_hops;
    use cairn_core::Topology;

    /// Invariant: the floor counts the hops a snapshot cannot complete
    /// without — the farthest process's record, then its markers' hop.
    #[test]
    fn the_floor_counts_the_last_markers_hop() {
        let names: Vec<String> = (1..=4).map(|i| format!("n{i}")).collect();
        let complete = Topology::new(names.clone(), &Topology::complete_pairs(&names)).unwrap();
        let ring = Topology::new(names.clone(), &Topology::ring_pairs(&names)).unwrap();
        assert_eq!(marker_hops(complete.diameter().unwrap()), 2);
        assert_eq!(marker_hops(ring.diameter().unwrap()), 4);
        assert_eq!(marker_hops(0), 0, "one process: no channel, no hop");
    }
}
