//! What recovery needs from the store, reading each part once: the
//! coordinator checks a snapshot from its manifest and a listing (every
//! part and chunk it names is there), and counts the messages in flight
//! from the manifest; each node then reads only its own part and chunks,
//! checking their sizes and checksums against the manifest as it decodes.
//! A node that finds its part corrupt says so, and the coordinator tries
//! the snapshot before (see the runtime's recovery).

use std::collections::{BTreeMap, BTreeSet};

use crate::decode::{PartShape, check_shape};
use crate::error::{Error, Result};
use crate::format;
use crate::snapshot::{Manifest, Store};

/// A snapshot recovery may roll back to, checked without decoding states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPoint {
    /// Its manifest.
    pub manifest: Manifest,
    /// How many messages each channel's recorded state holds, by name.
    pub in_flight: BTreeMap<String, u64>,
    /// Whether its parts had to be decoded: a manifest written before parts
    /// carried their counts.
    pub decoded: bool,
}

impl Manifest {
    /// Checks from the parts' counts that the snapshot is complete (every
    /// process once, every channel recorded exactly once by the process it
    /// leads to, each overtaken tail on a channel leading from its process)
    /// and returns the messages in flight per channel; `None` if a part
    /// carries no counts.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the process or channel.
    pub fn in_flight(&self) -> Result<Option<BTreeMap<String, u64>>> {
        fn names(counts: &BTreeMap<String, u64>) -> Vec<&str> {
            counts.keys().map(String::as_str).collect()
        }
        let mut shapes: Vec<PartShape<'_>> = Vec::with_capacity(self.parts.len());
        for p in &self.parts {
            let Some(channels) = &p.channels else {
                return Ok(None);
            };
            shapes.push((p.process.as_str(), names(channels), names(&p.overtaken)));
        }
        check_shape(self, &shapes)?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for p in &self.parts {
            let recorded = p.channels.iter().flatten();
            for (name, n) in recorded.chain(&p.overtaken) {
                *counts.entry(name.clone()).or_insert(0) += n;
            }
        }
        Ok(Some(counts))
    }
}

impl Store {
    /// Checks committed snapshot `id` for recovery without reading its
    /// parts: its manifest, and that every part and chunk it names is
    /// there (two listings). A manifest whose parts carry no counts is read
    /// and checked whole.
    ///
    /// # Errors
    /// [`Error::NoSnapshot`], or the first missing or corrupt object, by name.
    pub async fn recovery_point(&self, id: u64) -> Result<RecoveryPoint> {
        let manifest = self.committed(id).await?;
        let Some(in_flight) = manifest.in_flight()? else {
            let whole = self.load(id, &mut |_, _| {}).await?;
            whole.check_complete()?;
            return Ok(RecoveryPoint {
                in_flight: whole.in_flight(),
                manifest: whole.manifest,
                decoded: true,
            });
        };
        let present: BTreeSet<String> = self
            .backend
            .list(&format::snapshot_dir(id))
            .await?
            .into_iter()
            .collect();
        if let Some(r) = manifest.parts.iter().find(|r| !present.contains(&r.key)) {
            return Err(Error::Corrupt {
                key: r.key.clone(),
                problem: format!(
                    "missing, but snapshot {id}'s manifest names it as {}'s part",
                    r.process
                ),
            });
        }
        // Sizes and checksums are checked by the nodes that read them.
        if let Some((process, c)) = self.missing_chunk(&manifest).await? {
            return Err(Error::Corrupt {
                key: c.object,
                problem: format!(
                    "missing, but {process}'s part of snapshot {id} names it as chunk {:?}",
                    c.key
                ),
            });
        }
        Ok(RecoveryPoint {
            manifest,
            in_flight,
            decoded: false,
        })
    }

    /// The newest snapshot of `epoch`'s timeline (default: the current one)
    /// that [`recovery_point`](Self::recovery_point) accepts, passing over
    /// those in `unusable` (a node found its part of them corrupt), with
    /// every newer one it skipped and why.
    ///
    /// # Errors
    /// The backend failed while listing, or an epoch record is unreadable.
    pub async fn latest_recovery_point_in(
        &self,
        epoch: Option<u64>,
        unusable: &BTreeSet<u64>,
    ) -> Result<(Option<RecoveryPoint>, Vec<(u64, String)>)> {
        self.newest_on_timeline(epoch, |id| async move {
            if unusable.contains(&id) {
                return Err(Error::Refused(format!(
                    "a node found its part of snapshot {id} unusable"
                )));
            }
            self.recovery_point(id).await
        })
        .await
    }
}
