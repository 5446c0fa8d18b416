//! The baseline snapshot modes, aligned barriers and stop-the-world, on real
//! clusters: every snapshot conserves the money and passes the oracle on the
//! nodes' traces, records every channel empty, and costs exactly one marker
//! per channel. An application that sends while handling a message gets its
//! aligned snapshots refused with the reason, never recorded wrong.

mod common;

use std::time::Duration;

use cairn_apps::bank::BankModel;
use cairn_apps::diffusing::Diffusing;
use cairn_apps::protocol::Protocol;
use common::client;
use common::{BANK, ONE_AT_A_TIME, TestCluster};
use serde_json::Value;

async fn markers_sent(c: &TestCluster) -> u64 {
    let mut total = 0;
    for n in &c.config.nodes {
        let (_, v): (_, Value) = client::get_json(n.admin, "/status").await.unwrap();
        total += v["markers_sent"].as_u64().unwrap();
    }
    total
}

async fn check_mode(name: &str, mode: &str, channels: &str) {
    let c = TestCluster::start_with_env(
        name,
        5,
        channels,
        50,
        BANK,
        &[("CAIRN_SNAPSHOT_MODE", mode)],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, status): (_, Value) = client::get_json(c.coordinator(), "/status").await.unwrap();
    assert_eq!(status["snapshot_mode"], mode);
    let snaps = c.snapshots().await;
    assert!(
        snaps.len() >= 5,
        "only {} {mode} snapshots completed",
        snaps.len()
    );
    for d in &snaps {
        for ch in &d.channels {
            assert!(
                ch.messages.is_empty(),
                "{mode} snapshot {} recorded messages on {}->{}",
                d.id,
                ch.from,
                ch.to
            );
        }
    }
    // Every snapshot settled before the markers are counted sent one marker
    // per channel; those started before the count ends sent at most that.
    let list = |c: &TestCluster| {
        let at = c.coordinator();
        async move {
            let (_, l): (_, Vec<Value>) = client::get_json(at, "/snapshots").await.unwrap();
            l
        }
    };
    let before = list(&c).await;
    let markers = markers_sent(&c).await;
    let after = list(&c).await;
    let settled = before
        .iter()
        .filter(|s| s["status"] != "in_progress")
        .count() as u64;
    let started = after.len() as u64;
    let per = c.config.topology.channel_count() as u64;
    assert!(
        markers >= settled * per && markers <= started * per,
        "{markers} markers for {settled} settled and {started} started snapshots of {per} channels"
    );
    let n = c.stop_and_check(&BankModel, snaps).await;
    eprintln!(
        "{n} {mode} snapshots conserved money, passed the oracle and recorded empty channels"
    );
}

#[tokio::test]
async fn aligned_snapshots_are_consistent_on_a_complete_graph() {
    let _one = ONE_AT_A_TIME.lock().await;
    check_mode("aligned", "aligned", "\"complete\"").await;
}

#[tokio::test]
async fn stop_the_world_snapshots_are_consistent_on_a_ring() {
    let _one = ONE_AT_A_TIME.lock().await;
    check_mode("stw", "stop-the-world", "\"ring\"").await;
}

#[tokio::test]
async fn aligned_mode_refuses_an_application_that_sends_while_receiving() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Diffusing computations send from their message handler.
    let c = TestCluster::start_with_env(
        "refuse",
        4,
        "\"complete\"",
        20,
        "name = \"diffusing\"\nendless = true\ninitial_jobs = 4",
        &[("CAIRN_SNAPSHOT_MODE", "aligned")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, list): (_, Vec<Value>) = client::get_json(c.coordinator(), "/snapshots")
        .await
        .unwrap();
    let refused: Vec<&Value> = list.iter().filter(|s| s["status"] == "failed").collect();
    assert!(!refused.is_empty(), "no snapshot was refused: {list:?}");
    for s in &refused {
        let reason = s["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("chandy-lamport"), "unclear reason: {s}");
    }
    // Whatever did complete is still judged by the oracle.
    let mut docs = Vec::new();
    for s in list.iter().filter(|s| s["status"] == "complete") {
        let (_, doc) = client::get_json(c.coordinator(), &format!("/snapshots/{}", s["id"]))
            .await
            .unwrap();
        docs.push(doc);
    }
    eprintln!("{} refused, {} complete", refused.len(), docs.len());
    let model = Diffusing::from_params(
        &serde_json::from_value(c.config.app.params.clone()).unwrap(),
        &c.config.topology,
    )
    .unwrap();
    c.stop_and_check_with(&model, docs, 1).await;
}
