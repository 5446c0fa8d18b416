//! `cairn detect` on real clusters: each property is found on a cluster that
//! reaches it, and not on one that never does. Every snapshot taken passes
//! the oracle, judged from the nodes' traces.

mod common;

use cairn_apps::diffusing::Diffusing;
use cairn_apps::locks::Locks;
use cairn_apps::protocol::Protocol;
use cairn_apps::ring::Ring;
use common::{ONE_AT_A_TIME, TestCluster};
use serde_json::Value;

async fn detect(c: &TestCluster, property: &str, limit: &str) -> (Option<i32>, Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "detect",
            property,
            "--config",
            c.path.to_str().unwrap(),
            "--time-limit",
            limit,
            "--json",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), v)
}

/// Starts a cluster of `app`, detects `property`, then checks every snapshot.
async fn run<A: Protocol>(
    name: &str,
    nodes: usize,
    channels: &str,
    app: &str,
    property: &str,
    limit: &str,
    expect: bool,
) -> Value
where
    A::Message: serde::de::DeserializeOwned,
    A::State: serde::de::DeserializeOwned + serde::Serialize,
{
    let _one = ONE_AT_A_TIME.lock().await;
    let c = TestCluster::start_app(name, nodes, channels, 0, app).await;
    let (code, out) = detect(&c, property, limit).await;
    assert_eq!(out["detected"], expect, "{out}");
    assert_eq!(code, Some(if expect { 0 } else { 1 }), "{out}");
    let protocol = A::from_params(
        &serde_json::from_value(c.config.app.params.clone()).unwrap(),
        &c.config.topology,
    )
    .unwrap();
    let snaps = c.snapshots().await;
    assert_eq!(
        snaps.len() as u64,
        out["snapshots"].as_u64().unwrap(),
        "every snapshot the detector took is checked"
    );
    c.stop_and_check_with(&protocol, snaps, 1).await;
    out
}

#[tokio::test]
async fn termination_of_a_diffusing_computation_is_detected_over_tcp() {
    let out = run::<Diffusing>(
        "term",
        5,
        "\"complete\"",
        "name = \"diffusing\"\nttl = 5",
        "termination",
        "20",
        true,
    )
    .await;
    assert!(
        out["evidence"]
            .as_str()
            .unwrap()
            .contains("all 5 processes are passive"),
        "{out}"
    );
}

#[tokio::test]
async fn deadlock_of_the_lock_service_is_detected_over_tcp() {
    let out = run::<Locks>(
        "dead",
        4,
        "\"complete\"",
        "name = \"locks\"",
        "deadlock",
        "20",
        true,
    )
    .await;
    let cycle = out["evidence"].as_array().unwrap();
    assert!(cycle.len() >= 2, "{out}");
    // Each member of the cycle waits for a lock held by the next.
    for (i, w) in cycle.iter().enumerate() {
        assert_eq!(
            w["holder"],
            cycle[(i + 1) % cycle.len()]["process"],
            "{out}"
        );
    }
}

#[tokio::test]
async fn a_lost_token_is_detected_over_tcp() {
    let out = run::<Ring>(
        "lost",
        5,
        "\"ring\"",
        "name = \"ring\"\nlose_at_hop = 40",
        "lost-token",
        "20",
        true,
    )
    .await;
    assert!(
        out["evidence"].as_str().unwrap().contains("no token"),
        "{out}"
    );
}

#[tokio::test]
async fn ordered_locks_are_never_reported_deadlocked_over_tcp() {
    run::<Locks>(
        "nodead",
        4,
        "\"complete\"",
        "name = \"locks\"\nordered = true",
        "deadlock",
        "2",
        false,
    )
    .await;
}

#[tokio::test]
async fn detect_refuses_a_cluster_running_another_app() {
    let (_, path) = common::write_config("wrongapp", 2, "\"complete\"", 0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["detect", "deadlock", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the \"locks\" application"));
}
