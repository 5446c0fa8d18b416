//! Real clusters: `cairn node` child processes talking TCP on 127.0.0.1,
//! ports chosen by the OS. Every snapshot must conserve the bank's money and
//! pass the oracle, judged from the nodes' own traces.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_apps::bank::{BankModel, Transfer};
use cairn_apps::token::TokenModel;
use cairn_core::oracle::{self, Model, Run};
use cairn_core::{GlobalSnapshot, SnapshotDoc};
use cairn_runtime::ClusterConfig;
use cairn_runtime::client;
use cairn_runtime::cluster::Supervisor;
use cairn_runtime::tracefile::load_run;
use cairn_runtime::wire::{self, Frame, Hello, MAGIC, PROTOCOL_VERSION};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BALANCE: u64 = 1000;

/// Cluster tests run one at a time: each loads both cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct TestCluster {
    dir: PathBuf,
    path: PathBuf,
    config: ClusterConfig,
    sup: Option<Supervisor>,
}

fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

const BANK: &str = "name = \"bank\"\ninitial_balance = 1000";

fn write_config(name: &str, nodes: usize, channels: &str, interval_ms: u64) -> (PathBuf, PathBuf) {
    write_app_config(name, nodes, channels, interval_ms, BANK)
}

fn write_app_config(
    name: &str,
    nodes: usize,
    channels: &str,
    interval_ms: u64,
    app: &str,
) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("cairn-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ports = free_ports(2 * nodes);
    let mut toml = format!(
        "cluster = \"{name}\"\ncoordinator = \"n1\"\nchannels = {channels}\ntrace_dir = {:?}\ndata_dir = {:?}\n\n[debug]\nallow_cut = true\n\n[app]\n{app}\n\n[snapshots]\ninterval_ms = {interval_ms}\ntimeout_ms = 10000\nkeep = 10000\n",
        dir.join("traces"),
        dir.join("data"),
    );
    for i in 0..nodes {
        toml += &format!(
            "\n[[nodes]]\nid = \"n{}\"\naddress = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n",
            i + 1,
            ports[2 * i],
            ports[2 * i + 1]
        );
    }
    let path = dir.join("cluster.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

impl TestCluster {
    async fn start(name: &str, nodes: usize, channels: &str, interval_ms: u64) -> Self {
        Self::start_app(name, nodes, channels, interval_ms, BANK).await
    }

    async fn start_app(
        name: &str,
        nodes: usize,
        channels: &str,
        interval_ms: u64,
        app: &str,
    ) -> Self {
        let (dir, path) = write_app_config(name, nodes, channels, interval_ms, app);
        let config = ClusterConfig::load(&path).unwrap();
        let exe = Path::new(env!("CARGO_BIN_EXE_cairn"));
        let mut sup = Supervisor::spawn(exe, &path, &config, &[("RUST_LOG", "warn")]).unwrap();
        sup.wait_ready(&config, Duration::from_secs(30))
            .await
            .unwrap();
        TestCluster {
            dir,
            path,
            config,
            sup: Some(sup),
        }
    }

    fn coordinator(&self) -> std::net::SocketAddr {
        self.config.coordinator_admin()
    }

    /// Every complete snapshot, fetched from the coordinator in the shared JSON shape.
    async fn snapshots(&self) -> Vec<SnapshotDoc<Value, Value>> {
        let (_, list): (_, Vec<Value>) = client::get_json(self.coordinator(), "/snapshots")
            .await
            .unwrap();
        let mut out = Vec::new();
        for s in list {
            assert_ne!(s["status"], "failed", "a snapshot failed: {s}");
            if s["status"] == "complete" {
                let (status, doc) =
                    client::get_json(self.coordinator(), &format!("/snapshots/{}", s["id"]))
                        .await
                        .unwrap();
                assert!(status.is_success());
                out.push(doc);
            }
        }
        out
    }

    /// Stops the cluster, then checks every snapshot: the money (or tokens)
    /// conserved exactly, and the oracle satisfied by the merged traces.
    async fn stop_and_check<D>(mut self, model: &D, docs: Vec<SnapshotDoc<Value, Value>>) -> usize
    where
        D: Model,
        D::Message: DeserializeOwned,
        D::State: DeserializeOwned + serde::Serialize,
    {
        let stopped = self.sup.take().unwrap().stop(Duration::from_secs(10)).await;
        for (id, status) in stopped {
            assert!(
                status.is_some_and(|s| s.success()),
                "node {id} did not stop cleanly: {status:?}"
            );
        }
        let topo = &self.config.topology;
        let run = load_run::<D::Message, D::State>(topo, &self.dir.join("traces")).unwrap();
        let snaps: Vec<GlobalSnapshot<D::Message, D::State>> = docs
            .iter()
            .map(|d| {
                GlobalSnapshot::from_doc(
                    topo,
                    serde_json::from_value(serde_json::to_value(d).unwrap()).unwrap(),
                )
                .unwrap()
            })
            .collect();
        let violations = oracle::check(
            model,
            &Run {
                topology: topo,
                trace: &run.trace,
                initial: &run.initial,
                final_states: &run.last,
            },
            &snaps,
        );
        for v in violations.iter().take(10) {
            eprintln!("violation: {v}");
        }
        assert!(
            violations.is_empty(),
            "{} violations (the first ones are printed above)",
            violations.len()
        );
        let initial: Vec<Value> = run
            .initial
            .iter()
            .map(|s| serde_json::to_value(s).unwrap())
            .collect();
        let total: u64 = initial
            .iter()
            .map(|v| {
                v.as_object()
                    .unwrap()
                    .values()
                    .next()
                    .unwrap()
                    .as_u64()
                    .unwrap()
            })
            .sum();
        for d in &docs {
            let (held, flying) = cairn_apps::conserved_totals(&self.config.app.name, d)
                .unwrap()
                .unwrap();
            assert_eq!(
                held + flying,
                total,
                "snapshot {} does not conserve {total}",
                d.id
            );
        }
        let receives = run
            .trace
            .iter()
            .filter(|e| matches!(e.event, cairn_core::trace::Event::Receive { .. }))
            .count();
        assert!(
            receives > 1000,
            "only {receives} messages were received: the load did not run"
        );
        let _ = std::fs::remove_dir_all(&self.dir);
        snaps.len()
    }
}

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
    for i in 0..12 {
        let node = &c.config.nodes[i % c.config.nodes.len()];
        let (status, _): (_, Value) = client::post_json(node.admin, "/debug/cut", &())
            .await
            .unwrap();
        assert!(status.is_success());
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The cuts really did force reconnects and resends.
    let mut resent = 0;
    for n in &c.config.nodes {
        let (_, text) = client::get_text(n.admin, "/metrics").await.unwrap();
        resent += text
            .lines()
            .find(|l| l.starts_with("cairn_frames_resent_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap();
    }
    assert!(resent > 0, "no frame was resent: the cuts did not bite");
    eprintln!("{resent} frames resent after cuts");
    let snaps = c.snapshots().await;
    assert!(
        snaps.len() >= 5,
        "only {} snapshots completed across the cuts",
        snaps.len()
    );
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

    let (_, metrics) = client::get_text(c.coordinator(), "/metrics").await.unwrap();
    assert!(
        metrics.contains("cairn_snapshot_duration_seconds_bucket{node=\"n1\",le=\"0.1\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("cairn_messages_sent_total{node=\"n1\"}"));

    let snaps = c.snapshots().await;
    c.stop_and_check(&BankModel, snaps).await;
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

fn hello(cluster: &str, node: &str, channel: &str) -> Vec<u8> {
    let h = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        cluster: cluster.into(),
        node: node.into(),
        channel: channel.into(),
        auth: vec![],
    };
    framed(&wire::encode(&h).unwrap())
}

fn rejection(answer: &[u8]) -> String {
    assert!(answer.len() > 4, "no answer");
    match wire::decode::<Frame<()>>(&answer[4..]).unwrap() {
        Frame::Reject { reason } => reason,
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
    // Hellos the node must refuse, each by name.
    let r = rejection(&send_raw(&target, &hello("bad", "intruder", "intruder->n2")).await);
    assert!(r.contains("unknown node id \"intruder\""), "{r}");
    let r = rejection(&send_raw(&target, &hello("other", "n1", "n1->n2")).await);
    assert!(r.contains("cluster \"other\""), "{r}");
    let r = rejection(&send_raw(&target, &hello("bad", "n3", "n3->n4")).await);
    assert!(r.contains("has no channel"), "{r}");
    // A real node's channel, then a frame far ahead of its sequence: refused, nothing applied.
    let mut bytes = hello("bad", "n1", "n1->n2");
    bytes.extend(framed(
        &wire::encode(&Frame::Data {
            seq: 999_999,
            message: Transfer { amount: 1_000_000 },
            vc: None,
        })
        .unwrap(),
    ));
    send_raw(&target, &bytes).await;

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
    let out = cairn(&["status", "--config", p]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("app.name: \"casino\" is not a built-in application")
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
        assert!(cairn_runtime::tracefile::states_path(&dir.join("traces"), &n.id).is_file());
    }
    let _ = std::fs::remove_dir_all(dir);
}
