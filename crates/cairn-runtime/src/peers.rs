//! Which life of each peer this node has spoken with, so that a restarted
//! peer (a new incarnation) is noticed on any link, in either direction, and
//! never has its frames silently taken for old ones. The rules are
//! [`cairn_core::link::Incarnations`]'s; this wrapper shares them between a
//! node's link tasks, logs and counts each restart once, and holds the
//! node's own "needs restore" flag: a node that learns it restarted sends
//! and accepts nothing until a rollback gives it a state again.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cairn_core::link::Incarnations;
pub(crate) use cairn_core::link::Seen;
use tracing::warn;

use crate::metrics::Metrics;

/// This node's incarnation and what it knows of its peers'.
#[derive(Debug)]
pub(crate) struct PeerBook {
    /// This process's incarnation.
    pub me: u64,
    names: Vec<String>,
    known: Mutex<Incarnations>,
    restarted: Mutex<BTreeSet<(usize, u64)>>,
    needs_restore: AtomicBool,
    pub metrics: Arc<Metrics>,
}

/// A fresh random incarnation for this process.
pub(crate) fn new_incarnation() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // RandomState is seeded from the operating system's randomness.
    RandomState::new().hash_one((std::process::id(), t)) | 1
}

impl PeerBook {
    /// A book for the nodes `names` (by process index), for a process of
    /// incarnation `me`.
    pub fn new(me: u64, names: Vec<String>, metrics: Arc<Metrics>) -> Self {
        PeerBook {
            me,
            known: Mutex::new(Incarnations::new(me, names.len())),
            names,
            restarted: Mutex::new(BTreeSet::new()),
            needs_restore: AtomicBool::new(false),
            metrics,
        }
    }

    /// How `peer` was last seen: `(incarnation, epoch)`.
    pub fn name(&self, peer: usize) -> &str {
        &self.names[peer]
    }

    /// How this node last saw `peer`: its incarnation and in which epoch.
    pub fn known(&self, peer: usize) -> Option<(u64, u64)> {
        self.book().known(peer)
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Incarnations> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Judges `peer` presenting `incarnation` in `epoch` to this node in
    /// epoch `mine` (see [`Incarnations::judge`]). A restart is logged and
    /// counted once per incarnation.
    pub fn judge(&self, peer: usize, incarnation: u64, epoch: u64, mine: u64) -> Seen {
        let seen = self.book().judge(peer, incarnation, epoch, mine);
        if seen == Seen::Known {
            return Seen::Known;
        }
        let first = self
            .restarted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((peer, incarnation));
        if first {
            Metrics::inc(&self.metrics.peer_restarts, 1);
            warn!(
                peer = %self.names[peer],
                incarnation = format_args!("{incarnation:016x}"),
                "peer restarted: a new incarnation, its state is lost; its links are refused until a restore"
            );
        }
        Seen::Restarted
    }

    /// Records that a link with `peer` was accepted in `epoch`.
    pub fn adopt(&self, peer: usize, incarnation: u64, epoch: u64) {
        self.book().adopt(peer, incarnation, epoch);
    }

    /// Judges how a peer last saw this node (`(incarnation, epoch)`) against
    /// this node's incarnation in `my_epoch`: if it saw another life in an
    /// epoch no older than this node's, this node restarted and needs a restore.
    pub fn judge_me(&self, seen_as: Option<(u64, u64)>, my_epoch: u64) -> Seen {
        let seen = self.book().judge_me(seen_as, my_epoch);
        if seen == Seen::Restarted {
            self.mark_needs_restore();
        }
        seen
    }

    /// This node restarted and lost its state: it exchanges no messages
    /// until a rollback.
    pub fn mark_needs_restore(&self) {
        if !self.needs_restore.swap(true, Ordering::Relaxed) {
            self.metrics.needs_restore.set(1);
            warn!(
                "this node restarted and its peers knew an earlier life of it: it needs a restore \
                 (automatic recovery rolls the cluster back; with recovery off, run `cairn restore`)"
            );
        }
    }

    /// Whether this node needs a restore.
    pub fn needs_restore(&self) -> bool {
        self.needs_restore.load(Ordering::Relaxed)
    }

    /// Peers seen restarted since the last rollback, by name.
    pub fn restarted_peers(&self) -> Vec<String> {
        let r = self.restarted.lock().unwrap_or_else(|p| p.into_inner());
        let ids: BTreeSet<usize> = r.iter().map(|(p, _)| *p).collect();
        ids.into_iter().map(|p| self.names[p].clone()).collect()
    }

    /// A rollback gave every node a state again: restarts are settled.
    pub fn restored(&self) {
        self.needs_restore.store(false, Ordering::Relaxed);
        self.metrics.needs_restore.set(0);
        self.restarted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> PeerBook {
        PeerBook::new(
            100,
            vec!["a".into(), "b".into()],
            Arc::new(Metrics::default()),
        )
    }

    #[test]
    fn a_new_incarnation_is_a_restart_unless_a_newer_epoch_restored_it() {
        let b = book();
        assert_eq!(b.judge(1, 7, 0, 0), Seen::Known, "never seen");
        b.adopt(1, 7, 0);
        assert_eq!(b.judge(1, 7, 0, 0), Seen::Known);
        assert_eq!(b.judge(1, 8, 0, 0), Seen::Restarted, "same epoch, new life");
        assert_eq!(b.restarted_peers(), vec!["b".to_string()]);
        b.adopt(1, 7, 2);
        assert_eq!(
            b.judge(1, 9, 0, 2),
            Seen::Restarted,
            "back in epoch 0: a fresh process"
        );
        assert_eq!(
            b.judge(1, 9, 3, 2),
            Seen::Known,
            "restored into a newer epoch"
        );
        b.restored();
        assert_eq!(
            b.judge(1, 9, 2, 3),
            Seen::Known,
            "a late hello of epoch 2 to this node, restored into 3: stale"
        );
        b.restored();
        assert!(b.restarted_peers().is_empty());
    }

    #[test]
    fn a_node_learns_it_restarted_from_how_peers_saw_it() {
        let b = book();
        assert_eq!(b.judge_me(None, 0), Seen::Known);
        assert_eq!(b.judge_me(Some((100, 0)), 0), Seen::Known);
        assert!(!b.needs_restore());
        assert_eq!(b.judge_me(Some((55, 4)), 0), Seen::Restarted);
        assert!(b.needs_restore());
        b.restored();
        assert!(!b.needs_restore());
        // A peer that saw an older life in an older epoch than ours is merely behind.
        assert_eq!(b.judge_me(Some((55, 1)), 2), Seen::Known);
    }
}
