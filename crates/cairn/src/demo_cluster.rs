//! `cairn demo`: a local 5-node bank cluster under full load, snapshotted
//! every 200 ms for a few seconds; every snapshot must hold exactly the money
//! the bank started with.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_core::SnapshotDoc;
use cairn_runtime::ClusterConfig;
use cairn_runtime::cluster::Supervisor;
use serde_json::Value;

const NODES: usize = 5;
const BALANCE: u64 = 1000;

/// Free loopback ports (see [`cairn_runtime::ports`]).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    cairn_runtime::ports::free_loopback_ports(n).context("cannot find free loopback ports")
}

/// A cluster config for `n` bank nodes on loopback.
pub fn bank_config(n: usize, interval_ms: u64, extra: &str) -> Result<String> {
    let mut toml = format!(
        "cluster = \"demo\"\ncoordinator = \"n1\"\nchannels = \"complete\"\n{extra}\n[app]\nname = \"bank\"\ninitial_balance = {BALANCE}\n\n[snapshots]\ninterval_ms = {interval_ms}\ntimeout_ms = 5000\n"
    );
    toml.push_str(&loopback_nodes(n)?);
    Ok(toml)
}

/// The `[[nodes]]` tables of `n` nodes `n1`, `n2`, ... on free loopback ports.
pub fn loopback_nodes(n: usize) -> Result<String> {
    let ports = free_ports(2 * n)?;
    Ok((0..n)
        .map(|i| {
            format!(
                "\n[[nodes]]\nid = \"n{}\"\naddress = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n",
                i + 1,
                ports[2 * i],
                ports[2 * i + 1]
            )
        })
        .collect())
}

pub async fn run(seconds: u64, json: bool) -> Result<bool> {
    // With --json the commentary goes to stderr and the result to stdout.
    let say = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let mut rows: Vec<Value> = Vec::new();
    let dir: PathBuf = std::env::temp_dir().join(format!("cairn-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("cluster.toml");
    // The demo runs secure, as every cluster should: its own CA and certificates.
    let certs = dir.join("certs");
    let ids: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
    cairn_runtime::tls::certs::ensure_cluster(&certs, &ids)?;
    std::fs::write(
        &path,
        bank_config(
            NODES,
            200,
            &format!(
                "data_dir = {:?}\ntls = {{ certs_dir = {:?} }}",
                dir.join("data"),
                certs
            ),
        )?,
    )?;
    let config = ClusterConfig::load(&path)?;
    let client = crate::cluster_cmds::operator(&config)?;
    let exe = std::env::current_exe().context("cannot find the cairn executable")?;
    say(format!(
        "Starting {NODES} bank nodes on loopback (config {}), {BALANCE} each, transfers at full speed.",
        path.display()
    ));
    let mut sup = Supervisor::spawn(&exe, &path, &config, &[("RUST_LOG", "warn")])?;
    if let Err(e) = sup
        .wait_ready(&config, &client, Duration::from_secs(20))
        .await
    {
        sup.stop(Duration::from_secs(3)).await;
        bail!(e);
    }
    say(format!("Taking a snapshot every 200 ms for {seconds} s.\n"));
    say(format!(
        "{:>8}  {:>10}  {:>12}  {:>10}  {:>8}  verdict",
        "snapshot", "duration", "in accounts", "in flight", "total"
    ));
    let total = BALANCE * NODES as u64;
    let coord = config.coordinator_admin();
    let (mut shown, mut good, mut bad) = (0u64, 0, 0);
    let end = Instant::now() + Duration::from_secs(seconds);
    loop {
        let done = Instant::now() > end;
        let (_, list): (_, Vec<Value>) = client.get_json(coord, "/snapshots").await?;
        let fresh: Vec<&Value> = list
            .iter()
            .filter(|s| s["id"].as_u64().is_some_and(|id| id >= shown))
            .collect();
        for s in fresh {
            let id = s["id"].as_u64().unwrap_or_default();
            match s["status"].as_str() {
                Some("complete") => {
                    let (_, doc): (_, SnapshotDoc<Value, Value>) =
                        client.get_json(coord, &format!("/snapshots/{id}")).await?;
                    let (held, flying) = cairn_apps::conserved_totals("bank", &doc)
                        .unwrap_or_else(|| Err("not a bank".into()))
                        .map_err(anyhow::Error::msg)?;
                    let ok = held + flying == total;
                    if ok {
                        good += 1
                    } else {
                        bad += 1
                    }
                    say(format!(
                        "{id:>8}  {:>7.1} ms  {held:>12}  {flying:>10}  {:>8}  {}",
                        s["duration_ms"].as_f64().unwrap_or(0.0),
                        held + flying,
                        if ok { "conserved" } else { "WRONG" }
                    ));
                    rows.push(serde_json::json!({
                        "id": id, "status": "complete", "duration_ms": s["duration_ms"],
                        "in_accounts": held, "in_flight": flying, "conserved": ok,
                    }));
                }
                Some("failed") => {
                    bad += 1;
                    say(format!(
                        "{id:>8}  failed: {}",
                        serde_json::to_string(s).unwrap_or_default()
                    ));
                    rows.push(s.clone());
                }
                _ => break, // in progress: show it, and what follows, next time
            }
            shown = id + 1;
        }
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = sup.stop(Duration::from_secs(5)).await;
    let clean = stopped.iter().all(|(_, s)| s.is_some_and(|s| s.success()));
    let _ = std::fs::remove_dir_all(&dir);
    say(format!(
        "\n{good} snapshots conserved all {total} of the bank's money; {bad} did not. The cluster {}.",
        if clean {
            "stopped cleanly"
        } else {
            "did not stop cleanly"
        }
    ));
    if json {
        let out = serde_json::json!({
            "total": total, "snapshots": rows, "conserved": good, "not_conserved": bad,
            "stopped_cleanly": clean,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(good > 0 && bad == 0 && clean)
}
