//! Markers that overtake application messages, on either side of a channel
//! (`Overtaking`). Invariant: a message a marker overtakes is recorded
//! exactly once, in the state of the channel it was on, after what the
//! receiver recorded; and a snapshot is not complete at a sender until
//! every one of its markers is placed.
//!
//! Topology: p -> q, q -> p, r -> q, q -> r.

use std::sync::Arc;

use cairn_core::{
    Assembler, ChannelId, Engine, Error, LocalSnapshot, Output, Overtaking, ProcessId,
    RecordedChannel, SnapshotId, Topology,
};

const PQ: ChannelId = ChannelId(0);
const QP: ChannelId = ChannelId(1);
const RQ: ChannelId = ChannelId(2);
const QR: ChannelId = ChannelId(3);
const Q: ProcessId = ProcessId(1);
const S: SnapshotId = SnapshotId(7);

fn topology() -> Topology {
    Topology::new(
        ["p", "q", "r"],
        &[("p", "q"), ("q", "p"), ("r", "q"), ("q", "r")],
    )
    .unwrap()
}

type E = Engine<&'static str, &'static str>;
type Out = Output<&'static str, &'static str>;
type Part = LocalSnapshot<&'static str, &'static str>;

fn q(overtaking: Overtaking) -> E {
    let mut e = Engine::new(&topology(), Q).unwrap();
    e.set_overtaking(overtaking);
    e
}

/// Drains the outputs, answering a state request with `state`.
fn drain(e: &mut E, state: &'static str) -> Vec<Out> {
    let mut out = Vec::new();
    while let Some(o) = e.poll_output() {
        if let Output::RecordState { snapshot } = o {
            e.record_state(snapshot, state).unwrap();
        }
        out.push(o);
    }
    out
}

fn complete(out: &[Out]) -> Option<&Part> {
    out.iter().find_map(|o| match o {
        Output::LocalSnapshotComplete(l) => Some(l),
        _ => None,
    })
}

fn channel(l: &Part, c: ChannelId) -> Vec<&'static str> {
    l.channels
        .iter()
        .find(|rc| rc.channel == c)
        .unwrap()
        .messages
        .clone()
}

#[test]
fn a_marker_taken_ahead_records_the_messages_it_overtook_as_the_channel_state() {
    let mut e = q(Overtaking::BOTH);
    e.handle_marker_ahead(PQ, S, &["a", "b"]).unwrap();
    drain(&mut e, "q0");
    for c in [QP, QR] {
        e.marker_placed(c, S, Vec::new()).unwrap();
    }
    // The overtaken messages are handled afterwards: not recorded twice.
    e.handle_message(PQ, &"a").unwrap();
    e.handle_message(PQ, &"b").unwrap();
    // What arrives on r -> q before its marker is recorded as ever.
    e.handle_message(RQ, &"c").unwrap();
    e.handle_marker_ahead(RQ, S, &["d"]).unwrap();
    let out = drain(&mut e, "unused");
    let l = complete(&out).expect("complete once every channel is recorded");
    assert_eq!(l.state, "q0");
    assert_eq!(channel(l, PQ), ["a", "b"]);
    assert_eq!(channel(l, RQ), ["c", "d"]);
    assert!(l.overtaken.is_empty());
}

#[test]
fn a_sender_completes_only_once_every_marker_is_placed_and_reports_the_overtaken_tail() {
    let mut e = q(Overtaking {
        sender: true,
        receiver: false,
    });
    e.start_snapshot(S).unwrap();
    let out = drain(&mut e, "q0");
    let markers: Vec<ChannelId> = out
        .iter()
        .filter_map(|o| match o {
            Output::SendMarker { channel, .. } => Some(*channel),
            _ => None,
        })
        .collect();
    assert_eq!(markers, [QP, QR]);
    e.handle_marker(PQ, S).unwrap();
    e.handle_marker(RQ, S).unwrap();
    assert!(
        complete(&drain(&mut e, "unused")).is_none(),
        "markers not placed yet"
    );
    e.marker_placed(QP, S, vec!["x", "y"]).unwrap();
    assert!(
        complete(&drain(&mut e, "unused")).is_none(),
        "q -> r not placed yet"
    );
    e.marker_placed(QR, S, Vec::new()).unwrap();
    let out = drain(&mut e, "unused");
    let l = complete(&out).expect("complete once placed");
    assert_eq!(
        l.overtaken,
        [RecordedChannel {
            channel: QP,
            messages: vec!["x", "y"]
        }]
    );
}

#[test]
fn overtaking_that_is_off_or_misplaced_is_refused() {
    let mut off = q(Overtaking::default());
    assert!(matches!(
        off.handle_marker_ahead(PQ, S, &["a"]),
        Err(Error::Overtaking { .. })
    ));
    // Nothing was recorded by the refused call; an empty one is a plain marker.
    assert!(!off.has_recorded(S));
    off.handle_marker_ahead(PQ, S, &[]).unwrap();
    drain(&mut off, "q0");
    assert!(matches!(
        off.marker_placed(QP, S, Vec::new()),
        Err(Error::Overtaking { .. })
    ));

    let mut e = q(Overtaking::BOTH);
    assert!(matches!(
        e.marker_placed(QP, S, Vec::new()),
        Err(Error::Overtaking { .. })
    ));
    e.start_snapshot(S).unwrap();
    drain(&mut e, "q0");
    assert!(matches!(
        e.marker_placed(PQ, S, Vec::new()),
        Err(Error::WrongChannel { .. })
    ));
    e.marker_placed(QP, S, Vec::new()).unwrap();
    assert!(matches!(
        e.marker_placed(QP, S, Vec::new()),
        Err(Error::Overtaking { .. })
    ));
    // A snapshot given up meanwhile takes a late placement quietly.
    e.abort(S);
    e.marker_placed(QR, S, vec!["z"]).unwrap();
}

fn part(
    p: u32,
    channels: &[(ChannelId, &[&'static str])],
    overtaken: &[(ChannelId, &[&'static str])],
) -> Part {
    let rc = |v: &[(ChannelId, &[&'static str])]| {
        v.iter()
            .map(|(c, m)| RecordedChannel {
                channel: *c,
                messages: m.to_vec(),
            })
            .collect()
    };
    LocalSnapshot {
        snapshot: S,
        process: ProcessId(p),
        state: "s",
        channels: rc(channels),
        overtaken: rc(overtaken),
    }
}

#[test]
fn a_channel_is_what_its_receiver_recorded_then_what_its_sender_overtook() {
    let mut a = Assembler::new(Arc::new(topology()), S);
    // p sends p -> q; q sends q -> p and q -> r; r sends r -> q.
    a.add(part(0, &[(QP, &["qp1"])], &[(PQ, &["pq3", "pq4"])]))
        .unwrap();
    a.add(part(1, &[(PQ, &["pq1", "pq2"]), (RQ, &[])], &[]))
        .unwrap();
    a.add(part(2, &[(QR, &[])], &[(RQ, &["rq1"])])).unwrap();
    let g = a.finish().unwrap();
    assert_eq!(g.channels[PQ.index()], ["pq1", "pq2", "pq3", "pq4"]);
    assert_eq!(g.channels[QP.index()], ["qp1"]);
    assert_eq!(g.channels[RQ.index()], ["rq1"]);
    assert!(g.channels[QR.index()].is_empty());
}

#[test]
fn overtaken_messages_on_a_channel_the_process_does_not_send_on_are_refused() {
    let mut a: Assembler<&'static str, &'static str> = Assembler::new(Arc::new(topology()), S);
    let bad = part(0, &[(QP, &[])], &[(QP, &["x"])]);
    assert!(matches!(a.add(bad), Err(Error::BadReport { .. })));
    let twice = part(0, &[(QP, &[])], &[(PQ, &["x"]), (PQ, &["y"])]);
    assert!(matches!(a.add(twice), Err(Error::BadReport { .. })));
    // Refused reports changed nothing: a good one is still taken.
    a.add(part(0, &[(QP, &[])], &[])).unwrap();
}

/// The sides read back from their names, and nothing else is a side.
#[test]
fn sides_read_back_from_their_names() {
    for name in ["none", "sender", "receiver", "both"] {
        let sides = Overtaking::from_name(name).unwrap();
        assert_eq!(sides.name(), name);
        assert_eq!(sides.any(), name != "none");
    }
    assert_eq!(Overtaking::from_name("both"), Some(Overtaking::BOTH));
    assert_eq!(Overtaking::from_name("none"), Some(Overtaking::default()));
    for bad in ["", "Both", "true", "sender,receiver"] {
        assert_eq!(Overtaking::from_name(bad), None, "{bad:?}");
    }
}
