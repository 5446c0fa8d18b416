//! Bad input is an error, never a panic: arbitrary sequences of engine inputs,
//! arbitrary assembler reports and arbitrary snapshot documents.

use std::sync::Arc;

use cairn_core::{
    Assembler, ChannelId, Engine, GlobalSnapshot, LocalSnapshot, Output, Overtaking, ProcessId,
    RecordedChannel, SnapshotDoc, SnapshotId, Topology,
};
use proptest::prelude::*;

fn topo() -> Arc<Topology> {
    Arc::new(
        Topology::new(
            ["a", "b", "c"],
            &[("a", "b"), ("b", "a"), ("c", "b"), ("b", "c"), ("a", "b")],
        )
        .unwrap(),
    )
}

#[derive(Debug, Clone)]
enum Input {
    Start(u64),
    Marker(u32, u64),
    Message(u32, u8),
    Send(u32, u8),
    State(u64),
    Drain,
    MarkerAhead(u32, u64, Vec<u8>),
    Placed(u32, u64, Vec<u8>),
    Overtake(bool, bool),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        (0..4u64).prop_map(Input::Start),
        (0..7u32, 0..4u64).prop_map(|(c, s)| Input::Marker(c, s)),
        (0..7u32, any::<u8>()).prop_map(|(c, m)| Input::Message(c, m)),
        (0..7u32, any::<u8>()).prop_map(|(c, m)| Input::Send(c, m)),
        (0..4u64).prop_map(Input::State),
        Just(Input::Drain),
        (
            0..7u32,
            0..4u64,
            proptest::collection::vec(any::<u8>(), 0..3)
        )
            .prop_map(|(c, s, m)| Input::MarkerAhead(c, s, m)),
        (
            0..7u32,
            0..4u64,
            proptest::collection::vec(any::<u8>(), 0..3)
        )
            .prop_map(|(c, s, m)| Input::Placed(c, s, m)),
        (any::<bool>(), any::<bool>()).prop_map(|(a, b)| Input::Overtake(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever arrives, in whatever order, the engine answers with a value or
    /// an error, and every local snapshot it completes covers exactly its
    /// incoming channels.
    #[test]
    fn engine_never_panics(p in 0..3u32, inputs in proptest::collection::vec(input(), 0..60)) {
        let topo = topo();
        let mut e: Engine<u8, u64> = Engine::new(&topo, ProcessId(p)).unwrap();
        for i in inputs {
            let _ = match i {
                Input::Start(s) => e.start_snapshot(SnapshotId(s)).map(|_| ()),
                Input::Marker(c, s) => e.handle_marker(ChannelId(c), SnapshotId(s)),
                Input::Message(c, m) => e.handle_message(ChannelId(c), &m),
                Input::Send(c, m) => e.send(ChannelId(c), m),
                Input::State(s) => e.record_state(SnapshotId(s), s),
                Input::Drain => Ok(()),
                Input::MarkerAhead(c, s, m) => e.handle_marker_ahead(ChannelId(c), SnapshotId(s), &m),
                Input::Placed(c, s, m) => e.marker_placed(ChannelId(c), SnapshotId(s), m),
                Input::Overtake(sender, receiver) => {
                    e.set_overtaking(Overtaking { sender, receiver });
                    Ok(())
                }
            };
            while let Some(out) = e.poll_output() {
                if let Output::LocalSnapshotComplete(l) = out {
                    let chans: Vec<ChannelId> = l.channels.iter().map(|c| c.channel).collect();
                    prop_assert_eq!(chans, topo.incoming(ProcessId(p)).to_vec());
                    let out = topo.outgoing(ProcessId(p));
                    prop_assert!(l.overtaken.iter().all(|c| out.contains(&c.channel)));
                }
            }
        }
    }

    /// The assembler rejects bad reports with errors and completes only when
    /// every process and channel is in.
    #[test]
    fn assembler_never_panics(reports in proptest::collection::vec(
        (0..5u32, 0..2u64, proptest::collection::vec((0..7u32, proptest::collection::vec(any::<u8>(), 0..3)), 0..4)), 0..10)
    ) {
        let mut a: Assembler<u8, u8> = Assembler::new(topo(), SnapshotId(0));
        for (p, s, chans) in reports {
            let local = LocalSnapshot {
                snapshot: SnapshotId(s),
                process: ProcessId(p),
                state: 0,
                channels: chans.into_iter().map(|(c, m)| RecordedChannel { channel: ChannelId(c), messages: m }).collect(),
                overtaken: Vec::new(),
            };
            let _ = a.add(local);
            let (procs, chans) = a.missing();
            prop_assert_eq!(a.is_complete(), procs.is_empty() && chans.is_empty());
        }
    }

    /// Any JSON text either parses into a snapshot that fits the topology or
    /// gives an error.
    #[test]
    fn snapshot_documents_never_panic(text in "\\PC{0,200}") {
        if let Ok(doc) = serde_json::from_str::<SnapshotDoc<u8, u8>>(&text) {
            let _ = GlobalSnapshot::from_doc(&topo(), doc);
        }
    }
}
