//! What the engine costs: per application message with no snapshot in
//! progress and while channels are recorded, and a whole local snapshot as
//! the number of channels grows, and as the state grows. Run with
//! `cargo bench -p cairn-core`.

use std::hint::black_box;

use cairn_core::{ChannelId, Engine, Output, ProcessId, SnapshotId, Topology};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// A hub (process 0) with `n` peers, one channel each way to each.
fn star(n: usize) -> Topology {
    let names: Vec<String> = std::iter::once("hub".to_string())
        .chain((0..n).map(|i| format!("p{i}")))
        .collect();
    let mut pairs = Vec::new();
    for i in 0..n {
        pairs.push((names[i + 1].clone(), "hub".to_string()));
        pairs.push(("hub".to_string(), names[i + 1].clone()));
    }
    Topology::new(names, &pairs).unwrap()
}

fn drain(e: &mut Engine<u64, u64>) {
    while let Some(out) = e.poll_output() {
        if let Output::RecordState { snapshot } = out {
            e.record_state(snapshot, 0).unwrap();
        }
        black_box(&out);
    }
}

fn per_message(c: &mut Criterion) {
    let topo = star(4);
    let hub = ProcessId(0);
    let inc = topo.incoming(hub)[0];
    let out = topo.outgoing(hub)[0];
    let mut g = c.benchmark_group("per_message");
    // Both cases handle 1000 messages (receive one, send one, drain) per
    // iteration, from an engine set up outside the timing.
    g.throughput(Throughput::Elements(1000));
    for (name, recording) in [
        ("receive_and_send_idle", false),
        ("receive_and_send_recording", true),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    let mut e: Engine<u64, u64> = Engine::new(&topo, hub).unwrap();
                    if recording {
                        // A snapshot that does not complete here: every message received is recorded.
                        e.start_snapshot(SnapshotId(1)).unwrap();
                    }
                    drain(&mut e);
                    e
                },
                |e| {
                    for i in 0..1000u64 {
                        e.handle_message(inc, black_box(&i)).unwrap();
                        e.send(out, i).unwrap();
                        drain(e);
                    }
                },
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

fn whole_snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("local_snapshot_by_channels");
    for n in [10usize, 100, 1000] {
        let topo = star(n);
        let incoming: Vec<ChannelId> = topo.incoming(ProcessId(0)).to_vec();
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("{n}_channels"), |b| {
            let mut e: Engine<u64, u64> = Engine::new(&topo, ProcessId(0)).unwrap();
            let mut id = 0u64;
            b.iter(|| {
                id += 1;
                e.start_snapshot(SnapshotId(id)).unwrap();
                drain(&mut e);
                for &c in &incoming {
                    e.handle_marker(c, SnapshotId(id)).unwrap();
                }
                drain(&mut e);
            });
        });
    }
    g.finish();
}

/// What recording a large state costs the driver: the engine takes the
/// state by value, so an application whose state is shared (`Arc`) pays
/// nothing for its size, and one that copies pays a copy.
fn state_size(c: &mut Criterion) {
    let topo = star(3);
    let incoming: Vec<ChannelId> = topo.incoming(ProcessId(0)).to_vec();
    let mut g = c.benchmark_group("local_snapshot_by_state_size");
    g.sample_size(20);
    for (label, bytes) in [
        ("1KiB", 1usize << 10),
        ("1MiB", 1 << 20),
        ("64MiB", 64 << 20),
    ] {
        let shared: std::sync::Arc<[u8]> = vec![7u8; bytes].into();
        let copied: Vec<u8> = vec![7u8; bytes];
        g.bench_function(format!("shared_{label}"), |b| {
            let mut e: Engine<u64, std::sync::Arc<[u8]>> =
                Engine::new(&topo, ProcessId(0)).unwrap();
            let mut id = 0u64;
            b.iter(|| {
                id += 1;
                snapshot_with(&mut e, &incoming, id, || shared.clone());
            });
        });
        g.bench_function(format!("copied_{label}"), |b| {
            let mut e: Engine<u64, Vec<u8>> = Engine::new(&topo, ProcessId(0)).unwrap();
            let mut id = 0u64;
            b.iter(|| {
                id += 1;
                snapshot_with(&mut e, &incoming, id, || copied.clone());
            });
        });
    }
    g.finish();
}

fn snapshot_with<S>(
    e: &mut Engine<u64, S>,
    incoming: &[ChannelId],
    id: u64,
    state: impl Fn() -> S,
) {
    e.start_snapshot(SnapshotId(id)).unwrap();
    let take = |e: &mut Engine<u64, S>| {
        while let Some(out) = e.poll_output() {
            match out {
                Output::RecordState { snapshot } => e.record_state(snapshot, state()).unwrap(),
                other => drop(black_box(other)),
            }
        }
    };
    take(e);
    for &c in incoming {
        e.handle_marker(c, SnapshotId(id)).unwrap();
    }
    take(e);
}

criterion_group!(benches, per_message, whole_snapshot, state_size);
criterion_main!(benches);
