//! A node's trace on disk, in the same JSON Lines format as `cairn sim
//! --trace`, and the loader that merges every node's trace into one run the
//! oracle can judge.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use cairn_core::trace::{TraceEvent, TraceRecord};
use cairn_core::{ProcessId, Topology};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where node `id` writes its trace in `dir`.
pub fn trace_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.trace.jsonl"))
}

/// Where node `id` writes its initial and final states in `dir`.
pub fn states_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.states.json"))
}

/// A node's first and last state, written when it stops.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct States<S> {
    /// Before its first event.
    pub initial: S,
    /// After its last event.
    pub last: S,
}

/// Writes one node's events as they happen.
#[derive(Debug)]
pub struct TraceWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl TraceWriter {
    /// Creates (or truncates) the trace file of `id` in `dir`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(dir: &Path, id: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = trace_path(dir, id);
        let file = File::create(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(TraceWriter {
            out: BufWriter::with_capacity(1 << 16, file),
            path,
        })
    }

    /// Appends one event.
    ///
    /// # Errors
    /// The write failed.
    pub fn write<M: Serialize>(
        &mut self,
        topology: &Topology,
        event: &TraceEvent<M>,
    ) -> Result<()> {
        serde_json::to_writer(&mut self.out, &event.to_record(topology))
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e.into()))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }

    /// Flushes what is buffered.
    ///
    /// # Errors
    /// The write failed.
    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }
}

/// A whole cluster's run, read back from its trace directory.
#[derive(Clone, Debug)]
pub struct LoadedRun<M, S> {
    /// Every node's events, merged into one order consistent with causality.
    pub trace: Vec<TraceEvent<M>>,
    /// Each process's initial state.
    pub initial: Vec<S>,
    /// Each process's last state.
    pub last: Vec<S>,
}

/// Reads every node's trace and states from `dir` and merges the traces.
///
/// The merge sorts by the sum of each event's vector clock: if one event
/// happened before another, its clock is smaller in every entry and strictly
/// in one, so its sum is smaller. Sorting by sum (then process, then local
/// order) is a linearisation the oracle can replay.
///
/// # Errors
/// A missing or malformed file, named with its line.
pub fn load_run<M: DeserializeOwned, S: DeserializeOwned>(
    topology: &Topology,
    dir: &Path,
) -> Result<LoadedRun<M, S>> {
    let mut keyed: Vec<(u64, ProcessId, usize, TraceEvent<M>)> = Vec::new();
    let mut initial = Vec::new();
    let mut last = Vec::new();
    for p in topology.processes() {
        let name = topology.name(p);
        let path = trace_path(dir, name);
        let file =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let bad = |e: String| Error::Protocol(format!("{}:{}: {e}", path.display(), i + 1));
            let rec: TraceRecord<M> =
                serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            let ev = TraceEvent::from_record(topology, rec).map_err(|e| bad(e.to_string()))?;
            keyed.push((ev.vc.iter().sum(), p, i, ev));
        }
        let path = states_path(dir, name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let states: States<S> = serde_json::from_str(&text)
            .map_err(|e| Error::Protocol(format!("{}: {e}", path.display())))?;
        initial.push(states.initial);
        last.push(states.last);
    }
    keyed.sort_by_key(|(sum, p, i, _)| (*sum, *p, *i));
    Ok(LoadedRun {
        trace: keyed.into_iter().map(|(_, _, _, e)| e).collect(),
        initial,
        last,
    })
}
