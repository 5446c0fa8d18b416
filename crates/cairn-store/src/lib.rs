//! Durable snapshots for Cairn, on a local directory, S3-compatible object
//! storage or memory.
//!
//! Each process writes its part of a snapshot (its state and its recorded
//! incoming channels) as one object with a crc32c checksum. When every part
//! is durable, the coordinator writes the snapshot's manifest with a
//! create-if-absent write, so two writers cannot both commit. A snapshot
//! without a manifest does not exist for any reader. Parts are written
//! create-if-absent too: nothing a manifest may name is ever replaced.
//! Snapshot ids and epochs are leased and recorded in the store (see
//! [`History`]) so that they never repeat across restarts.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use cairn_store::{Manifest, Part, Store};
//! use serde_json::json;
//!
//! let store = Store::open("memory://").unwrap();
//! let part = Part { snapshot: 7, process: "n1".into(), state: json!({"balance": 5}), channels: vec![], initial: None, epoch: 0, overtaken: vec![] };
//! let part_ref = store.write_part(&part).await.unwrap();
//! assert!(store.list().await.unwrap().is_empty(), "no manifest yet: no snapshot");
//! let manifest = Manifest::new(7, 0, "demo", "bank", vec![part_ref], vec![]);
//! store.commit(&manifest).await.unwrap();
//! assert_eq!(store.list().await.unwrap(), vec![7]);
//! let loaded = store.load(7, &mut |_, _| {}).await.unwrap();
//! assert_eq!(loaded.parts[0].state, json!({"balance": 5}));
//! # });
//! ```
#![warn(missing_docs)]

mod backend;
pub mod channel_state;
pub mod chunks;
mod decode;
mod error;
pub mod format;
mod history;
mod local;
mod recovery;
mod retention;
mod snapshot;

pub use channel_state::{Decoder, decode_message, encode_message, message_json, undecoded};
pub use chunks::{Chunk, ChunkCache, ChunkRef, ChunkStats, Pace};
pub use decode::{decode_manifest, decode_part, decode_restore_point};
pub use error::{Error, Result};
pub use history::{EpochRecord, History, IdLease, TermRecord, Timeline, unix_ms};
pub use local::LocalDir;
pub use recovery::RecoveryPoint;
pub use retention::Retention;
pub use snapshot::{FORMAT_VERSION, Manifest, Part, PartRef, Store, StoredChannel, StoredSnapshot};
