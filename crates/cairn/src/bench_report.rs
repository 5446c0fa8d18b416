//! `cairn bench`, continued: the whole run in order, and its report (tables
//! for people, `--json` for programs). State-size scaling is in
//! `bench_scaling`.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Value, json};

use crate::bench_cmds::{Measured, Plan, marker_hops, measure, percentile};
pub use crate::bench_scaling::Scaling;
use crate::bench_scaling::{scale, write_floor};

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Value,
    pub quick: bool,
    /// Every variant ran (no `--only`).
    pub complete: bool,
    pub window_s: f64,
    pub runs: Vec<Measured>,
    pub scaling: Vec<Scaling>,
    pub write_floor_ms: Vec<Value>,
    /// Chandy–Lamport every 100 ms against off, paired in one cluster.
    pub paired: Vec<Value>,
}

/// The machine the figures came from.
pub fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string());
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kib| (kib / 1048576.0 * 10.0).round() / 10.0);
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu,
        "memory_gib": mem_gib,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// Runs everything in `plan`, printing progress on stderr.
pub async fn run(plan: &Plan, quick: bool) -> Result<Report> {
    let root = std::env::temp_dir().join(format!("cairn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let result = run_in(&root, plan, quick).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn run_in(root: &Path, plan: &Plan, quick: bool) -> Result<Report> {
    let mut runs = Vec::new();
    let mut floors = Vec::new();
    let mut hop_ms_4 = None;
    let variants = plan.variants();
    let shapes = plan.nodes.len() * plan.topologies.len();
    let total = shapes * variants.len() * plan.rounds
        + if plan.runs_paired() { shapes } else { 0 }
        + plan.state_sizes.len()
        + usize::from(!plan.state_sizes.is_empty())
        + usize::from(paced_row(plan).is_some());
    let mut step = 0;
    for &nodes in &plan.nodes {
        let write_ms = write_floor(root, nodes, 16).await?;
        floors.push(json!({"nodes": nodes, "state_bytes": 16, "ms": write_ms}));
        for topology in &plan.topologies {
            // Rounds interleave the variants, so slow spells of the machine
            // fall on all of them; ratios are taken within a round.
            let mut rounds: Vec<Vec<Measured>> = Vec::new();
            for round in 0..plan.rounds {
                let mut group: Vec<Measured> = Vec::new();
                for v in &variants {
                    step += 1;
                    eprintln!(
                        "[{step}/{total}] {} on {nodes} nodes, {topology} (round {}) ...",
                        v.name,
                        round + 1
                    );
                    group.push(measure(root, plan, nodes, topology, v).await?);
                }
                let raw = group
                    .iter()
                    .find(|m| m.variant == "raw")
                    .map(|m| m.throughput);
                let off = group
                    .iter()
                    .find(|m| m.variant == "off")
                    .map(|m| m.throughput);
                let off_cpu = group
                    .iter()
                    .find(|m| m.variant == "off")
                    .and_then(|m| m.cpu_ns_per_msg);
                // TLS against none: each secure variant against its insecure twin.
                let twins: Vec<(String, f64)> = group
                    .iter()
                    .filter_map(|m| {
                        Some((
                            m.variant.strip_suffix("-insecure")?.to_string(),
                            m.throughput,
                        ))
                    })
                    .collect();
                for m in &mut group {
                    m.vs_insecure = twins
                        .iter()
                        .find(|(name, t)| *name == m.variant && *t > 0.0)
                        .map(|(_, t)| m.throughput / t);
                    m.vs_raw = raw.filter(|r| *r > 0.0).map(|r| m.throughput / r);
                    m.vs_off = off.filter(|r| *r > 0.0).map(|r| m.throughput / r);
                    m.cpu_vs_off = off_cpu
                        .zip(m.cpu_ns_per_msg)
                        .filter(|(o, _)| *o > 0.0)
                        .map(|(o, c)| c / o);
                }
                rounds.push(group);
            }
            let mut group: Vec<Measured> = (0..variants.len())
                .map(|i| aggregate(rounds.iter().map(|g| g[i].clone()).collect()))
                .collect();
            let hop_ms = group.iter().find_map(|m| m.hop_p50_us).map(|us| us / 1e3);
            if nodes == 4 && hop_ms_4.is_none() {
                hop_ms_4 = hop_ms;
            }
            for m in &mut group {
                if m.snapshots > 0 {
                    m.floor_ms = hop_ms.map(|h| h * marker_hops(m.diameter) as f64 + write_ms);
                }
            }
            runs.extend(group);
        }
    }
    let mut paired = Vec::new();
    if plan.runs_paired() {
        for &nodes in &plan.nodes {
            for topology in &plan.topologies {
                step += 1;
                eprintln!("[{step}/{total}] paired on/off on {nodes} nodes, {topology} ...");
                let (ratio, cpu, pairs) =
                    crate::bench_cmds::paired(root, plan, nodes, topology).await?;
                paired.push(json!({"nodes": nodes, "topology": topology, "pairs": pairs, "throughput_vs_off": ratio, "cpu_vs_off": cpu}));
            }
        }
    }
    let mut scaling = Vec::new();
    // Every size in chunks (the default), and the largest paced (when
    // pacing applies to it) and whole as well.
    let largest = plan.state_sizes.iter().max().copied();
    let rows = plan
        .state_sizes
        .iter()
        .map(|&size| (size, "chunks"))
        .chain(paced_row(plan).map(|size| (size, "paced")))
        .chain(largest.map(|size| (size, "whole")));
    for (size, storage) in rows {
        step += 1;
        eprintln!(
            "[{step}/{total}] state of {} per process{} ...",
            bytes(size as u64),
            match storage {
                "paced" => ", chunks written at a pace",
                "whole" => ", stored whole",
                _ => "",
            }
        );
        scaling.push(scale(root, plan, size, storage, hop_ms_4.unwrap_or(0.0)).await?);
    }
    Ok(Report {
        machine: machine(),
        quick,
        complete: plan.only.is_empty(),
        window_s: plan.window.as_secs_f64(),
        runs,
        scaling,
        write_floor_ms: floors,
        paired,
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// One variant's rounds as one row: medians of throughput and ratios,
/// latencies pooled, the longest pause, counts summed.
fn aggregate(rounds: Vec<Measured>) -> Measured {
    let mut m = rounds[0].clone();
    m.rounds = rounds.len();
    m.throughput = median(rounds.iter().map(|r| r.throughput).collect()).unwrap_or(0.0);
    m.vs_raw = median(rounds.iter().filter_map(|r| r.vs_raw).collect());
    m.vs_off = median(rounds.iter().filter_map(|r| r.vs_off).collect());
    m.vs_insecure = median(rounds.iter().filter_map(|r| r.vs_insecure).collect());
    m.hop_p50_us = median(rounds.iter().filter_map(|r| r.hop_p50_us).collect());
    m.cpu_ns_per_msg = median(rounds.iter().filter_map(|r| r.cpu_ns_per_msg).collect());
    m.cpu_vs_off = median(rounds.iter().filter_map(|r| r.cpu_vs_off).collect());
    m.longest_pause_ms = rounds
        .iter()
        .map(|r| r.longest_pause_ms)
        .fold(0.0, f64::max);
    m.snapshots = rounds.iter().map(|r| r.snapshots).sum();
    m.durable = rounds.iter().map(|r| r.durable).sum();
    m.conserved = rounds.iter().map(|r| r.conserved).sum();
    m.frames_resent = rounds.iter().map(|r| r.frames_resent).sum();
    m.messages_overtaken = rounds.iter().map(|r| r.messages_overtaken).sum();
    m.markers_exact = rounds
        .iter()
        .map(|r| r.markers_exact)
        .reduce(|a, b| Some(a? && b?))
        .flatten();
    let started: usize = m.snapshots;
    m.markers_per_snapshot = (started > 0).then(|| {
        rounds
            .iter()
            .filter_map(|r| Some(r.markers_per_snapshot? * r.snapshots as f64))
            .sum::<f64>()
            / started as f64
    });
    let mut all: Vec<f64> = rounds.iter().flat_map(|r| r.latencies.clone()).collect();
    all.sort_by(f64::total_cmp);
    m.latency_p50_ms = percentile(&all, 0.5);
    m.latency_p99_ms = percentile(&all, 0.99);
    m.latencies = all;
    m
}

/// What the report lacks or got wrong: an empty list means every figure is
/// there and every control count is exact.
pub fn problems(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for m in &r.runs {
        let at = format!("{} on {} nodes, {}", m.variant, m.nodes, m.topology);
        if m.throughput <= 0.0 {
            out.push(format!("{at}: no messages flowed"));
        }
        if r.complete && (m.vs_raw.is_none() || m.vs_off.is_none()) {
            out.push(format!("{at}: no throughput ratio"));
        }
        if m.frames_resent > 0 {
            out.push(format!(
                "{at}: {} frames were resent, yet no connection was cut",
                m.frames_resent
            ));
        }
        if m.variant == "raw" {
            if m.hop_p50_us.is_none() {
                out.push(format!("{at}: no hop latency"));
            }
            continue;
        }
        if r.complete
            && r.runs
                .iter()
                .any(|t| t.variant == format!("{}-insecure", m.variant))
            && m.vs_insecure.is_none()
        {
            out.push(format!(
                "{at}: no ratio against the same cluster without TLS"
            ));
        }
        if m.variant == "off" || m.variant == "off-insecure" {
            continue;
        }
        if m.snapshots == 0 || m.durable < m.snapshots {
            out.push(format!(
                "{at}: {} of {} snapshots durable",
                m.durable, m.snapshots
            ));
        }
        if m.latency_p50_ms.is_none() || m.latency_p99_ms.is_none() {
            out.push(format!("{at}: no latency"));
        }
        // The floor is the raw baseline's hop latency: without that run
        // (`--only` leaving it out), there is none to ask for.
        if m.floor_ms.is_none() && r.runs.iter().any(|t| t.variant == "raw") {
            out.push(format!("{at}: no floor"));
        }
        if m.markers_exact != Some(true) {
            out.push(format!(
                "{at}: {:?} markers per snapshot, not exactly {} (one per channel)",
                m.markers_per_snapshot, m.channels
            ));
        }
        if m.conserved < m.durable {
            out.push(format!(
                "{at}: only {} of {} snapshots conserved the money",
                m.conserved, m.durable
            ));
        }
    }
    if r.complete && r.paired.is_empty() {
        out.push("the paired on/off comparison did not run".into());
    }
    for p in &r.paired {
        if !p["throughput_vs_off"].as_f64().is_some_and(|v| v > 0.0) {
            out.push(format!("paired comparison {p}: no ratio"));
        }
    }
    for s in &r.scaling {
        let at = format!("state of {} ({})", bytes(s.state_bytes as u64), s.storage);
        if s.latency_p50_ms.is_none()
            || s.recovery_ms.is_none()
            || s.read_ms.is_none()
            || s.floor_ms.is_none()
            || s.written_share.is_none()
        {
            out.push(format!("{at}: a figure is missing"));
        }
        if s.conserved == 0 {
            out.push(format!("{at}: conservation unchecked"));
        }
    }
    out
}

/// A share as a percentage, or `-`.
fn share(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

/// A size for people.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The report as tables.
pub fn print(r: &Report) {
    println!("Machine: {}", r.machine);
    let rounds = r.runs.first().map_or(1, |m| m.rounds);
    println!(
        "Each run: {:.1} s measured after warm-up; {rounds} round(s) of every variant, interleaved;\n\
         throughput and ratios are medians over rounds (ratios taken within a round), latencies pooled.\n",
        r.window_s
    );
    println!(
        "{:<18} {:>5} {:<8} {:>12} {:>7} {:>7} {:>10} {:>10} {:>6} {:>9} {:>9} {:>9} {:>10} {:>8}",
        "variant",
        "nodes",
        "graph",
        "msgs/s",
        "vs raw",
        "vs off",
        "cpu ns/msg",
        "cpu vs off",
        "snaps",
        "p50 ms",
        "p99 ms",
        "floor ms",
        "pause ms",
        "markers"
    );
    for m in &r.runs {
        let markers = match (m.markers_per_snapshot, m.markers_exact) {
            (Some(v), Some(true)) => format!("{v:.0}={}", m.channels),
            (Some(v), _) => format!("{v:.1}!={}", m.channels),
            _ => "-".into(),
        };
        println!(
            "{:<18} {:>5} {:<8} {:>12.0} {:>7} {:>7} {:>10} {:>10} {:>6} {:>9} {:>9} {:>9} {:>10.2} {:>8}",
            m.variant,
            m.nodes,
            m.topology,
            m.throughput,
            opt(m.vs_raw, 3),
            opt(m.vs_off, 3),
            opt(m.cpu_ns_per_msg, 0),
            opt(m.cpu_vs_off, 3),
            m.snapshots,
            opt(m.latency_p50_ms, 1),
            opt(m.latency_p99_ms, 1),
            opt(m.floor_ms, 1),
            m.longest_pause_ms,
            markers
        );
    }
    let hops: Vec<String> = r
        .runs
        .iter()
        .filter_map(|m| {
            Some(format!(
                "{} nodes {}: {:.0} µs",
                m.nodes, m.topology, m.hop_p50_us?
            ))
        })
        .collect();
    for m in r.runs.iter().filter(|m| m.vs_insecure.is_some()) {
        let twin = r.runs.iter().find(|t| {
            t.variant == format!("{}-insecure", m.variant)
                && t.nodes == m.nodes
                && t.topology == m.topology
        });
        println!(
            "\nWhat TLS costs ({} nodes, {}, {}): {} of the throughput without TLS; snapshot p50 {} ms with TLS, {} ms without",
            m.nodes,
            m.topology,
            m.variant,
            opt(m.vs_insecure, 3),
            opt(m.latency_p50_ms, 1),
            opt(twin.and_then(|t| t.latency_p50_ms), 1)
        );
    }
    for p in &r.paired {
        println!(
            "\nPaired in one cluster ({} nodes, {}): Chandy–Lamport every 100 ms / off = {} throughput, {} CPU per message (medians of {} pairs of 0.5 s windows)",
            p["nodes"],
            p["topology"].as_str().unwrap_or_default(),
            opt(p["throughput_vs_off"].as_f64(), 3),
            opt(p["cpu_vs_off"].as_f64(), 3),
            p["pairs"]
        );
    }
    println!(
        "\nHop latency under load (raw baseline, p50): {}",
        hops.join("; ")
    );
    println!(
        "\n{:>10} {:>7} {:>6} {:>8} {:>8} {:>9} {:>9} {:>10} {:>11} {:>10} {:>12} {:>9} {:>11}",
        "state",
        "storage",
        "snaps",
        "changed",
        "written",
        "p50 ms",
        "floor ms",
        "pause ms",
        "later pause",
        "idle pause",
        "recovery ms",
        "read ms",
        "stored"
    );
    for s in &r.scaling {
        println!(
            "{:>10} {:>7} {:>6} {:>8} {:>8} {:>9} {:>9} {:>10.2} {:>11} {:>10.2} {:>12} {:>9} {:>11}",
            bytes(s.state_bytes as u64),
            s.storage,
            s.snapshots,
            share(s.changed_share),
            share(s.written_share),
            opt(s.latency_p50_ms, 1),
            opt(s.floor_ms, 1),
            s.longest_pause_ms,
            opt(s.later_pause_ms, 2),
            s.idle_pause_ms,
            opt(s.recovery_ms, 1),
            opt(s.read_ms, 1),
            bytes(s.stored_bytes)
        );
    }
}

/// The state size of the paced scaling run: the largest, if it is over the
/// burst a part writes at full speed (a smaller one is never paced).
fn paced_row(plan: &Plan) -> Option<usize> {
    let largest = *plan.state_sizes.iter().max()?;
    (largest as u64 > cairn_runtime::config::WRITE_BURST).then_some(largest)
}
