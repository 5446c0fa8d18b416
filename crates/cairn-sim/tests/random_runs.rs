//! Property test over thousands of seeds: random strongly connected topologies
//! of up to 20 processes (one-way rings and parallel channels among them),
//! random token workloads, and concurrent, overlapping snapshots with several
//! initiators. Every snapshot must pass the oracle and conserve tokens.
//!
//! `CAIRN_SEEDS=n` runs n seeds (default 5000); `CAIRN_SEED=s` replays one.

mod common;

use std::sync::Arc;

use cairn_sim::workload::{Workload, random_topology, run_random};
use cairn_sim::{Config, Simulator, TokenModel, Tokens};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn random_systems_record_consistent_conserving_snapshots() {
    common::run_seeds(5000, common::Options::default());
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
