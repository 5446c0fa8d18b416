//! A deterministic, discrete-event simulator for Cairn snapshots.
//!
//! Processes run on any [`Topology`](cairn_core::Topology) with FIFO channels;
//! each packet's delay is drawn from a seeded RNG, so a seed replays a run
//! exactly. A run is driven by a script ([`Command`]s, or the COS 418 formats
//! in [`cos418`]) or by a random [`workload`], and its snapshots are judged by
//! the core's [`oracle`](cairn_core::oracle). [`explore`] enumerates every
//! interleaving of small runs instead of sampling them.
//!
//! ```
//! use std::sync::Arc;
//! use cairn_core::{ProcessId, Topology};
//! use cairn_sim::{Command, Config, Simulator, TokenModel, Tokens};
//!
//! let topo = Arc::new(Topology::new(["N1", "N2"], &[("N1", "N2"), ("N2", "N1")]).unwrap());
//! let initial = vec![Tokens { tokens: 1 }, Tokens { tokens: 0 }];
//! let config = Config { seed: 42, ..Config::default() };
//! let mut sim = Simulator::new(topo.clone(), TokenModel, initial, config).unwrap();
//! sim.run_script(&[
//!     Command::Send { from: ProcessId(0), channel: topo.outgoing(ProcessId(0))[0], message: Tokens { tokens: 1 } },
//!     Command::Snapshot { initiators: vec![ProcessId(1)] },
//!     Command::Tick(1),
//! ]).unwrap();
//! let run = sim.finish().unwrap();
//! assert!(run.verify(&TokenModel).is_empty());
//! let (held, in_flight) = cairn_sim::token::recorded_tokens(&run.snapshots[0]);
//! assert_eq!(held + in_flight, 1);
//! ```
#![warn(missing_docs)]

pub mod cos418;
pub mod demo;
pub mod detect;
mod error;
pub mod explore;
pub mod output;
mod sim;
mod system;
pub mod workload;

pub use cairn_apps::token::{self, TokenModel, Tokens};
pub use error::{Result, SimError};
pub use sim::{Command, Config, Outcome, Simulator};
pub use system::{Fault, Item, Packet, System};
