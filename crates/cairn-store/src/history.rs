//! What a store has ever held, so that identities never repeat: the epochs
//! (one record per timeline), the snapshot ids handed out (leased in blocks
//! before use), and which committed snapshots lie on the current timeline.
//!
//! Layout, beside `snapshots/`:
//!
//! | key | written | holds |
//! |---|---|---|
//! | `epochs/<E>` (20 digits) | create-if-absent, when epoch `E` begins | [`EpochRecord`]: the epoch it continues and the snapshot it restored |
//! | `control/ids/<end>` (20 digits) | create-if-absent, before ids below `end` are used | [`IdLease`]: the block of ids `[from, end)` |
//! | `control/RESTORE` | by `cairn restore` on a stopped cluster | the snapshot id to start from |
//! | `terms/<T>` (20 digits) | create-if-absent, by the candidate that becomes coordinator of term `T` | [`TermRecord`]: its node id and incarnation |
//!
//! Rules: a coordinator hands out only ids it has leased, and leases start
//! above every id the store has seen (any `snapshots/` folder, committed or
//! not, any lease, the restore point). An epoch begins only by creating its
//! record, above every recorded epoch. Both writes are create-if-absent, so
//! two writers can never both take the same block or the same epoch.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::Durable;
use crate::error::{Error, Result};
use crate::format;
use crate::snapshot::{RESTORE_KEY, Store, StoredSnapshot};

const EPOCHS: &str = "epochs";
const ID_LEASES: &str = "control/ids";
const TERMS: &str = "terms";

/// The record of one epoch: a timeline that began with a rollback (or, for
/// the first, with the cluster's first start).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch.
    pub epoch: u64,
    /// The epoch it continues; `None` for a cluster's first epoch.
    pub parent: Option<u64>,
    /// The snapshot every process restored when it began; `None` when every
    /// process started from its initial state.
    pub restored: Option<u64>,
    /// The node that began it.
    pub by: String,
    /// That node's incarnation (which life of the process).
    pub incarnation: u64,
    /// When it began, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The coordinator's term it was begun in: nodes obey a rollback only
    /// into an epoch of a term no older than the newest they know.
    #[serde(default)]
    pub term: u64,
}

/// A block of snapshot ids leased by a coordinator before it hands them out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdLease {
    /// The first id of the block.
    pub from: u64,
    /// One past the last id of the block.
    pub to: u64,
    /// The node that leased it.
    pub holder: String,
    /// When, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// Who coordinates in one term: the store decides, since exactly one
/// candidate's create-if-absent write of `terms/<T>` succeeds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermRecord {
    /// The term.
    pub term: u64,
    /// The node that won it.
    pub node: String,
    /// That node's incarnation.
    pub incarnation: u64,
    /// When, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// What a store has ever held, as far as identities go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The lowest snapshot id above every id the store has seen.
    pub next_id: u64,
    /// The newest recorded epoch, if any epoch was ever recorded.
    pub newest_epoch: Option<u64>,
    /// Whether the store holds anything at all (snapshots, parts, epochs,
    /// leases or a restore point): a cluster starting over it is resuming.
    pub used: bool,
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn numbered(folder: &str, n: u64) -> String {
    format!("{folder}/{n:020}")
}

fn number_of(folder: &str, key: &str) -> Option<u64> {
    key.strip_prefix(folder)?.strip_prefix('/')?.parse().ok()
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: key.to_string(),
        problem: format!("undecodable: {e}"),
    })
}

impl Store {
    /// The numbers of the records `<folder>/<n>`.
    async fn numbers(&self, folder: &str) -> Result<Vec<u64>> {
        Ok(self
            .backend
            .list(folder)
            .await?
            .iter()
            .filter_map(|k| number_of(folder, k))
            .collect())
    }

    /// Writes `value` as JSON under `key`, create-if-absent.
    async fn create_json<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Backend {
            key: key.to_string(),
            problem: e.to_string(),
        })?;
        self.backend
            .put(key, Bytes::from(bytes), true, Durable::Object)
            .await
    }

    /// Reads the record `<folder>/<n>`, checking that it names `n` (its
    /// `what` field, read by `number`).
    async fn read_numbered<T: for<'de> Deserialize<'de>>(
        &self,
        folder: &str,
        n: u64,
        what: &str,
        number: impl Fn(&T) -> u64,
    ) -> Result<T> {
        let key = numbered(folder, n);
        let record: T = decode(&key, &self.backend.get(&key).await?)?;
        if number(&record) != n {
            return Err(Error::Corrupt {
                key,
                problem: format!("it records {what} {}", number(&record)),
            });
        }
        Ok(record)
    }

    /// Scans the store for every identity it has seen.
    ///
    /// # Errors
    /// The backend failed, or the restore point is unreadable.
    pub async fn history(&self) -> Result<History> {
        let snapshot_ids: Vec<u64> = self
            .backend
            .list("snapshots")
            .await?
            .iter()
            .filter_map(|k| format::id_of(k))
            .collect();
        let leases = self.numbers(ID_LEASES).await?;
        let epochs = self.numbers(EPOCHS).await?;
        let restore = self.restore_point().await?;
        let next_id = snapshot_ids
            .iter()
            .chain(restore.iter())
            .map(|id| id.saturating_add(1))
            .chain(leases.iter().copied())
            .max()
            .unwrap_or(0);
        Ok(History {
            next_id,
            newest_epoch: epochs.iter().copied().max(),
            used: !snapshot_ids.is_empty()
                || !leases.is_empty()
                || !epochs.is_empty()
                || restore.is_some(),
        })
    }

    /// Leases the ids `[from, from + count)` for `holder`, create-if-absent,
    /// then forgets older leases (the newest one keeps the high-water mark).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if another writer leased that block first
    /// (scan the [`history`](Self::history) again and lease above it).
    pub async fn lease_ids(&self, from: u64, count: u64, holder: &str) -> Result<Range<u64>> {
        let to = from.saturating_add(count.max(1));
        let lease = IdLease {
            from,
            to,
            holder: holder.to_string(),
            created_unix_ms: unix_ms(),
        };
        self.create_json(&numbered(ID_LEASES, to), &lease).await?;
        for old in self.backend.list(ID_LEASES).await? {
            if number_of(ID_LEASES, &old).is_some_and(|n| n < to) {
                self.backend.delete(&old).await?;
            }
        }
        Ok(from..to)
    }

    /// Begins an epoch by creating its record, create-if-absent.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if the epoch was already begun.
    pub async fn begin_epoch(&self, record: &EpochRecord) -> Result<()> {
        self.create_json(&numbered(EPOCHS, record.epoch), record)
            .await
    }

    /// Claims term `record.term` for `record.node`, create-if-absent:
    /// returns the record that holds the term, the claimant's if it won,
    /// the earlier winner's if not.
    ///
    /// # Errors
    /// The backend failed, or the existing record is unreadable.
    pub async fn claim_term(&self, record: &TermRecord) -> Result<TermRecord> {
        match self
            .create_json(&numbered(TERMS, record.term), record)
            .await
        {
            Ok(()) => Ok(record.clone()),
            Err(Error::AlreadyExists { .. }) => self.term(record.term).await,
            Err(e) => Err(e),
        }
    }

    /// The record of term `term`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if nobody claimed it; [`Error::Corrupt`].
    pub async fn term(&self, term: u64) -> Result<TermRecord> {
        self.read_numbered(TERMS, term, "term", |r: &TermRecord| r.term)
            .await
    }

    /// The newest term anybody claimed, if any.
    ///
    /// # Errors
    /// The backend failed, or its record is unreadable.
    pub async fn newest_term(&self) -> Result<Option<TermRecord>> {
        match self.numbers(TERMS).await?.into_iter().max() {
            Some(t) => self.term(t).await.map(Some),
            None => Ok(None),
        }
    }

    /// The record of epoch `epoch`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if it was never begun; [`Error::Corrupt`].
    pub async fn epoch_record(&self, epoch: u64) -> Result<EpochRecord> {
        self.read_numbered(EPOCHS, epoch, "epoch", |r: &EpochRecord| r.epoch)
            .await
    }

    /// Every epoch record, by epoch.
    ///
    /// # Errors
    /// The backend failed, or a record is unreadable.
    pub async fn epochs(&self) -> Result<BTreeMap<u64, EpochRecord>> {
        let mut out = BTreeMap::new();
        for n in self.numbers(EPOCHS).await? {
            out.insert(n, self.epoch_record(n).await?);
        }
        Ok(out)
    }

    /// The newest committed snapshot on the timeline of `epoch` (default:
    /// the newest recorded epoch) that reads back whole and complete.
    /// Snapshots of abandoned timelines and unreadable ones are skipped;
    /// returns them with why.
    ///
    /// # Errors
    /// The backend failed while listing.
    pub async fn latest_good_in(
        &self,
        epoch: Option<u64>,
    ) -> Result<(Option<StoredSnapshot>, Vec<(u64, String)>)> {
        self.newest_on_timeline(epoch, |id| async move {
            self.load(id, &mut |_, _| {})
                .await
                .and_then(|s| s.check_complete().map(|()| s))
        })
        .await
    }

    /// The newest committed snapshot on `epoch`'s timeline that `check`
    /// accepts, as `check` returns it, with every newer one skipped and why.
    pub(crate) async fn newest_on_timeline<T, F, Fut>(
        &self,
        epoch: Option<u64>,
        mut check: F,
    ) -> Result<(Option<T>, Vec<(u64, String)>)>
    where
        F: FnMut(u64) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let timeline = self.timeline(epoch).await?;
        let mut skipped = Vec::new();
        for id in self.list().await?.into_iter().rev() {
            let checked = match self.manifest(id).await {
                Ok(m) if !timeline.contains(m.epoch, id) => {
                    skipped.push((id, timeline.abandoned(m.epoch)));
                    continue;
                }
                Ok(_) => check(id).await,
                Err(e) => Err(e),
            };
            match checked {
                Ok(found) => return Ok((Some(found), skipped)),
                Err(e) => skipped.push((id, e.to_string())),
            }
        }
        Ok((None, skipped))
    }

    /// The newest good snapshot on the current timeline; see
    /// [`latest_good_in`](Self::latest_good_in).
    ///
    /// # Errors
    /// The backend failed while listing.
    pub async fn latest_good(&self) -> Result<(Option<StoredSnapshot>, Vec<(u64, String)>)> {
        self.latest_good_in(None).await
    }

    /// The timeline of `epoch` (default: the current one, see
    /// [`current_epoch`](Self::current_epoch)).
    ///
    /// # Errors
    /// The backend failed, or an epoch record is unreadable.
    pub async fn timeline(&self, epoch: Option<u64>) -> Result<Timeline> {
        let records = self.epochs().await?;
        let current = epoch.or_else(|| current_of(&records).map(|r| r.epoch));
        Ok(Timeline { records, current })
    }

    /// The current epoch: of the newest coordinator term, the newest epoch.
    /// An epoch a deposed coordinator begins after a newer term began is
    /// never current, whatever its number.
    ///
    /// # Errors
    /// The backend failed, or an epoch record is unreadable.
    pub async fn current_epoch(&self) -> Result<Option<EpochRecord>> {
        Ok(current_of(&self.epochs().await?).cloned())
    }

    pub(crate) async fn restore_point(&self) -> Result<Option<u64>> {
        let bytes = match self.backend.get(RESTORE_KEY).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        crate::decode::decode_restore_point(&bytes).map(Some)
    }
}

fn current_of(records: &BTreeMap<u64, EpochRecord>) -> Option<&EpochRecord> {
    records.values().max_by_key(|r| (r.term, r.epoch))
}

/// Which snapshots lie on one epoch's timeline: those taken in that epoch,
/// and, up to the snapshot it restored, those on the timeline it continued.
/// Ids grow with time along any timeline, so "up to" is an id comparison.
#[derive(Clone, Debug)]
pub struct Timeline {
    records: BTreeMap<u64, EpochRecord>,
    current: Option<u64>,
}

impl Timeline {
    /// Whether snapshot `id`, taken in `epoch`, lies on this timeline. A
    /// store with no epoch records (written before epochs were recorded)
    /// has one timeline holding everything.
    pub fn contains(&self, epoch: u64, id: u64) -> bool {
        let Some(mut e) = self.current else {
            return true;
        };
        let mut bound = u64::MAX;
        loop {
            if epoch == e {
                return id <= bound;
            }
            if epoch > e {
                return false;
            }
            match self.records.get(&e).map(|r| (r.parent, r.restored)) {
                Some((Some(parent), Some(restored))) => {
                    bound = bound.min(restored);
                    e = parent;
                }
                _ => return false,
            }
        }
    }

    /// The epoch whose timeline this is.
    pub fn epoch(&self) -> Option<u64> {
        self.current
    }

    fn abandoned(&self, epoch: u64) -> String {
        format!(
            "taken in epoch {epoch}, on a timeline that epoch {} does not continue",
            self.current.unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: u64, parent: Option<u64>, restored: Option<u64>) -> (u64, EpochRecord) {
        (
            epoch,
            EpochRecord {
                epoch,
                parent,
                restored,
                by: "n1".into(),
                incarnation: 1,
                created_unix_ms: 0,
                term: 0,
            },
        )
    }

    #[test]
    fn a_timeline_holds_its_own_epoch_and_its_past_up_to_the_restored_snapshot() {
        // Epoch 0 took 1..=5; epoch 1 restored 3 and took 6..=8; epoch 2
        // restored 7; epoch 3 restored nothing (initial states).
        let records: BTreeMap<u64, EpochRecord> = [
            record(0, None, None),
            record(1, Some(0), Some(3)),
            record(2, Some(1), Some(7)),
            record(3, Some(2), None),
        ]
        .into_iter()
        .collect();
        let at = |e| Timeline {
            records: records.clone(),
            current: Some(e),
        };
        let t2 = at(2);
        assert!(t2.contains(0, 1) && t2.contains(0, 3));
        assert!(
            !t2.contains(0, 4),
            "4 was taken after 3, which epoch 1 restored"
        );
        assert!(t2.contains(1, 6) && t2.contains(1, 7));
        assert!(
            !t2.contains(1, 8),
            "8 was taken after 7, which epoch 2 restored"
        );
        assert!(t2.contains(2, 9));
        assert!(!t2.contains(3, 10), "a later epoch is no part of epoch 2");
        let t3 = at(3);
        assert!(
            !t3.contains(0, 1) && !t3.contains(2, 9),
            "epoch 3 began afresh"
        );
        assert!(t3.contains(3, 11));
        let legacy = Timeline {
            records: BTreeMap::new(),
            current: None,
        };
        assert!(legacy.contains(0, 42));
    }
}
