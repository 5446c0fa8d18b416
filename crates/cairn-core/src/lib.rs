//! The Chandy–Lamport snapshot algorithm as pure rules, with no I/O, clock or
//! runtime: a [`Topology`], one [`Engine`] per process, an [`Assembler`] that
//! joins local snapshots into a [`GlobalSnapshot`], and an [`oracle`] that
//! checks recorded snapshots against a run's [`trace`], independently of the
//! engine.
//!
//! # Driving an engine
//! Feed each thing that happens at a process into its engine, then drain the
//! outputs in order (see [`Output`]). Here two processes pass a token while a
//! snapshot is taken; the caller plays the network.
//!
//! ```
//! use cairn_core::{Assembler, Engine, Output, ProcessId, SnapshotId, Topology};
//! use std::sync::Arc;
//!
//! let topo = Arc::new(Topology::new(["p", "q"], &[("p", "q"), ("q", "p")]).unwrap());
//! let (p, q) = (ProcessId(0), ProcessId(1));
//! let c = topo.outgoing(p)[0]; // p -> q
//! let mut engines: Vec<Engine<u32, u32>> =
//!     topo.processes().map(|id| Engine::new(&topo, id).unwrap()).collect();
//! let mut tokens = vec![1u32, 0];
//! let mut wire = Vec::new(); // (channel, Some(message) or None for a marker)
//! let mut assembly = Assembler::new(topo.clone(), SnapshotId(7));
//!
//! // Carry out everything engine `i` asks for, in order.
//! let mut drain = |i: usize, engine: &mut Engine<u32, u32>, tokens: &[u32], wire: &mut Vec<_>| {
//!     while let Some(out) = engine.poll_output() {
//!         match out {
//!             Output::Send { channel, message } => wire.push((channel, Some(message))),
//!             Output::SendMarker { channel, .. } => wire.push((channel, None)),
//!             Output::RecordState { snapshot } => engine.record_state(snapshot, tokens[i]).unwrap(),
//!             Output::ChannelRecorded { .. } => {}
//!             Output::LocalSnapshotComplete(local) => assembly.add(local).unwrap(),
//!             Output::RecordingAbandoned { .. } => unreachable!("no recording limit is set"),
//!         }
//!     }
//! };
//!
//! // p starts snapshot 7 (recording its 1 token), then sends its token to q.
//! engines[0].start_snapshot(SnapshotId(7)).unwrap();
//! drain(0, &mut engines[0], &tokens, &mut wire);
//! tokens[0] -= 1;
//! engines[0].send(c, 1).unwrap();
//! drain(0, &mut engines[0], &tokens, &mut wire);
//! // Deliver everything in flight, in order, until the network is quiet.
//! while !wire.is_empty() {
//!     for (channel, item) in std::mem::take(&mut wire) {
//!         let to = topo.channel(channel).to.index();
//!         match item {
//!             Some(m) => { engines[to].handle_message(channel, &m).unwrap(); tokens[to] += m; }
//!             None => engines[to].handle_marker(channel, SnapshotId(7)).unwrap(),
//!         }
//!         drain(to, &mut engines[to], &tokens, &mut wire);
//!     }
//! }
//! let snapshot = assembly.finish().unwrap();
//! // p recorded its token before sending it, and q recorded on p's marker,
//! // which came after the token: the snapshot holds exactly one token.
//! let total: u32 = snapshot.states.iter().sum::<u32>()
//!     + snapshot.channels.iter().flatten().sum::<u32>();
//! assert_eq!(total, 1);
//! assert_eq!(snapshot.states, vec![1, 0]);
//! ```
#![warn(missing_docs)]

mod engine;
mod error;
mod ids;
pub mod link;
mod named_map;
pub mod oracle;
mod process;
mod snapshot;
mod stable;
mod topology;
pub mod trace;

pub use engine::{Engine, Output, Overtaking, REMEMBERED_SNAPSHOTS, StartOutcome};
pub use error::{Error, Result};
pub use ids::{ChannelId, ProcessId, SnapshotId};
pub use named_map::NamedMap;
pub use process::{Chunk, Context, Pace, Process};
pub use snapshot::{
    Assembler, ChannelDoc, GlobalSnapshot, LocalSnapshot, RecordedChannel, SnapshotDoc,
};
pub use stable::{Detection, Detector, StableProperty};
pub use topology::{Channel, Topology};
