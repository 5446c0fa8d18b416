//! Property test over thousands of seeds: random strongly connected topologies
//! of up to 20 processes (one-way rings and parallel channels among them),
//! random token workloads, and concurrent, overlapping snapshots with several
//! initiators. Every snapshot must pass the oracle and conserve tokens.
//!
//! `CAIRN_SEEDS=n` runs n seeds (default 5000); `CAIRN_SEED=s` replays one.

use std::sync::Arc;

use cairn_sim::workload::{Workload, random_topology, run_random};
use cairn_sim::{Config, Simulator, TokenModel, Tokens};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs one seed; on failure, the message names the seed to replay.
fn run_seed(seed: u64) -> Result<(usize, usize), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00ca_1245);
    let n = rng.random_range(2..=20);
    let topo = Arc::new(random_topology(&mut rng, n, n));
    let initial: Vec<Tokens> = (0..n)
        .map(|_| Tokens {
            tokens: rng.random_range(0..30),
        })
        .collect();
    let total: u64 = initial.iter().map(|t| t.tokens).sum();
    let config = Config {
        seed,
        max_delay: rng.random_range(1..=12),
        ..Config::default()
    };
    let workload = Workload {
        ticks: rng.random_range(5..150),
        send_percent: rng.random_range(5..80),
        snapshots: rng.random_range(1..=5),
        max_initiators: rng.random_range(1..=4),
    };
    let fail = |what: String| format!("seed {seed} (replay: CAIRN_SEED={seed}): {what}");
    let mut sim =
        Simulator::new(topo, TokenModel, initial, config).map_err(|e| fail(e.to_string()))?;
    run_random(&mut sim, &workload).map_err(|e| fail(e.to_string()))?;
    let run = sim.finish().map_err(|e| fail(e.to_string()))?;
    if run.snapshots.len() != workload.snapshots as usize {
        return Err(fail(format!(
            "{} of {} snapshots completed",
            run.snapshots.len(),
            workload.snapshots
        )));
    }
    let violations = run.verify(&TokenModel);
    if !violations.is_empty() {
        let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
        return Err(fail(list.join("\n")));
    }
    for s in &run.snapshots {
        let (held, flying) = cairn_sim::token::recorded_tokens(s);
        if held + flying != total {
            return Err(fail(format!(
                "snapshot {} holds {} tokens, not {total}",
                s.id,
                held + flying
            )));
        }
    }
    Ok((run.snapshots.len(), run.trace.len()))
}

#[test]
fn random_systems_record_consistent_conserving_snapshots() {
    let seeds: Vec<u64> = match env("CAIRN_SEED") {
        Some(s) => vec![s],
        None => (0..env("CAIRN_SEEDS").unwrap_or(5000)).collect(),
    };
    let mut failures = Vec::new();
    let (mut snapshots, mut events) = (0, 0);
    for &seed in &seeds {
        match run_seed(seed) {
            Ok((n, e)) => {
                snapshots += n;
                events += e;
            }
            Err(e) => failures.push(e),
        }
    }
    for f in &failures {
        eprintln!("FAILED {f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed; each is printed above",
        failures.len(),
        seeds.len()
    );
    eprintln!(
        "{} seeds, {snapshots} snapshots checked over {events} trace events",
        seeds.len()
    );
}

#[test]
fn a_seed_replays_the_same_run() {
    let run = |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let topo = Arc::new(random_topology(&mut rng, 7, 5));
        let initial = vec![Tokens { tokens: 9 }; 7];
        let mut sim = Simulator::new(
            topo,
            TokenModel,
            initial,
            Config {
                seed,
                ..Config::default()
            },
        )
        .unwrap();
        run_random(&mut sim, &Workload::default()).unwrap();
        sim.finish().unwrap()
    };
    let (a, b, c) = (run(11), run(11), run(12));
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.snapshots, b.snapshots);
    assert_ne!(a.trace, c.trace, "a different seed gives a different run");
}
