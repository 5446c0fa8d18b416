//! Cairn's real runtime (driver, links, TLS, admin API, coordinator) under
//! turmoil's simulated network: a cluster of bank nodes, each on a host of
//! its own, with delays, partitions (two-way and one-way), heals and
//! crashes decided by a seed. See `tests/scenarios.rs`.
//!
//! Every scenario prints its seed; `CAIRN_DST_SEED=<seed>` replays one,
//! `CAIRN_DST_SEEDS=<n>` runs that many (default 4 per scenario).
#![warn(missing_docs)]

pub mod harness;
pub mod run;
