//! Newtype identifiers for processes, channels and snapshots.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A process, by its index in a [`Topology`](crate::Topology).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProcessId(pub u32);

/// A directed channel, by its index in a [`Topology`](crate::Topology).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelId(pub u32);

/// The identity of one global snapshot. Every process uses the same id for
/// its part of the same snapshot, whichever process started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotId(pub u64);

impl ProcessId {
    /// The index of this process in its topology.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl ChannelId {
    /// The index of this channel in its topology.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
