//! The oracle can fail: corrupted snapshots, corrupted traces and faulty
//! engine variants are each caught, with the snapshot, channel and message named.

use std::sync::Arc;

use cairn_core::oracle::{Check, Violation};
use cairn_core::trace::Event;
use cairn_core::{ProcessId, Topology};
use cairn_sim::workload::{Workload, random_topology, run_random};
use cairn_sim::{Command, Config, Fault, Outcome, Simulator, TokenModel, Tokens};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

type Run = Outcome<Tokens, Tokens>;

const P: ProcessId = ProcessId(0);
const Q: ProcessId = ProcessId(1);

fn pair() -> Arc<Topology> {
    Arc::new(Topology::new(["p", "q"], &[("p", "q"), ("q", "p")]).unwrap())
}

fn send(from: ProcessId, n: u64) -> Command<Tokens> {
    Command::Send {
        from,
        channel: pair().outgoing(from)[0],
        message: Tokens { tokens: n },
    }
}

fn scripted(fault: Option<Fault>, initial: [u64; 2], script: &[Command<Tokens>]) -> Run {
    let config = Config {
        seed: 1,
        max_delay: 1,
        fault,
        ..Config::default()
    };
    let initial = initial.iter().map(|&tokens| Tokens { tokens }).collect();
    let mut sim = Simulator::new(pair(), TokenModel, initial, config).unwrap();
    sim.run_script(script).unwrap();
    sim.finish().unwrap()
}

fn has(v: &[Violation], check: Check, channel: Option<&str>, seq: Option<u64>) -> bool {
    v.iter().any(|x| {
        x.check == check && x.channel.as_deref() == channel && x.seq == seq && x.snapshot.is_some()
    })
}

/// A run with messages recorded in channels, to corrupt.
fn busy_run() -> Run {
    for seed in 0.. {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let topo = Arc::new(random_topology(&mut rng, 5, 4));
        let initial = vec![Tokens { tokens: 20 }; 5];
        let config = Config {
            seed,
            ..Config::default()
        };
        let mut sim = Simulator::new(topo, TokenModel, initial, config).unwrap();
        let w = Workload {
            ticks: 40,
            send_percent: 60,
            snapshots: 2,
            max_initiators: 2,
        };
        run_random(&mut sim, &w).unwrap();
        let run = sim.finish().unwrap();
        let distinct = run.snapshots[0]
            .channels
            .iter()
            .any(|c| c.len() >= 2 && c[0] != c[1]);
        if distinct && run.verify(&TokenModel).is_empty() {
            return run;
        }
    }
    unreachable!()
}

#[test]
fn marker_sent_after_a_message_breaks_the_cut() {
    // p records and should send its marker before the token; the fault sends it after.
    let script = [
        Command::Snapshot {
            initiators: vec![P],
        },
        send(P, 1),
        Command::Tick(5),
    ];
    assert!(
        scripted(None, [1, 0], &script)
            .verify(&TokenModel)
            .is_empty()
    );
    let v = scripted(Some(Fault::MarkerAfterMessage), [1, 0], &script).verify(&TokenModel);
    assert!(has(&v, Check::Cut, Some("p->q"), Some(0)), "{v:#?}");
    assert!(
        v.iter().any(|x| x
            .to_string()
            .starts_with("snapshot 0, channel p->q, message #0 [Cut]")),
        "{v:#?}"
    );
}

#[test]
fn channel_recorded_from_the_wrong_point_is_caught() {
    // q records first; p's token reaches q before p's recording, so it belongs in p->q.
    let script = [
        Command::Snapshot {
            initiators: vec![Q],
        },
        send(P, 1),
        Command::Tick(5),
    ];
    let good = scripted(None, [1, 0], &script);
    assert!(good.verify(&TokenModel).is_empty());
    assert_eq!(good.snapshots[0].channels[0], vec![Tokens { tokens: 1 }]);
    let v = scripted(Some(Fault::LateChannelRecording), [1, 0], &script).verify(&TokenModel);
    assert!(
        has(&v, Check::ChannelState, Some("p->q"), Some(0)),
        "{v:#?}"
    );
}

#[test]
fn stale_local_state_is_caught_at_the_boundary() {
    let script = [
        send(P, 1),
        Command::Snapshot {
            initiators: vec![P],
        },
        Command::Tick(5),
    ];
    assert!(
        scripted(None, [2, 0], &script)
            .verify(&TokenModel)
            .is_empty()
    );
    let v = scripted(Some(Fault::StaleState), [2, 0], &script).verify(&TokenModel);
    assert!(
        v.iter()
            .any(|x| x.check == Check::Boundary && x.process.as_deref() == Some("p")),
        "{v:#?}"
    );
}

#[test]
fn faulty_engines_are_caught_across_random_runs() {
    for fault in [
        Fault::MarkerAfterMessage,
        Fault::LateChannelRecording,
        Fault::StaleState,
    ] {
        let mut caught = 0;
        for seed in 0..200 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let topo = Arc::new(random_topology(&mut rng, 6, 6));
            let config = Config {
                seed,
                fault: Some(fault),
                ..Config::default()
            };
            let mut sim =
                Simulator::new(topo, TokenModel, vec![Tokens { tokens: 10 }; 6], config).unwrap();
            let w = Workload {
                ticks: 50,
                send_percent: 50,
                snapshots: 3,
                max_initiators: 2,
            };
            run_random(&mut sim, &w).unwrap();
            if !sim.finish().unwrap().verify(&TokenModel).is_empty() {
                caught += 1;
            }
        }
        assert!(
            caught >= 100,
            "{fault:?}: caught in only {caught} of 200 runs"
        );
    }
}

#[test]
fn corrupted_snapshots_are_caught() {
    let run = busy_run();
    let (c, _) = run.snapshots[0]
        .channels
        .iter()
        .enumerate()
        .find(|(_, c)| c.len() >= 2 && c[0] != c[1])
        .unwrap();
    let name = run.topology.channel_name(cairn_core::ChannelId(c as u32));
    let corrupt = |f: &dyn Fn(&mut Run)| {
        let mut r = run.clone();
        f(&mut r);
        r.verify(&TokenModel)
    };
    let v = corrupt(&|r| r.snapshots[0].states[2].tokens += 1);
    assert!(
        v.iter()
            .any(|x| x.check == Check::Boundary && x.process.as_deref() == Some("N3")),
        "{v:#?}"
    );
    let v = corrupt(&|r| {
        r.snapshots[0].channels[c].pop();
    });
    assert!(
        v.iter().any(|x| x.check == Check::ChannelState
            && x.channel.as_deref() == Some(name.as_str())
            && x.seq.is_some()),
        "{v:#?}"
    );
    let v = corrupt(&|r| r.snapshots[0].channels[c].swap(0, 1));
    assert!(
        v.iter()
            .any(|x| x.check == Check::ChannelState && x.channel.as_deref() == Some(name.as_str())),
        "{v:#?}"
    );
    let v = corrupt(&|r| r.snapshots[0].channels[c].push(Tokens { tokens: 99 }));
    assert!(
        v.iter()
            .any(|x| x.check == Check::ChannelState && x.detail.contains("was not in flight")),
        "{v:#?}"
    );
}

#[test]
fn corrupted_traces_are_caught() {
    let run = busy_run();
    let corrupt = |f: &dyn Fn(&mut Run)| {
        let mut r = run.clone();
        f(&mut r);
        r.verify(&TokenModel)
    };
    // A record event moved past the process's next application event.
    let v = corrupt(&|r| {
        let t = &mut r.trace;
        let i = t
            .iter()
            .position(|e| matches!(e.event, Event::Record { .. }))
            .unwrap();
        let p = t[i].process;
        let j = (i + 1..t.len())
            .find(|&j| {
                t[j].process == p
                    && matches!(t[j].event, Event::Send { .. } | Event::Receive { .. })
            })
            .unwrap();
        let ev = t.remove(i);
        t.insert(j, ev);
    });
    assert!(!v.is_empty(), "a moved record event went unnoticed");
    // Two receives on one channel swapped: not FIFO.
    let v = corrupt(&|r| {
        let t = &mut r.trace;
        let recv: Vec<usize> = (0..t.len())
            .filter(|&i| matches!(t[i].event, Event::Receive { .. }))
            .collect();
        let (a, b) = recv
            .iter()
            .flat_map(|&a| recv.iter().map(move |&b| (a, b)))
            .find(|&(a, b)| a < b && matches!((&t[a].event, &t[b].event), (Event::Receive { channel: x, .. }, Event::Receive { channel: y, .. }) if x == y))
            .unwrap();
        t.swap(a, b);
    });
    assert!(
        v.iter()
            .any(|x| x.check == Check::Trace && x.channel.is_some() && x.seq.is_some()),
        "{v:#?}"
    );
    // A record event dropped.
    let v = corrupt(&|r| {
        let i = r
            .trace
            .iter()
            .position(|e| matches!(e.event, Event::Record { .. }))
            .unwrap();
        r.trace.remove(i);
    });
    assert!(v.iter().any(|x| x.check == Check::Record), "{v:#?}");
    // The run's final state misreported.
    let v = corrupt(&|r| r.final_states[0].tokens += 1);
    assert!(
        v.iter()
            .any(|x| x.check == Check::Final && x.process.as_deref() == Some("N1")),
        "{v:#?}"
    );
}
