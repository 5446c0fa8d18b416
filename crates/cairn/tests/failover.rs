//! No single point of failure, on real clusters of `cairn node` processes
//! (no supervisor restarts them). Each test names the invariant it protects:
//!
//! - **Checkpointing and recovery survive the coordinator**: when it is
//!   killed and kept down, the next candidate takes over within the failure
//!   timeout plus a second, its ids continue above the old ones, snapshots
//!   resume and conserve the money, it recovers a later failure, and the old
//!   coordinator comes back as a follower.
//! - **A deposed coordinator changes nothing**: frozen past the timeout and
//!   thawed after a new term began, its orders are refused and the store's
//!   current timeline stays the new coordinator's.
//! - **A small cluster never lies**: in a 2-node cluster, losing either node
//!   leaves the other reporting what happened, and no snapshot is reported
//!   committed unless the store holds it whole.

mod common;

use std::time::{Duration, Instant};

use cairn_runtime::ClusterConfig;
use cairn_store::Store;
use common::client;
use common::{BANK, ONE_AT_A_TIME, TestCluster, cairn, signal, text, write_full_config};
use serde_json::{Value, json};

async fn status(config: &ClusterConfig, node: usize) -> Option<Value> {
    tokio::time::timeout(
        Duration::from_millis(500),
        client::get_json::<Value>(config.nodes[node].admin, "/status"),
    )
    .await
    .ok()?
    .ok()
    .map(|(_, v)| v)
}

/// Waits until some node other than `not` coordinates in a term above
/// `above` with its epoch established; returns (node index, term).
async fn new_coordinator(
    config: &ClusterConfig,
    not: usize,
    above: u64,
    limit: Duration,
) -> (usize, u64) {
    let deadline = Instant::now() + limit;
    loop {
        for i in (0..config.nodes.len()).filter(|&i| i != not) {
            if let Some(v) = status(config, i).await {
                let term = v["term"].as_u64().unwrap_or(0);
                if v["leading"] == true && term > above {
                    return (i, term);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no node took over within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Complete snapshots of `epoch` the coordinator at `lead` holds, each
/// checked to conserve `total`; returns their ids.
async fn conserving(config: &ClusterConfig, lead: usize, epoch: u64, total: u64) -> Vec<u64> {
    let admin = config.nodes[lead].admin;
    let (_, list): (_, Vec<Value>) = client::get_json(admin, "/snapshots").await.unwrap();
    let mut ids = Vec::new();
    for s in list
        .iter()
        .filter(|s| s["status"] == "complete" && s["epoch"] == epoch)
    {
        let (st, doc): (_, Value) = client::get_json(admin, &format!("/snapshots/{}", s["id"]))
            .await
            .unwrap();
        if !st.is_success() {
            continue;
        }
        let doc: cairn_core::SnapshotDoc<Value, Value> = serde_json::from_value(doc).unwrap();
        let (held, flying) = cairn_apps::conserved_totals("bank", &doc).unwrap().unwrap();
        assert_eq!(
            held + flying,
            total,
            "snapshot {} does not conserve",
            s["id"]
        );
        ids.push(s["id"].as_u64().unwrap());
    }
    ids
}

/// Waits until the coordinator at `lead` has rolled back and taken `n`
/// conserving snapshots in its epoch; returns (epoch, their ids).
async fn recovered(
    config: &ClusterConfig,
    lead: usize,
    after_epoch: u64,
    n: usize,
) -> (u64, Vec<u64>) {
    in_epoch(config, lead, after_epoch + 1, n).await
}

/// Waits until the coordinator at `lead` has taken `n` conserving
/// snapshots in epoch `epoch` (or later); returns (epoch, their ids).
async fn carried_on(config: &ClusterConfig, lead: usize, epoch: u64, n: usize) -> (u64, Vec<u64>) {
    in_epoch(config, lead, epoch, n).await
}

async fn in_epoch(config: &ClusterConfig, lead: usize, from: u64, n: usize) -> (u64, Vec<u64>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = status(config, lead).await {
            let epoch = v["epoch"].as_u64().unwrap_or(0);
            if v["leading"] == true && v["ready"] == true && epoch >= from {
                let ids = conserving(config, lead, epoch, 4000).await;
                if ids.len() >= n {
                    return (epoch, ids);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not recover within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn config_with_candidates(
    name: &str,
    nodes: usize,
    interval_ms: u64,
) -> (std::path::PathBuf, std::path::PathBuf) {
    write_full_config(
        name,
        nodes,
        "\"complete\"",
        interval_ms,
        BANK,
        // No coordinator key: every node is a candidate, in config order.
        "# (no coordinator key)",
        "failure_timeout_ms = 1000\ntimeout_ms = 2000",
    )
}

/// Invariant: losing the coordinator's machine ends neither checkpointing
/// nor recovery (local store).
#[tokio::test]
async fn a_killed_coordinator_is_replaced_and_comes_back_as_a_follower() {
    let _one = ONE_AT_A_TIME.lock().await;
    killed_coordinator("failover", "").await;
}

/// The same invariant on S3 (moto on loopback, started by scripts/test).
#[tokio::test]
async fn a_killed_coordinator_is_replaced_on_s3_too() {
    let Some(url) = common::s3_url("failover") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    killed_coordinator("failover-s3", &format!("store = {url:?}")).await;
}

async fn killed_coordinator(name: &str, store_line: &str) {
    let (dir, path) = write_full_config(
        name,
        4,
        "\"complete\"",
        150,
        BANK,
        &format!("coordinator = [\"n1\", \"n2\", \"n3\", \"n4\"]\n{store_line}"),
        "failure_timeout_ms = 1000\ntimeout_ms = 2000",
    );
    let mut c = TestCluster::start_from(dir, path.clone()).await;
    let store = Store::open(&c.config.store).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = status(&c.config, 0).await.unwrap();
    assert_eq!(before["leading"], true, "{before}");
    let old_term = before["term"].as_u64().unwrap();
    let first = store.history().await.unwrap().next_id;
    signal(c.supervisor().pid("n1").unwrap(), "-9");
    let killed = Instant::now();
    let (lead, term) = new_coordinator(&c.config, 0, old_term, Duration::from_secs(10)).await;
    let took = killed.elapsed();
    eprintln!("{name}: n2 coordinates term {term} {took:?} after n1 was killed");
    assert_eq!(lead, 1, "n2 is the next candidate");
    assert!(
        took <= Duration::from_millis(1000) + Duration::from_secs(1),
        "the takeover took {took:?}"
    );
    // Every node finds the new coordinator (from the store or from it),
    // and the CLI does too.
    let deadline = Instant::now() + Duration::from_secs(3);
    for i in 1..4 {
        loop {
            let v = status(&c.config, i).await.unwrap();
            if v["coordinator"] == "n2" && v["term"].as_u64() == Some(term) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "n{} does not follow n2: {v}",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The new coordinator's metrics and dashboard carry on: it knows the
    // newest durable snapshot from the store before its first commit, it
    // serves the dashboard, and a follower's dashboard link leads to it.
    let n2 = c.config.nodes[1].admin;
    assert_eq!(common::counter(n2, "cairn_coordinating").await, 1);
    // (It reads the store as it takes over; give that a moment on S3.)
    let deadline = Instant::now() + Duration::from_secs(3);
    while common::counter(n2, "cairn_last_durable_snapshot_timestamp_seconds").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the new coordinator does not know the newest durable snapshot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(common::counter(n2, "cairn_last_durable_snapshot_id").await > 0);
    let (st, _) = common::client::get_text(n2, "/").await.unwrap();
    assert_eq!(st.as_u16(), 200);
    let (st, _) = common::client::get_text(c.config.nodes[2].admin, "/")
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 307);
    let out = cairn(&["status", "--config", path.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains(&format!("coordinator n2 in term {term}")),
        "{}",
        text(&out.stdout)
    );
    // The old coordinator comes back, as a follower; the new one recovers.
    let (exited, _) = tokio::time::timeout(Duration::from_secs(5), c.supervisor().next_exit())
        .await
        .unwrap();
    assert_eq!(exited, "n1");
    c.supervisor().restart("n1").unwrap();
    let epoch_before = status(&c.config, 1).await.unwrap()["epoch"]
        .as_u64()
        .unwrap();
    let (epoch, ids) = recovered(&c.config, lead, epoch_before, 3).await;
    assert!(
        ids.iter().all(|&id| id >= first),
        "an id was reused: {ids:?} (first free was {first})"
    );
    let v = status(&c.config, 0).await.unwrap();
    assert_eq!(
        v["leading"], false,
        "the old coordinator took over again: {v}"
    );
    assert_eq!(v["coordinator"], "n2");
    // A second failure, of a follower, is recovered by the new coordinator.
    signal(c.supervisor().pid("n3").unwrap(), "-9");
    let (exited, _) = tokio::time::timeout(Duration::from_secs(5), c.supervisor().next_exit())
        .await
        .unwrap();
    assert_eq!(exited, "n3");
    c.supervisor().restart("n3").unwrap();
    let (later, ids) = recovered(&c.config, lead, epoch, 3).await;
    assert!(later > epoch);
    assert!(!ids.is_empty());
    // Snapshot reads at a follower lead to the coordinator.
    let (st, _) = client::get_text(c.config.nodes[2].admin, "/snapshots")
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 307);
    c.stop().await;
    for id in store.list().await.unwrap() {
        let out = cairn(&[
            "snapshots",
            "--store",
            &c.config.store,
            "verify",
            &id.to_string(),
        ]);
        assert!(out.status.success(), "snapshot {id}: {}", text(&out.stderr));
    }
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// Invariant: a deposed coordinator's orders are refused, and nothing it
/// does changes the store's current timeline; a coordinator that froze
/// (its process and state intact) costs no work: the new one carries the
/// cluster on in the same epoch, without a rollback.
#[tokio::test]
async fn a_frozen_coordinator_is_deposed_and_its_orders_are_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, path) = config_with_candidates("frozen", 4, 150);
    let mut c = TestCluster::start_from(dir, path).await;
    let store = Store::open(&c.config.store).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let old_term = status(&c.config, 0).await.unwrap()["term"]
        .as_u64()
        .unwrap();
    let n1 = c.supervisor().pid("n1").unwrap();
    // Freeze it while its metrics say a snapshot is in progress.
    let n1_admin = c.config.nodes[0].admin;
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::counter(n1_admin, "cairn_snapshots_in_progress").await == 0 {
        assert!(Instant::now() < deadline, "no snapshot seen in progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    signal(n1, "-STOP");
    let (lead, term) = new_coordinator(&c.config, 0, old_term, Duration::from_secs(10)).await;
    signal(n1, "-CONT");
    // The thawed coordinator learns of the newer term and steps down.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = status(&c.config, 0).await {
            if v["leading"] == false && v["term"].as_u64() == Some(term) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the old coordinator did not step down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its metrics step down too: nothing in progress, not coordinating.
    assert_eq!(
        common::counter(n1_admin, "cairn_snapshots_in_progress").await,
        0
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while common::counter(n1_admin, "cairn_coordinating").await != 0 {
        assert!(
            Instant::now() < deadline,
            "the deposed node still says it coordinates"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let record_before = store.current_epoch().await.unwrap().unwrap();
    let epoch_before = record_before.epoch;
    let (epoch, _) = carried_on(&c.config, lead, epoch_before, 2).await;
    assert_eq!(
        epoch, epoch_before,
        "nothing was lost, so nothing rolls back"
    );
    let v = status(&c.config, lead).await.unwrap();
    assert!(v["last_rollback"].is_null(), "{v}");
    // Orders of the old term, from the deposed coordinator itself, are
    // refused, each with a reason.
    let target = c.config.nodes[2].admin;
    let deposed = common::as_node("n1");
    for (path, body) in [
        (
            "/internal/rollback",
            json!({"term": old_term, "epoch": epoch + 1, "snapshot": null, "in_flight": {}}),
        ),
        (
            "/internal/abort",
            json!({"term": old_term, "epoch": epoch, "snapshot": 1}),
        ),
        ("/internal/pause", json!({"term": old_term})),
    ] {
        let (st, v) = deposed
            .post_json::<_, Value>(target, path, &body)
            .await
            .unwrap();
        assert_eq!(st.as_u16(), 409, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("term"), "{path}: {v}");
    }
    let refused = status(&c.config, 2).await.unwrap()["orders_refused"]
        .as_u64()
        .unwrap();
    assert!(refused >= 3);
    // The current timeline is the one both coordinators ran: the deposed
    // one's orders changed nothing, and the new one needed no new epoch.
    let current = store.current_epoch().await.unwrap().unwrap();
    assert_eq!(current, record_before);
    assert!(current.term < term);
    let (good, _) = store.latest_good().await.unwrap();
    assert_eq!(good.unwrap().manifest.epoch, epoch);
    c.stop().await;
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// Invariant: in a 2-node cluster, losing either node leaves the other able
/// to report what happened, and a snapshot is never reported committed
/// unless the store holds it whole.
#[tokio::test]
async fn a_two_node_cluster_reports_truthfully_when_either_node_is_lost() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, path) = config_with_candidates("pair", 2, 100);
    let mut c = TestCluster::start_from(dir, path.clone()).await;
    let store = Store::open(&c.config.store).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let truthful = |list: &[Value]| {
        let durable: Vec<u64> = list
            .iter()
            .filter(|s| s["durable_ms"].is_number())
            .filter_map(|s| s["id"].as_u64())
            .collect();
        durable
    };
    // Lose the follower: the coordinator says so, and commits nothing more.
    signal(c.supervisor().pid("n2").unwrap(), "-9");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = cairn(&["status", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("n2") && text(&out.stdout).contains("unreachable"),
        "{}",
        text(&out.stdout)
    );
    let (_, list): (_, Vec<Value>) = client::get_json(c.config.nodes[0].admin, "/snapshots")
        .await
        .unwrap();
    loads_whole(&store, &truthful(&list)).await;
    assert!(
        list.iter()
            .any(|s| s["status"] == "failed" && s["missing_processes"].to_string().contains("n2"))
    );
    // Bring it back, then lose the coordinator: the other takes over and
    // reports the same truthfully.
    let (exited, _) = tokio::time::timeout(Duration::from_secs(5), c.supervisor().next_exit())
        .await
        .unwrap();
    assert_eq!(exited, "n2");
    c.supervisor().restart("n2").unwrap();
    let (epoch, _) = recovered_pair(&c.config, 0).await;
    signal(c.supervisor().pid("n1").unwrap(), "-9");
    let (lead, _) = new_coordinator(&c.config, 0, 1, Duration::from_secs(10)).await;
    assert_eq!(lead, 1);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, list): (_, Vec<Value>) = client::get_json(c.config.nodes[1].admin, "/snapshots")
        .await
        .unwrap();
    loads_whole(&store, &truthful(&list)).await;
    // n2 holds its state, so it carries the cluster on in the same epoch;
    // every snapshot fails while n1 is away, naming it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = status(&c.config, 1).await.unwrap();
        let (_, list): (_, Vec<Value>) = client::get_json(c.config.nodes[1].admin, "/snapshots")
            .await
            .unwrap();
        let named = list.iter().any(|s| {
            s["status"] == "failed"
                && s["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("unreachable: n1"))
        });
        if v["unreachable"]["n1"].is_object() && named {
            assert_eq!(v["epoch"].as_u64(), Some(epoch), "no rollback: {v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n1 is not reported unreachable: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(epoch >= 1);
    let (exited, _) = tokio::time::timeout(Duration::from_secs(5), c.supervisor().next_exit())
        .await
        .unwrap();
    assert_eq!(exited, "n1");
    c.supervisor().restart("n1").unwrap();
    let _ = recovered_pair(&c.config, epoch).await;
    c.stop().await;
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// Every snapshot in `ids` reads back from the store whole and complete.
async fn loads_whole(store: &Store, ids: &[u64]) {
    for &id in ids {
        store
            .load(id, &mut |_, _| {})
            .await
            .unwrap_or_else(|e| panic!("snapshot {id} was reported durable: {e}"))
            .check_complete()
            .unwrap();
    }
}

/// Waits until whichever node coordinates a 2-node bank is ready and has a
/// conserving snapshot in its epoch; returns (epoch, ids).
async fn recovered_pair(config: &ClusterConfig, after: u64) -> (u64, Vec<u64>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for lead in 0..2 {
            if let Some(v) = status(config, lead).await {
                let epoch = v["epoch"].as_u64().unwrap_or(0);
                if v["leading"] == true && v["ready"] == true && epoch > after {
                    let ids = conserving(config, lead, epoch, 2000).await;
                    if !ids.is_empty() {
                        return (epoch, ids);
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the pair did not recover within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
