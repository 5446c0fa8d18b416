//! What Cairn is measured against (`cairn bench`), built on the same
//! runtime so the comparison is fair: aligned barriers and stop-the-world
//! snapshots, carried out by the driver and the coordinator, and a raw
//! framed-TCP node with none of Cairn.

pub(crate) mod aligned;
pub(crate) mod raw;
pub(crate) mod stop_world;
