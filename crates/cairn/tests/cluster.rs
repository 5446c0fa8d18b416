//! Real clusters: `cairn node` child processes talking TCP on 127.0.0.1,
//! ports chosen by the OS. Every snapshot must conserve the bank's money and
//! pass the oracle, judged from the nodes' own traces.

mod common;

use std::time::{Duration, Instant};

use cairn_apps::bank::{BankModel, Transfer};
use cairn_apps::token::TokenModel;
use cairn_runtime::ClusterConfig;
use cairn_runtime::tls::Identity;
use cairn_runtime::wire::{self, Frame, Hello, MAGIC, PROTOCOL_VERSION};
use common::client;
use common::{BALANCE, BANK, ONE_AT_A_TIME, TestCluster, write_config};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn bank_cluster_under_full_load_conserves_money_in_every_snapshot() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = TestCluster::start("load", 6, "\"complete\"", 60).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let snaps = c.snapshots().await;
    assert!(snaps.len() >= 5, "only {} snapshots completed", snaps.len());
    let n = c.stop_and_check(&BankModel, snaps).await;
    eprintln!("{n} snapshots conserved money and passed the oracle");
}

#[tokio::test]
async fn cut_connections_lose_and_duplicate_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = TestCluster::start("cuts", 5, "\"complete\"", 80).await;
    let started = Instant::now();
    common::cut_links(&c.config, 12, Duration::from_millis(120)).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The cuts really did force reconnects. (How many frames each resends
    // depends on what was in flight at the cut, and may be none; the resend
    // path itself is checked deterministically in cairn-core's link model.)
    let (mut resent, mut connections) = (0, 0);
    for n in &c.config.nodes {
        resent += common::counter(n.admin, "cairn_frames_resent_total").await;
        connections += common::counter(n.admin, "cairn_connections_total").await;
    }
    let channels = c.config.topology.channel_count() as u64;
    assert!(
        connections >= channels + 12,
        "only {connections} connections for {channels} channels: the cuts did not bite"
    );
    eprintln!("{connections} connections, {resent} frames resent after cuts");
    // Snapshots complete again once the links are back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let snaps = loop {
        let snaps = c.snapshots().await;
        if snaps.len() >= 5 {
            break snaps;
        }
        assert!(
            Instant::now() < deadline,
            "only {} snapshots completed across the cuts",
            snaps.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    c.stop_and_check(&BankModel, snaps).await;
}

#[tokio::test]
async fn one_way_ring_with_a_chord_works_over_tcp() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ring =
        r#"[["n1", "n2"], ["n2", "n3"], ["n3", "n4"], ["n4", "n5"], ["n5", "n1"], ["n1", "n3"]]"#;
    let c = TestCluster::start("ring", 5, ring, 70).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // The CLI takes a snapshot on demand, started at a node other than the coordinator.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "snapshot",
            "--config",
            c.path.to_str().unwrap(),
            "--node",
            "n4",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The durations say what they time: the coordinator's, from the
    // snapshot's start, apart from how long the command waited.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("complete ")
            && said.contains(" ms after its start")
            && said.contains("the command waited"),
        "{said}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["processes"].as_object().unwrap().len(), 5);
    assert_eq!(doc["channels"].as_array().unwrap().len(), 6);
    assert!(doc["processes"]["n3"]["balance"].is_u64());
    let (held, flying) =
        cairn_apps::conserved_totals("bank", &serde_json::from_value(doc).unwrap())
            .unwrap()
            .unwrap();
    assert_eq!(held + flying, 5 * BALANCE);

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["status", "--config", c.path.to_str().unwrap(), "--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status.as_array().unwrap().len(), 5);
    let table = cairn_out(&["status", "--config", c.path.to_str().unwrap()]).await;
    assert!(
        table.contains("to complete") && table.contains("to durable"),
        "{table}"
    );
    assert_eq!(
        status[0]["outgoing"],
        serde_json::json!(["n1->n2", "n1->n3"])
    );
    assert!(
        status[0]["recent_snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["initiator"] == "n4")
    );

    // Invariant: the metrics follow Prometheus's conventions (promtool
    // passes them), on the coordinator and on a follower, and carry the
    // series an operator alerts on.
    let (_, metrics) = client::get_text(c.coordinator(), "/metrics").await.unwrap();
    for until in ["complete", "durable"] {
        let bucket = format!(
            "cairn_snapshot_duration_seconds_bucket{{until=\"{until}\",node=\"n1\",le=\"0.1\"}}"
        );
        assert!(metrics.contains(&bucket), "{bucket} missing:\n{metrics}");
    }
    for series in [
        "cairn_messages_sent_total{node=\"n1\"}",
        "cairn_epoch{node=\"n1\"} 0",
        "cairn_snapshots_in_progress{node=\"n1\"}",
        "cairn_last_durable_snapshot_id{node=\"n1\"}",
        "cairn_last_durable_snapshot_timestamp_seconds{node=\"n1\"}",
        "cairn_build_info{version=",
        "cairn_processing_pause_seconds_count{node=\"n1\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    assert!(common::counter(c.coordinator(), "cairn_last_durable_snapshot_id").await > 0);
    common::promtool_check(&metrics);
    // The Grafana dashboard in the repository asks only for series that
    // exist, in valid PromQL (Grafana's variables given plain values).
    let grafana: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/grafana/cairn-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for panel in grafana["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let e = t["expr"].as_str().unwrap();
            exprs.push(e.replace("$__rate_interval", "1m").replace("$job", ".*"));
            for name in e
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("cairn_"))
            {
                let base = name.trim_end_matches("_bucket");
                assert!(
                    metrics.contains(&format!("\n{base}")),
                    "the Grafana dashboard asks for {name}, which /metrics lacks"
                );
            }
        }
    }
    assert!(exprs.len() >= 10, "{} panel queries", exprs.len());
    common::promtool_check_exprs(&exprs);
    let (_, follower) = client::get_text(c.config.nodes[2].admin, "/metrics")
        .await
        .unwrap();
    common::promtool_check(&follower);

    let snaps = c.snapshots().await;
    c.stop_and_check(&BankModel, snaps).await;
}

async fn cairn_out(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn send_raw(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(6), s.read_to_end(&mut answer)).await;
    answer
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// A hello as `node`, in `epoch`, in the life `incarnation` (which the test
/// reads from the real node's status, as anyone on the network can until
/// links are authenticated).
fn hello_as(cluster: &str, node: &str, channel: &str, epoch: u64, incarnation: u64) -> Vec<u8> {
    let h = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        cluster: cluster.into(),
        node: node.into(),
        channel: channel.into(),
        epoch,
        incarnation,
        peer_incarnation: None,
    };
    framed(&wire::encode(&h).unwrap())
}

fn rejection(answer: &[u8]) -> String {
    assert!(answer.len() > 4, "no answer");
    match wire::decode::<Frame<()>>(&answer[4..]).unwrap() {
        Frame::Reject { reason, .. } => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_frames_leave_the_node_running_with_its_state_intact() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = TestCluster::start("bad", 5, "\"complete\"", 80).await;
    let target = c.config.nodes[1].address.clone();
    // Garbage, an oversize length prefix, and a frame that is not a hello.
    send_raw(&target, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    send_raw(&target, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await;
    send_raw(
        &target,
        &framed(&wire::encode(&Frame::<u64>::Ack { next_seq: 3 }).unwrap()),
    )
    .await;
    // Hellos the node must refuse, each by name, from real members over TLS.
    let certs = common::certs_dir();
    let as_node = |id: &str| Identity::node(id);
    let send_as = |who: Identity, bytes: Vec<u8>| {
        let (target, certs) = (target.clone(), certs.clone());
        async move {
            common::send_tls(&target, &certs, Some(&who), &bytes)
                .await
                .unwrap()
        }
    };
    let (_, n1): (_, Value) = client::get_json(c.config.nodes[0].admin, "/status")
        .await
        .unwrap();
    let life = n1["incarnation"].as_u64().unwrap();
    let hello =
        |cluster: &str, node: &str, channel: &str| hello_as(cluster, node, channel, 0, life);
    let hello_in_epoch = |cluster: &str, node: &str, channel: &str, epoch: u64| {
        hello_as(cluster, node, channel, epoch, life)
    };
    let r = rejection(&send_as(as_node("n1"), hello("bad", "intruder", "intruder->n2")).await);
    assert!(r.contains("its certificate is node n1's"), "{r}");
    let r = rejection(&send_as(as_node("n1"), hello("other", "n1", "n1->n2")).await);
    assert!(r.contains("cluster \"other\""), "{r}");
    let r = rejection(&send_as(as_node("n3"), hello("bad", "n3", "n3->n4")).await);
    assert!(r.contains("has no channel"), "{r}");
    let r = rejection(&send_as(as_node("n1"), hello_in_epoch("bad", "n1", "n1->n2", 7)).await);
    assert!(r.contains("epoch 7"), "{r}");
    // A real node's channel, then a frame far ahead of its sequence: refused, nothing applied.
    let mut bytes = hello("bad", "n1", "n1->n2");
    bytes.extend(framed(
        &wire::encode(&Frame::Data {
            seq: 999_999,
            epoch: 0,
            message: Transfer { amount: 1_000_000 },
            vc: None,
        })
        .unwrap(),
    ));
    send_as(as_node("n1"), bytes).await;

    let (status, v): (_, Value) = client::get_json(c.config.nodes[1].admin, "/status")
        .await
        .unwrap();
    assert!(status.is_success() && v["node"] == "n2");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let snaps = c.snapshots().await;
    assert!(snaps.len() >= 3);
    // Money is still exactly what it was: the forged transfer was never applied.
    c.stop_and_check(&BankModel, snaps).await;
}

#[tokio::test]
async fn bad_configs_and_arguments_exit_nonzero_with_a_clear_error() {
    let cairn = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .output()
            .unwrap()
    };
    let (dir, path) = write_config("cfg", 2, "\"complete\"", 0);
    let p = path.to_str().unwrap();
    let out = cairn(&["node", "--config", p, "--id", "n9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no node \"n9\""));
    let out = cairn(&["node", "--config", "/nonexistent.toml", "--id", "n1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml: cannot read it"));
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("name = \"bank\"", "name = \"casino\"");
    std::fs::write(&path, text).unwrap();
    // Running a node needs a built-in application; reading a cluster or its
    // store never does (an embedding's own application is as good).
    let out = cairn(&["node", "--config", p, "--id", "n1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("app.name: \"casino\" is not a built-in application")
    );
    let out = cairn(&["status", "--config", p]);
    let (stdout, stderr) = (common::text(&out.stdout), common::text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "nothing runs: {stdout}{stderr}");
    assert!(!stderr.contains("built-in"), "{stderr}");
    assert!(
        stdout.contains("n1") && stdout.contains("UNREACHABLE"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("name = \"casino\"", "name = \"bank\"\nrate = -3.0");
    std::fs::write(&path, text).unwrap();
    let out = cairn(&["node", "--config", p, "--id", "n1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("app: rate must be a positive number"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cairn(&["snapshot", "--config", p]);
    assert_eq!(out.status.code(), Some(1), "no cluster is running");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    let out = cairn(&["node", "--config", p]);
    assert_eq!(out.status.code(), Some(2), "missing --id is a usage error");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn token_cluster_conserves_tokens() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = "name = \"token\"\ninitial_tokens = 50";
    let c = TestCluster::start_app("token", 4, "\"ring\"", 50, app).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let snaps = c.snapshots().await;
    assert!(snaps.len() >= 5);
    assert!(snaps[0].processes.0[0].1["tokens"].is_u64());
    c.stop_and_check(&TokenModel, snaps).await;
}

#[tokio::test]
async fn cairn_cluster_runs_every_node_and_stops_them_on_ctrl_c() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, path) = write_config("ctrlc", 3, "\"complete\"", 100);
    let config = ClusterConfig::load(&path).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["cluster", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in &config.nodes {
        while client::get_json::<Value>(n.admin, "/status").await.is_err() {
            assert!(Instant::now() < deadline, "node {} never came up", n.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("cluster did not stop")
        .unwrap();
    assert!(status.success(), "cairn cluster exited with {status}");
    for n in &config.nodes {
        assert!(
            client::get_json::<Value>(n.admin, "/status").await.is_err(),
            "node {} still answers",
            n.id
        );
    }
    // Every node stopped cleanly: each wrote its final states.
    for n in &config.nodes {
        assert!(cairn_runtime::tracefile::states_path(&dir.join("traces"), &n.id, 0).is_file());
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A second `cairn cluster` on ports a running cluster holds refuses to
/// start, with one clear message, instead of taking the other cluster's
/// answers for its own nodes. Invariant: a cluster only reports nodes it
/// started as up.
#[tokio::test]
async fn a_second_cluster_on_the_same_ports_refuses_to_start() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = TestCluster::start_app("twice", 2, "\"complete\"", 0, BANK).await;
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["cluster", "--config", c.path.to_str().unwrap()])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the second cluster gave up within 30 s")
    .unwrap();
    let err = common::text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("answered by another process"), "{err}");
    assert!(!err.contains("running; Ctrl-C"), "{err}");
    assert!(!err.contains(" up: "), "no node of it is up: {err}");
    // The first cluster is untouched.
    let (_, v) = client::get_json::<Value>(c.config.nodes[0].admin, "/status")
        .await
        .unwrap();
    assert_eq!(v["cluster"], c.config.cluster);
    c.stop().await;
}

/// Invariant: under `cairn cluster`, a node that keeps dying is started
/// again after a back-off that grows, and the healthy nodes run on with
/// the same processes (before, ten quick deaths stopped the whole cluster).
#[tokio::test]
async fn cairn_cluster_restarts_a_dying_node_with_back_off_and_keeps_the_others() {
    use tokio::io::AsyncBufReadExt;
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, path) = write_config("backoff", 3, "\"complete\"", 0);
    let config = ClusterConfig::load(&path).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["cluster", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "error")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("cairn cluster said nothing for 30 s")
            .unwrap()
            .expect("cairn cluster closed its stderr")
    };
    while !next_line().await.contains("running; Ctrl-C stops it") {}
    let pid = async |i: usize, not: Option<u64>| -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((_, v)) = client::get_json::<Value>(config.nodes[i].admin, "/status").await
                && let Some(p) = v["pid"].as_u64()
                && Some(p) != not
            {
                return p;
            }
            assert!(Instant::now() < deadline, "node {i} did not come back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let healthy = pid(0, None).await;
    let mut dying = None;
    let mut delays = Vec::new();
    for _ in 0..3 {
        let p = pid(2, dying).await;
        common::signal(p as u32, "-9");
        dying = Some(p);
        let said = loop {
            let line = next_line().await;
            if line.contains("node n3 exited") {
                break line;
            }
        };
        let secs: f64 = said
            .rsplit_once("again in ")
            .and_then(|(_, t)| t.trim_end_matches(" s").parse().ok())
            .unwrap_or_else(|| panic!("no delay in {said:?}"));
        delays.push(secs);
    }
    eprintln!("back-off delays: {delays:?} s");
    assert!(
        delays.windows(2).all(|w| w[0] <= w[1]) && delays[2] > delays[0] && delays[0] >= 0.5,
        "back-off delays {delays:?}"
    );
    pid(2, dying).await;
    assert_eq!(pid(0, None).await, healthy, "a healthy node was restarted");
    common::signal(child.id().unwrap(), "-INT");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("cluster did not stop")
        .unwrap();
    assert!(status.success(), "cairn cluster exited with {status}");
    let _ = std::fs::remove_dir_all(dir);
}
