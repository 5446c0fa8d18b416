//! Stable-property detectors against the simulator's ground truth, over
//! thousands of seeds: a detector never reports a property that does not
//! hold when its round ends, and a round that starts with the property
//! holding reports it. Every snapshot taken also passes the oracle.
//! `CAIRN_SEEDS=n` changes the number of seeds; failures print the seed.

use std::sync::Arc;

use cairn_apps::diffusing::{Diffusing, DiffusingParams, Termination};
use cairn_apps::locks::{Deadlock, Locks, LocksParams};
use cairn_apps::protocol::Protocol;
use cairn_apps::ring::{LostToken, Ring, RingParams};
use cairn_core::{StableProperty, Topology};
use cairn_sim::detect::detect;
use cairn_sim::workload::random_topology;
use cairn_sim::{Config, Simulator};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn seeds(default: u64) -> u64 {
    std::env::var("CAIRN_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("N{i}")).collect()
}

fn complete(n: usize) -> Topology {
    let names = names(n);
    Topology::new(names.clone(), &Topology::complete_pairs(&names)).unwrap()
}

fn one_way_ring(n: usize) -> Topology {
    let names = names(n);
    Topology::new(names.clone(), &Topology::ring_pairs(&names)).unwrap()
}

/// Runs detection for one seed and checks the guarantee round by round.
/// Returns whether the property was detected, and whether some round began
/// with it already holding (so the must-report half was exercised).
fn check_seed<A, P>(
    seed: u64,
    topo: Topology,
    protocol: A,
    property: P,
    max_rounds: usize,
) -> Result<(bool, bool), String>
where
    A: Protocol,
    P: StableProperty<A::Message, A::State>,
{
    let fail = |what: String| format!("seed {seed} (replay: CAIRN_SEED={seed}): {what}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let topo = Arc::new(topo);
    let initial = topo
        .processes()
        .map(|p| protocol.initial(p, &topo))
        .collect();
    let config = Config {
        seed,
        max_delay: rng.random_range(1..=6),
        ..Config::default()
    };
    let mut sim =
        Simulator::new(topo, protocol.clone(), initial, config).map_err(|e| fail(e.to_string()))?;
    let gap = rng.random_range(0..6);
    let outcome = detect(&mut sim, property, max_rounds, gap).map_err(|e| fail(e.to_string()))?;

    for (i, r) in outcome.rounds.iter().enumerate() {
        if r.detected && !r.held_at_end {
            return Err(fail(format!(
                "round {i} reported a property that did not hold when it ended"
            )));
        }
        if r.held_at_start && !r.detected {
            return Err(fail(format!(
                "round {i} began with the property holding but did not report it"
            )));
        }
    }
    let run = sim.finish().map_err(|e| fail(e.to_string()))?;
    let violations = run.verify(&protocol);
    if let Some(v) = violations.first() {
        return Err(fail(format!("oracle: {v}")));
    }
    Ok((
        outcome.detection.is_some(),
        outcome.rounds.iter().any(|r| r.held_at_start),
    ))
}

fn sweep(
    name: &str,
    count: u64,
    min_detected: f64,
    mut one: impl FnMut(u64) -> Result<(bool, bool), String>,
) {
    let seeds: Vec<u64> = match std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(s) => vec![s],
        None => (0..seeds(count)).collect(),
    };
    let mut failures = Vec::new();
    let (mut detected, mut exercised) = (0, 0);
    for &seed in &seeds {
        match one(seed) {
            Ok((d, e)) => {
                detected += usize::from(d);
                exercised += usize::from(e);
            }
            Err(e) => failures.push(e),
        }
    }
    for f in &failures {
        eprintln!("FAILED {name}: {f}");
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} seeds failed (printed above)",
        failures.len(),
        seeds.len()
    );
    let share = detected as f64 / seeds.len() as f64;
    eprintln!(
        "{name}: detected in {detected} of {} seeds; {exercised} had a round that began with it holding",
        seeds.len()
    );
    if min_detected > 0.0 && seeds.len() > 1 {
        assert!(
            exercised > 0,
            "{name}: no round began with the property holding: the must-report half went untested"
        );
    }
    assert!(
        share >= min_detected,
        "{name}: detected in only {detected} of {} seeds",
        seeds.len()
    );
}

#[test]
fn termination_is_reported_exactly_when_it_holds() {
    sweep("termination", 1000, 0.95, |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = rng.random_range(2..=10);
        let topo = random_topology(&mut rng, n, n);
        let params = DiffusingParams {
            ttl: rng.random_range(1..=7),
            ..DiffusingParams::default()
        };
        let protocol = Diffusing::from_params(&params, &topo).unwrap();
        check_seed(seed, topo, protocol, Termination, 60)
    });
}

#[test]
fn deadlock_is_reported_exactly_when_it_holds() {
    sweep("deadlock", 1000, 0.5, |seed| {
        let n = 3 + (seed % 3) as usize;
        let topo = complete(n);
        let protocol = Locks::from_params(&LocksParams { ordered: false }, &topo).unwrap();
        check_seed(seed, topo, protocol, Deadlock, 40)
    });
}

#[test]
fn lost_token_is_reported_exactly_when_it_holds() {
    sweep("lost-token", 1000, 0.95, |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = rng.random_range(2..=8);
        let topo = one_way_ring(n);
        let params = RingParams {
            lose_at_hop: Some(rng.random_range(1..40)),
            rate: None,
        };
        let protocol = Ring::from_params(&params, &topo).unwrap();
        check_seed(seed, topo, protocol, LostToken, 60)
    });
}

#[test]
fn systems_that_never_reach_the_property_are_never_reported() {
    // An endless diffusing computation never terminates.
    sweep("endless diffusing", 150, 0.0, |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let topo = random_topology(&mut rng, 5, 4);
        let params = DiffusingParams {
            endless: true,
            ..DiffusingParams::default()
        };
        let protocol = Diffusing::from_params(&params, &topo).unwrap();
        let found = check_seed(seed, topo, protocol, Termination, 15)?;
        if found.0 {
            Err(format!(
                "seed {seed}: termination reported for an endless computation"
            ))
        } else {
            Ok(found)
        }
    });
    // Locks taken in ascending order never deadlock.
    sweep("ordered locks", 150, 0.0, |seed| {
        let topo = complete(3 + (seed % 3) as usize);
        let protocol = Locks::from_params(&LocksParams { ordered: true }, &topo).unwrap();
        let found = check_seed(seed, topo, protocol, Deadlock, 15)?;
        if found.0 {
            Err(format!("seed {seed}: deadlock reported with ordered locks"))
        } else {
            Ok(found)
        }
    });
    // A ring that loses nothing never loses its token.
    sweep("faultless ring", 150, 0.0, |seed| {
        let topo = one_way_ring(2 + (seed % 6) as usize);
        let protocol = Ring::from_params(&RingParams::default(), &topo).unwrap();
        let found = check_seed(seed, topo, protocol, LostToken, 15)?;
        if found.0 {
            Err(format!(
                "seed {seed}: a token reported lost in a faultless ring"
            ))
        } else {
            Ok(found)
        }
    });
}
