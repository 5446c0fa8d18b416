//! Incremental snapshots on a real bank cluster whose 3 MiB states change a
//! little between snapshots: parts write only the chunks that changed, and
//! a node killed and restarted is restored from chunks that earlier
//! snapshots wrote.

mod common;

use std::time::Duration;

use cairn_apps::bank::{Balance, Bank, BankModel, Transfer};
use cairn_core::{GlobalSnapshot, Process, SnapshotDoc};
use cairn_runtime::ClusterConfig;
use cairn_store::{Error, Store};
use common::{ONE_AT_A_TIME, TestCluster, restart_after_exit, signal, wait_for_recovery};

/// 6 pieces and a bit; every 3000 transfers received, 0.2% is rewritten.
const APP: &str = "name = \"bank\"\ninitial_balance = 1000\nstate_bytes = 3146728\nballast_churn = 0.002\nchurn_every = 3000";

/// Snapshot `id` read back from the store with each state whole again (its
/// chunks put back with the bank's own `join_state`); `None` if retention
/// removed it meanwhile (or a chunk of it is corrupt).
async fn whole(
    store: &Store,
    config: &ClusterConfig,
    id: u64,
) -> Option<(u64, GlobalSnapshot<Transfer, Balance>)> {
    let s = match store.load(id, &mut |_, _| {}).await {
        Err(Error::NoSnapshot { .. } | Error::NotFound { .. }) => return None,
        other => other.unwrap(),
    };
    let mut doc: SnapshotDoc<Transfer, Balance> =
        serde_json::from_value(s.to_json(cairn_store::message_json::<Transfer>).unwrap()).unwrap();
    for r in &s.manifest.parts {
        let chunks = match store.read_chunks(r).await {
            // Removed by retention meanwhile, or corrupted by the test.
            Err(Error::NotFound { .. } | Error::Corrupt { .. }) => return None,
            other => other.unwrap(),
        };
        // The bank's ballast goes in 512 KiB pieces.
        let state_bytes = config.app.params["state_bytes"].as_u64().unwrap();
        assert_eq!(
            chunks.len() as u64,
            state_bytes.div_ceil(512 << 10),
            "{}'s part of {id} names its chunks",
            r.process
        );
        let state = doc.processes.get_mut(&r.process).unwrap();
        assert!(state.ballast.is_empty(), "the part itself holds no ballast");
        Bank::join_state(state, chunks).unwrap();
    }
    let g = GlobalSnapshot::from_doc(&config.topology, doc).unwrap();
    Some((s.manifest.epoch, g))
}

async fn committed(
    store: &Store,
    config: &ClusterConfig,
) -> Vec<(u64, GlobalSnapshot<Transfer, Balance>)> {
    let mut out = Vec::new();
    for id in store.list().await.unwrap() {
        out.extend(whole(store, config, id).await);
    }
    out
}

/// Invariants: an unchanged chunk is not written again; a node killed and
/// restarted is restored to exactly the recorded state, chunks included
/// (also those an earlier snapshot wrote); and every snapshot after that,
/// its chunks put back, is exactly a consistent global state (the oracle
/// replays the ballast's changes byte for byte).
#[tokio::test]
async fn chunked_states_write_what_changed_and_restore_exactly_after_a_kill() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, path) =
        common::write_full_config("chunks", 3, "\"complete\"", 100, APP, "", "retain = 4");
    let mut c = TestCluster::start_from(dir, path).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (mut written, mut reused) = (0, 0);
    for n in &c.config.nodes {
        written += common::counter(n.admin, "cairn_chunk_bytes_written_total").await;
        reused += common::counter(n.admin, "cairn_chunk_bytes_reused_total").await;
    }
    eprintln!("chunk bytes written {written}, named again without writing {reused}");
    assert!(reused > 0, "no chunk was shared between snapshots");
    assert!(
        written < reused,
        "most pieces never change, yet {written} bytes were written against {reused} shared"
    );

    let store = Store::open(&c.config.store).unwrap();
    let before: Vec<_> = committed(&store, &c.config)
        .await
        .into_iter()
        .map(|(_, g)| g)
        .collect();
    assert!(
        before.len() >= 2,
        "only {} snapshots to check",
        before.len()
    );
    // (The oracle cannot check epoch 0: the killed node's trace of it dies
    // with it. Conservation can.)
    for g in &before {
        let held: u64 = g.states.iter().map(|s| s.balance).sum();
        let flying: u64 = g.channels.iter().flatten().map(|t| t.amount).sum();
        assert_eq!(held + flying, 3000, "snapshot {} is not conserved", g.id.0);
    }
    let id = before.last().unwrap().id.0.to_string();
    let out = common::cairn(&[
        "snapshots",
        "--store",
        &c.config.store,
        "verify",
        &id,
        "--json",
    ]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["chunks"], 21, "verify follows every chunk: {v}");
    let out = common::cairn(&["snapshots", "--store", &c.config.store, "show", &id]);
    let shown = common::text(&out.stdout);
    assert!(
        shown.contains("+ 7 state chunks (3.00 MiB) in the store"),
        "{shown}"
    );
    let out = common::cairn(&["snapshots", "--store", &c.config.store, "list", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .iter()
        .find(|r| r["id"] == serde_json::json!(id.parse::<u64>().unwrap()))
        .unwrap();
    assert!(
        row["bytes"].as_u64().unwrap() > 3 * 3_146_728,
        "its size counts its chunks: {row}"
    );

    killed_restored_and_checked(&mut c, &store).await;
}

/// A node killed with kill -9 and restarted: the cluster rolls back to the
/// newest snapshot, each node reading its part and its chunks; then as
/// [`restored_and_checked`].
async fn killed_restored_and_checked(c: &mut TestCluster, store: &Store) {
    let pid = c.supervisor().pid("n2").unwrap();
    signal(pid, "-9");
    restart_after_exit(c, "n2", Duration::from_secs(5)).await;
    let epoch = wait_for_recovery(c).await;
    let target = restored_and_checked(c, store, epoch).await;
    eprintln!("restored snapshot {target} exactly");
}

/// Invariant: pacing never fails a snapshot. At 1 MiB/s a node would take
/// about 40 s to hash and write the chunks of its 20 MiB state; its snapshot
/// times out in 4 s, so the pace quickens to finish within half of that.
/// Every snapshot commits and conserves the money; a node killed and
/// restarted (its memory of what it wrote lost, so its next part hashes
/// every chunk again, paced) is restored exactly, and snapshots after it
/// commit and pass the oracle.
#[tokio::test]
async fn paced_writes_never_fail_a_snapshot_across_a_restart() {
    let _one = ONE_AT_A_TIME.lock().await;
    const PACED: &str = "name = \"bank\"\ninitial_balance = 1000\nstate_bytes = 20971520\nballast_churn = 0.002\nchurn_every = 3000";
    let (dir, path) = common::write_full_config(
        "paced",
        3,
        "\"complete\"",
        500,
        PACED,
        "",
        "retain = 4\ntimeout_ms = 4000\nwrite_mb_per_s = 1",
    );
    let mut c = TestCluster::start_from(dir, path).await;
    let store = Store::open(&c.config.store).unwrap();
    let mut done = Vec::new();
    for _ in 0..100 {
        done = committed(&store, &c.config).await;
        if done.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        done.len() >= 2,
        "{} paced snapshots committed in 20 s",
        done.len()
    );
    for (_, g) in &done {
        let held: u64 = g.states.iter().map(|s| s.balance).sum();
        let flying: u64 = g.channels.iter().flatten().map(|t| t.amount).sum();
        assert_eq!(held + flying, 3000, "snapshot {} is not conserved", g.id.0);
    }
    let (status, v): (_, serde_json::Value) =
        common::client::get_json(c.config.coordinator_admin(), "/snapshots")
            .await
            .unwrap();
    assert!(status.is_success(), "{v}");
    let failed: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .collect();
    assert!(failed.is_empty(), "paced snapshots failed: {failed:?}");
    killed_restored_and_checked(&mut c, &store).await;
}

/// After a rollback into `epoch`: reads back whole the snapshot it restored,
/// lets the cluster run, stops it, and checks with the oracle that every
/// node resumed from exactly that state (ballast and all) and that every
/// snapshot of the new epoch is consistent. Returns the snapshot.
async fn restored_and_checked(c: &mut TestCluster, store: &Store, epoch: u64) -> u64 {
    let (target, _) = common::last_rollback(c).await;
    let (_, restored_from) = whole(store, &c.config, target)
        .await
        .expect("the target is kept");
    // Let it run; a paced cluster rehashes every chunk in its first
    // snapshot after the rollback (the restored buffers are new to it).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut after = Vec::new();
    for _ in 0..75 {
        after = committed(store, &c.config)
            .await
            .into_iter()
            .filter(|(e, _)| *e == epoch)
            .map(|(_, g)| g)
            .collect();
        if !after.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every node sends again: a node stops its own sends while it reads its
    // part, also on an attempt whose part turns out unusable, and the restore
    // of the snapshot recovery falls back to must resume it.
    let sent = |i: usize| common::counter(c.config.nodes[i].admin, "cairn_messages_sent_total");
    let mut before = Vec::new();
    for i in 0..c.config.nodes.len() {
        before.push(sent(i).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, was) in before.into_iter().enumerate() {
        let now = sent(i).await;
        assert!(
            now > was,
            "{} sent nothing in 500 ms after the rollback ({was} messages, then {now})",
            c.config.nodes[i].id
        );
    }
    c.stop().await;
    assert!(
        !after.is_empty(),
        "no snapshot committed after the rollback"
    );
    let run = common::oracle_on_epoch(&BankModel, &c.config, &c.dir, epoch, &after);
    for (i, state) in run.initial.iter().enumerate() {
        let recorded = &restored_from.states[i];
        assert_eq!(state.balance, recorded.balance);
        assert!(
            state == recorded,
            "node {i} did not resume from snapshot {target}'s state, ballast and all"
        );
    }
    let _ = std::fs::remove_dir_all(&c.dir);
    target
}

/// Invariant: a snapshot whose chunk is corrupt is never restored. Only the
/// node reading the chunk can find it (the coordinator lists chunks but
/// reads none), so recovery must hear it from that node and fall back.
///
/// The whole cluster is stopped, one byte of a chunk only the newest
/// snapshot names is flipped, and the cluster is started again: it resumes
/// from the newest snapshot that does not name that chunk, restored
/// exactly, and the new epoch passes the oracle.
#[tokio::test]
async fn a_corrupt_chunk_found_by_its_node_makes_recovery_fall_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, path) =
        common::write_full_config("chunk-rot", 3, "\"complete\"", 100, APP, "", "retain = 100");
    let mut c = TestCluster::start_from(dir, path).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.stop().await;

    let store = Store::open(&c.config.store).unwrap();
    let ids = store.list().await.unwrap();
    let newest = *ids.last().unwrap();
    let objects = |m: &cairn_store::Manifest| -> Vec<String> {
        m.parts
            .iter()
            .flat_map(|p| p.chunks.iter().map(|c| c.object.clone()))
            .collect()
    };
    let newest_objects = objects(&store.manifest(newest).await.unwrap());
    // The newest snapshot with a chunk no older one names (the ballast
    // churns, so one is near the end), and the one recovery must reach.
    let mut older: Vec<String> = Vec::new();
    let mut fresh = None;
    for &id in &ids {
        let m = store.manifest(id).await.unwrap();
        if let Some(o) = objects(&m).into_iter().find(|o| !older.contains(o)) {
            if id > ids[0] {
                fresh = Some((id, o));
            }
        }
        older.extend(objects(&m));
    }
    let (from, object) = fresh.expect("no snapshot wrote a chunk of its own");
    let expected = ids.iter().rev().copied().find(|&id| id < from).unwrap();
    assert!(newest_objects.len() == 21 && from <= newest);
    let path = std::path::Path::new(&c.config.store).join(&object);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    c.restart().await;
    let epoch = wait_for_recovery(&c).await;
    let restored = restored_and_checked(&mut c, &store, epoch).await;
    // Every snapshot from the one that wrote the chunk on names it.
    assert_eq!(
        restored, expected,
        "recovery restored snapshot {restored}, whose chunk {object} is corrupt, or went too far back"
    );
}
