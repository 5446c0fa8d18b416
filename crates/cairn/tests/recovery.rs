//! Crash recovery on a real bank cluster: a node killed with `kill -9` (in
//! the middle of snapshots, or in the middle of writing its part) is
//! restarted, the coordinator notices, and the whole cluster rolls back to
//! the newest good snapshot. Money is conserved exactly, the half-written
//! snapshot is never listed or restored, transfers go on, and the run after
//! the rollback passes the oracle.

mod common;

use std::time::{Duration, Instant};

use cairn_apps::bank::{Balance, BankModel, Transfer};
use cairn_core::{GlobalSnapshot, SnapshotDoc};
use cairn_runtime::ClusterConfig;
use cairn_store::Store;
use common::client;
use common::{
    ONE_AT_A_TIME, TestCluster, last_rollback, restart_after_exit, signal, wait_for_recovery,
};
use serde_json::Value;

const BANK: &str = "name = \"bank\"\ninitial_balance = 1000";

/// After recovery: transfers continue, and every snapshot of the final epoch
/// conserves the money. Returns those snapshots.
async fn snapshots_after_recovery(
    config: &ClusterConfig,
    epoch: u64,
) -> Vec<GlobalSnapshot<Transfer, Balance>> {
    let sent = |v: Value| v["messages_sent"].as_u64().unwrap();
    let before = sent(
        client::get_json::<Value>(config.nodes[1].admin, "/status")
            .await
            .unwrap()
            .1,
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = sent(
        client::get_json::<Value>(config.nodes[1].admin, "/status")
            .await
            .unwrap()
            .1,
    );
    assert!(after > before, "transfers stopped after recovery");
    let (_, list): (_, Vec<Value>) = client::get_json(config.coordinator_admin(), "/snapshots")
        .await
        .unwrap();
    let mut snaps = Vec::new();
    for s in list
        .iter()
        .filter(|s| s["status"] == "complete" && s["epoch"] == epoch)
    {
        let (_, doc): (_, SnapshotDoc<Transfer, Balance>) = client::get_json(
            config.coordinator_admin(),
            &format!("/snapshots/{}", s["id"]),
        )
        .await
        .unwrap();
        let snap = GlobalSnapshot::from_doc(&config.topology, doc).unwrap();
        let held: u64 = snap.states.iter().map(|b| b.balance).sum();
        let flying: u64 = snap.channels.iter().flatten().map(|t| t.amount).sum();
        let total = 1000 * config.nodes.len() as u64;
        assert_eq!(
            held + flying,
            total,
            "snapshot {} after recovery does not conserve money",
            snap.id
        );
        snaps.push(snap);
    }
    assert!(
        snaps.len() >= 3,
        "only {} snapshots after recovery",
        snaps.len()
    );
    let (_, v) = client::get_json::<Value>(config.coordinator_admin(), "/status")
        .await
        .unwrap();
    assert_eq!(v["epoch"], epoch, "a second rollback happened meanwhile");
    snaps
}

fn oracle_holds(
    config: &ClusterConfig,
    dir: &std::path::Path,
    epoch: u64,
    snaps: &[GlobalSnapshot<Transfer, Balance>],
) {
    common::oracle_on_epoch(&BankModel, config, dir, epoch, snaps);
}

async fn check_after_recovery(mut c: TestCluster, epoch: u64) {
    let snaps = snapshots_after_recovery(&c.config, epoch).await;
    c.stop().await;
    oracle_holds(&c.config, &c.dir, epoch, &snaps);
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[tokio::test]
async fn a_node_killed_mid_snapshot_is_recovered_by_rolling_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = TestCluster::start_app("kill", 4, "\"complete\"", 40, BANK).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Snapshots run every 40 ms, so the kill lands in the middle of one.
    let pid = c.supervisor().pid("n3").unwrap();
    signal(pid, "-9");
    restart_after_exit(&mut c, "n3", Duration::from_secs(5)).await;
    let epoch = wait_for_recovery(&c).await;
    check_after_recovery(c, epoch).await;
}

/// Invariant: with markers that overtake on both sides, every snapshot
/// stays consistent, and nothing is lost or repeated across a rollback to
/// one whose markers jumped messages.
///
/// A 4-node bank at full load with `snapshots.overtake = true` (both sides).
/// Connections are cut one node after another: while a link reconnects its
/// unwritten frames queue up, so markers placed then overtake them (on
/// loopback a link otherwise writes as fast as it is given frames, and there
/// is little to jump). Every committed snapshot of that run passes the
/// oracle, tails included. Then the operator rolls the cluster back to a
/// snapshot whose parts hold tails: each sender sends its tails again first
/// and each receiver re-delivers what it recorded, so the money is conserved
/// in every later snapshot and the new epoch's run, which starts with both
/// in flight, passes the oracle.
#[tokio::test]
async fn markers_that_overtake_keep_snapshots_and_rollbacks_exact() {
    overtaking_run("overtake", "true", true).await;
}

/// Invariant: a marker taken ahead of the messages a node has read but not
/// handled records exactly those messages as channel state, and they are
/// still handled once, in order, afterwards.
///
/// A 4-node bank at full load with `snapshots.overtake = "receiver"`. The
/// followers are frozen (SIGSTOP) one after another for 250 ms, as a long
/// pause would: the others' queues toward the frozen node fill, they stop
/// handling what they receive, markers queue behind those messages and are
/// taken first (at full load without pauses a node drains its queue so fast
/// that this is rare, and a test relying on it would be flaky). Every committed snapshot passes the
/// oracle (which reads only the traces), then a rollback to one with
/// messages in flight conserves the money and its epoch passes the oracle.
#[tokio::test]
async fn markers_taken_ahead_by_receivers_keep_snapshots_and_rollbacks_exact() {
    overtaking_run("overtake-rx", "\"receiver\"", false).await;
}

/// Runs the bank with `snapshots.overtake = sides` while cutting links (or,
/// for the receivers alone, freezing nodes) until some marker has overtaken a
/// message, checks every committed snapshot with
/// the oracle, rolls back to one whose channels hold messages (sender tails
/// when `by_senders`, else any recorded channel state), and checks the new
/// epoch.
async fn overtaking_run(name: &str, sides: &str, by_senders: bool) {
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, path) = common::write_full_config(
        name,
        4,
        "\"complete\"",
        30,
        BANK,
        "",
        &format!("overtake = {sides}\nretain = 100000\ntimeout_ms = 3000"),
    );
    let mut c = TestCluster::start_from(dir, path).await;
    // Whether a marker finds messages to overtake depends on timing: keep
    // disturbing the cluster until one has, within a bounded number of rounds.
    let mut overtaken = 0;
    for _round in 0..6 {
        if by_senders {
            common::cut_links(&c.config, 8, Duration::from_millis(150)).await;
        } else {
            // Freeze each follower in turn: its peers' queues toward it fill,
            // they stop handling what they receive, and markers queue behind.
            for id in ["n2", "n3", "n4"] {
                let pid = c.supervisor().pid(id).unwrap();
                common::signal(pid, "-STOP");
                tokio::time::sleep(Duration::from_millis(250)).await;
                common::signal(pid, "-CONT");
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        overtaken = 0;
        for n in &c.config.nodes {
            overtaken += common::counter(n.admin, "cairn_messages_overtaken_total").await;
        }
        if overtaken > 0 {
            break;
        }
    }
    assert!(
        overtaken > 0,
        "no marker overtook a message in 6 rounds of cuts"
    );

    // Every committed snapshot so far, read back from the store (where the
    // tails are in the senders' parts), passes the oracle on epoch 0.
    let store = Store::open(&c.config.store).unwrap();
    let mut before = Vec::new();
    let mut target = None;
    for id in store.list().await.unwrap() {
        let s = store.load(id, &mut |_, _| {}).await.unwrap();
        s.check_complete().unwrap();
        let tails: usize = s
            .parts
            .iter()
            .flat_map(|p| &p.overtaken)
            .map(|t| t.len())
            .sum();
        let in_flight: usize = s.in_flight().values().sum::<u64>() as usize;
        let held = if by_senders { tails } else { in_flight };
        if held > 0 {
            target = Some((id, held));
        }
        let doc: SnapshotDoc<Transfer, Balance> =
            serde_json::from_value(s.to_json(cairn_store::message_json::<Transfer>).unwrap())
                .unwrap();
        before.push(GlobalSnapshot::from_doc(&c.config.topology, doc).unwrap());
    }
    let (target, held) = target.expect("no committed snapshot holds the messages sought");
    eprintln!(
        "{overtaken} messages overtaken; {} snapshots committed; rolling back to {target}, which holds {held}",
        before.len()
    );

    let (st, v) = client::post_json::<_, Value>(
        c.coordinator(),
        "/rollback",
        &serde_json::json!({ "snapshot": target }),
    )
    .await
    .unwrap();
    assert!(st.is_success(), "{st} {v}");
    let epoch = v["epoch"].as_u64().unwrap();
    assert_eq!(v["snapshot"].as_u64(), Some(target), "{v}");
    let after = snapshots_after_recovery(&c.config, epoch).await;
    c.stop().await;
    // The snapshots of epoch 0 that the traces cover (those before the
    // rollback), and the whole new epoch.
    oracle_holds(&c.config, &c.dir, 0, &before);
    oracle_holds(&c.config, &c.dir, epoch, &after);
}

#[tokio::test]
async fn a_node_killed_while_writing_its_part_never_leaves_a_snapshot_behind() {
    let _one = ONE_AT_A_TIME.lock().await;
    // n2 aborts half way through writing its part of snapshot 8.
    let target = format!("{:020}/part-n2.cbor", 8);
    let mut c = TestCluster::start_with_env(
        "halfwrite",
        4,
        "\"complete\"",
        40,
        BANK,
        &[("CAIRN_TEST_CRASH_WRITING", &target)],
    )
    .await;
    // n2 crashes by itself, half way through the write.
    restart_after_exit(&mut c, "n2", Duration::from_secs(20)).await;
    let epoch = wait_for_recovery(&c).await;

    let store = Store::open(&c.config.store).unwrap();
    let dir = std::path::Path::new(&c.config.store).join(format!("snapshots/{:020}", 8));
    let staged = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("part-n2.cbor."));
    assert!(
        staged,
        "the crash did not happen in the middle of the write"
    );
    assert!(
        !store.list().await.unwrap().contains(&8),
        "the half-written snapshot is listed"
    );
    assert!(
        store.load(8, &mut |_, _| {}).await.is_err(),
        "the half-written snapshot reads back"
    );
    let (good, _) = store.latest_good().await.unwrap();
    assert_ne!(good.unwrap().manifest.snapshot, 8);
    check_after_recovery(c, epoch).await;
}

#[tokio::test]
async fn a_stopped_cluster_restarts_from_the_snapshot_an_operator_chose() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = TestCluster::start_app("chosen", 4, "\"complete\"", 40, BANK).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.stop().await;
    let store = Store::open(&c.config.store).unwrap();
    let ids = store.list().await.unwrap();
    assert!(ids.len() >= 3);
    let chosen = ids[ids.len() - 3];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "restore",
            "--config",
            c.path.to_str().unwrap(),
            "--snapshot",
            &chosen.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("it will start from snapshot {chosen}"))
    );
    c.restart().await;
    let epoch = wait_for_recovery(&c).await;
    assert_eq!(last_rollback(&c).await, (chosen, epoch));
    check_after_recovery(c, epoch).await;
}

#[tokio::test]
async fn a_corrupt_newest_snapshot_makes_recovery_fall_back_to_the_previous_one() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = TestCluster::start_app("corrupt", 4, "\"complete\"", 40, BANK).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.stop().await;
    let store = Store::open(&c.config.store).unwrap();
    let ids = store.list().await.unwrap();
    let (newest, previous) = (ids[ids.len() - 1], ids[ids.len() - 2]);
    let part =
        std::path::Path::new(&c.config.store).join(format!("snapshots/{newest:020}/part-n3.cbor"));
    let mut bytes = std::fs::read(&part).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x10;
    std::fs::write(&part, bytes).unwrap();
    // A whole-cluster restart resumes from the newest good snapshot.
    c.restart().await;
    let epoch = wait_for_recovery(&c).await;
    assert_eq!(
        last_rollback(&c).await,
        (previous, epoch),
        "recovery did not skip the corrupt snapshot {newest}"
    );
    check_after_recovery(c, epoch).await;
}

#[tokio::test]
async fn cairn_cluster_restarts_a_killed_node_and_the_cluster_recovers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, path) = common::write_app_config("supervised", 3, "\"complete\"", 50, BANK);
    let config = ClusterConfig::load(&path).unwrap();
    let mut cluster = common::spawn_cairn_cluster(&path);
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Ok((_, v)) = client::get_json::<Value>(config.nodes[2].admin, "/status").await {
            break v["pid"].as_u64().unwrap() as u32;
        }
        assert!(Instant::now() < deadline, "n3 never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(pid, "-9");
    // cairn cluster brings n3 back with a new pid, and the coordinator rolls the cluster back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = client::get_json::<Value>(config.nodes[0].admin, "/status")
            .await
            .ok()
            .map(|(_, v)| v);
        if v.as_ref()
            .is_some_and(|v| v["last_rollback"]["epoch"].as_u64().is_some())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not recover after n3 was killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, v) = client::get_json::<Value>(config.nodes[2].admin, "/status")
        .await
        .unwrap();
    assert_ne!(
        v["pid"].as_u64().unwrap() as u32,
        pid,
        "n3 was not restarted"
    );
    let (_, v) = client::get_json::<Value>(config.nodes[0].admin, "/status")
        .await
        .unwrap();
    let epoch = v["last_rollback"]["epoch"].as_u64().unwrap();
    let snaps = snapshots_after_recovery(&config, epoch).await;
    signal(cluster.id().unwrap(), "-INT");
    let status = tokio::time::timeout(Duration::from_secs(15), cluster.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "cairn cluster exited with {status}");
    oracle_holds(&config, &dir, epoch, &snaps);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_failure_before_any_snapshot_restarts_the_cluster_from_its_initial_state() {
    let _one = ONE_AT_A_TIME.lock().await;
    // No scheduled snapshots: when n2 dies the store is empty.
    let mut c = TestCluster::start_app("nosnap", 3, "\"complete\"", 0, BANK).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = c.supervisor().pid("n2").unwrap();
    signal(pid, "-9");
    restart_after_exit(&mut c, "n2", Duration::from_secs(5)).await;
    let epoch = wait_for_recovery(&c).await;
    let (_, v) = client::get_json::<Value>(c.config.coordinator_admin(), "/status")
        .await
        .unwrap();
    assert!(v["last_rollback"]["snapshot"].is_null(), "{v}");
    for _ in 0..3 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["snapshot", "--config", c.path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let snaps = snapshots_after_recovery(&c.config, epoch).await;
    c.stop().await;
    oracle_holds(&c.config, &c.dir, epoch, &snaps);
    let _ = std::fs::remove_dir_all(&c.dir);
}
