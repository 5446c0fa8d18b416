//! Shared by the cluster tests: a cluster of `cairn node` child processes on
//! 127.0.0.1 with OS-chosen ports, and the checks every snapshot must pass.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_core::oracle::{self, Model, Run};
use cairn_core::{GlobalSnapshot, SnapshotDoc};
use cairn_runtime::ClusterConfig;
use cairn_runtime::client::AdminClient;
use cairn_runtime::cluster::Supervisor;
use cairn_runtime::tls::{Identity, Security};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub mod lab;

pub const BALANCE: u64 = 1000;

/// The certificates every test cluster of this process uses: one CA, nodes
/// n1 to n10, and the operator `client.root`. Made once per process.
pub fn certs_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cairn-test-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ids: Vec<String> = (1..=10).map(|i| format!("n{i}")).collect();
        cairn_runtime::tls::certs::ensure_cluster(&dir, &ids).unwrap();
        dir
    })
    .clone()
}

/// The operator's admin client (`client.root`) for the test clusters.
pub fn operator() -> AdminClient {
    static CLIENT: std::sync::OnceLock<AdminClient> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| client_as(Some(&Identity::client("root"))))
        .clone()
}

/// An admin client over TLS presenting `who`'s certificate from the test
/// certificates (none when `None`).
pub fn client_as(who: Option<&Identity>) -> AdminClient {
    let sec = Security::load(&certs_dir(), who).unwrap();
    AdminClient::with_security(std::sync::Arc::new(sec))
}

/// The value of counter or gauge `name` in node `admin`'s `/metrics`
/// (a fraction cut to its whole part).
pub async fn counter(admin: std::net::SocketAddr, name: &str) -> u64 {
    let (_, text) = client::get_text(admin, "/metrics").await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no counter {name} in /metrics:\n{text}"))
}

/// Cuts every connection of one node after another, `times` in all, `gap`
/// apart (`POST /debug/cut`): each link then reconnects and resends.
pub async fn cut_links(config: &ClusterConfig, times: usize, gap: Duration) {
    for i in 0..times {
        let node = &config.nodes[i % config.nodes.len()];
        let (status, _): (_, Value) = client::post_json(node.admin, "/debug/cut", &())
            .await
            .unwrap();
        assert!(status.is_success(), "cutting {}'s links: {status}", node.id);
        tokio::time::sleep(gap).await;
    }
}

/// Runs `promtool check metrics` (Debian's prometheus package; `scripts/test`
/// installs it) on a `/metrics` text and fails on any complaint. Without
/// promtool it says SKIPPED, unless `CAIRN_REQUIRE_PROMTOOL` is set (as the
/// test command sets it).
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CAIRN_REQUIRE_PROMTOOL").is_none() => {
            eprintln!(
                "SKIPPED: promtool check metrics ({e}); install Debian's prometheus package or run scripts/test"
            );
            return;
        }
        Err(e) => panic!("promtool is required (CAIRN_REQUIRE_PROMTOOL) but cannot run: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics failed ({}):\n{}{}\n--- the metrics:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `promtool check rules` on `exprs` (as recording rules), so each is
/// valid PromQL; SKIPPED without promtool as [`promtool_check`] is.
pub fn promtool_check_exprs(exprs: &[String]) {
    let mut yaml = String::from("groups:\n  - name: grafana\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        // JSON strings are YAML strings.
        yaml += &format!(
            "      - record: cairn:grafana_panel_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        );
    }
    let path = std::env::temp_dir().join(format!("cairn-grafana-{}.rules.yml", std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    let out = match std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
    {
        Ok(o) => o,
        Err(e) if std::env::var_os("CAIRN_REQUIRE_PROMTOOL").is_none() => {
            eprintln!("SKIPPED: promtool check rules ({e})");
            return;
        }
        Err(e) => panic!("promtool is required (CAIRN_REQUIRE_PROMTOOL) but cannot run: {e}"),
    };
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An admin client presenting node `id`'s certificate: for tests that
/// speak as a node does (orders, reports), forged or real.
pub fn as_node(id: &str) -> AdminClient {
    client_as(Some(&Identity::node(id)))
}

/// Sends `bytes` to a node's peer port over TLS, presenting `who`'s
/// certificate from `certs` (none when `None`), and returns what came
/// back before the node closed the connection (6 s at most). `Err` says
/// why the TLS handshake failed.
pub async fn send_tls(
    addr: &str,
    certs: &Path,
    who: Option<&Identity>,
    bytes: &[u8],
) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sec = Security::load(certs, who).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("cairn.node").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(sec.client_config())
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(bytes).await.map_err(|e| e.to_string())?;
    let _ = tls.flush().await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), tls.read_to_end(&mut answer)).await;
    match read {
        // TLS 1.3 checks the client's certificate after the handshake: a
        // refusal arrives as an alert on the first read.
        Ok(Err(e)) if answer.is_empty() => Err(e.to_string()),
        _ => Ok(answer),
    }
}

/// The admin API as the operator calls it, for the tests.
pub mod client {
    use std::net::SocketAddr;

    use cairn_runtime::Result;
    use hyper::StatusCode;
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    pub async fn get_json<T: DeserializeOwned>(
        addr: SocketAddr,
        path: &str,
    ) -> Result<(StatusCode, T)> {
        super::operator().get_json(addr, path).await
    }

    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        addr: SocketAddr,
        path: &str,
        body: &B,
    ) -> Result<(StatusCode, T)> {
        super::operator().post_json(addr, path, body).await
    }

    pub async fn get_text(addr: SocketAddr, path: &str) -> Result<(StatusCode, String)> {
        super::operator().get_text(addr, path).await
    }
}

/// Runs the `cairn` binary with `args` and collects what it printed.
pub fn cairn(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .output()
        .unwrap()
}

/// Printed bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh S3 URL named `name` under the test bucket that scripts/test
/// starts, or `None` (the test then says SKIPPED) when it is not set;
/// under CI it must be.
pub fn s3_url(name: &str) -> Option<String> {
    let Ok(base) = std::env::var("CAIRN_S3_TEST_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "CAIRN_S3_TEST_URL is unset under CI: scripts/test must start the S3 server"
        );
        eprintln!("SKIPPED: CAIRN_S3_TEST_URL is not set (scripts/test sets it)");
        return None;
    };
    Some(format!(
        "{}/{name}-{}",
        base.trim_end_matches('/'),
        std::process::id()
    ))
}

/// Starts `cairn cluster --config path`, killed when dropped.
pub fn spawn_cairn_cluster(path: &Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["cluster", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Sends `sig` (`-9`, `-INT`, `-STOP`, `-CONT`) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid} failed");
}

/// Waits for node `id` to exit (within `limit`), then starts it again, as
/// `cairn cluster` would.
pub async fn restart_after_exit(c: &mut TestCluster, id: &str, limit: Duration) {
    let (exited, _) = tokio::time::timeout(limit, c.supervisor().next_exit())
        .await
        .unwrap_or_else(|_| panic!("{id} did not exit within {limit:?}"));
    assert_eq!(exited, id);
    c.supervisor().restart(id).unwrap();
}

/// Waits (at most 30 s) until the coordinator has rolled the cluster back
/// at least once; returns the epoch it began.
pub async fn wait_for_recovery(c: &TestCluster) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Done when the coordinator has recorded a finished rollback.
        if let Ok((_, v)) = client::get_json::<Value>(c.config.nodes[0].admin, "/status").await {
            if let Some(epoch) = v["last_rollback"]["epoch"].as_u64() {
                return epoch;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster did not recover within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last rollback the coordinator made: (snapshot, epoch).
pub async fn last_rollback(c: &TestCluster) -> (u64, u64) {
    let (_, v) = client::get_json::<Value>(c.config.coordinator_admin(), "/status")
        .await
        .unwrap();
    let r = &v["last_rollback"];
    (
        r["snapshot"].as_u64().expect("rolled back to a snapshot"),
        r["epoch"].as_u64().unwrap(),
    )
}

/// Cluster tests run one at a time: each loads both cores.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct TestCluster {
    pub dir: PathBuf,
    pub path: PathBuf,
    pub config: ClusterConfig,
    sup: Option<Supervisor>,
    /// Leave the folder (store, traces) in place after the checks.
    pub keep_files: bool,
}

pub fn free_ports(n: usize) -> Vec<u16> {
    cairn_runtime::ports::free_loopback_ports(n).unwrap()
}

pub const BANK: &str = "name = \"bank\"\ninitial_balance = 1000";

pub fn write_config(
    name: &str,
    nodes: usize,
    channels: &str,
    interval_ms: u64,
) -> (PathBuf, PathBuf) {
    write_app_config(name, nodes, channels, interval_ms, BANK)
}

pub fn write_app_config(
    name: &str,
    nodes: usize,
    channels: &str,
    interval_ms: u64,
    app: &str,
) -> (PathBuf, PathBuf) {
    write_full_config(
        name,
        nodes,
        channels,
        interval_ms,
        app,
        "",
        "timeout_ms = 10000",
    )
}

/// A config with `top` added to the top-level keys and `snapshots` to the
/// `[snapshots]` table, its nodes on 127.0.0.1 with free ports.
pub fn write_full_config(
    name: &str,
    nodes: usize,
    channels: &str,
    interval_ms: u64,
    app: &str,
    top: &str,
    snapshots: &str,
) -> (PathBuf, PathBuf) {
    let ports = free_ports(2 * nodes);
    let hosts: Vec<(String, String)> = (0..nodes)
        .map(|i| {
            (
                format!("127.0.0.1:{}", ports[2 * i]),
                format!("127.0.0.1:{}", ports[2 * i + 1]),
            )
        })
        .collect();
    write_config_at(name, &hosts, channels, interval_ms, app, top, snapshots)
}

/// As [`write_full_config`], node `i` listening at `hosts[i]` (its peer
/// address, its admin address).
pub fn write_config_at(
    name: &str,
    hosts: &[(String, String)],
    channels: &str,
    interval_ms: u64,
    app: &str,
    top: &str,
    snapshots: &str,
) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("cairn-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Every cluster runs secure unless the test is about running insecure.
    let tls = if top.contains("insecure") {
        String::new()
    } else {
        format!("tls = {{ certs_dir = {:?} }}\n", certs_dir())
    };
    let mut toml = format!(
        "cluster = \"{name}\"\n{tls}{}channels = {channels}\ntrace_dir = {:?}\ndata_dir = {:?}\n{top}\n\n[debug]\nallow_cut = true\n\n[app]\n{app}\n\n[snapshots]\ninterval_ms = {interval_ms}\n{}{}{snapshots}\n",
        // n1 coordinates unless the test names the candidates.
        if top.contains("coordinator") {
            ""
        } else {
            "coordinator = \"n1\"\n"
        },
        dir.join("traces"),
        dir.join("data"),
        // Tests read every snapshot back, so the coordinator keeps them all
        // unless the test says otherwise.
        if snapshots.contains("keep") {
            ""
        } else {
            "keep = 10000\n"
        },
        // And the store too: channel states are served from there.
        if snapshots.contains("retain") {
            ""
        } else {
            "retain = 10000\n"
        },
    );
    for (i, (address, admin)) in hosts.iter().enumerate() {
        toml += &format!(
            "\n[[nodes]]\nid = \"n{}\"\naddress = \"{address}\"\nadmin = \"{admin}\"\n",
            i + 1,
        );
    }
    let path = dir.join("cluster.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

impl TestCluster {
    pub async fn start(name: &str, nodes: usize, channels: &str, interval_ms: u64) -> Self {
        Self::start_app(name, nodes, channels, interval_ms, BANK).await
    }

    pub async fn start_app(
        name: &str,
        nodes: usize,
        channels: &str,
        interval_ms: u64,
        app: &str,
    ) -> Self {
        Self::start_with_env(name, nodes, channels, interval_ms, app, &[]).await
    }

    /// A cluster from a config written by [`write_full_config`].
    pub async fn start_from(dir: PathBuf, path: PathBuf) -> Self {
        Self::launch(dir, path, &[]).await
    }

    /// Starts every node of the config at `path` with `env` added, and
    /// waits until the cluster is ready. `CAIRN_TEST_LOG` sets the nodes'
    /// log filter when debugging a test.
    async fn launch(dir: PathBuf, path: PathBuf, env: &[(&str, &str)]) -> Self {
        Self::launch_logged(dir, path, env, None).await
    }

    /// A cluster from a config written by [`write_full_config`], each node
    /// logging to `<dir>/logs/<id>.log` (see [`TestCluster::log`]).
    pub async fn start_logged(dir: PathBuf, path: PathBuf) -> Self {
        let logs = dir.join("logs");
        Self::launch_logged(dir, path, &[], Some(logs)).await
    }

    /// What node `id` has logged so far (with [`TestCluster::start_logged`]).
    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{id}.log"))).unwrap_or_default()
    }

    /// A cluster from a config written by [`write_config_at`] with the
    /// lab's addresses, node `nI` on lab host `I`, each logging to
    /// `<dir>/logs/<id>.log`. `CAIRN_LAB_EXE` names another `cairn` binary
    /// to run (an older build, for before-and-after figures).
    pub async fn start_in_lab(dir: PathBuf, path: PathBuf, lab: &lab::Lab) -> Self {
        let logs = dir.join("logs");
        let namespaces: Vec<String> = (1..=lab.hosts()).map(|h| lab.netns(h)).collect();
        let wrap = move |id: &str| {
            let host: usize = id.trim_start_matches('n').parse().unwrap();
            ["ip", "netns", "exec", namespaces[host - 1].as_str()]
                .map(String::from)
                .to_vec()
        };
        let exe = std::env::var_os("CAIRN_LAB_EXE").map(PathBuf::from);
        Self::launch_with(dir, path, &[], Some(logs), &wrap, exe.as_deref()).await
    }

    async fn launch_logged(
        dir: PathBuf,
        path: PathBuf,
        env: &[(&str, &str)],
        logs: Option<PathBuf>,
    ) -> Self {
        Self::launch_with(dir, path, env, logs, &|_| Vec::new(), None).await
    }

    async fn launch_with(
        dir: PathBuf,
        path: PathBuf,
        env: &[(&str, &str)],
        logs: Option<PathBuf>,
        wrap: &dyn Fn(&str) -> Vec<String>,
        exe: Option<&Path>,
    ) -> Self {
        let config = ClusterConfig::load(&path).unwrap();
        let exe = exe.unwrap_or(Path::new(env!("CARGO_BIN_EXE_cairn")));
        let log = std::env::var("CAIRN_TEST_LOG").unwrap_or_else(|_| "warn".into());
        let mut all_env = vec![("RUST_LOG", log.as_str())];
        all_env.extend_from_slice(env);
        let mut sup =
            Supervisor::spawn_wrapped(exe, &path, &config, &all_env, logs.as_deref(), wrap)
                .unwrap();
        sup.wait_ready(&config, &operator(), Duration::from_secs(30))
            .await
            .unwrap();
        TestCluster {
            dir,
            path,
            config,
            sup: Some(sup),
            keep_files: false,
        }
    }

    /// As [`TestCluster::start_app`], with extra environment variables for every node.
    pub async fn start_with_env(
        name: &str,
        nodes: usize,
        channels: &str,
        interval_ms: u64,
        app: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let (dir, path) = write_app_config(name, nodes, channels, interval_ms, app);
        Self::launch(dir, path, env).await
    }

    pub fn coordinator(&self) -> std::net::SocketAddr {
        self.config.coordinator_admin()
    }

    /// Every complete snapshot, fetched from the coordinator in the shared
    /// JSON shape, but those retention removed from the store (a test that
    /// sets `retain` gets only what the store still holds).
    pub async fn snapshots(&self) -> Vec<SnapshotDoc<Value, Value>> {
        let (_, list): (_, Vec<Value>) = client::get_json(self.coordinator(), "/snapshots")
            .await
            .unwrap();
        let mut out = Vec::new();
        for s in list {
            assert_ne!(s["status"], "failed", "a snapshot failed: {s}");
            if s["status"] == "complete" && s["removed"] != true {
                let (status, doc): (_, Value) =
                    client::get_json(self.coordinator(), &format!("/snapshots/{}", s["id"]))
                        .await
                        .unwrap();
                // Removed between the list and the read.
                if status.as_u16() == 410 {
                    continue;
                }
                assert!(status.is_success(), "snapshot {}: {doc}", s["id"]);
                out.push(serde_json::from_value(doc).unwrap());
            }
        }
        out
    }

    /// The complete snapshots the coordinator still holds whose summary
    /// passes `keep`, in the shared JSON shape (failed ones are skipped).
    pub async fn snapshots_where(
        &self,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<SnapshotDoc<Value, Value>> {
        self.snapshots_from(self.coordinator(), keep).await
    }

    /// As [`TestCluster::snapshots_where`], from the node whose admin API is
    /// at `admin` (the coordinator of a later term, say).
    pub async fn snapshots_from(
        &self,
        admin: std::net::SocketAddr,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<SnapshotDoc<Value, Value>> {
        let (_, list): (_, Vec<Value>) = client::get_json(admin, "/snapshots").await.unwrap();
        let mut out = Vec::new();
        for s in list.iter().filter(|s| s["status"] == "complete" && keep(s)) {
            let (status, doc): (_, Value) =
                client::get_json(admin, &format!("/snapshots/{}", s["id"]))
                    .await
                    .unwrap();
            // One may leave the coordinator's memory between the list and the read.
            if status.is_success() {
                out.push(serde_json::from_value(doc).unwrap());
            }
        }
        out
    }

    /// Starts the same cluster again (same config, same store) after [`TestCluster::stop`].
    pub async fn restart(&mut self) {
        let exe = Path::new(env!("CARGO_BIN_EXE_cairn"));
        let mut sup =
            Supervisor::spawn(exe, &self.path, &self.config, &[("RUST_LOG", "warn")]).unwrap();
        sup.wait_ready(&self.config, &operator(), Duration::from_secs(30))
            .await
            .unwrap();
        self.sup = Some(sup);
    }

    /// The supervisor of the cluster's node processes.
    pub fn supervisor(&mut self) -> &mut Supervisor {
        self.sup.as_mut().expect("the cluster is running")
    }

    /// Stops every node and requires each to stop cleanly.
    pub async fn stop(&mut self) {
        if let Some(sup) = self.sup.take() {
            for (id, status) in sup.stop(Duration::from_secs(10)).await {
                assert!(
                    status.is_some_and(|s| s.success()),
                    "node {id} did not stop cleanly: {status:?}"
                );
            }
        }
    }

    /// Stops the cluster, then checks every snapshot: the money (or tokens)
    /// conserved exactly, and the oracle satisfied by the merged traces.
    pub async fn stop_and_check<D>(self, model: &D, docs: Vec<SnapshotDoc<Value, Value>>) -> usize
    where
        D: Model,
        D::Message: DeserializeOwned,
        D::State: DeserializeOwned + serde::Serialize,
    {
        self.stop_and_check_with(model, docs, 1000).await
    }

    /// As [`stop_and_check`], requiring at least `min_receives` messages received.
    pub async fn stop_and_check_with<D>(
        mut self,
        model: &D,
        docs: Vec<SnapshotDoc<Value, Value>>,
        min_receives: usize,
    ) -> usize
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
        let run = oracle_on_epoch(model, &self.config, &self.dir, 0, &snaps);
        // Built-in apps that conserve an amount must conserve it exactly.
        let initial: Vec<Value> = run
            .initial
            .iter()
            .map(|s| serde_json::to_value(s).unwrap())
            .collect();
        let total: u64 = initial
            .iter()
            .filter_map(|v| v.as_object()?.values().next()?.as_u64())
            .sum();
        for d in &docs {
            if let Some(totals) = cairn_apps::conserved_totals(&self.config.app.name, d) {
                let (held, flying) = totals.unwrap();
                assert_eq!(
                    held + flying,
                    total,
                    "snapshot {} does not conserve {total}",
                    d.id
                );
            }
        }
        let receives = run
            .trace
            .iter()
            .filter(|e| matches!(e.event, cairn_core::trace::Event::Receive { .. }))
            .count();
        assert!(
            receives >= min_receives,
            "only {receives} messages were received: the load did not run"
        );
        if !self.keep_files {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        snaps.len()
    }
}

/// Invariant: a test leaves no data behind unless it failed. Runs share a
/// machine's temporary folder, and a few gigabytes of traces left by passing
/// tests once filled the disk under a later run's snapshot store. A failed
/// test keeps its folder for a post-mortem and says where it is.
impl Drop for TestCluster {
    fn drop(&mut self) {
        // Killed first, so that no node writes into the folder as it goes.
        drop(self.sup.take());
        if std::thread::panicking() {
            eprintln!("the cluster's files are kept in {}", self.dir.display());
        } else if !self.keep_files {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Loads the run of `epoch` from a stopped cluster's traces in `dir` and
/// requires the oracle to accept every snapshot in `snaps`. Returns the run.
pub fn oracle_on_epoch<D>(
    model: &D,
    config: &ClusterConfig,
    dir: &Path,
    epoch: u64,
    snaps: &[GlobalSnapshot<D::Message, D::State>],
) -> cairn_runtime::tracefile::LoadedRun<D::Message, D::State>
where
    D: Model,
    D::Message: DeserializeOwned,
    D::State: DeserializeOwned,
{
    let run = cairn_runtime::tracefile::load_epoch::<D::Message, D::State>(
        &config.topology,
        &dir.join("traces"),
        epoch,
    )
    .unwrap();
    let violations = oracle::check(
        model,
        &Run {
            topology: &config.topology,
            trace: &run.trace,
            initial: &run.initial,
            initial_channels: &run.initial_channels,
            final_states: &run.last,
        },
        snaps,
    );
    for v in violations.iter().take(10) {
        eprintln!("epoch {epoch} violation: {v}");
    }
    assert!(
        violations.is_empty(),
        "epoch {epoch}: {} violations (the first ones are printed above)",
        violations.len()
    );
    run
}
