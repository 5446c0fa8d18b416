//! Incremental parts: the bulky pieces of a process's state, stored as
//! chunk objects that later parts share instead of writing them again.
//!
//! - A chunk object is named by its contents: `chunks/<process>/<sha256>`.
//!   It is written create-if-absent and never replaced, so two parts that
//!   name it name the same bytes.
//! - A part names its chunks in its manifest entry ([`PartRef::chunks`]):
//!   retention and recovery learn what a snapshot needs from the manifest.
//! - Writing a part lists the process's chunk objects once and writes only
//!   those missing. A [`ChunkCache`] remembers the previous part's buffers,
//!   so a chunk whose buffer is the very same one is not even hashed again.
//! - Invariant: a manifest is written only while every chunk it names is in
//!   the store ([`Store::commit`] checks, under the coordinator's gate,
//!   which retention also holds), and retention deletes only chunks that no
//!   remaining manifest names and that nobody wrote for `stale_after` (a
//!   snapshot in progress may be about to name a fresh one).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};

use crate::backend::Durable;
use crate::error::{Error, Result};
use crate::format::{self, CHUNK_MAGIC};
use crate::snapshot::{Manifest, Part, PartRef, Store};

/// A piece of a state: its stable key and its bytes.
pub type Chunk = (String, Arc<[u8]>);

/// One chunk a part names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The application's key for it, stable from one snapshot to the next.
    pub key: String,
    /// The object holding it.
    pub object: String,
    /// The SHA-256 of its bytes, in hex (also the object's name).
    pub sha256: String,
    /// The crc32c of its bytes (as in the object's envelope), which a reader
    /// checks without hashing the bytes again.
    pub crc32c: u32,
    /// Its length.
    pub bytes: u64,
}

/// What writing a part's chunks cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkStats {
    /// Chunks written.
    pub written: u64,
    /// Bytes written.
    pub written_bytes: u64,
    /// Chunks already in the store, named without writing them again.
    pub reused: u64,
    /// Bytes not written again.
    pub reused_bytes: u64,
}

/// The previous part's chunk buffers and where they went, kept by the
/// process that writes parts, and how fast it may write them.
#[derive(Debug, Default)]
pub struct ChunkCache {
    last: BTreeMap<String, (Arc<[u8]>, String, u32)>,
    pace: Option<Pace>,
    deadline: Option<tokio::time::Instant>,
}

/// How fast a part's chunks are hashed and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    /// Bytes a second, hashed plus written.
    pub bytes_per_s: u64,
    /// Bytes a part handles at full speed before the pace applies: a part
    /// with a few changed chunks is not slowed at all.
    pub burst: u64,
}

impl ChunkCache {
    /// A cache whose writer hashes and writes chunks at `pace` (none: as
    /// fast as it can).
    pub fn paced(pace: Option<Pace>) -> Self {
        ChunkCache {
            pace: pace.filter(|p| p.bytes_per_s > 0),
            ..ChunkCache::default()
        }
    }

    /// The next part must be written by `deadline`: its pace quickens so
    /// that its chunks are done by half the time left.
    pub fn finish_by(&mut self, deadline: tokio::time::Instant) {
        self.deadline = Some(deadline);
    }
}

/// Spreads a part's chunk work over time: after each piece, it waits until
/// the bytes handled so far (past the burst) fit the rate since the part
/// began. A large first write (every chunk is new) then shares the
/// machine with the application in slices instead of taking a core in one
/// stretch.
struct Pacer {
    since: tokio::time::Instant,
    bytes: u64,
    burst: u64,
    /// Bytes a second; none: unpaced.
    rate: Option<f64>,
}

impl Pacer {
    /// For a part whose chunk work is at most `work` bytes.
    fn new(cache: &ChunkCache, work: u64) -> Self {
        let since = tokio::time::Instant::now();
        let rate = cache.pace.and_then(|p| {
            let mut rate = p.bytes_per_s as f64;
            if let Some(deadline) = cache.deadline {
                let half = deadline.saturating_duration_since(since).as_secs_f64() / 2.0;
                if half <= 0.0 {
                    return None; // late already: full speed
                }
                rate = rate.max(work.saturating_sub(p.burst) as f64 / half);
            }
            Some(rate)
        });
        Pacer {
            since,
            bytes: 0,
            burst: cache.pace.map_or(0, |p| p.burst),
            rate,
        }
    }

    async fn spent(&mut self, bytes: u64) {
        let Some(rate) = self.rate else { return };
        self.bytes += bytes;
        let paced = self.bytes.saturating_sub(self.burst) as f64;
        let due = std::time::Duration::from_secs_f64(paced / rate);
        tokio::time::sleep_until(self.since + due).await;
    }
}

/// Chunk objects read or written at once by one node: enough to keep a
/// remote store busy, few enough to bound the memory in flight.
const IN_FLIGHT: usize = 8;

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Writes a process's part with its state's `chunks` beside it: the
    /// chunks missing from the store are written, the others only named.
    /// With no chunks this is [`Store::write_part`].
    ///
    /// # Errors
    /// As [`Store::write_part`]; a chunk could not be written.
    pub async fn write_part_chunked(
        &self,
        part: &Part,
        chunks: &[Chunk],
        cache: &mut ChunkCache,
    ) -> Result<(PartRef, ChunkStats)> {
        let mut stats = ChunkStats::default();
        if chunks.is_empty() {
            return Ok((self.write_part(part).await?, stats));
        }
        let folder = format::chunk_folder(&part.process);
        let present: BTreeSet<String> = self.backend.list(&folder).await?.into_iter().collect();
        let mut refs = Vec::with_capacity(chunks.len());
        let mut next = BTreeMap::new();
        let mut missing = Vec::new();
        // Every chunk hashed and written: the most a part can cost.
        let work = 2 * chunks.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        let mut pacer = Pacer::new(cache, work);
        for (key, bytes) in chunks {
            let (sha256, crc32c) = match cache.last.get(key) {
                Some((buf, sha, crc)) if Arc::ptr_eq(buf, bytes) => (sha.clone(), *crc),
                _ => {
                    let named = (sha256_hex(bytes), crc32c::crc32c(bytes));
                    pacer.spent(bytes.len() as u64).await;
                    named
                }
            };
            let object = format::chunk_key(&part.process, &sha256);
            let len = bytes.len() as u64;
            if present.contains(&object) {
                stats.reused += 1;
                stats.reused_bytes += len;
            } else {
                missing.push((object.clone(), bytes));
                stats.written += 1;
                stats.written_bytes += len;
            }
            next.insert(key.clone(), (bytes.clone(), sha256.clone(), crc32c));
            refs.push(ChunkRef {
                key: key.clone(),
                object,
                sha256,
                crc32c,
                bytes: len,
            });
        }
        // Unpaced, several at once. Paced, one at a time: several writers
        // at once are several threads wanting a core together, which is
        // what pacing is there to avoid (in `cairn bench`, the longest
        // pause while the first 64 MiB snapshot was written fell in 8 runs
        // of 9 with one at a time, and not with eight).
        let in_flight = if pacer.rate.is_some() { 1 } else { IN_FLIGHT };
        for batch in missing.chunks(in_flight) {
            try_join_all(batch.iter().map(|(object, bytes)| {
                let (sealed, _) = format::seal_raw(CHUNK_MAGIC, bytes);
                self.create(object, sealed, Durable::Bytes)
            }))
            .await?;
            pacer
                .spent(batch.iter().map(|(_, b)| b.len() as u64).sum())
                .await;
        }
        // One folder fsync for every chunk written, before the part (and so
        // the manifest) can name them. Also when none was: a chunk found in
        // the folder may be one an earlier life of this node wrote and did
        // not live to sync.
        self.backend.sync_folder(&folder).await?;
        let mut r = self.write_part(part).await?;
        r.chunks = refs;
        cache.last = next;
        cache.deadline = None;
        Ok((r, stats))
    }

    /// Reads the chunks a part names, checking each one's length and
    /// checksum against the manifest (what recovery does).
    ///
    /// # Errors
    /// The first missing or corrupt chunk, by name.
    pub async fn read_chunks(&self, r: &PartRef) -> Result<Vec<Chunk>> {
        self.read_chunks_checked(r, false).await
    }

    /// As [`Store::read_chunks`], and each chunk's SHA-256 computed again
    /// and compared with its name (what `snapshots verify` does).
    ///
    /// # Errors
    /// The first missing or corrupt chunk, by name.
    pub async fn verify_chunks(&self, r: &PartRef) -> Result<Vec<Chunk>> {
        self.read_chunks_checked(r, true).await
    }

    async fn read_chunks_checked(&self, r: &PartRef, hash: bool) -> Result<Vec<Chunk>> {
        let mut out = Vec::with_capacity(r.chunks.len());
        for batch in r.chunks.chunks(IN_FLIGHT) {
            out.extend(try_join_all(batch.iter().map(|c| self.read_chunk(c, hash))).await?);
        }
        Ok(out)
    }

    async fn read_chunk(&self, c: &ChunkRef, hash: bool) -> Result<Chunk> {
        let sealed = self.backend.get(&c.object).await?;
        let crc = format::check_envelope(CHUNK_MAGIC, &c.object, &sealed)?;
        let bytes = &sealed[format::HEADER..];
        format::check_size(&c.object, bytes.len() as u64, c.bytes)?;
        format::check_crc(&c.object, crc, c.crc32c)?;
        if hash && sha256_hex(bytes) != c.sha256 {
            return Err(Error::Corrupt {
                key: c.object.clone(),
                problem: "its SHA-256 is not the one it is named by".into(),
            });
        }
        Ok((c.key.clone(), Arc::from(bytes)))
    }

    /// The first chunk `m` names that is not in the store (one retention
    /// removed while the snapshot was taken), with its process; one listing.
    pub(crate) async fn missing_chunk(&self, m: &Manifest) -> Result<Option<(String, ChunkRef)>> {
        if m.parts.iter().all(|p| p.chunks.is_empty()) {
            return Ok(None);
        }
        let present: BTreeSet<String> = self
            .backend
            .list(format::CHUNKS_DIR)
            .await?
            .into_iter()
            .collect();
        for p in &m.parts {
            if let Some(c) = p.chunks.iter().find(|c| !present.contains(&c.object)) {
                return Ok(Some((p.process.clone(), c.clone())));
            }
        }
        Ok(None)
    }

    /// Refuses to commit a manifest that names a missing chunk.
    pub(crate) async fn check_chunks_present(&self, m: &Manifest) -> Result<()> {
        match self.missing_chunk(m).await? {
            None => Ok(()),
            Some((process, c)) => Err(Error::Refused(format!(
                "snapshot {} is not committed: chunk {:?} of {process}'s part ({}) is no longer in the store",
                m.snapshot, c.key, c.object
            ))),
        }
    }

    /// Deletes chunk objects that no manifest in `keep` names and that were
    /// last written before `stale_before`; returns how many went.
    pub(crate) async fn collect_chunks<'a>(
        &self,
        keep: impl Iterator<Item = &'a Manifest>,
        stale_before: std::time::SystemTime,
    ) -> Result<usize> {
        let named: BTreeSet<&str> = keep
            .flat_map(|m| &m.parts)
            .flat_map(|p| &p.chunks)
            .map(|c| c.object.as_str())
            .collect();
        let doomed: Vec<String> = self
            .backend
            .list_meta(format::CHUNKS_DIR)
            .await?
            .into_iter()
            .filter(|(k, written)| !named.contains(k.as_str()) && *written < stale_before)
            .map(|(k, _)| k)
            .collect();
        let n = doomed.len();
        if n > 0 {
            self.backend.delete_all(doomed).await?;
        }
        Ok(n)
    }
}
