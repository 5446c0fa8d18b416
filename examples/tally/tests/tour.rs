//! The embedding example, run as a user would: three nodes in one program,
//! snapshots taken and read back typed, a node crashed and the cluster
//! recovered. Invariants: every snapshot is consistent (checked from its
//! recorded states and channels alone, not from Cairn's bookkeeping), and
//! a crash loses nothing that a committed snapshot holds.

use std::collections::BTreeMap;

use cairn_example_tally::{Event, Tally, TallyNode, config, consistent, tour};
use cairn_runtime::{Node, Snapshot};

fn free_ports(n: usize) -> Vec<(u16, u16)> {
    let ports = cairn_runtime::ports::free_loopback_ports(2 * n).unwrap();
    ports.chunks(2).map(|p| (p[0], p[1])).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tally_is_snapshotted_crashed_and_recovered_losing_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let store = format!("memory://tally-test-{}", std::process::id());
    let t = tour(&free_ports(3), &store).await.unwrap();
    eprintln!("{t:?}");
    assert!(t.during <= 600, "{t:?}");
    assert_eq!(t.before_crash, 600, "every hit handled before it started");
    assert_eq!(t.after_recovery, 600, "the crashed node's hits came back");
    assert_eq!(t.at_end, 630);
    assert_eq!(t.restored.map(|(_, hits)| hits), Some(600), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_the_application_refuses_is_an_error_and_changes_nothing() {
    let store = format!("memory://tally-refuse-{}", std::process::id());
    let config = config(&free_ports(2), &store).unwrap();
    let a = Node::<TallyNode>::start(config.clone(), "n1")
        .await
        .unwrap();
    let b = Node::<TallyNode>::start(config, "n2").await.unwrap();
    let e = a.input(Event::Served(99)).await.unwrap_err().to_string();
    assert!(e.contains("only hits come from outside"), "{e}");
    a.input(Event::Hit).await.unwrap();
    let s = cairn_example_tally::snapshot(&b, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(s.states["n1"].served, 1);
    assert_eq!(b.status().node, "n2");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Invariants: `snapshot()` with a peer gone fails within the snapshot
/// timeout (plus its two-second grace) and names the peer, rather than
/// hanging; and a peer started again in the same program is a new life the
/// cluster notices, rolling back to the last snapshot, after which
/// snapshots are consistent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_with_a_peer_gone_fails_naming_it_and_the_peer_comes_back() {
    let store = format!("memory://tally-gone-{}", std::process::id());
    let config = config(&free_ports(3), &store).unwrap();
    let limit = std::time::Duration::from_secs(20);
    let a = Node::<TallyNode>::start(config.clone(), "n1")
        .await
        .unwrap();
    let b = Node::<TallyNode>::start(config.clone(), "n2")
        .await
        .unwrap();
    let c = Node::<TallyNode>::start(config.clone(), "n3")
        .await
        .unwrap();
    for _ in 0..5 {
        c.input(Event::Hit).await.unwrap();
    }
    let before = cairn_example_tally::snapshot(&a, limit).await.unwrap();
    consistent(&before).unwrap();
    c.shutdown().await.unwrap();

    let asked = std::time::Instant::now();
    let e = a.snapshot().await.unwrap_err().to_string();
    let took = asked.elapsed();
    eprintln!("snapshot() with n3 gone, after {took:?}: {e}");
    assert!(e.contains("n3"), "{e}");
    let bound = config.snapshots.timeout + std::time::Duration::from_secs(3);
    assert!(took <= bound, "snapshot() took {took:?} to fail: {e}");

    let c = Node::<TallyNode>::start(config, "n3").await.unwrap();
    let deadline = tokio::time::Instant::now() + limit;
    let after = loop {
        let s = cairn_example_tally::snapshot(&a, limit).await.unwrap();
        if s.epoch > before.epoch {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rollback noticed the new life of n3"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    consistent(&after).unwrap();
    assert!(after.states["n3"].served >= before.states["n3"].served);
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

#[test]
fn the_consistency_check_catches_a_torn_cut() {
    let tally = |served, heard: &[(&str, u64)]| Tally {
        served,
        heard: heard.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
    };
    let mut s = Snapshot {
        id: 1,
        epoch: 0,
        states: BTreeMap::from([
            ("n1".to_string(), tally(10, &[])),
            ("n2".to_string(), tally(0, &[("n1", 5)])),
        ]),
        channels: BTreeMap::from([
            ("n1->n2".to_string(), vec![Event::Served(10)]),
            ("n2->n1".to_string(), vec![]),
        ]),
    };
    assert_eq!(consistent(&s), Ok(()));
    // n2 heard of hits n1 served after n1 recorded.
    s.states.insert("n2".into(), tally(0, &[("n1", 15)]));
    assert!(consistent(&s).unwrap_err().contains("heard 15"));
    // A message recorded in the channel from after n1 recorded.
    s.states.insert("n2".into(), tally(0, &[("n1", 5)]));
    s.channels.insert("n1->n2".into(), vec![Event::Served(15)]);
    assert!(consistent(&s).is_err());
}
