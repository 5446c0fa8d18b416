//! What the random-run tests share: one seeded random run checked by the
//! oracle and for conservation, and a count of what markers overtook.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_core::Overtaking;
use cairn_core::oracle::Violation;
use cairn_core::trace::{Event, TraceEvent};
use cairn_sim::workload::{Workload, random_topology, run_random};
use cairn_sim::{Config, Fault, Simulator, TokenModel, Tokens};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A number from the environment (`CAIRN_SEEDS`, `CAIRN_SEED`).
pub fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The three ways markers may overtake messages, by name.
pub const MODES: [(&str, Overtaking); 3] = [
    (
        "sender",
        Overtaking {
            sender: true,
            receiver: false,
        },
    ),
    (
        "receiver",
        Overtaking {
            sender: false,
            receiver: true,
        },
    ),
    ("both", Overtaking::BOTH),
];

/// How a random run is set up besides its seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Markers overtake messages, in a mode and with a jump limit the seed picks.
    pub overtaking: bool,
    /// A planted fault: the run's violations are returned, not failed on.
    pub fault: Option<Fault>,
}

/// What one random run checked.
#[derive(Debug)]
pub struct Checked {
    pub snapshots: usize,
    pub events: usize,
    /// Messages that markers overtook.
    pub overtaken: usize,
    /// The oracle's findings (always empty without a fault: they fail the run).
    pub violations: Vec<Violation>,
}

/// One random run: a strongly connected topology of 2 to 20 processes,
/// a random token workload and overlapping snapshots with several
/// initiators. Without a fault every snapshot must pass the oracle and
/// conserve tokens; a failure names the seed to replay (and the mode).
pub fn run_seed(seed: u64, options: Options) -> Result<Checked, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00ca_1245);
    let n = rng.random_range(2..=20);
    let topo = Arc::new(random_topology(&mut rng, n, n));
    let initial: Vec<Tokens> = (0..n)
        .map(|_| Tokens {
            tokens: rng.random_range(0..30),
        })
        .collect();
    let total: u64 = initial.iter().map(|t| t.tokens).sum();
    let mut config = Config {
        seed,
        max_delay: rng.random_range(1..=12),
        fault: options.fault,
        ..Config::default()
    };
    let workload = Workload {
        ticks: rng.random_range(5..150),
        send_percent: rng.random_range(5..80),
        snapshots: rng.random_range(1..=5),
        max_initiators: rng.random_range(1..=4),
    };
    let mut mode = "fifo";
    if options.overtaking {
        let (name, overtaking) = MODES[rng.random_range(0..MODES.len())];
        mode = name;
        config.overtaking = overtaking;
        config.jump_limit = [0, 1, 3, usize::MAX][rng.random_range(0..4)];
    }
    let fail = |what: String| format!("seed {seed} ({mode}; replay: CAIRN_SEED={seed}): {what}");
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
    if options.fault.is_none() {
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
    }
    Ok(Checked {
        snapshots: run.snapshots.len(),
        events: run.trace.len(),
        overtaken: overtaken(&run.trace),
        violations,
    })
}

/// Runs `seeds` (or the one `CAIRN_SEED` names), printing every failure;
/// panics if any failed. Returns the sum of what they checked.
pub fn run_seeds(default_seeds: u64, options: Options) -> Checked {
    let seeds: Vec<u64> = match env("CAIRN_SEED") {
        Some(s) => vec![s],
        None => (0..env("CAIRN_SEEDS").unwrap_or(default_seeds)).collect(),
    };
    let mut failures = Vec::new();
    let mut sum = Checked {
        snapshots: 0,
        events: 0,
        overtaken: 0,
        violations: Vec::new(),
    };
    for &seed in &seeds {
        match run_seed(seed, options) {
            Ok(c) => {
                sum.snapshots += c.snapshots;
                sum.events += c.events;
                sum.overtaken += c.overtaken;
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
        "{} seeds, {} snapshots checked over {} trace events, {} messages overtaken",
        seeds.len(),
        sum.snapshots,
        sum.events,
        sum.overtaken
    );
    sum
}

/// How many messages were overtaken by a marker in `trace`.
pub fn overtaken<M>(trace: &[TraceEvent<M>]) -> usize {
    per_marker(trace).iter().sum()
}

/// For each marker that arrived, how many messages it overtook: sent on its
/// channel before it was sent there, handled after it arrived.
pub fn per_marker<M>(trace: &[TraceEvent<M>]) -> Vec<usize> {
    let mut sent = BTreeMap::new();
    let mut handled = BTreeMap::new();
    let mut markers: BTreeMap<_, (usize, Option<usize>)> = BTreeMap::new();
    for (i, ev) in trace.iter().enumerate() {
        match &ev.event {
            Event::Send { channel, seq, .. } => {
                sent.insert((*channel, *seq), i);
            }
            Event::Receive { channel, seq, .. } => {
                handled.insert((*channel, *seq), i);
            }
            Event::MarkerSend { channel, snapshot } => {
                markers.insert((*channel, *snapshot), (i, None));
            }
            Event::MarkerReceive { channel, snapshot } => {
                if let Some(m) = markers.get_mut(&(*channel, *snapshot)) {
                    m.1 = Some(i);
                }
            }
            _ => {}
        }
    }
    markers
        .iter()
        .filter_map(|(&(c, _), &(ms, mr))| Some((c, ms, mr?)))
        .map(|(c, ms, mr)| {
            sent.iter()
                .filter(|&(&(ch, seq), &s)| {
                    ch == c && s < ms && handled.get(&(ch, seq)).is_none_or(|&h| h > mr)
                })
                .count()
        })
        .collect()
}
