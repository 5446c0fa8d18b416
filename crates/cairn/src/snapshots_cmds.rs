//! `cairn snapshots list|show|verify|delete`, on a store named by URL or by
//! a cluster config.

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::cluster_cmds::message_decoder;
use anyhow::{Context, Result, bail};
use cairn_core::SnapshotDoc;
use cairn_store::{Store, StoredSnapshot};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the snapshots are.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store: a folder, file:///path, s3://bucket/prefix or memory://.
    #[arg(long, global = true, conflicts_with = "config")]
    store: Option<String>,
    /// A cluster config; its store is used.
    #[arg(long, global = true, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
}

/// What to do with the stored snapshots.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// List the complete snapshots, oldest first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print one snapshot (in the shared JSON shape with --json). On a
    /// terminal, states over 2 KiB are summarised unless --full.
    Show {
        /// The snapshot id.
        id: u64,
        /// Print the snapshot as JSON.
        #[arg(long)]
        json: bool,
        /// Print every state whole, however large.
        #[arg(long)]
        full: bool,
    },
    /// Re-read every part: checksums, completeness, and conservation for bank and token.
    Verify {
        /// The snapshot id.
        id: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a snapshot (never the newest complete one): its manifest and
    /// parts. Its chunks are left to the coordinator's retention, which
    /// collects them once no manifest names them (a snapshot committing
    /// meanwhile may name them again).
    Delete {
        /// The snapshot id.
        id: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn open(args: &StoreArgs) -> Result<Store> {
    let url = match (&args.store, &args.config) {
        (Some(url), _) => url.clone(),
        // Reading a store never needs to know the application.
        (None, Some(path)) => cairn_runtime::ClusterConfig::load(path)?.store,
        (None, None) => {
            bail!("name the store with --store URL or --config cluster.toml (or set CAIRN_CONFIG)")
        }
    };
    // A folder that is not there is a mistyped path or a cluster that never
    // ran, not an empty store.
    let local = url.strip_prefix("file://").unwrap_or(&url);
    let is_local = !url.contains("://") || url.starts_with("file://");
    if is_local && !std::path::Path::new(local).is_dir() {
        bail!(
            "no store at {local}: the folder does not exist (has the cluster run, and is the path right?)"
        );
    }
    Ok(Store::open(&url)?)
}

async fn load(store: &Store, id: u64) -> Result<StoredSnapshot> {
    let context = || format!("snapshot {id} in {}", store.url());
    let bar = crate::present::bytes_bar(&format!("reading snapshot {id}"));
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let loaded = store.load(id, &mut progress).await;
    bar.finish_and_clear();
    loaded.with_context(context)
}

/// States larger than this are summarised by `show` on a terminal.
const SHOW_WHOLE_BYTES: usize = 2048;

/// Runs one action.
pub async fn run(args: &StoreArgs, action: &Action) -> Result<()> {
    let store = open(args)?;
    match action {
        Action::List { json } => {
            let mut rows = Vec::new();
            for id in store.list().await? {
                let m = store.manifest(id).await;
                rows.push(match m {
                    // Its size counts the chunks it names, shared or not.
                    Ok(m) => json!({"id": id, "app": m.app, "cluster": m.cluster, "created_unix_ms": m.created_unix_ms,
                                    "parts": m.parts.len(),
                                    "chunks": m.parts.iter().map(|p| p.chunks.len()).sum::<usize>(),
                                    "bytes": m.parts.iter().map(|p| p.bytes + p.chunks.iter().map(|c| c.bytes).sum::<u64>()).sum::<u64>()}),
                    Err(e) => json!({"id": id, "error": e.to_string()}),
                });
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no complete snapshots in {}", store.url());
            } else {
                let mut t = crate::present::table(
                    &["snapshot", "app", "parts", "size", "committed"],
                    &["snapshot", "parts", "size"],
                );
                for r in &rows {
                    match r.get("error") {
                        Some(e) => t.add_row(vec![
                            r["id"].to_string(),
                            format!("unreadable: {}", e.as_str().unwrap_or("")),
                        ]),
                        None => t.add_row(vec![
                            r["id"].to_string(),
                            r["app"].as_str().unwrap_or("").to_string(),
                            r["parts"].to_string(),
                            crate::present::bytes(r["bytes"].as_u64().unwrap_or(0)),
                            crate::present::when(r["created_unix_ms"].as_u64().unwrap_or(0)),
                        ]),
                    };
                }
                println!("{t}");
            }
        }
        Action::Show { id, json, full } => {
            let s = load(&store, *id).await?;
            if *json {
                let doc = s.to_json(message_decoder(&s.manifest.app))?;
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!(
                    "snapshot {id} of cluster {:?} ({}), {} processes:",
                    s.manifest.cluster,
                    s.manifest.app,
                    s.parts.len()
                );
                let summarise = !full && std::io::stdout().is_terminal();
                for p in &s.parts {
                    let state = p.state.to_string();
                    if summarise && state.len() > SHOW_WHOLE_BYTES {
                        let head: String = state.chars().take(120).collect();
                        println!(
                            "  {:<10} {head}… ({} of JSON; --full prints it whole, --json prints the snapshot)",
                            p.process,
                            crate::present::bytes(state.len() as u64)
                        );
                    } else {
                        println!("  {:<10} {state}", p.process);
                    }
                    let chunks = s
                        .manifest
                        .parts
                        .iter()
                        .find(|r| r.process == p.process)
                        .map_or(&[][..], |r| &r.chunks[..]);
                    if !chunks.is_empty() {
                        println!(
                            "  {:<10} + {} state chunks ({}) in the store, not shown",
                            "",
                            chunks.len(),
                            crate::present::bytes(chunks.iter().map(|c| c.bytes).sum())
                        );
                    }
                    for c in p.channels.iter().filter(|c| !c.is_empty()) {
                        println!("  {:<10}   {} in flight on {}", "", c.len(), c.name);
                    }
                    for c in p.overtaken.iter().filter(|c| !c.is_empty()) {
                        println!(
                            "  {:<10}   {} in flight on {}, overtaken by its marker",
                            "",
                            c.len(),
                            c.name
                        );
                    }
                }
            }
        }
        Action::Verify { id, json } => {
            let s = load(&store, *id).await?;
            s.check_complete()
                .with_context(|| format!("snapshot {id}"))?;
            // The chunks the parts name, wherever they were first written:
            // each is read and checked against its hash.
            let (mut chunks, mut chunk_bytes) = (0usize, 0u64);
            for r in &s.manifest.parts {
                let read = store
                    .verify_chunks(r)
                    .await
                    .with_context(|| format!("snapshot {id}, {}'s chunks", r.process))?;
                chunks += read.len();
                chunk_bytes += read.iter().map(|c| c.1.len() as u64).sum::<u64>();
            }
            // Every recorded message must decode as the application's.
            let doc = s
                .to_json(message_decoder(&s.manifest.app))
                .with_context(|| format!("snapshot {id}"))?;
            let doc: SnapshotDoc<Value, Value> = serde_json::from_value(doc)?;
            let mut line = format!(
                "snapshot {id}: {} parts read, checksums good, complete ({} processes, {} channels)",
                s.parts.len(),
                s.parts.len(),
                s.manifest.channels.len()
            );
            if chunks > 0 {
                line += &format!(", {chunks} state chunks ({chunk_bytes} bytes) read, hashes good");
            }
            let mut report = json!({
                "snapshot": id,
                "parts": s.parts.len(),
                "processes": s.parts.len(),
                "channels": s.manifest.channels.len(),
                "chunks": chunks,
                "chunk_bytes": chunk_bytes,
                "checksums": "good",
                "complete": true,
                "conserved": null,
            });
            let initials = s.parts.iter().all(|p| p.initial.is_some());
            if !initials {
                line += ", conservation not checked: the parts do not carry their initial states (kept only up to 64 KiB)";
            }
            if let Some(totals) =
                cairn_apps::conserved_totals(&s.manifest.app, &doc).filter(|_| initials)
            {
                let (held, flying) = totals.map_err(anyhow::Error::msg)?;
                let mut start = 0u64;
                for p in &s.parts {
                    let init = p
                        .initial
                        .as_ref()
                        .with_context(|| format!("part of {} has no initial state", p.process))?;
                    let key = if s.manifest.app == "bank" {
                        "balance"
                    } else {
                        "tokens"
                    };
                    start += init
                        .get(key)
                        .and_then(Value::as_u64)
                        .with_context(|| format!("initial state of {} has no {key}", p.process))?;
                }
                if held + flying != start {
                    bail!(
                        "snapshot {id} is not conserved: {held} held + {flying} in flight = {}, but the processes started with {start}",
                        held + flying
                    );
                }
                line += &format!(
                    ", conserved: {held} held + {flying} in flight = {start}, as at the start"
                );
                report["conserved"] =
                    json!({ "held": held, "in_flight": flying, "at_start": start });
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{line}");
            }
        }
        Action::Delete { id, json } => {
            let n = store.delete(*id, false).await?;
            if *json {
                println!("{}", json!({ "deleted": id, "objects": n }));
            } else {
                println!("deleted snapshot {id} ({n} objects)");
            }
        }
    }
    Ok(())
}
