//! Simulator speed, in trace events per second, on a fixed random workload
//! (8 processes, overlapping snapshots). Run with `cargo bench -p cairn-sim`.

use std::sync::Arc;

use cairn_sim::workload::{Workload, random_topology, run_random};
use cairn_sim::{Config, Simulator, TokenModel, Tokens};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn run(seed: u64) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let topo = Arc::new(random_topology(&mut rng, 8, 8));
    let config = Config {
        seed,
        ..Config::default()
    };
    let mut sim = Simulator::new(topo, TokenModel, vec![Tokens { tokens: 50 }; 8], config).unwrap();
    let w = Workload {
        ticks: 400,
        send_percent: 60,
        snapshots: 8,
        max_initiators: 3,
    };
    run_random(&mut sim, &w).unwrap();
    sim.finish().unwrap().trace.len()
}

fn simulator(c: &mut Criterion) {
    let events = run(7) as u64;
    let mut g = c.benchmark_group("simulator");
    g.throughput(Throughput::Elements(events));
    g.bench_function("events", |b| b.iter(|| run(7)));
    g.finish();
}

criterion_group!(benches, simulator);
criterion_main!(benches);
