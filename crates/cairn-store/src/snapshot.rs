//! Snapshots in a store: parts, manifests, commit, reading back, retention.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::{Backend, Durable};
use crate::channel_state::Decoder;
pub use crate::channel_state::StoredChannel;
use crate::decode::{PartShape, check_shape, decode_manifest, decode_part};
use crate::error::{Error, Result};
use crate::format::{self, MANIFEST_MAGIC, PART_MAGIC};

/// Where `cairn restore` records the snapshot a stopped cluster starts from.
pub(crate) const RESTORE_KEY: &str = "control/RESTORE";

/// The newest manifest format this build writes and reads. Version 3
/// manifests name chunks (written only when a part has some, so that older
/// builds, which would restore such a state without its chunks, refuse
/// them); version 2 is the same without; version 1 manifests carry no epoch
/// (they read as epoch 0).
pub const FORMAT_VERSION: u32 = 3;

/// One process's part of a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The snapshot.
    pub snapshot: u64,
    /// The process.
    pub process: String,
    /// Its recorded state.
    pub state: Value,
    /// Its recorded incoming channels.
    pub channels: Vec<StoredChannel>,
    /// Its state when it started, so conservation can be checked from the
    /// store alone.
    #[serde(default)]
    pub initial: Option<Value>,
    /// The epoch the snapshot was taken in.
    #[serde(default)]
    pub epoch: u64,
    /// With markers that overtake messages: on each outgoing channel, the
    /// messages its marker jumped. They follow, in the channel's state, what
    /// the channel's receiver recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overtaken: Vec<StoredChannel>,
}

/// Where a durable part is, and its checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    /// The process.
    pub process: String,
    /// The object's key.
    pub key: String,
    /// crc32c of the part's payload.
    pub crc32c: u32,
    /// The object's size.
    pub bytes: u64,
    /// How many messages the part records on each incoming channel, so that
    /// recovery can check the snapshot and count what is in flight from the
    /// manifest alone. Absent in manifests written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<BTreeMap<String, u64>>,
    /// How many messages its markers overtook on each outgoing channel.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overtaken: BTreeMap<String, u64>,
    /// The chunks its state was split into, which may have been written
    /// with an earlier part (see [`crate::chunks`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<crate::chunks::ChunkRef>,
}

/// A committed snapshot's table of contents, written last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The snapshot.
    pub snapshot: u64,
    /// The epoch it was taken in (version 1 manifests read as 0). Recovery
    /// uses it to stay on the current timeline (see [`crate::History`]).
    #[serde(default)]
    pub epoch: u64,
    /// The term of the coordinator that committed it (0 before terms).
    #[serde(default)]
    pub term: u64,
    /// The cluster it belongs to.
    pub cluster: String,
    /// The application (`bank`, ...), so tools can check conservation.
    pub app: String,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// One part per process, in topology order.
    pub parts: Vec<PartRef>,
    /// Every channel of the topology, in order; each must be recorded by exactly one part.
    pub channels: Vec<String>,
}

impl Manifest {
    /// A manifest of snapshot `id`, taken in `epoch`, stamped now.
    pub fn new(
        id: u64,
        epoch: u64,
        cluster: &str,
        app: &str,
        parts: Vec<PartRef>,
        channels: Vec<String>,
    ) -> Self {
        let chunked = parts.iter().any(|p| !p.chunks.is_empty());
        Manifest {
            format_version: if chunked { FORMAT_VERSION } else { 2 },
            snapshot: id,
            epoch,
            term: 0,
            cluster: cluster.to_string(),
            app: app.to_string(),
            created_unix_ms: crate::history::unix_ms(),
            parts,
            channels,
        }
    }
}

/// A snapshot read back whole.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSnapshot {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its parts, in the manifest's order.
    pub parts: Vec<Part>,
}

impl StoredSnapshot {
    /// Checks that the snapshot is complete: every process present once and
    /// every channel recorded exactly once, by the process it leads to.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the process or channel.
    pub fn check_complete(&self) -> Result<()> {
        fn names(cs: &[StoredChannel]) -> Vec<&str> {
            cs.iter().map(|c| c.name.as_str()).collect()
        }
        let shapes: Vec<PartShape<'_>> = self
            .parts
            .iter()
            .map(|p| (p.process.as_str(), names(&p.channels), names(&p.overtaken)))
            .collect();
        check_shape(&self.manifest, &shapes)
    }

    /// Each channel's recorded state by name, as JSON: what its receiver
    /// recorded, then what its sender's marker overtook.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the part and the message that `decode`
    /// could not read.
    pub fn channel_states(&self, decode: Decoder) -> Result<BTreeMap<&str, Vec<Value>>> {
        let mut messages: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        let tails = self.parts.iter().map(|p| (p, &p.overtaken));
        for (p, list) in self.parts.iter().map(|p| (p, &p.channels)).chain(tails) {
            for c in list {
                let values = c.to_values(decode).map_err(|problem| Error::Corrupt {
                    key: format::part_key(self.manifest.snapshot, &p.process),
                    problem,
                })?;
                messages.entry(c.name.as_str()).or_default().extend(values);
            }
        }
        Ok(messages)
    }

    /// How many messages each channel's recorded state holds, by name.
    pub fn in_flight(&self) -> std::collections::BTreeMap<String, u64> {
        let mut counts = std::collections::BTreeMap::new();
        let recorded = self.parts.iter().flat_map(|p| &p.channels);
        for c in recorded.chain(self.parts.iter().flat_map(|p| &p.overtaken)) {
            *counts.entry(c.name.clone()).or_insert(0) += c.len() as u64;
        }
        counts
    }

    /// The snapshot in Cairn's shared JSON shape, its messages read by
    /// `decode` (see [`crate::channel_state`]).
    ///
    /// # Errors
    /// A recorded message `decode` could not read, by part and position.
    pub fn to_json(&self, decode: Decoder) -> Result<Value> {
        let processes: serde_json::Map<String, Value> = self
            .parts
            .iter()
            .map(|p| (p.process.clone(), p.state.clone()))
            .collect();
        let mut messages = self.channel_states(decode)?;
        let channels: Vec<Value> = self
            .manifest
            .channels
            .iter()
            .map(|name| {
                let (from, rest) = name.split_once("->").unwrap_or((name, ""));
                let (to, lane) = rest
                    .split_once('#')
                    .map_or((rest, None), |(t, l)| (t, l.parse::<u32>().ok()));
                let mut c = serde_json::json!({"from": from, "to": to});
                if let Some(l) = lane {
                    c["lane"] = l.into();
                }
                c["messages"] = Value::Array(messages.remove(name.as_str()).unwrap_or_default());
                c
            })
            .collect();
        Ok(
            serde_json::json!({"id": self.manifest.snapshot, "processes": processes, "channels": channels}),
        )
    }
}

/// A snapshot store.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) backend: Backend,
    url: String,
    /// Committed manifests retention has read, by snapshot id (shared by
    /// clones). A manifest is never replaced, so what was read stays true
    /// until the snapshot is deleted; only retention reads from here, so a
    /// manifest damaged on disk is still found by whoever reads it to use it.
    manifests: Arc<Mutex<BTreeMap<u64, Arc<Manifest>>>>,
}

impl Store {
    /// Opens the store at `url`: a path or `file://` URL (a local directory),
    /// `s3://bucket/prefix`, or `memory://`.
    ///
    /// # Errors
    /// [`Error::BadUrl`] saying what is wrong with the URL.
    pub fn open(url: &str) -> Result<Self> {
        Ok(Store {
            backend: Backend::open(url)?,
            url: url.to_string(),
            manifests: Arc::default(),
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes a process's part durably and returns where it is.
    ///
    /// The write is create-if-absent: a part is never replaced, since a
    /// manifest may name it. Writing the same bytes again (a retry whose
    /// first attempt landed) succeeds.
    ///
    /// # Errors
    /// [`Error::Conflict`] if the key already holds other bytes (another
    /// life of this process wrote a part of the same snapshot id); the
    /// backend failed.
    pub async fn write_part(&self, part: &Part) -> Result<PartRef> {
        let key = format::part_key(part.snapshot, &part.process);
        let (bytes, crc32c) = format::seal(PART_MAGIC, &key, part)?;
        let size = bytes.len() as u64;
        // Its name becomes durable with the manifest, written into the same
        // folder after every part (one folder fsync instead of one per part).
        self.create(&key, bytes, Durable::Bytes).await?;
        Ok(PartRef {
            process: part.process.clone(),
            key,
            crc32c,
            bytes: size,
            channels: Some(counts(&part.channels)),
            overtaken: counts(&part.overtaken),
            chunks: Vec::new(),
        })
    }

    /// Commits a snapshot by writing its manifest, create-if-absent. Call it
    /// only once every part it names is durable, and never while retention
    /// runs (the coordinator's gate orders them).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if the snapshot was already committed;
    /// [`Error::Refused`] if a chunk it names is no longer in the store.
    pub async fn commit(&self, manifest: &Manifest) -> Result<()> {
        self.check_chunks_present(manifest).await?;
        let key = format::manifest_key(manifest.snapshot);
        let (bytes, _) = format::seal(MANIFEST_MAGIC, &key, manifest)?;
        self.backend.put(&key, bytes, true, Durable::Object).await
    }

    /// Writes `bytes` under `key` unless something is there: the same bytes
    /// count as written, other bytes are a [`Error::Conflict`].
    pub(crate) async fn create(
        &self,
        key: &str,
        bytes: bytes::Bytes,
        durable: Durable,
    ) -> Result<()> {
        match self.backend.put(key, bytes.clone(), true, durable).await {
            Err(Error::AlreadyExists { .. }) => {
                let there = self.backend.get(key).await?;
                if there == bytes {
                    Ok(())
                } else {
                    Err(Error::Conflict {
                        key: key.to_string(),
                        problem: format!(
                            "it already holds {} other bytes (crc32c {:08x}); objects are never replaced",
                            there.len(),
                            crc32c::crc32c(&there)
                        ),
                    })
                }
            }
            other => other,
        }
    }

    /// Committed snapshots (those with a manifest), oldest first.
    ///
    /// # Errors
    /// The backend failed.
    pub async fn list(&self) -> Result<Vec<u64>> {
        let keys = self.backend.list("snapshots").await?;
        let mut ids: Vec<u64> = keys
            .iter()
            .filter_map(|k| format::committed_id(k))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Snapshot `id`'s manifest.
    ///
    /// # Errors
    /// [`Error::NotFound`] if not committed; [`Error::Corrupt`] if unreadable.
    pub async fn manifest(&self, id: u64) -> Result<Manifest> {
        let key = format::manifest_key(id);
        let bytes = self.backend.get(&key).await?;
        decode_manifest(id, &bytes)
    }

    /// Snapshot `id`'s manifest as retention last read it, or read now.
    pub(crate) async fn cached_manifest(&self, id: u64) -> Result<Arc<Manifest>> {
        if let Some(m) = self.cache().get(&id) {
            return Ok(m.clone());
        }
        let m = Arc::new(self.manifest(id).await?);
        self.cache().insert(id, m.clone());
        Ok(m)
    }

    /// Drops cached manifests of snapshots no longer committed (deleted by
    /// retention, or by another process).
    pub(crate) fn keep_cached(&self, committed: &std::collections::BTreeSet<u64>) {
        self.cache().retain(|id, _| committed.contains(id));
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Manifest>>> {
        self.manifests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// As [`Store::manifest`], but a snapshot that is not there is
    /// [`Error::NoSnapshot`], naming what the store holds instead.
    pub(crate) async fn committed(&self, id: u64) -> Result<Manifest> {
        match self.manifest(id).await {
            Err(Error::NotFound { .. }) => Err(Error::NoSnapshot {
                id,
                holds: self.list().await?,
            }),
            other => other,
        }
    }

    /// Reads one part, checking it against the manifest's checksum.
    ///
    /// # Errors
    /// [`Error::NotFound`] or [`Error::Corrupt`] naming the part.
    pub async fn read_part(&self, r: &PartRef) -> Result<Part> {
        let bytes = self.backend.get(&r.key).await?;
        decode_part(r, &bytes)
    }

    /// Reads a whole committed snapshot, reporting `(bytes read, bytes)` as
    /// it goes, after each part (the sizes come from the manifest).
    ///
    /// # Errors
    /// The first missing or corrupt object, by name.
    pub async fn load(
        &self,
        id: u64,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<StoredSnapshot> {
        let manifest = self.committed(id).await?;
        self.load_from(manifest, progress).await
    }

    /// Reads the parts `manifest` names (committed or about to be), each
    /// checked against it, reporting progress as [`Store::load`] does.
    ///
    /// # Errors
    /// The first missing or corrupt part, by name.
    pub async fn load_from(
        &self,
        manifest: Manifest,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<StoredSnapshot> {
        let total = manifest.parts.iter().map(|p| p.bytes).sum();
        let mut parts = Vec::with_capacity(manifest.parts.len());
        let mut read = 0;
        progress(0, total);
        for r in &manifest.parts {
            parts.push(self.read_part(r).await?);
            read += r.bytes;
            progress(read, total);
        }
        Ok(StoredSnapshot { manifest, parts })
    }

    /// Deletes snapshot `id`, manifest first so readers stop seeing it at once.
    /// The newest committed snapshot is refused unless `allow_newest`.
    ///
    /// # Errors
    /// [`Error::Refused`] for the newest snapshot; a backend failure.
    pub async fn delete(&self, id: u64, allow_newest: bool) -> Result<usize> {
        if !allow_newest && self.list().await?.last() == Some(&id) {
            return Err(Error::Refused(format!(
                "snapshot {id} is the newest complete snapshot; it is kept"
            )));
        }
        // The manifest first: a snapshot half deleted is never listed.
        self.backend.delete(&format::manifest_key(id)).await?;
        let keys = self.backend.list(&format::snapshot_dir(id)).await?;
        let n = keys.len() + 1;
        self.backend.delete_all(keys).await?;
        Ok(n)
    }

    /// Records the snapshot a stopped cluster must start from (`cairn restore`
    /// on a stopped cluster); the coordinator takes it at start-up.
    ///
    /// # Errors
    /// [`Error::NoSnapshot`] if `id` is not a committed snapshot; a backend failure.
    pub async fn set_restore_point(&self, id: u64) -> Result<()> {
        self.committed(id).await?;
        self.backend
            .put(
                RESTORE_KEY,
                bytes::Bytes::from(id.to_string()),
                false,
                Durable::Object,
            )
            .await
    }

    /// Takes (reads and removes) the recorded restore point, if any.
    ///
    /// # Errors
    /// A backend failure, or [`Error::Corrupt`] for an unreadable restore point.
    pub async fn take_restore_point(&self) -> Result<Option<u64>> {
        let Some(id) = self.restore_point().await? else {
            return Ok(None);
        };
        self.backend.delete(RESTORE_KEY).await?;
        Ok(Some(id))
    }

    /// The raw bytes under `key`, for tools and tests that inspect objects.
    ///
    /// # Errors
    /// [`Error::NotFound`] or a backend failure.
    pub async fn raw(&self, key: &str) -> Result<bytes::Bytes> {
        self.backend.get(key).await
    }

    /// Replaces the object under `key` with `bytes`, for tests that damage a
    /// store on purpose.
    ///
    /// # Errors
    /// A backend failure.
    pub async fn overwrite_raw(&self, key: &str, bytes: bytes::Bytes) -> Result<()> {
        self.backend.put(key, bytes, false, Durable::Object).await
    }

    /// Deletes the object under `key`, for tests that damage the store on
    /// purpose.
    ///
    /// # Errors
    /// A backend failure.
    pub async fn delete_raw(&self, key: &str) -> Result<()> {
        self.backend.delete(key).await
    }
}

/// Messages per channel, by name.
pub(crate) fn counts(channels: &[StoredChannel]) -> BTreeMap<String, u64> {
    channels
        .iter()
        .map(|c| (c.name.clone(), c.len() as u64))
        .collect()
}
