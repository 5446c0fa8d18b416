//! `cairn node`, `cairn cluster`, `cairn snapshot` and `cairn status`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_apps::bank::Bank;
use cairn_apps::diffusing::Diffusing;
use cairn_apps::locks::Locks;
use cairn_apps::protocol::ProtocolProcess;
use cairn_apps::ring::Ring;
use cairn_apps::token::TokenProcess;
use cairn_runtime::client::AdminClient;
use cairn_runtime::client::Method;
use cairn_runtime::cluster::Supervisor;
use cairn_runtime::{ClusterConfig, IdAnswer, run_node, run_raw_node};
use serde_json::Value;
use tokio::sync::watch;

/// How an operator's command proves who it is to a secure cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// The certificates folder (default: the config's `[tls] certs_dir`,
    /// or `CAIRN_CERTS_DIR`).
    #[arg(long)]
    pub certs_dir: Option<std::path::PathBuf>,
    /// Present the client certificate `client.<USER>.crt`.
    #[arg(long, default_value = "root")]
    pub user: String,
    /// Send the bearer token in this file (used alone when the user has no
    /// client certificate; the read token can only read).
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
}

impl AuthArgs {
    /// The admin client these credentials make for `config`'s cluster.
    ///
    /// # Errors
    /// No certificates and not insecure, or a file is unreadable.
    pub fn client(&self, config: &ClusterConfig) -> Result<AdminClient> {
        Ok(AdminClient::for_operator(
            config,
            self.certs_dir.as_deref(),
            &self.user,
            self.token_file.as_deref(),
        )?)
    }
}

/// The operator's client for a cluster this process set up itself (the
/// demo, the benchmark): `client.root` from the config's certificates.
///
/// # Errors
/// As [`AuthArgs::client`].
pub fn operator(config: &ClusterConfig) -> Result<AdminClient> {
    Ok(AdminClient::for_operator(config, None, "root", None)?)
}

/// The applications a node can run.
pub const APPS: &[&str] = &["bank", "token", "diffusing", "locks", "ring"];

pub fn load(path: &Path) -> Result<ClusterConfig> {
    let config = ClusterConfig::load(path)?;
    if !APPS.contains(&config.app.name.as_str()) {
        bail!(
            "{}: app.name: {:?} is not a built-in application (choose from {APPS:?})",
            path.display(),
            config.app.name
        );
    }
    Ok(config)
}

/// Runs one node until Ctrl-C, SIGTERM or (when asked) the end of stdin.
pub async fn node(
    mut config: ClusterConfig,
    id: &str,
    trace_dir: Option<&Path>,
    stop_on_eof: bool,
    raw: bool,
) -> Result<()> {
    if let Some(dir) = trace_dir {
        config.trace_dir = Some(dir.to_path_buf());
    }
    let me = config.node(id)?;
    let config = Arc::new(config);
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop(stop_on_eof).await;
        let _ = stop.send(true);
    });
    // The raw baseline runs the same application with none of Cairn.
    macro_rules! run_as {
        ($app:ty) => {
            if raw {
                run_raw_node::<$app>(config, me, shutdown).await?
            } else {
                run_node::<$app>(config, me, shutdown).await?
            }
        };
    }
    match config.app.name.as_str() {
        "bank" => run_as!(Bank),
        "token" => run_as!(TokenProcess),
        "diffusing" => run_as!(ProtocolProcess<Diffusing>),
        "locks" => run_as!(ProtocolProcess<Locks>),
        "ring" => run_as!(ProtocolProcess<Ring>),
        other => bail!("unknown application {other:?}"),
    }
    Ok(())
}

/// Reads a recorded message of application `app` as JSON (see
/// `cairn_store::channel_state`). For an application this binary does not
/// know (an embedded one), each message shows as its bytes in hex.
pub fn message_decoder(app: &str) -> cairn_store::Decoder {
    use cairn_core::Process;
    use cairn_store::message_json;
    match app {
        "bank" => message_json::<<Bank as Process>::Message>,
        "token" => message_json::<<TokenProcess as Process>::Message>,
        "diffusing" => message_json::<<ProtocolProcess<Diffusing> as Process>::Message>,
        "locks" => message_json::<<ProtocolProcess<Locks> as Process>::Message>,
        "ring" => message_json::<<ProtocolProcess<Ring> as Process>::Message>,
        _ => cairn_store::undecoded,
    }
}

async fn wait_for_stop(stop_on_eof: bool) {
    let eof = async {
        if stop_on_eof {
            let mut buf = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            use tokio::io::AsyncReadExt;
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        } else {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
        _ = eof => {}
    }
}

/// Starts every node as a child process and supervises them until Ctrl-C.
pub async fn cluster(
    config_path: &Path,
    config: &ClusterConfig,
    client: &AdminClient,
) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    let mut sup = Supervisor::spawn(&exe, config_path, config, &[])?;
    if let Err(e) = sup
        .wait_ready(config, client, Duration::from_secs(20))
        .await
    {
        sup.stop(Duration::from_secs(3)).await;
        return Err(e.into());
    }
    for n in &config.nodes {
        eprintln!(
            "node {} up: peers at {}, admin at {}",
            n.id,
            n.address,
            client.url(n.admin, "")
        );
    }
    eprintln!("cluster {:?} running; Ctrl-C stops it", config.cluster);
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(e) = sup
        .keep_running(ctrl_c, &mut |line| eprintln!("{line}"))
        .await
    {
        sup.stop(Duration::from_secs(5)).await;
        return Err(e.into());
    }
    let stopped = sup.stop(Duration::from_secs(5)).await;
    for (id, status) in stopped {
        if status.is_none() {
            eprintln!("node {id} did not stop in time and was killed");
        }
    }
    eprintln!("cluster stopped");
    Ok(())
}

/// How long `cairn status` (and every command's search for the
/// coordinator) waits for a node: all are asked at once, so this bounds the
/// whole question.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// How long `cairn restore` waits for the coordinator's rollback: it orders
/// every node in turn with the admin client's own timeout.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(20);

/// Every node's `/status`, asked all at once (an error for a node that did
/// not answer within [`STATUS_TIMEOUT`]), in config order.
async fn statuses(config: &ClusterConfig, client: &AdminClient) -> Vec<Result<Value, String>> {
    let mut asks = tokio::task::JoinSet::new();
    for (i, n) in config.nodes.iter().enumerate() {
        let admin = n.admin;
        let client = client.clone();
        asks.spawn(async move {
            let answer = client
                .get_json_within::<Value>(STATUS_TIMEOUT, admin, "/status")
                .await;
            (i, answer.map(|(_, v)| v).map_err(|e| e.to_string()))
        });
    }
    let mut out: Vec<Result<Value, String>> = vec![Err(String::new()); config.nodes.len()];
    while let Some(Ok((i, v))) = asks.join_next().await {
        out[i] = v;
    }
    out
}

/// The current coordinator, as the reachable node that knows the highest
/// term says; the config's first candidate if no node answers.
pub async fn find_coordinator(
    config: &ClusterConfig,
    client: &AdminClient,
) -> cairn_core::ProcessId {
    statuses(config, client)
        .await
        .into_iter()
        .flatten()
        .max_by_key(|v| v["term"].as_u64().unwrap_or(0))
        .and_then(|v| config.topology.process(v["coordinator"].as_str()?))
        .unwrap_or(config.coordinator)
}

/// Asks the cluster for a snapshot, shows progress, prints the snapshot JSON.
pub async fn snapshot(
    config: &ClusterConfig,
    client: &AdminClient,
    at: Option<&str>,
) -> Result<()> {
    let coordinator = find_coordinator(config, client).await;
    let node = match at {
        Some(id) => config.node(id)?,
        None => coordinator,
    };
    let admin = config.nodes[node.index()].admin;
    let (status, answer): (_, Value) = client
        .post_json(admin, "/snapshots", &serde_json::json!({}))
        .await
        .with_context(|| {
            format!(
                "node {} did not answer: is the cluster running? (`cairn status --config FILE` shows which nodes answer; `cairn cluster --config FILE` starts them)",
                config.nodes[node.index()].id
            )
        })?;
    if !status.is_success() {
        bail!(
            "node {} refused to start a snapshot: {status} {answer}",
            config.nodes[node.index()].id
        );
    }
    let id = serde_json::from_value::<IdAnswer>(answer)?.id;
    let coordinator = config.nodes[coordinator.index()].admin;
    let started = Instant::now();
    let deadline = started + config.snapshots.timeout + Duration::from_secs(2);
    let tty = std::io::stderr().is_terminal();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (status, body): (_, Value) = client
            .get_json_within(
                left.max(Duration::from_millis(100)),
                coordinator,
                &format!("/snapshots/{}", id.0),
            )
            .await?;
        match status.as_u16() {
            200 => {
                if tty {
                    eprint!("\r\x1b[K");
                }
                // The coordinator's own figures, from the snapshot's start;
                // this command's wait also counts its requests and polling.
                let (_, list): (_, Value) = client
                    .get_json_within(Duration::from_secs(1), coordinator, "/snapshots")
                    .await
                    .unwrap_or_default();
                let summary = list
                    .as_array()
                    .and_then(|l| l.iter().find(|s| s["id"] == id.0))
                    .cloned()
                    .unwrap_or_default();
                eprintln!(
                    "snapshot {id}: {}, {} (the command waited {:.1} ms)",
                    summary["duration_ms"]
                        .as_f64()
                        .map_or("complete".into(), |d| format!(
                            "complete {d:.1} ms after its start"
                        )),
                    summary["durable_ms"]
                        .as_f64()
                        .map_or("not yet durable".into(), |d| format!(
                            "durable after {d:.1} ms"
                        )),
                    started.elapsed().as_secs_f64() * 1e3
                );
                println!("{}", serde_json::to_string_pretty(&body)?);
                return Ok(());
            }
            202 => {
                let procs = body["missing_processes"].as_array().map_or(0, Vec::len);
                let chans = body["missing_channels"].as_array().map_or(0, Vec::len);
                let line = format!(
                    "snapshot {id}: waiting for {procs} processes and {chans} channels ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                if tty {
                    eprint!("\r\x1b[K{line}");
                    let _ = std::io::stderr().flush();
                }
            }
            500 => bail!(
                "snapshot {id} failed: {}",
                cairn_runtime::client::failure_reason(&body)
            ),
            _ => bail!("snapshot {id}: unexpected answer {status}: {body}"),
        }
        if Instant::now() > deadline {
            bail!("snapshot {id} did not complete within the configured timeout");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints every node's status and the recent snapshots.
pub async fn status(config: &ClusterConfig, client: &AdminClient, json: bool) -> Result<bool> {
    let mut all = Vec::new();
    let mut healthy = true;
    for (n, answer) in config.nodes.iter().zip(statuses(config, client).await) {
        match answer {
            Ok(v) => all.push(v),
            Err(e) => {
                healthy = false;
                all.push(serde_json::json!({ "node": n.id, "error": e }));
            }
        }
    }
    if all.iter().any(|v| v["needs_restore"] == true) {
        healthy = false;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(healthy);
    }
    let mut t = crate::present::table(
        &[
            "node", "up for", "epoch", "sent", "received", "channels", "",
        ],
        &["up for", "epoch", "sent", "received"],
    );
    for v in &all {
        let node = v["node"].as_str().unwrap_or("?").to_string();
        if let Some(e) = v.get("error") {
            t.add_row(vec![
                node,
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("UNREACHABLE: {}", e.as_str().unwrap_or("")),
            ]);
            continue;
        }
        let mut notes = Vec::new();
        if v["needs_restore"] == true {
            healthy = false;
            notes.push("NEEDS RESTORE: it restarted and lost its state; run `cairn restore`");
        }
        if v["insecure"] == true {
            notes.push("INSECURE: no TLS, anyone who reaches it may connect");
        }
        t.add_row(vec![
            node,
            crate::present::since(Duration::from_millis(v["uptime_ms"].as_u64().unwrap_or(0))),
            v["epoch"].to_string(),
            v["messages_sent"].to_string(),
            v["messages_received"].to_string(),
            format!(
                "in {} / out {}",
                v["incoming"].as_array().map_or(0, Vec::len),
                v["outgoing"].as_array().map_or(0, Vec::len)
            ),
            notes.join("; "),
        ]);
    }
    println!("{t}");
    if let Some(lead) = all
        .iter()
        .filter(|v| v["leading"] == true)
        .max_by_key(|v| v["term"].as_u64().unwrap_or(0))
    {
        println!(
            "\ncoordinator {} in term {}",
            lead["node"].as_str().unwrap_or("?"),
            lead["term"]
        );
    } else {
        healthy = false;
        println!("\nno node is coordinating");
    }
    if let Some(away) = all
        .iter()
        .filter(|v| v["leading"] == true)
        .max_by_key(|v| v["term"].as_u64().unwrap_or(0))
        .and_then(|v| v["unreachable"].as_object())
        .filter(|away| !away.is_empty())
    {
        healthy = false;
        for (node, v) in away {
            println!(
                "{node} is unreachable from the coordinator: silent for {:.1} s (snapshots fail until it answers; see README, \"Partitions\")",
                v["silent_ms"].as_f64().unwrap_or(0.0) / 1e3
            );
        }
    }
    if let Some(recent) = all
        .iter()
        .filter(|v| v["leading"] == true)
        .max_by_key(|v| v["term"].as_u64().unwrap_or(0))
        .and_then(|v| v["recent_snapshots"].as_array())
    {
        println!("recent snapshots:");
        let mut t = crate::present::table(
            &[
                "snapshot",
                "status",
                "to complete",
                "to durable",
                "started by",
                "started",
            ],
            &["snapshot", "to complete", "to durable"],
        );
        let mut reasons = Vec::new();
        for s in recent {
            let ms = |key: &str| {
                s[key]
                    .as_f64()
                    .map_or("-".to_string(), |d| format!("{d:.1} ms"))
            };
            t.add_row(vec![
                s["id"].to_string(),
                s["status"].as_str().unwrap_or("?").to_string(),
                ms("duration_ms"),
                ms("durable_ms"),
                s["initiator"].as_str().unwrap_or("?").to_string(),
                crate::present::when(s["started_unix_ms"].as_u64().unwrap_or(0)),
            ]);
            if let Some(why) = s["reason"].as_str() {
                reasons.push(format!("  snapshot {} failed: {why}", s["id"]));
            }
        }
        println!("{t}");
        for r in reasons {
            println!("{r}");
        }
    }
    Ok(healthy)
}

/// Rolls the running cluster back to a snapshot through the coordinator.
pub async fn restore(
    config: &ClusterConfig,
    client: &AdminClient,
    snapshot: Option<u64>,
) -> Result<()> {
    let req = cairn_runtime::RollbackRequest { snapshot };
    let coordinator = config.nodes[find_coordinator(config, client).await.index()].admin;
    let body = serde_json::to_vec(&req)?;
    // What is being restored, and how much, while every node loads its part.
    let size = match (snapshot, cairn_store::Store::open(&config.store)) {
        (Some(id), Ok(store)) => tokio::time::timeout(Duration::from_secs(1), store.manifest(id))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|m| m.parts.iter().map(|p| p.bytes).sum::<u64>()),
        _ => None,
    };
    let spinner = crate::present::spinner(&match (snapshot, size) {
        (Some(id), Some(b)) => format!(
            "rolling the cluster back to snapshot {id} ({} to load)",
            crate::present::bytes(b)
        ),
        (Some(id), None) => format!("rolling the cluster back to snapshot {id}"),
        (None, _) => "rolling the cluster back to its newest good snapshot".into(),
    });
    let answer = client
        .request_within(
            ROLLBACK_TIMEOUT,
            coordinator,
            Method::POST,
            "/rollback",
            Some(body),
        )
        .await;
    spinner.finish_and_clear();
    let (status, body): (_, Value) = match answer {
        Ok((status, body)) => (
            status,
            serde_json::from_slice(&body).context("the rollback's answer is not JSON")?,
        ),
        Err(e) => {
            // A stopped cluster: record the choice; the coordinator rolls back to it at start-up.
            let Some(id) = snapshot else {
                bail!(
                    "the cluster is not running ({e}); a stopped cluster resumes from its newest good snapshot when started, or name one with --snapshot"
                );
            };
            let store = cairn_store::Store::open(&config.store)?;
            store
                .set_restore_point(id)
                .await
                .with_context(|| format!("snapshot {id} in {}", config.store))?;
            eprintln!("the cluster is not running; it will start from snapshot {id}");
            println!("{}", serde_json::json!({ "snapshot": id, "pending": true }));
            return Ok(());
        }
    };
    if !status.is_success() {
        bail!(
            "rollback refused: {}",
            body["error"].as_str().unwrap_or(&body.to_string())
        );
    }
    eprintln!(
        "cluster rolled back to snapshot {} (epoch {})",
        body["snapshot"], body["epoch"]
    );
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}
