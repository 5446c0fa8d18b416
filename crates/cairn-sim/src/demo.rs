//! The simulator demo: an 8-process token system with concurrent, overlapping
//! snapshots from several initiators, each one judged by the oracle.

use std::fmt;
use std::sync::Arc;

use cairn_core::oracle::Violation;
use cairn_core::{ProcessId, Topology};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::sim::{Config, Outcome, Simulator};
use crate::workload::{Workload, run_random};
use cairn_apps::token::{TokenModel, Tokens, recorded_tokens};

/// What the demo ran and found.
#[derive(Debug)]
pub struct DemoReport {
    /// The finished run.
    pub run: Outcome<Tokens, Tokens>,
    /// Tokens in the system.
    pub total: u64,
    /// Everything the oracle found wrong (empty when all is well).
    pub violations: Vec<Violation>,
}

/// Runs the demo with `seed`.
///
/// # Errors
/// A simulation error (none is expected: it would be a bug).
pub fn run_demo(seed: u64) -> Result<DemoReport> {
    // Eight processes in a two-way ring, plus chords and one extra parallel channel.
    let names: Vec<String> = (1..=8).map(|i| format!("N{i}")).collect();
    let mut edges = Vec::new();
    for i in 0..8 {
        let j = (i + 1) % 8;
        edges.push((names[i].clone(), names[j].clone()));
        edges.push((names[j].clone(), names[i].clone()));
    }
    for (a, b) in [(0, 4), (2, 6), (5, 1), (7, 3), (0, 4)] {
        edges.push((names[a].clone(), names[b].clone()));
    }
    let topo = Arc::new(Topology::new(names, &edges)?);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let initial: Vec<Tokens> = (0..8)
        .map(|_| Tokens {
            tokens: rng.random_range(0..20),
        })
        .collect();
    let total = initial.iter().map(|t| t.tokens).sum();
    let config = Config {
        seed,
        max_delay: 6,
        ..Config::default()
    };
    let mut sim = Simulator::new(topo, TokenModel, initial, config)?;
    let workload = Workload {
        ticks: 80,
        send_percent: 40,
        snapshots: 6,
        max_initiators: 3,
    };
    run_random(&mut sim, &workload)?;
    let run = sim.finish()?;
    let violations = run.verify(&TokenModel);
    Ok(DemoReport {
        run,
        total,
        violations,
    })
}

impl DemoReport {
    /// True when every snapshot passed the oracle and conserved the tokens.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
            && self.run.snapshots.iter().all(|s| {
                let (held, flying) = recorded_tokens(s);
                held + flying == self.total
            })
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topo = &self.run.topology;
        writeln!(
            f,
            "Simulated {} processes and {} channels for {} ticks (seed {}), {} tokens in all.",
            topo.process_count(),
            topo.channel_count(),
            self.run.ticks,
            self.run.seed,
            self.total
        )?;
        writeln!(
            f,
            "{:>8}  {:>10}  {:>12}  {:>10}  {:>6}  verdict",
            "snapshot", "initiators", "in processes", "in channels", "total"
        )?;
        for s in &self.run.snapshots {
            let (held, flying) = recorded_tokens(s);
            let initiators = initiators(&self.run, s.id.0);
            let ok = held + flying == self.total
                && !self.violations.iter().any(|v| v.snapshot == Some(s.id));
            writeln!(
                f,
                "{:>8}  {:>10}  {:>12}  {:>10}  {:>6}  {}",
                s.id.0,
                initiators,
                held,
                flying,
                held + flying,
                if ok { "consistent" } else { "WRONG" }
            )?;
        }
        for v in &self.violations {
            writeln!(f, "  violation: {v}")?;
        }
        if self.passed() {
            write!(
                f,
                "All {} snapshots passed the oracle (cut, channel states, Theorem 1 replay) and conserve {} tokens.",
                self.run.snapshots.len(),
                self.total
            )
        } else {
            write!(f, "FAILED: replay with --seed {}", self.run.seed)
        }
    }
}

/// How many processes recorded a snapshot spontaneously (before any marker of it arrived).
fn initiators(run: &Outcome<Tokens, Tokens>, id: u64) -> usize {
    use cairn_core::trace::Event;
    let mut count = 0;
    let mut seen_marker = vec![false; run.topology.process_count()];
    for ev in &run.trace {
        let p: ProcessId = ev.process;
        match ev.event {
            Event::MarkerReceive { snapshot, .. } if snapshot.0 == id => {
                seen_marker[p.index()] = true
            }
            Event::Record { snapshot } if snapshot.0 == id && !seen_marker[p.index()] => count += 1,
            _ => {}
        }
    }
    count
}
