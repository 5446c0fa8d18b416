//! `cairn trace`: a cluster's traces (the folder given to `cairn node
//! --trace-dir`) as a space-time diagram or a ShiViz log.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cairn_core::trace::TraceEvent;
use cairn_core::{SnapshotId, Topology};
use cairn_runtime::tracefile;
use clap::{Args, Subcommand};
use serde_json::Value;

/// Where the traces are and which run of them.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The folder the nodes wrote their traces into.
    #[arg(long)]
    trace_dir: PathBuf,
    /// The epoch (each stretch between rollbacks is a run of its own;
    /// default: the newest traced).
    #[arg(long)]
    epoch: Option<u64>,
    /// The cluster's configuration, for its channels (default: read them
    /// off the traces, which leaves out channels that carried nothing).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// What to make of the traces.
#[derive(Debug, Subcommand)]
pub enum TraceAction {
    /// Draw a space-time diagram (SVG) with a snapshot's cut.
    Svg {
        #[command(flatten)]
        traces: TraceArgs,
        /// The snapshot whose cut and channel states are drawn (default:
        /// the first one recorded in the window).
        #[arg(long)]
        snapshot: Option<u64>,
        /// The events to draw, as positions FROM..TO in the merged trace
        /// (default: around the snapshot; at most 1500 events).
        #[arg(long, value_parser = parse_window)]
        window: Option<Range<usize>>,
        /// The SVG file to write.
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Write a ShiViz log (paste it into ShiViz's text box, or select it as a file).
    Shiviz {
        #[command(flatten)]
        traces: TraceArgs,
        /// The log file to write.
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
}

fn parse_window(s: &str) -> Result<Range<usize>, String> {
    let bad = || format!("{s:?} is not a window FROM..TO of event positions (e.g. 0..500)");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a >= b {
        return Err(format!("window {s}: FROM must be below TO"));
    }
    Ok(a..b)
}

/// Runs a `cairn trace` command.
///
/// # Errors
/// The traces cannot be read or are inconsistent, or the output cannot be written.
pub fn run(action: TraceAction) -> Result<()> {
    match action {
        TraceAction::Svg {
            traces,
            snapshot,
            window,
            output,
        } => {
            let (topology, trace) = load(&traces)?;
            let options = cairn_viz::Options {
                snapshot: snapshot.map(SnapshotId),
                window,
                ..cairn_viz::Options::default()
            };
            let svg = cairn_viz::svg(&topology, &trace, &options)
                .with_context(|| format!("drawing the traces in {}", traces.trace_dir.display()))?;
            std::fs::write(&output, svg)
                .with_context(|| format!("cannot write {}", output.display()))?;
            eprintln!(
                "wrote {} ({} events in the trace)",
                output.display(),
                trace.len()
            );
        }
        TraceAction::Shiviz { traces, output } => {
            let (topology, trace) = load(&traces)?;
            crate::write_file(&output, |w| {
                cairn_sim::output::write_shiviz(w, &topology, &trace)
            })?;
            eprintln!(
                "wrote {} ({} events): select it as a file in ShiViz, or paste it into the text box",
                output.display(),
                trace.len()
            );
        }
    }
    Ok(())
}

fn load(args: &TraceArgs) -> Result<(Topology, Vec<TraceEvent<Value>>)> {
    let dir = &args.trace_dir;
    let epochs = tracefile::traced_epochs(dir)?;
    let Some(&newest) = epochs.last() else {
        bail!("{} holds no traces (*.trace.jsonl)", dir.display());
    };
    let epoch = args.epoch.unwrap_or(newest);
    if !epochs.contains(&epoch) {
        bail!(
            "{} holds no traces of epoch {epoch} (it has {epochs:?})",
            dir.display()
        );
    }
    let topology = match &args.config {
        Some(path) => (*crate::cluster_cmds::load(path)?.topology).clone(),
        None => topology_of(dir, epoch)?,
    };
    let trace = tracefile::load_events(&topology, dir, epoch, true)
        .with_context(|| format!("reading the traces of epoch {epoch} in {}", dir.display()))?;
    Ok((topology, trace))
}

/// The nodes and channels the traces name: a node per trace file, a
/// channel per name seen (`a->b`, or `a->b#2` for a second lane).
fn topology_of(dir: &Path, epoch: u64) -> Result<Topology> {
    let nodes = tracefile::traced_nodes(dir, epoch)?;
    let mut lanes: Vec<((String, String), u32)> = Vec::new();
    for n in &nodes {
        let path = tracefile::trace_path(dir, n, epoch);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let Some(name) = v["channel"].as_str() else {
                continue;
            };
            let (pair, lane) = match name.rsplit_once('#') {
                Some((p, l)) => (p, l.parse::<u32>().unwrap_or(1)),
                None => (name, 1),
            };
            let Some((a, b)) = pair.split_once("->") else {
                bail!("{}: channel {name:?} is not named from->to", path.display());
            };
            let key = (a.to_string(), b.to_string());
            match lanes.iter_mut().find(|(k, _)| *k == key) {
                Some((_, l)) => *l = (*l).max(lane),
                None => lanes.push((key, lane)),
            }
        }
    }
    let mut pairs = Vec::new();
    for ((a, b), n) in lanes {
        for _ in 0..n {
            pairs.push((a.clone(), b.clone()));
        }
    }
    Topology::new(nodes.iter().cloned(), &pairs).with_context(|| {
        format!(
            "the traces in {} do not describe a system (give --config)",
            dir.display()
        )
    })
}
