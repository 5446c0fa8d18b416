//! `cairn sim`: a COS 418 script in the deterministic simulator.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use cairn_core::Overtaking;
use cairn_sim::{Config, Simulator, TokenModel, cos418, output, token};

use crate::{read, write_file};

/// What `cairn sim` writes besides the snapshots.
pub struct SimOutputs {
    pub trace: Option<PathBuf>,
    pub shiviz: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    pub svg_snapshot: Option<u64>,
}

/// Where `cairn sim` lets markers overtake messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Overtake {
    /// Markers keep their FIFO place, as in the paper.
    None,
    /// A marker jumps the messages its sender has not written out yet.
    Sender,
    /// A marker is taken ahead of the messages its receiver has not handled.
    Receiver,
    /// Both.
    Both,
}

impl From<Overtake> for Overtaking {
    fn from(o: Overtake) -> Self {
        Overtaking {
            sender: matches!(o, Overtake::Sender | Overtake::Both),
            receiver: matches!(o, Overtake::Receiver | Overtake::Both),
        }
    }
}

/// Runs a COS 418 topology and events script; prints the snapshots, checks
/// each with the oracle and for conservation.
pub fn sim(
    topology: &Path,
    events: &Path,
    config: Config,
    outputs: &SimOutputs,
) -> Result<ExitCode> {
    let seed = config.seed;
    let top_text = read(topology)?;
    let top = cos418::parse_topology(&topology.display().to_string(), &top_text)?;
    let script =
        cos418::parse_events(&events.display().to_string(), &read(events)?, &top.topology)?;
    let total: u64 = top.initial.iter().map(|t| t.tokens).sum();
    let topo = Arc::new(top.topology);
    let mut sim = Simulator::new(topo.clone(), TokenModel, top.initial, config)?;
    sim.run_script(&script)
        .with_context(|| format!("running {}", events.display()))?;
    let run = sim.finish()?;
    if let Some(path) = &outputs.trace {
        write_file(path, |w| output::write_trace(w, &topo, &run.trace))?;
    }
    if let Some(path) = &outputs.shiviz {
        write_file(path, |w| output::write_shiviz(w, &topo, &run.trace))?;
    }
    if let Some(path) = &outputs.svg {
        let options = cairn_viz::Options {
            snapshot: outputs.svg_snapshot.map(cairn_core::SnapshotId),
            ..cairn_viz::Options::default()
        };
        let svg = cairn_viz::svg(&topo, &run.trace, &options).context("drawing the run")?;
        fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{}", output::snapshots_json(&topo, &run.snapshots)?);
    let violations = run.verify(&TokenModel);
    for v in &violations {
        eprintln!("oracle: {v}");
    }
    let unconserved: Vec<u64> = run
        .snapshots
        .iter()
        .filter(|s| {
            let (held, flying) = token::recorded_tokens(s);
            held + flying != total
        })
        .map(|s| s.id.0)
        .collect();
    if !violations.is_empty() || !unconserved.is_empty() {
        bail!(
            "{} oracle violations; snapshots {unconserved:?} do not conserve {total} tokens (seed {seed})",
            violations.len()
        );
    }
    eprintln!(
        "{} snapshots, all consistent and conserving {total} tokens",
        run.snapshots.len()
    );
    Ok(ExitCode::SUCCESS)
}
