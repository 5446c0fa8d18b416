//! Table-driven cases for the marker-sending and marker-receiving rules.
//!
//! Topology for every case: p -> q, q -> p, r -> q, and q -> r twice (two
//! parallel channels). Each case drives q's engine (or p's) with a list of
//! inputs and states the outputs each input must produce, in order.

use cairn_core::{
    ChannelId, Engine, Error, LocalSnapshot, Output, ProcessId, RecordedChannel, SnapshotId,
    StartOutcome, Topology,
};

const PQ: ChannelId = ChannelId(0);
const QP: ChannelId = ChannelId(1);
const RQ: ChannelId = ChannelId(2);
const QR1: ChannelId = ChannelId(3);
const QR2: ChannelId = ChannelId(4);
const P: ProcessId = ProcessId(0);
const Q: ProcessId = ProcessId(1);

fn topology() -> Topology {
    Topology::new(
        ["p", "q", "r"],
        &[("p", "q"), ("q", "p"), ("r", "q"), ("q", "r"), ("q", "r")],
    )
    .unwrap()
}

#[derive(Debug, Clone)]
enum In {
    Start(u64),
    Marker(ChannelId, u64),
    Msg(ChannelId, &'static str),
    Send(ChannelId, &'static str),
    State(u64, &'static str),
}

type Out = Output<&'static str, &'static str>;

fn rec(s: u64) -> Out {
    Output::RecordState {
        snapshot: SnapshotId(s),
    }
}
fn marker(c: ChannelId, s: u64) -> Out {
    Output::SendMarker {
        channel: c,
        snapshot: SnapshotId(s),
    }
}
fn done_ch(c: ChannelId, s: u64) -> Out {
    Output::ChannelRecorded {
        snapshot: SnapshotId(s),
        channel: c,
    }
}
fn send(c: ChannelId, m: &'static str) -> Out {
    Output::Send {
        channel: c,
        message: m,
    }
}
fn local(s: u64, state: &'static str, pq: &[&'static str], rq: &[&'static str]) -> Out {
    Output::LocalSnapshotComplete(LocalSnapshot {
        snapshot: SnapshotId(s),
        process: Q,
        state,
        channels: vec![
            RecordedChannel {
                channel: PQ,
                messages: pq.to_vec(),
            },
            RecordedChannel {
                channel: RQ,
                messages: rq.to_vec(),
            },
        ],
        overtaken: Vec::new(),
    })
}

struct Case {
    name: &'static str,
    steps: Vec<(In, Vec<Out>)>,
}

fn cases() -> Vec<Case> {
    use In::*;
    vec![
        Case {
            name: "marker_on_new_channel_records_empty_state",
            steps: vec![
                (
                    Marker(PQ, 1),
                    vec![
                        rec(1),
                        done_ch(PQ, 1),
                        marker(QP, 1),
                        marker(QR1, 1),
                        marker(QR2, 1),
                    ],
                ),
                (State(1, "s"), vec![]),
                (Marker(RQ, 1), vec![done_ch(RQ, 1), local(1, "s", &[], &[])]),
            ],
        },
        Case {
            name: "messages_after_recording_and_before_marker_form_the_channel_state",
            steps: vec![
                (Msg(RQ, "before"), vec![]),
                (
                    Marker(PQ, 1),
                    vec![
                        rec(1),
                        done_ch(PQ, 1),
                        marker(QP, 1),
                        marker(QR1, 1),
                        marker(QR2, 1),
                    ],
                ),
                (State(1, "s"), vec![]),
                (Msg(PQ, "after-marker"), vec![]),
                (Msg(RQ, "m1"), vec![]),
                (Msg(RQ, "m2"), vec![]),
                (
                    Marker(RQ, 1),
                    vec![done_ch(RQ, 1), local(1, "s", &[], &["m1", "m2"])],
                ),
                (Msg(RQ, "late"), vec![]),
            ],
        },
        Case {
            name: "initiator_records_then_sends_one_marker_per_outgoing_channel",
            steps: vec![
                (
                    Start(5),
                    vec![rec(5), marker(QP, 5), marker(QR1, 5), marker(QR2, 5)],
                ),
                (State(5, "s"), vec![]),
                (Msg(PQ, "x"), vec![]),
                (Marker(PQ, 5), vec![done_ch(PQ, 5)]),
                (
                    Marker(RQ, 5),
                    vec![done_ch(RQ, 5), local(5, "s", &["x"], &[])],
                ),
            ],
        },
        Case {
            name: "marker_goes_before_every_later_message_on_its_channel",
            steps: vec![
                (Send(QR2, "early"), vec![send(QR2, "early")]),
                (
                    Start(1),
                    vec![rec(1), marker(QP, 1), marker(QR1, 1), marker(QR2, 1)],
                ),
                (State(1, "s"), vec![]),
                (Send(QR2, "late"), vec![send(QR2, "late")]),
                (Marker(PQ, 1), vec![done_ch(PQ, 1)]),
                (Marker(RQ, 1), vec![done_ch(RQ, 1), local(1, "s", &[], &[])]),
            ],
        },
        Case {
            name: "second_initiator_of_a_recorded_snapshot_changes_nothing",
            steps: vec![
                (
                    Marker(PQ, 2),
                    vec![
                        rec(2),
                        done_ch(PQ, 2),
                        marker(QP, 2),
                        marker(QR1, 2),
                        marker(QR2, 2),
                    ],
                ),
                (State(2, "s"), vec![]),
                (Start(2), vec![]),
                (Marker(RQ, 2), vec![done_ch(RQ, 2), local(2, "s", &[], &[])]),
                (Start(2), vec![]),
            ],
        },
        Case {
            name: "overlapping_snapshots_record_independently",
            steps: vec![
                (
                    Start(1),
                    vec![rec(1), marker(QP, 1), marker(QR1, 1), marker(QR2, 1)],
                ),
                (State(1, "s1"), vec![]),
                (Msg(PQ, "a"), vec![]),
                (
                    Marker(PQ, 2),
                    vec![
                        rec(2),
                        done_ch(PQ, 2),
                        marker(QP, 2),
                        marker(QR1, 2),
                        marker(QR2, 2),
                    ],
                ),
                (State(2, "s2"), vec![]),
                (Msg(PQ, "b"), vec![]),
                (Msg(RQ, "c"), vec![]),
                (
                    Marker(RQ, 2),
                    vec![done_ch(RQ, 2), local(2, "s2", &[], &["c"])],
                ),
                (Marker(PQ, 1), vec![done_ch(PQ, 1)]),
                (
                    Marker(RQ, 1),
                    vec![done_ch(RQ, 1), local(1, "s1", &["a", "b"], &["c"])],
                ),
            ],
        },
    ]
}

fn apply(engine: &mut Engine<&'static str, &'static str>, input: &In) -> Result<(), Error> {
    match *input {
        In::Start(s) => engine.start_snapshot(SnapshotId(s)).map(|_| ()),
        In::Marker(c, s) => engine.handle_marker(c, SnapshotId(s)),
        In::Msg(c, m) => engine.handle_message(c, &m),
        In::Send(c, m) => engine.send(c, m),
        In::State(s, st) => engine.record_state(SnapshotId(s), st),
    }
}

#[test]
fn marker_rule_table() {
    let topo = topology();
    for case in cases() {
        let mut engine = Engine::new(&topo, Q).unwrap();
        for (i, (input, expected)) in case.steps.iter().enumerate() {
            apply(&mut engine, input)
                .unwrap_or_else(|e| panic!("{}: step {i} {input:?} failed: {e}", case.name));
            let got: Vec<Out> = std::iter::from_fn(|| engine.poll_output()).collect();
            assert_eq!(&got, expected, "{}: step {i} {input:?}", case.name);
        }
        assert_eq!(
            engine.in_progress().count(),
            0,
            "{}: snapshot left open",
            case.name
        );
    }
}

#[test]
fn duplicate_marker_is_an_error_not_a_panic() {
    let topo = topology();
    let mut e: Engine<&str, &str> = Engine::new(&topo, Q).unwrap();
    e.handle_marker(PQ, SnapshotId(1)).unwrap();
    e.record_state(SnapshotId(1), "s").unwrap();
    let err = e.handle_marker(PQ, SnapshotId(1)).unwrap_err();
    assert_eq!(
        err,
        Error::DuplicateMarker {
            snapshot: SnapshotId(1),
            channel: "p->q".into()
        }
    );
    e.handle_marker(RQ, SnapshotId(1)).unwrap();
    // After completion, another marker of the same snapshot is late.
    assert!(matches!(
        e.handle_marker(RQ, SnapshotId(1)),
        Err(Error::LateMarker { .. })
    ));
}

#[test]
fn inputs_are_refused_until_the_requested_state_is_recorded() {
    let topo = topology();
    let mut e: Engine<&str, &str> = Engine::new(&topo, Q).unwrap();
    assert_eq!(e.start_snapshot(SnapshotId(3)), Ok(StartOutcome::Started));
    assert_eq!(
        e.handle_message(PQ, &"m"),
        Err(Error::StatePending(SnapshotId(3)))
    );
    assert_eq!(e.send(QP, "m"), Err(Error::StatePending(SnapshotId(3))));
    assert_eq!(
        e.record_state(SnapshotId(4), "s"),
        Err(Error::StateNotRequested(SnapshotId(4)))
    );
    e.record_state(SnapshotId(3), "s").unwrap();
    assert_eq!(
        e.record_state(SnapshotId(3), "s"),
        Err(Error::StateNotRequested(SnapshotId(3)))
    );
    e.handle_message(PQ, &"m").unwrap();
}

#[test]
fn channels_used_in_the_wrong_direction_are_named() {
    let topo = topology();
    let mut e: Engine<&str, &str> = Engine::new(&topo, Q).unwrap();
    let err = e.handle_message(QP, &"m").unwrap_err();
    assert!(
        matches!(&err, Error::WrongChannel { direction: "incoming", process, .. } if process == "q")
    );
    assert!(matches!(
        e.send(PQ, "m"),
        Err(Error::WrongChannel {
            direction: "outgoing",
            ..
        })
    ));
    assert!(matches!(
        e.handle_marker(ChannelId(99), SnapshotId(0)),
        Err(Error::WrongChannel { .. })
    ));
    assert!(Engine::<&str, &str>::new(&topo, ProcessId(7)).is_err());
}

#[test]
fn process_without_incoming_channels_completes_on_its_state() {
    // s only sends; its local snapshot is just its state.
    let topo = Topology::new(["s", "t"], &[("s", "t")]).unwrap();
    let mut e: Engine<u8, u8> = Engine::new(&topo, P).unwrap();
    e.start_snapshot(SnapshotId(0)).unwrap();
    assert_eq!(
        e.poll_output(),
        Some(Output::RecordState {
            snapshot: SnapshotId(0)
        })
    );
    assert_eq!(
        e.poll_output(),
        Some(Output::SendMarker {
            channel: ChannelId(0),
            snapshot: SnapshotId(0)
        })
    );
    e.record_state(SnapshotId(0), 9).unwrap();
    let Some(Output::LocalSnapshotComplete(l)) = e.poll_output() else {
        panic!("not complete")
    };
    assert_eq!((l.state, l.channels.len()), (9, 0));
}

/// Drains every output of `e`, answering a state request with `state`.
fn drain(e: &mut Engine<&'static str, &'static str>, state: &'static str) -> Vec<Out> {
    let mut out = Vec::new();
    while let Some(o) = e.poll_output() {
        if let Output::RecordState { snapshot } = o {
            e.record_state(snapshot, state).unwrap();
        }
        out.push(o);
    }
    out
}

#[test]
fn an_aborted_snapshot_drops_its_recording_and_ignores_late_markers() {
    let topo = topology();
    let mut q = Engine::new(&topo, Q).unwrap();
    q.start_snapshot(SnapshotId(4)).unwrap();
    drain(&mut q, "s");
    q.handle_message(PQ, &"m1").unwrap();
    assert!(q.abort(SnapshotId(4)), "snapshot 4 was being recorded");
    assert_eq!(q.in_progress().count(), 0, "its recording is dropped");
    assert!(matches!(
        q.handle_marker(PQ, SnapshotId(4)),
        Err(Error::LateMarker { .. })
    ));
    assert_eq!(
        q.start_snapshot(SnapshotId(4)).unwrap(),
        StartOutcome::AlreadyRecorded
    );
    assert!(!q.abort(SnapshotId(4)), "nothing left to abort");
}

#[test]
fn a_recording_over_its_limit_is_abandoned_naming_the_channel() {
    let topo = topology();
    let mut q = Engine::new(&topo, Q).unwrap();
    q.set_recording_limit(Some(10));
    q.start_snapshot(SnapshotId(1)).unwrap();
    drain(&mut q, "s");
    q.handle_sized_message(PQ, &"a", 6).unwrap();
    assert!(drain(&mut q, "s").is_empty());
    q.handle_sized_message(RQ, &"b", 6).unwrap();
    assert_eq!(
        drain(&mut q, "s"),
        vec![Output::RecordingAbandoned {
            snapshot: SnapshotId(1),
            channel: RQ,
            bytes: 12,
        }]
    );
    assert_eq!(q.in_progress().count(), 0);
    // Later snapshots record afresh, under the same limit.
    q.start_snapshot(SnapshotId(2)).unwrap();
    drain(&mut q, "s");
    q.handle_sized_message(PQ, &"c", 4).unwrap();
    assert!(drain(&mut q, "s").is_empty());
}

#[test]
fn finished_snapshots_are_remembered_within_a_bound() {
    let topo = Topology::new(["a", "b"], &[("a", "b"), ("b", "a")]).unwrap();
    let mut a: Engine<u8, u8> = Engine::new(&topo, ProcessId(0)).unwrap();
    let ab = topo.outgoing(ProcessId(0))[0];
    let ba = topo.incoming(ProcessId(0))[0];
    let n = cairn_core::REMEMBERED_SNAPSHOTS as u64 * 3;
    for id in 0..n {
        a.start_snapshot(SnapshotId(id)).unwrap();
        while let Some(o) = a.poll_output() {
            if let Output::RecordState { snapshot } = o {
                a.record_state(snapshot, 0).unwrap();
            }
        }
        a.handle_marker(ba, SnapshotId(id)).unwrap();
        while a.poll_output().is_some() {}
    }
    let _ = ab;
    // Every one of them, even the oldest, is still known to be finished.
    for id in [0, 1, n / 2, n - 1] {
        assert_eq!(
            a.start_snapshot(SnapshotId(id)).unwrap(),
            StartOutcome::AlreadyRecorded,
            "snapshot {id}"
        );
    }
    assert!(
        format!("{a:?}").len() < 64 * 1024,
        "the engine's memory grew with every snapshot"
    );
}
