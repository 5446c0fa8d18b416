//! How the coordinator judges each node from its heartbeat answers.
//!
//! Two different things can be wrong with a node, and they call for
//! different answers:
//! - **Unreachable**: silent for the failure timeout. Its process may well
//!   be running with its state intact behind a partition. Snapshots fail
//!   while it is away (naming it), but nothing is rolled back: when it
//!   answers again as the same incarnation, the reliable links resend what
//!   was pending and the cluster carries on.
//! - **Failed**: it lost its state. It answers as a new incarnation, says
//!   it needs a restore, its peers saw it restart, it is behind the
//!   cluster's epoch, or it holds no state of the current epoch at all (a
//!   fresh process). Only this rolls the cluster back.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

/// What one heartbeat round changed, for the log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Node `0` lost its state, for reason `1`.
    Failed(usize, &'static str),
    /// Node `0` has been silent for the failure timeout.
    Unreachable(usize),
    /// Node `0` answers again after `1` of silence, as the same life.
    Back(usize, Duration),
}

/// Which signs of lost state a heartbeat round may judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Judge {
    /// A rollback runs, or the epoch moved during the round: only a new
    /// incarnation counts (the other signs may be from before it).
    NewLives,
    /// The cluster is forming (not every node has joined epoch 0 yet): a
    /// node that says it needs a restore, or that its peers saw restart,
    /// has failed too; not holding the epoch yet is expected.
    Forming,
    /// Running: every sign.
    All,
}

/// One node's answer to the heartbeat, the parts that matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Answer {
    pub incarnation: Option<u64>,
    pub epoch: Option<u64>,
    pub joined: Option<u64>,
    pub needs_restore: bool,
    pub name: String,
}

impl Answer {
    /// Reads an answer from a node's `GET /status`.
    pub fn from_status(v: &serde_json::Value) -> Self {
        Answer {
            incarnation: v["incarnation"].as_u64(),
            epoch: v["epoch"].as_u64(),
            joined: v["joined"].as_u64(),
            needs_restore: v["needs_restore"].as_bool() == Some(true),
            name: v["node"].as_str().unwrap_or_default().to_string(),
        }
    }
}

/// The coordinator's view of every node's health.
#[derive(Debug)]
pub(crate) struct Health {
    limit: Duration,
    last_ok: Vec<Instant>,
    incarnations: Vec<Option<u64>>,
    failed: BTreeSet<usize>,
    unreachable: BTreeSet<usize>,
}

impl Health {
    /// A view of `n` nodes whose lives are as `known` says (from this node's
    /// own links; `None` where it has not spoken with one), judging silence
    /// after `limit`.
    pub fn new(limit: Duration, known: Vec<Option<u64>>, now: Instant) -> Self {
        Health {
            limit,
            last_ok: vec![now; known.len()],
            incarnations: known,
            failed: BTreeSet::new(),
            unreachable: BTreeSet::new(),
        }
    }

    /// Judges one round of answers (`None`: no answer). `epoch` is the
    /// cluster's; `judge` says which signs count now. `restarted` names
    /// the nodes peers saw restart.
    pub fn observe(
        &mut self,
        now: Instant,
        answers: &[(usize, Option<Answer>)],
        epoch: Option<u64>,
        judge: Judge,
        restarted: &BTreeSet<String>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for (i, answer) in answers {
            let i = *i;
            match answer {
                Some(a) => {
                    if self.unreachable.remove(&i) {
                        changes.push(Change::Back(i, now - self.last_ok[i]));
                    }
                    self.last_ok[i] = now;
                    let known = self.incarnations[i];
                    if let Some(why) = failed_because(a, known, epoch, judge, restarted) {
                        if self.failed.insert(i) {
                            changes.push(Change::Failed(i, why));
                        }
                    }
                    if a.incarnation.is_some() {
                        self.incarnations[i] = a.incarnation;
                    }
                }
                None => {
                    if now - self.last_ok[i] > self.limit && self.unreachable.insert(i) {
                        changes.push(Change::Unreachable(i));
                    }
                }
            }
        }
        changes
    }

    /// Marks node `i` failed (the coordinator's own node, say).
    pub fn fail(&mut self, i: usize) -> bool {
        self.failed.insert(i)
    }

    /// Nodes that lost their state since the last rollback.
    pub fn failed(&self) -> &BTreeSet<usize> {
        &self.failed
    }

    /// Nodes silent for the failure timeout.
    pub fn unreachable(&self) -> &BTreeSet<usize> {
        &self.unreachable
    }

    /// How long node `i` has been silent.
    pub fn silent_for(&self, i: usize, now: Instant) -> Duration {
        now - self.last_ok[i]
    }

    /// A rollback gave every node a state again.
    pub fn recovered(&mut self) {
        self.failed.clear();
    }
}

/// Why a node counts as failed (it lost its state), from its answer.
fn failed_because(
    a: &Answer,
    known: Option<u64>,
    epoch: Option<u64>,
    judge: Judge,
    restarted: &BTreeSet<String>,
) -> Option<&'static str> {
    if known.is_some() && a.incarnation.is_some() && a.incarnation != known {
        return Some("it restarted (a new incarnation) and lost its state");
    }
    if judge == Judge::NewLives {
        return None;
    }
    if a.needs_restore {
        return Some("it says it restarted and needs a restore");
    }
    if restarted.contains(&a.name) {
        return Some("its peers saw it restart");
    }
    if judge == Judge::Forming {
        return None;
    }
    let epoch = epoch?;
    if a.epoch.is_some_and(|e| e < epoch) {
        return Some("it is behind the cluster's epoch");
    }
    if a.joined != Some(epoch) {
        return Some("it holds no state of the cluster's epoch (a fresh process)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(incarnation: u64, epoch: u64) -> Option<Answer> {
        Some(Answer {
            incarnation: Some(incarnation),
            epoch: Some(epoch),
            joined: Some(epoch),
            needs_restore: false,
            name: "n".into(),
        })
    }

    /// Invariant: silence alone never rolls anything back; a node that
    /// comes back as the same life after any length of silence is back,
    /// not failed.
    #[test]
    fn a_silent_node_is_unreachable_and_comes_back_without_failing() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(1);
        let mut h = Health::new(limit, vec![None, Some(7)], t0);
        let none = BTreeSet::new();
        assert!(
            h.observe(t0, &[(1, ok(7, 0))], Some(0), Judge::All, &none)
                .is_empty()
        );
        let t1 = t0 + Duration::from_millis(500);
        assert!(
            h.observe(t1, &[(1, None)], Some(0), Judge::All, &none)
                .is_empty()
        );
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(
            h.observe(t2, &[(1, None)], Some(0), Judge::All, &none),
            vec![Change::Unreachable(1)]
        );
        assert!(
            h.observe(t2, &[(1, None)], Some(0), Judge::All, &none)
                .is_empty(),
            "once"
        );
        let t3 = t0 + Duration::from_secs(9);
        assert_eq!(
            h.observe(t3, &[(1, ok(7, 0))], Some(0), Judge::All, &none),
            vec![Change::Back(1, Duration::from_secs(9))]
        );
        assert!(h.failed().is_empty() && h.unreachable().is_empty());
    }

    /// Invariant: a node that lost its state is failed, however it shows
    /// it, and a rollback's own transition is not mistaken for a failure.
    /// Invariant: while the cluster forms, a node that lost its state
    /// fails (it could never join epoch 0), and one that simply has not
    /// joined yet does not.
    #[test]
    fn while_forming_only_a_lost_state_fails_a_node() {
        let t = Instant::now();
        let none = BTreeSet::new();
        let judge = |a: Option<Answer>, peers: &BTreeSet<String>| {
            let mut h = Health::new(Duration::from_secs(1), vec![Some(7)], t);
            h.observe(t, &[(0, a)], Some(0), Judge::Forming, peers)
        };
        let mut not_yet = ok(7, 0);
        not_yet.as_mut().unwrap().joined = None;
        assert!(judge(not_yet.clone(), &none).is_empty());
        let mut lost = not_yet.clone();
        lost.as_mut().unwrap().needs_restore = true;
        assert_eq!(
            judge(lost, &none),
            vec![Change::Failed(
                0,
                "it says it restarted and needs a restore"
            )]
        );
        let peers: BTreeSet<String> = ["n".to_string()].into();
        assert_eq!(
            judge(not_yet, &peers),
            vec![Change::Failed(0, "its peers saw it restart")]
        );
    }

    #[test]
    fn every_sign_of_lost_state_fails_a_node() {
        let t = Instant::now();
        let none = BTreeSet::new();
        let fails =
            |known: Option<u64>, a: Option<Answer>, judge: Judge, peers: &BTreeSet<String>| {
                let mut h = Health::new(Duration::from_secs(1), vec![known], t);
                h.observe(t, &[(0, a)], Some(3), judge, peers)
            };
        assert_eq!(
            fails(Some(7), ok(8, 3), Judge::NewLives, &none),
            vec![Change::Failed(
                0,
                "it restarted (a new incarnation) and lost its state"
            )]
        );
        let mut a = ok(7, 3);
        a.as_mut().unwrap().needs_restore = true;
        assert_eq!(fails(Some(7), a.clone(), Judge::All, &none).len(), 1);
        assert!(
            fails(Some(7), a, Judge::NewLives, &none).is_empty(),
            "mid-rollback"
        );
        let peers: BTreeSet<String> = ["n".to_string()].into();
        assert_eq!(fails(Some(7), ok(7, 3), Judge::All, &peers).len(), 1);
        assert_eq!(
            fails(Some(7), ok(7, 2), Judge::All, &none).len(),
            1,
            "behind"
        );
        let mut fresh = ok(9, 3);
        fresh.as_mut().unwrap().joined = None;
        assert_eq!(
            fails(None, fresh, Judge::All, &none),
            vec![Change::Failed(
                0,
                "it holds no state of the cluster's epoch (a fresh process)"
            )]
        );
        assert!(
            fails(None, ok(9, 3), Judge::All, &none).is_empty(),
            "a life first seen is adopted"
        );
    }
}
