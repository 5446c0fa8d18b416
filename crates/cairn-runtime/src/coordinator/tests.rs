//! The coordinator's unit tests.

use super::*;
use serde_json::json;

fn coordinator(timeout: Duration) -> Coordinator {
    let topo = Arc::new(Topology::new(["a", "b"], &[("a", "b"), ("b", "a")]).unwrap());
    let mut c = Coordinator::new(topo, "c", "bank", timeout, 2, Arc::new(Metrics::default()));
    c.enter_epoch(0);
    c
}

/// Registers the next id, as the id lease would hand it out.
fn start(c: &mut Coordinator, next: &mut u64, initiator: &str) -> SnapshotId {
    let id = SnapshotId(*next);
    *next += 1;
    c.register(id, initiator).unwrap();
    id
}

/// A report whose part, durable in the store, recorded `msgs` messages on `ch`.
fn report(id: SnapshotId, p: &str, ch: &str, msgs: u64) -> LocalReport {
    LocalReport {
        snapshot: id,
        process: p.into(),
        epoch: 0,
        state: json!({"balance": 1}),
        channels: vec![(ch.into(), msgs)],
        overtaken: Vec::new(),
        part: Some(PartRef {
            process: p.into(),
            key: cairn_store::format::part_key(id.0, p),
            crc32c: 0,
            bytes: 1,
            channels: Some([(ch.to_string(), msgs)].into()),
            overtaken: BTreeMap::new(),
            chunks: Vec::new(),
        }),
        refused: None,
        state_in_store: false,
    }
}

#[test]
fn reports_assemble_and_channel_states_stay_in_the_store() {
    let mut c = coordinator(Duration::from_secs(60));
    let id = start(&mut c, &mut 0, "a");
    c.report(report(id, "a", "b->a", 1)).unwrap();
    assert!(matches!(
        c.get(id).unwrap().0.status,
        SnapshotStatus::InProgress { .. }
    ));
    assert!(
        c.report(report(id, "a", "b->a", 0))
            .unwrap_err()
            .to_string()
            .contains("already reported")
    );
    assert!(
        c.report(report(id, "zed", "b->a", 0))
            .unwrap_err()
            .to_string()
            .contains("unknown process")
    );
    c.report(report(id, "b", "a->b", 0)).unwrap();
    let (summary, doc) = c.get(id).unwrap();
    assert_eq!(summary.status, SnapshotStatus::Complete);
    // A message was in flight: it is only in the store, and the
    // snapshot is served from its parts there, never from memory.
    assert!(doc.is_none());
    assert!(c.stored(id).is_some());
    // Retention deleting it leaves the summary, which says so.
    assert!(!c.get(id).unwrap().0.removed);
    c.removed(&[id.0]);
    assert!(c.get(id).unwrap().0.removed);
    assert!(c.stored(id).is_none());
    // Nothing in flight: the whole snapshot is the reports' states.
    let id = start(&mut c, &mut 1, "a");
    c.report(report(id, "a", "b->a", 0)).unwrap();
    c.report(report(id, "b", "a->b", 0)).unwrap();
    assert!(c.stored(id).is_none());
    let doc = serde_json::to_value(c.get(id).unwrap().1.unwrap()).unwrap();
    assert_eq!(
        doc["channels"][1],
        json!({"from": "b", "to": "a", "messages": []})
    );
    assert_eq!(doc["processes"]["a"], json!({"balance": 1}));
    assert!(
        c.report(report(id, "b", "a->b", 0))
            .unwrap_err()
            .to_string()
            .contains("not in progress")
    );
}

#[test]
fn late_snapshots_fail_naming_what_they_lacked() {
    let mut c = coordinator(Duration::ZERO);
    let mut next = 0;
    let id = start(&mut c, &mut next, "b");
    c.report(report(id, "a", "b->a", 0)).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    c.expire();
    let (summary, doc) = c.get(id).unwrap();
    assert!(doc.is_none());
    assert_eq!(
        summary.status,
        SnapshotStatus::Failed {
            missing_processes: vec!["b".into()],
            missing_channels: vec!["a->b".into()],
            reason: Some(
                "timed out after 0ns; no report from b; channels not recorded \
                 (waiting for a marker or its report): a->b"
                    .into()
            ),
        }
    );
    assert_eq!(c.metrics.snapshots_failed.get(), 1);
    // Only the most recent `keep` (2) finished snapshots are kept.
    for _ in 0..3 {
        start(&mut c, &mut next, "a");
        std::thread::sleep(Duration::from_millis(2));
        c.expire();
    }
    assert!(c.get(id).is_none());
    assert_eq!(c.list().len(), 2);
}

/// Invariant: the counts a snapshot is assembled from are the ones its
/// manifest gives recovery: a report whose counts differ from its part's
/// is refused, whoever sent it.
#[test]
fn a_report_must_count_what_its_part_holds() {
    let mut c = coordinator(Duration::from_secs(60));
    let id = start(&mut c, &mut 0, "a");
    let part = |n: u64| {
        Some(PartRef {
            process: "a".into(),
            key: cairn_store::format::part_key(id.0, "a"),
            crc32c: 0,
            bytes: 1,
            channels: Some([("b->a".to_string(), n)].into()),
            overtaken: BTreeMap::new(),
            chunks: Vec::new(),
        })
    };
    let mut r = report(id, "a", "b->a", 3);
    r.part = part(2);
    let e = c.report(r).unwrap_err().to_string();
    assert!(e.contains("counts other messages than its part"), "{e}");
    let mut r = report(id, "a", "b->a", 3);
    r.part = part(3);
    c.report(r).unwrap();
}

/// Invariant: a snapshot begun in an older epoch is never committed, and
/// no snapshot starts while a rollback is under way.
#[test]
fn a_snapshot_racing_a_rollback_never_commits() {
    let mut c = coordinator(Duration::from_secs(60));
    let mut next = 0;
    let id = start(&mut c, &mut next, "a");
    c.report(report(id, "a", "b->a", 0)).unwrap();
    c.begin_rollback();
    assert!(matches!(
        c.register(SnapshotId(99), "a"),
        Err(ControlError::RollbackUnderway)
    ));
    // The rollback failed the snapshot in progress; its late report is refused.
    assert!(c.report(report(id, "b", "a->b", 0)).is_err());
    assert!(
        c.take_aborts().contains(&(id, 0)),
        "every node hears the abort"
    );
    assert!(
        c.dead().contains(&id.0),
        "its parts are for retention to collect"
    );
    // A manifest of the old epoch, however it got here, is not committable.
    let old = Manifest::new(id.0, 0, "c", "bank", vec![], vec![]);
    assert!(matches!(
        c.committable(&old),
        Err(ControlError::RollbackUnderway)
    ));
    c.enter_epoch(1);
    c.unpin(None, true);
    assert!(matches!(c.committable(&old), Err(ControlError::Stale(_))));
    // A report recorded in another epoch than its snapshot fails it.
    let id2 = start(&mut c, &mut next, "a");
    let err = c.report(report(id2, "a", "b->a", 0)).unwrap_err();
    assert!(err.to_string().contains("epoch 0"), "{err}");
    let id3 = start(&mut c, &mut next, "a");
    let mut r = report(id3, "a", "b->a", 0);
    r.epoch = 1;
    c.report(r).unwrap();
    let mut r = report(id3, "b", "a->b", 0);
    r.epoch = 1;
    r.part = None;
    c.report(r).unwrap();
    assert_eq!(c.get(id3).unwrap().0.status, SnapshotStatus::Complete);
}

#[test]
fn no_more_than_the_bound_are_in_progress() {
    let mut c = coordinator(Duration::from_secs(60));
    let mut next = 0;
    for _ in 0..MAX_IN_PROGRESS {
        start(&mut c, &mut next, "a");
    }
    assert!(matches!(c.may_start(), Err(ControlError::Busy(_))));
    let fresh = Coordinator::new(
        Arc::new(Topology::new(["a", "b"], &[("a", "b"), ("b", "a")]).unwrap()),
        "c",
        "bank",
        Duration::from_secs(1),
        2,
        Arc::new(Metrics::default()),
    );
    assert!(matches!(fresh.may_start(), Err(ControlError::NotReady)));
}
