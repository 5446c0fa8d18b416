//! A node that is unreachable but keeps its process and state, on loopback:
//! frozen with SIGSTOP, which to its peers looks like a cut that drops
//! everything (connections stay open, nothing is answered). The real
//! network version, with links taken down between namespaces, is in
//! `netns.rs`. Each test names the invariant it protects:
//!
//! - **A partition costs no work**: a follower silent for three or more times the
//!   failure timeout comes back with no rollback: the epoch stays, and
//!   every snapshot (before, during and after) passes the oracle and
//!   conserves the money, so nothing was lost or repeated.
//! - **The operator is told who is away**: while it is, `cairn status`
//!   answers within its timeout and names it, the coordinator's status and
//!   metrics count it, and each failed snapshot names it as unreachable.
//! - **Control traffic rides open connections**: over dozens of snapshots a
//!   node opens a handful of admin connections, not one per report.

mod common;

use std::time::{Duration, Instant};

use cairn_apps::bank::BankModel;
use common::{BANK, ONE_AT_A_TIME, TestCluster, cairn, client, counter, signal, text};
use serde_json::Value;

#[tokio::test]
async fn a_frozen_follower_costs_no_work_and_is_named_while_away() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, path) = common::write_full_config(
        "frozen-follower",
        4,
        "\"complete\"",
        100,
        BANK,
        "",
        "failure_timeout_ms = 1000\ntimeout_ms = 1500",
    );
    let mut c = TestCluster::start_from(dir, path.clone()).await;
    let lead = c.config.nodes[0].admin;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, before): (_, Value) = client::get_json(lead, "/status").await.unwrap();
    let epoch = before["epoch"].as_u64().unwrap();
    let n3 = c.supervisor().pid("n3").unwrap();
    signal(n3, "-STOP");
    // Away for at least three failure timeouts, until a snapshot has
    // failed naming it (one runs at a time, each for the 1.5 s timeout, and
    // the first may end before the node counts as unreachable).
    let frozen = Instant::now();
    let mut named_in_failure = false;
    let mut status_named = false;
    while frozen.elapsed() < Duration::from_secs(3)
        || (!(named_in_failure && status_named) && frozen.elapsed() < Duration::from_secs(10))
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, list): (_, Vec<Value>) = client::get_json(lead, "/snapshots").await.unwrap();
        named_in_failure |= list.iter().any(|s| {
            s["status"] == "failed"
                && s["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("unreachable: n3") && r.contains("->n3"))
        });
        let (_, v): (_, Value) = client::get_json(lead, "/status").await.unwrap();
        status_named |= v["unreachable"]["n3"]["silent_ms"].as_u64() > Some(1000);
    }
    assert!(
        named_in_failure,
        "no failed snapshot named n3 as unreachable"
    );
    assert!(status_named, "the coordinator's status never named n3");
    assert_eq!(counter(lead, "cairn_nodes_unreachable").await, 1);
    // The frozen node accepts connections but never answers: `cairn
    // status` still answers within its timeout, naming it.
    let asked = Instant::now();
    let out = cairn(&["status", "--config", path.to_str().unwrap()]);
    let took = asked.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("n3") && shown.contains("unreachable"),
        "{shown}"
    );
    assert!(
        took < Duration::from_secs(3),
        "cairn status took {took:?} with a node frozen (its timeout is 1 s)"
    );
    signal(n3, "-CONT");
    // Back as the same life: no rollback, and snapshots complete again in
    // the same epoch.
    let deadline = Instant::now() + Duration::from_secs(20);
    let thawed = cairn_store::unix_ms();
    loop {
        let (_, list): (_, Vec<Value>) = client::get_json(lead, "/snapshots").await.unwrap();
        let after = list
            .iter()
            .filter(|s| s["status"] == "complete" && s["started_unix_ms"].as_u64() > Some(thawed));
        if after.count() >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "snapshots did not resume after the thaw"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, v): (_, Value) = client::get_json(lead, "/status").await.unwrap();
    assert_eq!(
        v["epoch"].as_u64(),
        Some(epoch),
        "the cluster rolled back: {v}"
    );
    assert!(v["last_rollback"].is_null(), "{v}");
    assert_eq!(counter(lead, "cairn_nodes_unreachable").await, 0);
    // Dozens of reports and heartbeats, a handful of connections.
    let reported = counter(c.config.nodes[1].admin, "cairn_snapshots_recorded_total").await;
    let opened = counter(c.config.nodes[1].admin, "cairn_control_connections_total").await;
    assert!(reported >= 15, "only {reported} snapshots recorded at n2");
    assert!(
        opened <= 8,
        "n2 opened {opened} admin connections for {reported} snapshots"
    );
    let docs = c.snapshots_where(|_| true).await;
    assert!(docs.len() >= 10, "only {} complete snapshots", docs.len());
    c.stop_and_check(&BankModel, docs).await;
}
