//! Real processes on separate hosts: one `cairn node` per network namespace,
//! on a private subnet joined by a userspace link (`scripts/netlab.py`) that
//! can delay, lose and drop packets. Needs root (CI runs as root); without
//! it each test says SKIPPED. Every snapshot is checked by the oracle
//! against the merged traces, and the bank's money is checked in each.
//! Each test names the invariant it protects:
//!
//! - **A partition costs no work**: a node cut off (its link down) for four
//!   failure timeouts comes back with no rollback; the links resend what was
//!   pending and snapshots resume in the same epoch. While it is away,
//!   snapshots fail naming it unreachable, and it never takes the lead.
//! - **Losing the coordinator's network costs no work either**: the next
//!   candidate, which reaches most of the cluster, takes over in the same
//!   epoch; the old coordinator steps down and rejoins; nothing rolls back.
//! - **A one-way cut is named**: with every packet from n2 to n3 dropped,
//!   nobody is unreachable from the coordinator, but the snapshots that
//!   fail name the channel that never delivered its marker; after the heal
//!   they resume, with no rollback.
//! - **Loss and delay are only slow**: on 5 ± 2 ms links losing 1% of
//!   packets, every snapshot is consistent and nothing is rolled back.

mod common;

use std::time::{Duration, Instant};

use cairn_apps::bank::BankModel;
use cairn_core::SnapshotDoc;
use common::lab::{Lab, Link};
use common::{BANK, ONE_AT_A_TIME, TestCluster, client, write_config_at};
use serde_json::Value;

const CANDIDATES: &str = "coordinator = [\"n1\", \"n2\", \"n3\", \"n4\"]";

async fn lab_cluster(name: &str, lab: &Lab) -> TestCluster {
    let (dir, path) = write_config_at(
        name,
        &lab.node_addresses(),
        "\"complete\"",
        100,
        BANK,
        CANDIDATES,
        "failure_timeout_ms = 1000\ntimeout_ms = 1500",
    );
    TestCluster::start_in_lab(dir, path, lab).await
}

async fn status(c: &TestCluster, node: usize) -> Value {
    let admin = c.config.nodes[node].admin;
    client::get_json::<Value>(admin, "/status").await.unwrap().1
}

async fn snapshots(c: &TestCluster, node: usize) -> Vec<Value> {
    let admin = c.config.nodes[node].admin;
    client::get_json::<Vec<Value>>(admin, "/snapshots")
        .await
        .unwrap()
        .1
}

/// The complete snapshots the coordinator at `node` holds, in the shared shape.
async fn docs(c: &TestCluster, node: usize) -> Vec<SnapshotDoc<Value, Value>> {
    c.snapshots_from(c.config.nodes[node].admin, |_| true).await
}

/// After a heal: waits until the coordinator at `lead` has five snapshots
/// complete that started afterwards, then requires that nothing rolled
/// back (still `epoch`, no rollback recorded). Returns its status.
async fn resumed_without_rollback(c: &TestCluster, lead: usize, epoch: Option<u64>) -> Value {
    let healed = cairn_store::unix_ms();
    until_snapshots(
        c,
        lead,
        Duration::from_secs(20),
        "snapshots did not resume",
        |l| completed_after(l, healed) >= 5,
    )
    .await;
    let after = status(c, lead).await;
    assert_eq!(
        after["epoch"].as_u64(),
        epoch,
        "the cluster rolled back: {after}"
    );
    assert!(after["last_rollback"].is_null(), "{after}");
    after
}

/// Polls for `limit` until `done` holds of the coordinator at `node`'s
/// snapshot list, failing with `what` otherwise.
async fn until_snapshots(
    c: &TestCluster,
    node: usize,
    limit: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        let list = snapshots(c, node).await;
        if done(&list) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn completed_after(list: &[Value], t: u64) -> usize {
    list.iter()
        .filter(|s| s["status"] == "complete" && s["started_unix_ms"].as_u64() > Some(t))
        .count()
}

fn failed_saying(list: &[Value], words: &[&str]) -> bool {
    list.iter().any(|s| {
        s["status"] == "failed"
            && s["reason"]
                .as_str()
                .is_some_and(|r| words.iter().all(|w| r.contains(w)))
    })
}

#[tokio::test]
async fn a_node_cut_off_past_the_failure_timeout_heals_with_no_rollback() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut lab) = Lab::start(4, Link::default()) else {
        return;
    };
    let c = lab_cluster("lab-cut", &lab).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = status(&c, 0).await;
    let (epoch, term) = (before["epoch"].as_u64(), before["term"].as_u64());
    lab.down(3);
    let cut = Instant::now();
    until_snapshots(&c, 0, Duration::from_secs(6), "no failure named n3", |l| {
        failed_saying(l, &["unreachable: n3"])
    })
    .await;
    assert!(status(&c, 0).await["unreachable"]["n3"].is_object());
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(cut.elapsed())).await;
    lab.up(3);
    let after = resumed_without_rollback(&c, 0, epoch).await;
    assert_eq!(after["term"].as_u64(), term, "the lead changed: {after}");
    assert!(
        after["unreachable"]
            .as_object()
            .is_some_and(|u| u.is_empty())
    );
    let n3 = status(&c, 2).await;
    assert_eq!(n3["leading"], false, "the cut-off node took the lead: {n3}");
    let docs = docs(&c, 0).await;
    c.stop_and_check(&BankModel, docs).await;
}

#[tokio::test]
async fn the_coordinator_cut_off_is_replaced_and_nothing_rolls_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut lab) = Lab::start(4, Link::default()) else {
        return;
    };
    let c = lab_cluster("lab-coord", &lab).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = status(&c, 0).await;
    let epoch = before["epoch"].as_u64();
    let old_term = before["term"].as_u64().unwrap();
    let mut all = docs(&c, 0).await;
    lab.down(1);
    // n2, the next candidate, reaches n3 and n4: it takes over.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let v = status(&c, 1).await;
        if v["leading"] == true && v["term"].as_u64() > Some(old_term) && v["ready"] == true {
            assert_eq!(v["epoch"].as_u64(), epoch, "the takeover rolled back: {v}");
            break;
        }
        assert!(Instant::now() < deadline, "n2 did not take over: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_snapshots(&c, 1, Duration::from_secs(6), "no failure named n1", |l| {
        failed_saying(l, &["unreachable: n1"])
    })
    .await;
    lab.up(1);
    resumed_without_rollback(&c, 1, epoch).await;
    let n1 = status(&c, 0).await;
    assert_eq!(n1["leading"], false, "{n1}");
    assert_eq!(n1["coordinator"], "n2", "{n1}");
    all.extend(docs(&c, 1).await);
    all.sort_by_key(|d| d.id);
    all.dedup_by_key(|d| d.id);
    c.stop_and_check(&BankModel, all).await;
}

#[tokio::test]
async fn a_one_way_cut_is_named_and_heals_with_no_rollback() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(mut lab) = Lab::start(4, Link::default()) else {
        return;
    };
    let c = lab_cluster("lab-oneway", &lab).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let epoch = status(&c, 0).await["epoch"].as_u64();
    lab.drop_packets(2, 3);
    until_snapshots(
        &c,
        0,
        Duration::from_secs(8),
        "no failure named n2->n3",
        |l| failed_saying(l, &["n2->n3"]),
    )
    .await;
    let v = status(&c, 0).await;
    assert!(
        v["unreachable"].as_object().is_some_and(|u| u.is_empty()),
        "the coordinator reaches every node: {v}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    lab.pass_packets(2, 3);
    resumed_without_rollback(&c, 0, epoch).await;
    assert!(lab.stats()["dropped"].as_u64() > Some(0));
    let docs = docs(&c, 0).await;
    c.stop_and_check(&BankModel, docs).await;
}

#[tokio::test]
async fn lossy_slow_links_keep_every_snapshot_consistent() {
    let _one = ONE_AT_A_TIME.lock().await;
    let link = Link {
        delay_ms: 5.0,
        jitter_ms: 2.0,
        loss: 0.01,
        seed: 7,
    };
    let Some(mut lab) = Lab::start(4, link) else {
        return;
    };
    let c = lab_cluster("lab-lossy", &lab).await;
    let began = cairn_store::unix_ms();
    until_snapshots(&c, 0, Duration::from_secs(30), "too few snapshots", |l| {
        completed_after(l, began) >= 30
    })
    .await;
    let v = status(&c, 0).await;
    assert!(v["last_rollback"].is_null(), "loss alone rolled back: {v}");
    assert!(
        lab.stats()["lost"].as_u64() > Some(0),
        "the link lost nothing"
    );
    let docs = docs(&c, 0).await;
    c.stop_and_check(&BankModel, docs).await;
}

/// The figures in BENCHMARKS.md ("Lossy links"): snapshot latency on four
/// hosts whose links delay 5 ± 2 ms and lose 1% of packets, each node
/// sending 1000 transfers a second. Not a check: run it by hand, and with
/// `CAIRN_LAB_EXE=<an older cairn>` for the same figures of that build:
///
/// ```text
/// cargo test --release -p cairn --test netns -- --ignored --nocapture figures
/// ```
#[tokio::test]
#[ignore = "measurement for BENCHMARKS.md; run by hand"]
async fn figures_snapshot_latency_on_lossy_links() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seconds: u64 = std::env::var("CAIRN_LAB_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let link = Link {
        delay_ms: 5.0,
        jitter_ms: 2.0,
        loss: 0.01,
        seed: 11,
    };
    let Some(lab) = Lab::start(4, link) else {
        return;
    };
    let (dir, path) = write_config_at(
        "lab-figures",
        &lab.node_addresses(),
        "\"complete\"",
        100,
        "name = \"bank\"\ninitial_balance = 1000\nrate = 1000",
        CANDIDATES,
        "failure_timeout_ms = 1000\ntimeout_ms = 2500",
    );
    let c = TestCluster::start_in_lab(dir, path, &lab).await;
    let began = cairn_store::unix_ms();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let list = snapshots(&c, 0).await;
    let ran: Vec<&Value> = list
        .iter()
        .filter(|s| s["started_unix_ms"].as_u64() > Some(began))
        .collect();
    let mut done: Vec<f64> = ran
        .iter()
        .filter(|s| s["status"] == "complete")
        .filter_map(|s| s["duration_ms"].as_f64())
        .collect();
    let failed = ran.iter().filter(|s| s["status"] == "failed").count();
    done.sort_by(f64::total_cmp);
    let at = |q: f64| done[((done.len() as f64 - 1.0) * q).round() as usize];
    let slow = done.iter().filter(|&&d| d > 900.0).count();
    println!(
        "{{\"snapshots\": {}, \"failed\": {failed}, \"p50_ms\": {:.1}, \"p90_ms\": {:.1}, \"p99_ms\": {:.1}, \"max_ms\": {:.1}, \"over_900_ms\": {slow}, \"p99_over_p50\": {:.2}}}",
        done.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0),
        at(0.99) / at(0.5)
    );
    let docs = docs(&c, 0).await;
    c.stop_and_check(&BankModel, docs).await;
}
