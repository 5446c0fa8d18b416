//! The dashboard, in a real browser: Debian's Chromium, headless, driven by
//! Playwright (`tests/browser/dashboard.mjs`). Invariant: what an operator
//! sees is the cluster's real state — every node, each new snapshot within
//! seconds of its commit, a failure with its reason, a snapshot's cut — and
//! a secure cluster's page shows nothing until a person enters a token.
//! Screenshots are kept in `target/browser-artifacts/`.
//!
//! `scripts/test` installs Chromium and the Node packages and sets
//! `CAIRN_REQUIRE_BROWSER`; without them this test says SKIPPED.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{BANK, ONE_AT_A_TIME, TestCluster, signal, write_full_config};

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

/// Whether Node, Playwright and Chromium are here; if not, and the test
/// command did not demand them, the test says SKIPPED.
fn browser_ready() -> bool {
    let chromium = std::env::var("CAIRN_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing: Vec<&str> = [
        (
            "node",
            std::process::Command::new("node")
                .arg("--version")
                .output()
                .is_ok(),
        ),
        (
            "playwright-core (npm ci in tests/browser)",
            browser_dir().join("node_modules/playwright-core").exists(),
        ),
        ("chromium", std::path::Path::new(&chromium).exists()),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(what, _)| what)
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CAIRN_REQUIRE_BROWSER").is_none(),
        "the browser tests need {missing:?} (CAIRN_REQUIRE_BROWSER is set)"
    );
    eprintln!("SKIPPED: the dashboard browser test needs {missing:?}; scripts/test installs them");
    false
}

/// The coordinator's list of snapshots, read with the read token.
async fn listed(
    reader: &cairn_runtime::client::AdminClient,
    admin: std::net::SocketAddr,
) -> Vec<serde_json::Value> {
    let (_, list) = reader.get_text(admin, "/snapshots").await.unwrap();
    serde_json::from_str(&list).unwrap()
}

#[tokio::test]
async fn the_dashboard_shows_the_cluster_in_a_real_browser() {
    if !browser_ready() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, path) = write_full_config(
        "dashboard",
        3,
        "\"complete\"",
        300,
        // A calm bank: the test runs ~30 s, and the oracle replays it all.
        &format!("{BANK}\nrate = 300"),
        "admin = { read_token_file = \"read.token\" }",
        "timeout_ms = 800\nfailure_timeout_ms = 0",
    );
    std::fs::write(dir.join("read.token"), "d4shboard-r3ad\n").unwrap();
    let mut c = TestCluster::start_from(dir.clone(), path).await;

    // Snapshots are taken once the cluster has joined: wait for the first.
    let reader = common::client_as(None).with_token("d4shboard-r3ad".into());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !listed(&reader, c.coordinator())
        .await
        .iter()
        .any(|s| s["status"] == "complete")
    {
        assert!(std::time::Instant::now() < deadline, "no snapshot in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One failure with a reason to show: n3 frozen past the snapshot timeout.
    let n3 = c.supervisor().pid("n3").unwrap();
    signal(n3, "-STOP");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    signal(n3, "-CONT");

    // Then 40 newer snapshots, so the failure has left the main table (its
    // latest 40) by the time the browser looks, as it had in a CI run where
    // Chromium was slow to start: the failures table must still show it.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let list = listed(&reader, c.coordinator()).await;
        let failed = list
            .iter()
            .filter(|s| s["status"] == "failed")
            .map(|s| s["id"].as_u64().unwrap())
            .max();
        if let Some(f) = failed
            && list
                .iter()
                .filter(|s| s["id"].as_u64().unwrap() > f)
                .count()
                >= 40
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failure followed by 40 snapshots within 40 s (failed: {failed:?}, {} listed)",
            list.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Members only: the page (which holds no data) loads for anyone; what
    // it shows needs credentials.
    let nobody = common::client_as(None);
    let (st, page) = nobody.get_text(c.coordinator(), "/").await.unwrap();
    assert_eq!(st.as_u16(), 200);
    assert!(page.contains("data-secure=\"true\""));
    for path in ["/cluster", "/snapshots/1/diagram.svg"] {
        let (st, _) = nobody.get_text(c.coordinator(), path).await.unwrap();
        assert_eq!(st.as_u16(), 401, "{path} without credentials");
    }
    let (st, bad) = nobody
        .with_token("d4shboard-r3ad".into())
        .get_text(c.coordinator(), "/snapshots/nope/diagram.svg")
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 400, "{bad}");
    let (st, never) = reader
        .get_text(c.coordinator(), "/snapshots/987654321/diagram.svg")
        .await
        .unwrap();
    assert!(
        st.as_u16() == 404 && never.contains("not among"),
        "{st} {never}"
    );

    // A follower sends a person on to the coordinator.
    let (st, _) = common::client::get_text(c.config.nodes[1].admin, "/")
        .await
        .unwrap();
    assert_eq!(
        st.as_u16(),
        307,
        "a follower's / redirects to the coordinator"
    );

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-artifacts");
    let url = format!("https://{}/", c.coordinator());
    let out = tokio::process::Command::new("node")
        .current_dir(browser_dir())
        .args([
            "dashboard.mjs",
            &url,
            "d4shboard-r3ad",
            "n1,n2,n3",
            shots.to_str().unwrap(),
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("the browser run took over 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the dashboard failed in the browser:\n{stdout}"
    );
    assert!(shots.join("dashboard.png").exists() && shots.join("snapshot.png").exists());

    // A node that does not answer is shown as such, and holds up the page's
    // reads by at most a second.
    let n2 = c.supervisor().pid("n2").unwrap();
    signal(n2, "-STOP");
    let asked = std::time::Instant::now();
    let (st, cluster) = reader.get_text(c.coordinator(), "/cluster").await.unwrap();
    let took = asked.elapsed();
    signal(n2, "-CONT");
    assert_eq!(st.as_u16(), 200, "{cluster}");
    let cluster: serde_json::Value = serde_json::from_str(&cluster).unwrap();
    let up: Vec<(String, bool)> = cluster["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["up"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        up,
        [
            ("n1".to_string(), true),
            ("n2".to_string(), false),
            ("n3".to_string(), true)
        ]
    );
    assert!(took < Duration::from_secs(2), "/cluster took {took:?}");

    // Every snapshot that completed conserves the money and passes the oracle.
    let snaps = c.snapshots_where(|_| true).await;
    c.stop_and_check(&cairn_apps::bank::BankModel, snaps).await;
}
