//! Stable-property detection in the simulator, with the ground truth only a
//! simulator knows: whether the property held when each round began and
//! when it ended.

use cairn_apps::protocol::Protocol;
use cairn_core::{Detection, Detector, ProcessId, StableProperty};
use rand::Rng;

use crate::error::{Result, SimError};
use crate::sim::Simulator;

/// One detection round: one snapshot, and what was true around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// The property held in the true state when the snapshot started.
    pub held_at_start: bool,
    /// The property held in the recorded snapshot.
    pub detected: bool,
    /// The property held in the true state when the snapshot completed.
    pub held_at_end: bool,
    /// The tick the round ended at.
    pub ended_at: u64,
}

/// What a detection run found.
#[derive(Clone, Debug)]
pub struct DetectOutcome<M, S, E> {
    /// The first definite answer, if any.
    pub detection: Option<Detection<M, S, E>>,
    /// Every round, in order.
    pub rounds: Vec<Round>,
}

/// Lets every process send what its protocol wants now.
///
/// # Errors
/// A send the protocol asked for is not enabled (a bug in the protocol).
pub fn step_protocol<A: Protocol>(sim: &mut Simulator<A>) -> Result<()> {
    let topo = sim.system().topology().clone();
    let protocol = sim.system().model().clone();
    for p in topo.processes() {
        let state = sim.system().states()[p.index()].clone();
        let sends = {
            let rng = sim.rng();
            let mut random = || rng.random::<u64>();
            protocol.next_sends(p, &state, &topo, &mut random)
        };
        for (channel, message) in sends {
            sim.send(p, channel, message)?;
        }
    }
    Ok(())
}

/// Runs the protocol and takes snapshots one after another (initiators taking
/// turns), `gap` ticks apart, until the property shows or `max_rounds` pass.
///
/// # Errors
/// A snapshot that cannot complete within the simulator's tick limit.
pub fn detect<A, P>(
    sim: &mut Simulator<A>,
    property: P,
    max_rounds: usize,
    gap: u64,
) -> Result<DetectOutcome<A::Message, A::State, P::Evidence>>
where
    A: Protocol,
    P: StableProperty<A::Message, A::State>,
{
    let topo = sim.system().topology().clone();
    let mut detector = Detector::new(property);
    let mut rounds = Vec::new();
    for round in 0..max_rounds {
        for _ in 0..gap {
            step_protocol(sim)?;
            sim.tick()?;
        }
        let held_at_start = detector
            .property()
            .evaluate(&topo, &sim.system().current_state())
            .is_some();
        let initiator = ProcessId((round % topo.process_count()) as u32);
        let id = sim.snapshot(&[initiator])?;
        let deadline = sim.now() + 1_000_000;
        let snapshot = loop {
            step_protocol(sim)?;
            sim.tick()?;
            if let Some(s) = sim.system().completed().get(&id) {
                break s.clone();
            }
            if sim.now() > deadline {
                return Err(SimError::Stalled(format!(
                    "detection snapshot {id} did not complete"
                )));
            }
        };
        let held_at_end = detector
            .property()
            .evaluate(&topo, &sim.system().current_state())
            .is_some();
        let detection = detector.observe(&topo, snapshot);
        rounds.push(Round {
            held_at_start,
            detected: detection.is_some(),
            held_at_end,
            ended_at: sim.now(),
        });
        if detection.is_some() {
            return Ok(DetectOutcome { detection, rounds });
        }
    }
    Ok(DetectOutcome {
        detection: None,
        rounds,
    })
}
