//! The paper's worked examples (shared/reference/paper-examples.md), run on
//! the real engine and judged by the oracle.

use std::sync::Arc;

use cairn_core::oracle::{self, AppEvent, Model, Run};
use cairn_core::trace::Event;
use cairn_core::{ChannelId, GlobalSnapshot, ProcessId, SnapshotId, Topology};
use cairn_sim::explore::{Step, explore};
use cairn_sim::{System, TokenModel, Tokens};

const P: ProcessId = ProcessId(0);
const Q: ProcessId = ProcessId(1);
const C: ChannelId = ChannelId(0); // p -> q
const C2: ChannelId = ChannelId(1); // q -> p (the paper's c')
const S0: SnapshotId = SnapshotId(0);

fn two_processes() -> Arc<Topology> {
    Arc::new(Topology::new(["p", "q"], &[("p", "q"), ("q", "p")]).unwrap())
}

fn verify<D: Model>(sys: &System<D>) -> Vec<oracle::Violation> {
    let snaps: Vec<GlobalSnapshot<D::Message, D::State>> =
        sys.completed().values().cloned().collect();
    let run = Run {
        topology: sys.topology(),
        trace: sys.trace(),
        initial: sys.initial_states(),
        initial_channels: &[],
        final_states: sys.states(),
    };
    oracle::check(sys.model(), &run, &snaps)
}

/// Example 2.1: every snapshot of a one-token system holds exactly one token,
/// over every interleaving of up to eight token passes, with p, q or both
/// starting the snapshot at any moment.
#[test]
fn example_2_1_every_interleaving_records_exactly_one_token() {
    let topo = two_processes();
    let start = System::new(
        topo.clone(),
        TokenModel,
        vec![Tokens { tokens: 1 }, Tokens { tokens: 0 }],
    )
    .unwrap();
    let choices = |sys: &System<TokenModel>| {
        let mut steps = Vec::new();
        let passes = sys
            .trace()
            .iter()
            .filter(|e| matches!(e.event, Event::Send { .. }))
            .count();
        for p in [P, Q] {
            if passes < 8 && sys.states()[p.index()].tokens == 1 {
                steps.push(Step::Send {
                    from: p,
                    channel: topo.outgoing(p)[0],
                    message: Tokens { tokens: 1 },
                });
            }
            if !sys.has_recorded(p, S0) {
                steps.push(Step::Start { process: p, id: S0 });
            }
        }
        steps
    };
    let mut outcomes = std::collections::BTreeSet::new();
    let mut check = |sys: &System<TokenModel>| {
        let snap = sys.completed().get(&S0).ok_or("no snapshot completed")?;
        let (held, flying) = cairn_sim::token::recorded_tokens(snap);
        if held + flying != 1 {
            return Err(format!(
                "recorded {held} tokens in processes and {flying} in channels"
            ));
        }
        let violations = verify(sys);
        if !violations.is_empty() {
            return Err(format!("{violations:#?}"));
        }
        outcomes.insert(format!("{:?}/{:?}", snap.states, snap.channels));
        Ok(())
    };
    let stats = explore(&start, 64, &choices, &mut check).unwrap_or_else(|e| panic!("{e}"));
    assert!(stats.runs > 1000, "explored only {} runs", stats.runs);
    // The token is recorded in each of the four places it can be.
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
}

/// Example 2.2's processes: p goes A -(send M)-> B -(receive M')-> A;
/// q goes C -(send M')-> D -(receive M)-> C.
#[derive(Clone, Copy, Debug)]
struct Example22;

impl Model for Example22 {
    type State = char;
    type Message = &'static str;
    fn apply(&self, p: ProcessId, s: &char, e: AppEvent<'_, &'static str>) -> Option<char> {
        match (p, *s, e) {
            (
                P,
                'A',
                AppEvent::Send {
                    channel: C,
                    message: &"M",
                },
            ) => Some('B'),
            (
                P,
                'B',
                AppEvent::Receive {
                    channel: C2,
                    message: &"M'",
                },
            ) => Some('A'),
            (
                Q,
                'C',
                AppEvent::Send {
                    channel: C2,
                    message: &"M'",
                },
            ) => Some('D'),
            (
                Q,
                'D',
                AppEvent::Receive {
                    channel: C,
                    message: &"M",
                },
            ) => Some('C'),
            _ => None,
        }
    }
}

/// Section 4's event order on Example 2.2, step by step.
fn section_4_run(q_records_spontaneously: bool) -> System<Example22> {
    let mut sys = System::new(two_processes(), Example22, vec!['A', 'C']).unwrap();
    let d = &mut || 1;
    sys.start_snapshot(P, S0, 0, d).unwrap(); // 1. p records A, marker on c
    sys.send(P, C, "M", 0, d).unwrap(); // 2. p sends M (S1)
    sys.send(Q, C2, "M'", 0, d).unwrap(); // 3. q sends M' (S2)
    if q_records_spontaneously {
        sys.start_snapshot(Q, S0, 0, d).unwrap();
    }
    assert!(sys.deliver(C2, 0, d).unwrap()); // 4. p receives M' (S3)
    assert!(sys.deliver(C, 0, d).unwrap()); // 5. q receives the marker on c
    assert!(sys.deliver(C2, 0, d).unwrap()); // 6. p receives the marker on c'
    assert!(
        sys.completed().contains_key(&S0),
        "recording is done after step 6"
    );
    assert!(sys.deliver(C, 0, d).unwrap()); // 7. q receives M
    sys
}

#[test]
fn example_2_2_section_4_records_the_papers_state() {
    for spontaneous in [false, true] {
        let sys = section_4_run(spontaneous);
        let s = &sys.completed()[&S0];
        assert_eq!(s.states, vec!['A', 'D'], "p: A, q: D");
        assert_eq!(s.channels[C.index()], Vec::<&str>::new(), "c: empty");
        assert_eq!(s.channels[C2.index()], vec!["M'"], "c': [M']");
        assert_eq!(verify(&sys), vec![]);
        // After step 7 the run is back where it began: p in A, q in C.
        assert_eq!(sys.states(), &['A', 'C']);
    }
}

#[test]
fn example_4_1_permutation_puts_pre_recording_events_first() {
    let sys = section_4_run(false);
    let order = oracle::permuted_order(sys.topology(), sys.trace(), S0).unwrap();
    let app: Vec<(ProcessId, &str, &str)> = order
        .iter()
        .filter_map(|&i| {
            let e = &sys.trace()[i];
            match &e.event {
                Event::Send { message, .. } => Some((e.process, "send", *message)),
                Event::Receive { message, .. } => Some((e.process, "receive", *message)),
                _ => None,
            }
        })
        .collect();
    // seq' = e1 (q sends M'), e0 (p sends M), e2 (p receives M'), then q receives M.
    assert_eq!(
        app,
        vec![
            (Q, "send", "M'"),
            (P, "send", "M"),
            (P, "receive", "M'"),
            (Q, "receive", "M")
        ]
    );
    // Only e1 is pre-recording: the state after it alone is S*.
    let recorded_at = |p: ProcessId| {
        sys.trace()
            .iter()
            .position(|e| e.process == p && matches!(e.event, Event::Record { .. }))
            .unwrap()
    };
    let pre: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| i < recorded_at(sys.trace()[i].process))
        .collect();
    let pre_app: Vec<&Event<&str>> = pre
        .iter()
        .map(|&i| &sys.trace()[i].event)
        .filter(|e| matches!(e, Event::Send { .. } | Event::Receive { .. }))
        .collect();
    assert_eq!(
        pre_app,
        vec![&Event::Send {
            channel: C2,
            seq: 0,
            message: "M'"
        }]
    );
    assert_eq!(
        &order[..pre.len()],
        &pre[..],
        "pre-recording events come first"
    );
}

/// Every interleaving of Example 2.2 (both processes may send once, either may
/// start the snapshot) yields snapshots the oracle accepts.
#[test]
fn example_2_2_every_interleaving_passes_the_oracle() {
    let start = System::new(two_processes(), Example22, vec!['A', 'C']).unwrap();
    let choices = |sys: &System<Example22>| {
        let sends = sys
            .trace()
            .iter()
            .filter(|e| matches!(e.event, Event::Send { .. }))
            .count();
        let mut steps = Vec::new();
        if sends < 4 && sys.states()[0] == 'A' {
            steps.push(Step::Send {
                from: P,
                channel: C,
                message: "M",
            });
        }
        if sends < 4 && sys.states()[1] == 'C' {
            steps.push(Step::Send {
                from: Q,
                channel: C2,
                message: "M'",
            });
        }
        for p in [P, Q] {
            if !sys.has_recorded(p, S0) {
                steps.push(Step::Start { process: p, id: S0 });
            }
        }
        steps
    };
    let mut check = |sys: &System<Example22>| {
        sys.completed().get(&S0).ok_or("no snapshot completed")?;
        let v = verify(sys);
        if v.is_empty() {
            Ok(())
        } else {
            Err(format!("{v:#?}"))
        }
    };
    let stats = explore(&start, 64, &choices, &mut check).unwrap_or_else(|e| panic!("{e}"));
    assert!(stats.runs > 100, "explored only {} runs", stats.runs);
}
