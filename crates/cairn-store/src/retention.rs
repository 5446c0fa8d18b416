//! Retention: which snapshots and leftovers a store may delete, decided so
//! that it never deletes live data.
//!
//! - Committed snapshots: the newest `keep` on the current timeline stay,
//!   and so does every snapshot the caller names as live (one a rollback is
//!   reading). Older ones, and those of abandoned timelines, go.
//! - Uncommitted snapshots (parts without a manifest) go only once they are
//!   known dead: the caller says they failed or timed out, or nobody has
//!   written to them for `stale_after` (a previous life of the coordinator
//!   left them). A snapshot in progress is live and is never touched, even
//!   when a later one committed first.
//! - Chunks (see [`crate::chunks`]) go once no remaining manifest names
//!   them and nobody wrote them for `stale_after`.
//! - Staging files of the local store older than `stale_after` (a process
//!   killed in the middle of a write) go.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use crate::backend::Backend;
use crate::error::Result;
use crate::format;
use crate::snapshot::Store;

/// What retention may delete.
#[derive(Clone, Debug, Default)]
pub struct Retention {
    /// Committed snapshots to keep on the current timeline (at least one).
    pub keep: usize,
    /// The current epoch (default: the newest recorded).
    pub epoch: Option<u64>,
    /// Snapshots never to touch: in progress, or being read.
    pub live: BTreeSet<u64>,
    /// Uncommitted snapshots known to have failed or timed out.
    pub dead: BTreeSet<u64>,
    /// Leftovers untouched this long are collected even if not known dead.
    pub stale_after: Duration,
}

impl Store {
    /// Applies `policy`; returns the snapshot ids deleted.
    ///
    /// # Errors
    /// A backend failure.
    pub async fn retain(&self, policy: &Retention) -> Result<Vec<u64>> {
        // One listing serves twice: which snapshots are committed (they have
        // a manifest), and when each snapshot's folder was last written to.
        let mut committed = BTreeSet::new();
        let mut newest_write: BTreeMap<u64, SystemTime> = BTreeMap::new();
        for (key, modified) in self.backend.list_meta("snapshots").await? {
            if let Some(id) = format::id_of(&key) {
                let t = newest_write.entry(id).or_insert(modified);
                *t = (*t).max(modified);
                committed.extend(format::committed_id(&key));
            }
        }
        self.keep_cached(&committed);
        let timeline = self.timeline(policy.epoch).await?;
        let mut on_timeline = Vec::new();
        let mut off_timeline = Vec::new();
        let mut manifests = BTreeMap::new();
        let mut unread = BTreeSet::new();
        for &id in &committed {
            // Read once per life of the store: a pass after every commit
            // would otherwise read every kept manifest again.
            match self.cached_manifest(id).await {
                Ok(m) => {
                    if timeline.contains(m.epoch, id) {
                        on_timeline.push(id);
                    } else {
                        off_timeline.push(id);
                    }
                    manifests.insert(id, m);
                }
                _ => {
                    off_timeline.push(id);
                    unread.insert(id);
                }
            }
        }
        let keep_from = on_timeline.len().saturating_sub(policy.keep.max(1));
        let kept: BTreeSet<u64> = on_timeline[keep_from..].iter().copied().collect();
        let oldest_kept = kept.first().copied().unwrap_or(u64::MAX);
        let mut doomed: BTreeSet<u64> = on_timeline[..keep_from].iter().copied().collect();
        // A snapshot off the timeline can never be recovered to; it goes
        // once it is older than what the timeline keeps.
        doomed.extend(off_timeline.iter().filter(|&&id| id < oldest_kept));

        let stale_before = SystemTime::now()
            .checked_sub(policy.stale_after)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for (id, written) in newest_write {
            if committed.contains(&id) {
                continue;
            }
            if policy.dead.contains(&id) || written < stale_before {
                doomed.insert(id);
            }
        }
        doomed.retain(|id| !policy.live.contains(id) && !kept.contains(id));
        for &id in &doomed {
            self.delete(id, true).await?;
        }
        // Chunks go once no remaining manifest names them. A fresh one may be
        // about to be named by a part in progress, so only old ones go; an
        // old one a part in progress names again is caught at its commit.
        // A manifest that could not be read (a failed request, say) may name
        // chunks too: none go until every remaining one is read.
        if unread.iter().all(|id| doomed.contains(id)) {
            let remaining = manifests
                .iter()
                .filter(|(id, _)| !doomed.contains(id))
                .map(|(_, m)| m.as_ref());
            self.collect_chunks(remaining, stale_before).await?;
        }
        if let Backend::Local(dir) = &self.backend {
            dir.collect_staging(stale_before).await?;
        }
        Ok(doomed.into_iter().collect())
    }
}
