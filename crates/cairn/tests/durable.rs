//! Durable snapshots on a real cluster: every complete snapshot is committed
//! to the store, reads back whole through the CLI, conserves money, and a
//! damaged or half-written one is never taken for good.

mod common;

use std::time::Duration;

use cairn_apps::bank::{Balance, BankModel, Transfer};
use cairn_core::{GlobalSnapshot, SnapshotDoc};
use cairn_store::Store;
use common::client;
use common::{ONE_AT_A_TIME, TestCluster, cairn, text};
use serde_json::Value;

#[tokio::test]
async fn snapshots_are_committed_and_verified_from_the_store() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Retention as configured by default (the test cluster otherwise keeps
    // every snapshot, to read them all back).
    let (dir, path) = common::write_full_config(
        "durable",
        4,
        "\"complete\"",
        50,
        "name = \"bank\"\ninitial_balance = 1000",
        "",
        "timeout_ms = 10000\nretain = 10",
    );
    let mut c = TestCluster::start_from(dir, path).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Every complete snapshot becomes durable.
    let mut durable = 0;
    for _ in 0..50 {
        let (_, list): (_, Vec<Value>) =
            client::get_json(c.config.coordinator_admin(), "/snapshots")
                .await
                .unwrap();
        let complete: Vec<&Value> = list.iter().filter(|s| s["status"] == "complete").collect();
        durable = complete
            .iter()
            .filter(|s| s["durable_ms"].is_number())
            .count();
        if durable == complete.len() && durable >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(durable >= 5, "only {durable} snapshots became durable");
    let docs = c.snapshots().await;
    let path = c.path.to_str().unwrap().to_string();
    let store = c.config.store.clone();
    c.keep_files = true;
    c.stop_and_check(&BankModel, docs).await;

    // Retention keeps the newest 10 (the default).
    let out = cairn(&["snapshots", "list", "--config", &path, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !listed.is_empty() && listed.len() <= 10,
        "{} snapshots kept",
        listed.len()
    );
    let ids: Vec<u64> = listed.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    let (oldest, newest) = (ids[0], *ids.last().unwrap());

    // Verify re-reads every part, checks completeness and conservation.
    for id in [oldest, newest] {
        let out = cairn(&["snapshots", "--store", &store, "verify", &id.to_string()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("= 4000, as at the start"),
            "{}",
            text(&out.stdout)
        );
    }
    let out = cairn(&[
        "snapshots",
        "verify",
        &newest.to_string(),
        "--config",
        &path,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let verified: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verified["complete"], true);
    assert_eq!(verified["conserved"]["at_start"], 4000, "{verified}");
    // The table's columns line up: each row's size ends where its header does.
    let out = cairn(&["snapshots", "list", "--config", &path]);
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().filter(|l| !l.trim().is_empty()).collect();
    let end = lines[0].find("size").unwrap() + "size".len();
    assert!(lines.len() > 1, "{table}");
    for l in &lines[1..] {
        assert!(
            l[..end].ends_with("B") && l.contains(" UTC ("),
            "misaligned or raw: {l:?} in\n{table}"
        );
    }
    let out = cairn(&[
        "snapshots",
        "show",
        &newest.to_string(),
        "--config",
        &path,
        "--json",
    ]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["processes"].as_object().unwrap().len(), 4);
    assert_eq!(shown["channels"].as_array().unwrap().len(), 12);

    // A flipped byte in a part: verify names the part and fails.
    let part = std::path::Path::new(&store).join(format!("snapshots/{oldest:020}/part-n2.cbor"));
    let mut bytes = std::fs::read(&part).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&part, bytes).unwrap();
    let out = cairn(&[
        "snapshots",
        "verify",
        &oldest.to_string(),
        "--store",
        &store,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("part-n2.cbor") && err.contains("corrupt"),
        "{err}"
    );

    // A half-written snapshot (parts, no manifest) is never listed.
    let half = std::path::Path::new(&store).join(format!("snapshots/{:020}", newest + 1000));
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("part-n1.cbor"), b"CRNP\x01half").unwrap();
    let out = cairn(&["snapshots", "list", "--store", &store, "--json"]);
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        listed
            .iter()
            .all(|r| r["id"].as_u64() != Some(newest + 1000))
    );
    let out = cairn(&[
        "snapshots",
        "verify",
        &(newest + 1000).to_string(),
        "--store",
        &store,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("snapshot {} is not in the store", newest + 1000)),
        "{}",
        text(&out.stderr)
    );

    // The newest snapshot cannot be deleted; an older one can.
    let out = cairn(&[
        "snapshots",
        "delete",
        &newest.to_string(),
        "--store",
        &store,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("newest complete snapshot"));
    let out = cairn(&[
        "snapshots",
        "delete",
        &oldest.to_string(),
        "--store",
        &store,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cairn(&["snapshots", "list", "--store", &store, "--json"]);
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(listed.iter().all(|r| r["id"].as_u64() != Some(oldest)));
    let _ = std::fs::remove_dir_all(std::path::Path::new(&path).parent().unwrap());
}

#[tokio::test]
async fn restore_rolls_back_and_delivers_recorded_messages_exactly_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = TestCluster::start_app(
        "restore",
        4,
        "\"complete\"",
        50,
        "name = \"bank\"\ninitial_balance = 1000",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(900)).await;

    // A durable snapshot with transfers in flight.
    let store = Store::open(&c.config.store).unwrap();
    let mut chosen = None;
    for id in store.list().await.unwrap().into_iter().rev() {
        let s = store.load(id, &mut |_, _| {}).await.unwrap();
        let flying: usize = s
            .parts
            .iter()
            .flat_map(|p| p.channels.iter().chain(&p.overtaken))
            .map(|c| c.len())
            .sum();
        if flying > 0 {
            chosen = Some((id, flying));
            break;
        }
    }
    let (id, flying) = chosen.expect("no durable snapshot had messages in flight");
    let out = cairn(&[
        "restore",
        "--config",
        c.path.to_str().unwrap(),
        "--snapshot",
        &id.to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["epoch"], 1);
    let redelivered: u64 = answer["nodes"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n["redelivered"].as_u64().unwrap())
        .sum();
    assert_eq!(
        redelivered as usize, flying,
        "every recorded message is delivered again, once"
    );

    // Transfers go on after the rollback, and new snapshots complete.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (_, list): (_, Vec<Value>) = client::get_json(c.config.coordinator_admin(), "/snapshots")
        .await
        .unwrap();
    let mut by_epoch: [Vec<GlobalSnapshot<Transfer, Balance>>; 2] = [Vec::new(), Vec::new()];
    for s in &list {
        if s["status"] != "complete" {
            continue;
        }
        let (_, doc): (_, SnapshotDoc<Transfer, Balance>) = client::get_json(
            c.config.coordinator_admin(),
            &format!("/snapshots/{}", s["id"]),
        )
        .await
        .unwrap();
        let snap = GlobalSnapshot::from_doc(&c.config.topology, doc).unwrap();
        let held: u64 = snap.states.iter().map(|b| b.balance).sum();
        let flying: u64 = snap.channels.iter().flatten().map(|t| t.amount).sum();
        assert_eq!(
            held + flying,
            4000,
            "snapshot {} (epoch {}) does not conserve money",
            snap.id,
            s["epoch"]
        );
        by_epoch[s["epoch"].as_u64().unwrap() as usize].push(snap);
    }
    assert!(
        by_epoch[1].len() >= 3,
        "only {} snapshots after the rollback",
        by_epoch[1].len()
    );
    c.stop().await;

    // Each epoch is a run of its own; the one after the rollback begins with
    // the restored snapshot's channel states. The oracle holds on both.
    for (epoch, snaps) in by_epoch.iter().enumerate() {
        let run = common::oracle_on_epoch(&BankModel, &c.config, &c.dir, epoch as u64, snaps);
        if epoch == 1 {
            let initial: usize = run.initial_channels.iter().map(Vec::len).sum();
            assert_eq!(
                initial, flying,
                "the new epoch begins with the recorded messages in flight"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[tokio::test]
async fn large_states_travel_only_to_the_store_and_are_served_from_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = TestCluster::start_app(
        "large",
        3,
        "\"complete\"",
        0,
        // Whole, not in chunks: a part this large stays in the store.
        "name = \"bank\"\ninitial_balance = 1000\nstate_bytes = 2000000\nchunked = false",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at = c.config.coordinator_admin();
    for _ in 0..3 {
        let (status, v): (_, Value) = client::post_json(at, "/snapshots", &()).await.unwrap();
        assert!(status.is_success(), "{v}");
        let id = v["id"].as_u64().unwrap();
        let mut durable = false;
        for _ in 0..200 {
            let (_, list): (_, Vec<Value>) = client::get_json(at, "/snapshots").await.unwrap();
            let s = list.iter().find(|s| s["id"] == id).unwrap();
            assert_ne!(s["status"], "failed", "{s}");
            if s["durable_ms"].is_number() {
                durable = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(durable, "snapshot {id} of 2 MB states never became durable");
    }
    // Served from the store, whole: every state carries its ballast.
    let docs = c.snapshots().await;
    assert_eq!(docs.len(), 3);
    for d in &docs {
        for name in ["n1", "n2", "n3"] {
            let state = d.processes.get(name).unwrap();
            let ballast = state["ballast"].as_str().unwrap_or_default();
            assert_eq!(
                ballast.len(),
                2_000_000,
                "snapshot {} lost {name}'s state",
                d.id
            );
        }
    }
    // The parts leave out the large initial state; verify says so.
    let id = docs[2].id.to_string();
    let out = cairn(&["snapshots", "--store", &c.config.store, "verify", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("conservation not checked"),
        "{}",
        text(&out.stdout)
    );
    // On a terminal, show summarises 2 MB states; --full (or a pipe) prints them whole.
    let on_tty = |extra: &str| {
        let cmd = format!(
            "{} snapshots --store {} show {id} {extra}",
            env!("CARGO_BIN_EXE_cairn"),
            c.config.store
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let short = on_tty("");
    assert!(short.contains("--full prints it whole"), "{short}");
    // Progress in bytes while it reads the parts (about 6 MiB here).
    assert!(
        short.contains("reading snapshot") && short.contains(" MiB"),
        "{short}"
    );
    assert!(
        short.len() < 10_000,
        "{} bytes on the terminal",
        short.len()
    );
    assert!(on_tty("--full").len() > 6_000_000);
    let piped = cairn(&["snapshots", "--store", &c.config.store, "show", &id]);
    assert!(piped.stdout.len() > 6_000_000, "a pipe gets everything");
    // The coordinator kept no copy: once the store loses a snapshot, so
    // does it (410 Gone, naming why).
    let gone = docs[0].id.to_string();
    let out = cairn(&["snapshots", "--store", &c.config.store, "delete", &gone]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (status, v): (_, Value) = client::get_json(at, &format!("/snapshots/{gone}"))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 410, "snapshot {gone} still served: {v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no longer in the store"),
        "{v}"
    );
    c.keep_files = false;
    c.stop_and_check(&BankModel, docs).await;
}
