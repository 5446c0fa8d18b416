//! Markers that overtake messages, in the simulator and the explorer.
//!
//! Invariant: whether markers jump the sender's unwritten messages, are taken
//! ahead of the receiver's unhandled ones, or both, every snapshot passes the
//! same oracle (its channel-state equation is unchanged) and conserves the
//! tokens: over every interleaving of a small system, and over random
//! systems and workloads. Each test also counts the markers that really
//! overtook something, so it cannot pass with overtaking silently off; and
//! a variant that loses what its markers overtook is caught.
//!
//! `CAIRN_SEEDS=n` runs n random seeds (default 1500); `CAIRN_SEED=s`
//! replays one.

mod common;

use std::sync::Arc;

use cairn_core::oracle::{self, Check, Run};
use cairn_core::trace::Event;
use cairn_core::{Overtaking, ProcessId, SnapshotId, Topology};
use cairn_sim::explore::{Step, explore};
use cairn_sim::{Fault, System, TokenModel, Tokens};
use common::{MODES, Options, per_marker, run_seed};

fn pair() -> Arc<Topology> {
    Arc::new(Topology::new(["p", "q"], &[("p", "q"), ("q", "p")]).unwrap())
}

/// Every interleaving of up to eight passes of tokens between p and q (five
/// with two tokens), with
/// either or both starting the snapshot at any moment, and (with the
/// receiver side) a marker taken early at any moment it is behind a token.
/// With both sides, two tokens and a marker that jumps at most one, so a
/// marker can jump one token on the sender side and be taken ahead of the
/// other on the receiver side.
#[test]
fn every_interleaving_with_overtaking_markers_records_every_token() {
    const S0: SnapshotId = SnapshotId(0);
    let (p, q) = (ProcessId(0), ProcessId(1));
    let cases = [
        (MODES[0], usize::MAX, 1, 8),
        (MODES[1], usize::MAX, 1, 8),
        (MODES[2], 1, 2, 5),
    ];
    for ((mode, overtaking), limit, tokens, max_passes) in cases {
        let topo = pair();
        let mut start = System::new(
            topo.clone(),
            TokenModel,
            vec![Tokens { tokens }, Tokens { tokens: 0 }],
        )
        .unwrap();
        start.set_overtaking(overtaking);
        start.set_jump_limit(limit);
        let choices = |sys: &System<TokenModel>| {
            let passes = sys
                .trace()
                .iter()
                .filter(|e| matches!(e.event, Event::Send { .. }))
                .count();
            let mut steps = Vec::new();
            for who in [p, q] {
                if passes < max_passes && sys.states()[who.index()].tokens >= 1 {
                    steps.push(Step::Send {
                        from: who,
                        channel: topo.outgoing(who)[0],
                        message: Tokens { tokens: 1 },
                    });
                }
                if !sys.has_recorded(who, S0) {
                    steps.push(Step::Start {
                        process: who,
                        id: S0,
                    });
                }
            }
            steps
        };
        let (mut jumped, mut token_in_channel, mut both_sides) = (0u64, 0u64, 0u64);
        let mut check = |sys: &System<TokenModel>| {
            let snap = sys.completed().get(&S0).ok_or("no snapshot completed")?;
            let (held, flying) = cairn_sim::token::recorded_tokens(snap);
            if held + flying != tokens {
                return Err(format!(
                    "{mode}: recorded {held} held and {flying} in flight"
                ));
            }
            let run = Run {
                topology: sys.topology(),
                trace: sys.trace(),
                initial: sys.initial_states(),
                initial_channels: &[],
                final_states: sys.states(),
            };
            let v = oracle::check(sys.model(), &run, std::slice::from_ref(snap));
            if !v.is_empty() {
                return Err(format!("{mode}: {v:#?}"));
            }
            if common::overtaken(sys.trace()) > 0 {
                jumped += 1;
                token_in_channel += flying;
            }
            // A marker that may jump one message overtook two: the second
            // was taken ahead of on the receiver's side.
            both_sides += u64::from(per_marker(sys.trace()).iter().any(|&n| n > limit));
            Ok(())
        };
        let stats = explore(&start, 64, &choices, &mut check).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "{mode}: {} interleavings, {jumped} with a marker overtaking a token ({token_in_channel} tokens recorded in flight), {both_sides} overtaking on both sides",
            stats.runs
        );
        if overtaking == Overtaking::BOTH {
            assert!(both_sides > 0, "{mode}: no marker overtook on both sides");
        }
        assert!(
            stats.runs > 500,
            "{mode}: explored only {} runs",
            stats.runs
        );
        assert!(jumped > 0, "{mode}: no marker ever overtook the token");
        assert!(
            token_in_channel > 0,
            "{mode}: an overtaken token was never recorded in its channel"
        );
    }
}

#[test]
fn random_systems_with_overtaking_markers_pass_the_oracle() {
    let options = Options {
        overtaking: true,
        fault: None,
    };
    let sum = common::run_seeds(1500, options);
    assert!(
        sum.snapshots < 1000 || sum.overtaken > 1000,
        "markers overtook only {} messages",
        sum.overtaken
    );
}

/// The oracle can fail here: markers that overtake messages but record none
/// of them leave those messages out of the channel's state, and the oracle
/// names the channel.
#[test]
fn losing_what_a_marker_overtook_is_caught() {
    let lossy = Options {
        overtaking: true,
        fault: Some(Fault::LoseOvertaken),
    };
    let caught = (0..400u64).find(|&seed| {
        let c = run_seed(seed, lossy).unwrap();
        let named = c
            .violations
            .iter()
            .any(|x| x.check == Check::ChannelState && x.channel.is_some());
        c.overtaken > 0 && named
    });
    let seed = caught.expect("no seed of 400 caught a lost overtaken message");
    // The same seed without the fault is clean.
    let clean = Options {
        overtaking: true,
        fault: None,
    };
    run_seed(seed, clean).unwrap_or_else(|e| panic!("{e}"));
}
