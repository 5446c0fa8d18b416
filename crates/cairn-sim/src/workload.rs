//! Random topologies and random token workloads, all drawn from the
//! simulator's seeded RNG.

use cairn_core::{ChannelId, ProcessId, SnapshotId, Topology};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::error::Result;
use crate::sim::Simulator;
use cairn_apps::token::{TokenModel, Tokens};

/// A random strongly connected topology of `n` processes named `N1`..`Nn`:
/// a ring in a random order (one-way or two-way), plus up to `extra` random
/// channels, some of them parallel to existing ones.
pub fn random_topology<R: Rng>(rng: &mut R, n: usize, extra: usize) -> Topology {
    let names: Vec<String> = (1..=n).map(|i| format!("N{i}")).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let mut edges: Vec<(String, String)> = Vec::new();
    let two_way = rng.random_bool(0.5);
    for i in 0..n {
        let (a, b) = (order[i], order[(i + 1) % n]);
        if a == b {
            continue;
        }
        edges.push((names[a].clone(), names[b].clone()));
        if two_way && n > 2 {
            edges.push((names[b].clone(), names[a].clone()));
        }
    }
    if n > 1 {
        for _ in 0..rng.random_range(0..=extra) {
            let a = rng.random_range(0..n);
            let b = (a + rng.random_range(1..n)) % n;
            edges.push((names[a].clone(), names[b].clone()));
        }
    }
    // Names are well formed and no edge is a self-loop, so this cannot fail.
    Topology::new(names, &edges).expect("generated topology is valid")
}

/// A random token workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Ticks during which processes send and snapshots start.
    pub ticks: u64,
    /// Chance, in percent, that a process sends in a tick.
    pub send_percent: u32,
    /// Snapshots to start.
    pub snapshots: u32,
    /// Most initiators a snapshot has.
    pub max_initiators: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            ticks: 60,
            send_percent: 30,
            snapshots: 3,
            max_initiators: 3,
        }
    }
}

/// Runs `workload` on `sim`: random transfers, and snapshots started at random
/// ticks by one or more initiators at once, plus late initiators that join a
/// snapshot already under way. Snapshots overlap freely.
///
/// # Errors
/// A core error from an engine.
pub fn run_random(sim: &mut Simulator<TokenModel>, workload: &Workload) -> Result<()> {
    let topo = sim.system().topology().clone();
    let n = topo.process_count();
    let ticks = workload.ticks.max(1);
    // (tick, initiators) for each new snapshot, and (tick, snapshot, process) for late joiners.
    let mut starts: Vec<(u64, Vec<ProcessId>)> = Vec::new();
    let mut joins: Vec<(u64, SnapshotId, ProcessId)> = Vec::new();
    for k in 0..workload.snapshots {
        let rng = sim.rng();
        let at = rng.random_range(0..ticks);
        let count = rng.random_range(1..=workload.max_initiators.clamp(1, n));
        let mut who: Vec<ProcessId> = topo.processes().collect();
        who.shuffle(rng);
        who.truncate(count);
        if rng.random_bool(0.3) {
            let later = at + rng.random_range(0..10);
            joins.push((
                later,
                SnapshotId(u64::from(k)),
                ProcessId(rng.random_range(0..n) as u32),
            ));
        }
        starts.push((at, who));
    }
    starts.sort_by_key(|(at, _)| *at);
    let mut next_start = 0;
    let mut started = 0u64;
    for t in 0..ticks + 10 {
        while next_start < starts.len() && starts[next_start].0 == t {
            let who = starts[next_start].1.clone();
            sim.snapshot(&who)?;
            next_start += 1;
            started += 1;
        }
        for &(at, id, p) in &joins {
            if at == t && id.0 < started {
                sim.join_snapshot(p, id)?;
            }
        }
        if t < ticks {
            for p in topo.processes() {
                let outgoing: &[ChannelId] = topo.outgoing(p);
                let tokens = sim.system().states()[p.index()].tokens;
                let rng = sim.rng();
                if outgoing.is_empty()
                    || tokens == 0
                    || rng.random_range(0..100) >= workload.send_percent
                {
                    continue;
                }
                let channel = outgoing[rng.random_range(0..outgoing.len())];
                let amount = rng.random_range(1..=tokens.min(5));
                sim.send(p, channel, Tokens { tokens: amount })?;
            }
        }
        sim.tick()?;
    }
    Ok(())
}
