//! Stable properties (the paper's Section 5): a property that, once true,
//! stays true. Evaluated on a recorded snapshot S*, a true answer means the
//! property holds now; a false one means it did not hold when recording began.

use std::fmt;

use crate::snapshot::GlobalSnapshot;
use crate::topology::Topology;

/// A stable property: a predicate over a global snapshot that, when it
/// holds, explains why.
pub trait StableProperty<M, S> {
    /// Why the property holds (a deadlock's cycle, say).
    type Evidence: fmt::Debug + Clone;

    /// The property's name, e.g. `termination`.
    fn name(&self) -> &str;

    /// `Some(evidence)` if the property holds in `snapshot`.
    fn evaluate(
        &self,
        topology: &Topology,
        snapshot: &GlobalSnapshot<M, S>,
    ) -> Option<Self::Evidence>;
}

/// The first definite answer of a detector.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection<M, S, E> {
    /// How many snapshots were evaluated, this one included.
    pub rounds: usize,
    /// The snapshot in which the property holds.
    pub snapshot: GlobalSnapshot<M, S>,
    /// Why it holds.
    pub evidence: E,
}

/// Evaluates a stable property on snapshots taken one after another and
/// stops at the first that shows it. Sans-IO: the caller takes the snapshots.
#[derive(Debug)]
pub struct Detector<P> {
    property: P,
    rounds: usize,
}

impl<P> Detector<P> {
    /// A detector of `property` that has seen no snapshot yet.
    pub fn new(property: P) -> Self {
        Detector {
            property,
            rounds: 0,
        }
    }

    /// The property.
    pub fn property(&self) -> &P {
        &self.property
    }

    /// Snapshots evaluated so far.
    pub fn rounds(&self) -> usize {
        self.rounds
    }

    /// Evaluates the next snapshot. `Some` is definite: the property holds
    /// now and forever. `None` says only that it did not hold when this
    /// snapshot's recording began; take another.
    pub fn observe<M, S>(
        &mut self,
        topology: &Topology,
        snapshot: GlobalSnapshot<M, S>,
    ) -> Option<Detection<M, S, P::Evidence>>
    where
        P: StableProperty<M, S>,
    {
        self.rounds += 1;
        let evidence = self.property.evaluate(topology, &snapshot)?;
        Some(Detection {
            rounds: self.rounds,
            snapshot,
            evidence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SnapshotId;

    /// "No tokens anywhere", on states and messages that count tokens.
    struct Empty;
    impl StableProperty<u32, u32> for Empty {
        type Evidence = &'static str;
        fn name(&self) -> &str {
            "empty"
        }
        fn evaluate(&self, _: &Topology, s: &GlobalSnapshot<u32, u32>) -> Option<&'static str> {
            let total: u32 =
                s.states.iter().sum::<u32>() + s.channels.iter().flatten().sum::<u32>();
            (total == 0).then_some("no tokens in processes or channels")
        }
    }

    #[test]
    fn detector_returns_the_first_snapshot_that_shows_the_property() {
        let topo = Topology::new(["a", "b"], &[("a", "b"), ("b", "a")]).unwrap();
        let snap = |id, states: Vec<u32>, ab: Vec<u32>| GlobalSnapshot {
            id: SnapshotId(id),
            states,
            channels: vec![ab, vec![]],
        };
        let mut d = Detector::new(Empty);
        assert!(d.observe(&topo, snap(0, vec![1, 0], vec![])).is_none());
        assert!(
            d.observe(&topo, snap(1, vec![0, 0], vec![1])).is_none(),
            "a token in flight counts"
        );
        let found = d.observe(&topo, snap(2, vec![0, 0], vec![])).unwrap();
        assert_eq!(
            (found.rounds, found.snapshot.id, found.evidence),
            (3, SnapshotId(2), "no tokens in processes or channels")
        );
        assert_eq!(d.property().name(), "empty");
    }
}
