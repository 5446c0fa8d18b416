//! A node's trace on disk, in the same JSON Lines format as `cairn sim
//! --trace`, and the loader that merges every node's trace into one run the
//! oracle can judge.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use cairn_core::trace::{TraceEvent, TraceRecord};
use cairn_core::{ProcessId, Topology};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

fn stem(id: &str, epoch: u64) -> String {
    if epoch == 0 {
        id.to_string()
    } else {
        format!("{id}.e{epoch}")
    }
}

/// Where node `id` writes its trace of `epoch` in `dir` (each epoch, that is
/// each stretch between rollbacks, is a run of its own).
pub fn trace_path(dir: &Path, id: &str, epoch: u64) -> PathBuf {
    dir.join(format!("{}.trace.jsonl", stem(id, epoch)))
}

/// Where node `id` writes its states of `epoch` in `dir`.
pub fn states_path(dir: &Path, id: &str, epoch: u64) -> PathBuf {
    dir.join(format!("{}.states.json", stem(id, epoch)))
}

/// A node's first and last state in an epoch, written when the epoch ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct States<S> {
    /// Before its first event of the epoch.
    pub initial: S,
    /// After its last event of the epoch.
    pub last: S,
    /// Messages already in each incoming channel when the epoch began (the
    /// restored snapshot's channel states), by channel name.
    #[serde(default)]
    pub initial_channels: Vec<(String, Vec<serde_json::Value>)>,
    /// Messages this node's markers had overtaken on each outgoing channel in
    /// the restored snapshot: they follow the receiver's `initial_channels`,
    /// and the node sends them again first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initial_overtaken: Vec<(String, Vec<serde_json::Value>)>,
}

/// Writes one epoch's states file.
///
/// # Errors
/// The file cannot be written.
pub fn write_states<S: Serialize>(
    dir: &Path,
    id: &str,
    epoch: u64,
    states: &States<S>,
) -> Result<()> {
    let path = states_path(dir, id, epoch);
    let text = serde_json::to_vec(states).map_err(|e| Error::io("encoding states", e.into()))?;
    std::fs::write(&path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Writes one node's events as they happen.
#[derive(Debug)]
pub struct TraceWriter {
    out: BufWriter<File>,
    path: PathBuf,
    written: u64,
    limit: Option<u64>,
    line: Vec<u8>,
}

/// What became of an event given to [`TraceWriter::write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// It is in the trace.
    Yes,
    /// It would take the file past its limit, so it and everything after
    /// are left out; the file ends at the last whole event before it.
    Full,
}

impl TraceWriter {
    /// Creates (or truncates) the trace file of `id` for `epoch` in `dir`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(dir: &Path, id: &str, epoch: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = trace_path(dir, id, epoch);
        let file = File::create(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(TraceWriter {
            out: BufWriter::with_capacity(1 << 16, file),
            path,
            written: 0,
            limit: None,
            line: Vec::new(),
        })
    }

    /// Stops the file at `limit` bytes (`None`: no limit).
    #[must_use]
    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    /// Where this writer writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event, unless it would take the file past its limit.
    ///
    /// # Errors
    /// The write failed.
    pub fn write<M: Serialize>(
        &mut self,
        topology: &Topology,
        event: &TraceEvent<M>,
    ) -> Result<Written> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, &event.to_record(topology))
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e.into()))?;
        self.line.push(b'\n');
        let after = self.written + self.line.len() as u64;
        if self.limit.is_some_and(|limit| after > limit) {
            return Ok(Written::Full);
        }
        self.out
            .write_all(&self.line)
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))?;
        self.written = after;
        Ok(Written::Yes)
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
    /// Each channel's messages when the run began.
    pub initial_channels: Vec<Vec<M>>,
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
    load_epoch(topology, dir, 0)
}

/// Reads one epoch's run from `dir` (see [`load_run`]); after a rollback the
/// run begins with the restored snapshot's channel states.
///
/// # Errors
/// A missing or malformed file, named with its line.
pub fn load_epoch<M: DeserializeOwned, S: DeserializeOwned>(
    topology: &Topology,
    dir: &Path,
    epoch: u64,
) -> Result<LoadedRun<M, S>> {
    let mut initial_channels: Vec<Vec<M>> =
        (0..topology.channel_count()).map(|_| Vec::new()).collect();
    // Senders' overtaken tails come after what every receiver recorded.
    let mut tails: Vec<Vec<M>> = (0..topology.channel_count()).map(|_| Vec::new()).collect();
    let trace = load_events(topology, dir, epoch, false)?;
    let mut initial = Vec::new();
    let mut last = Vec::new();
    for p in topology.processes() {
        let name = topology.name(p);
        let path = states_path(dir, name, epoch);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let states: States<S> = serde_json::from_str(&text)
            .map_err(|e| Error::Protocol(format!("{}: {e}", path.display())))?;
        initial.push(states.initial);
        last.push(states.last);
        let recorded = states.initial_channels.into_iter().map(|c| (c, false));
        let overtaken = states.initial_overtaken.into_iter().map(|c| (c, true));
        for ((channel, messages), tail) in recorded.chain(overtaken) {
            let bad =
                |e: String| Error::Protocol(format!("{}: channel {channel}: {e}", path.display()));
            let c = topology
                .channel_by_name(&channel)
                .ok_or_else(|| bad("unknown".into()))?;
            let into = if tail {
                &mut tails
            } else {
                &mut initial_channels
            };
            for m in messages {
                into[c.index()].push(serde_json::from_value(m).map_err(|e| bad(e.to_string()))?);
            }
        }
    }
    for (channel, tail) in initial_channels.iter_mut().zip(tails) {
        channel.extend(tail);
    }
    Ok(LoadedRun {
        trace,
        initial,
        last,
        initial_channels,
    })
}

/// Reads every node's trace of `epoch` from `dir` and merges them into one
/// order that respects happened-before (see [`load_run`]). With
/// `while_running`, a node's last line that does not parse is taken for one
/// being written and left out.
///
/// # Errors
/// A missing or malformed file, named with its line.
pub fn load_events<M: DeserializeOwned>(
    topology: &Topology,
    dir: &Path,
    epoch: u64,
    while_running: bool,
) -> Result<Vec<TraceEvent<M>>> {
    let mut keyed: Keyed<M> = Vec::new();
    for p in topology.processes() {
        let path = trace_path(dir, topology.name(p), epoch);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            match parse_line(topology, &path, i, line) {
                Ok(ev) => keyed.push((ev.vc.iter().sum(), p, i, ev)),
                Err(_) if while_running && i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(merged(keyed))
}

/// One line of `path` (line `i`, from 0) as an event, or an error naming
/// the file and line.
fn parse_line<M: DeserializeOwned>(
    topology: &Topology,
    path: &Path,
    i: usize,
    line: &str,
) -> Result<TraceEvent<M>> {
    let bad = |e: String| Error::Protocol(format!("{}:{}: {e}", path.display(), i + 1));
    let rec: TraceRecord<M> = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    TraceEvent::from_record(topology, rec).map_err(|e| bad(e.to_string()))
}

/// Every node's events, keyed by (vector-clock sum, process, line), in the
/// order [`load_run`] explains.
type Keyed<M> = Vec<(u64, ProcessId, usize, TraceEvent<M>)>;

fn merged<M>(mut keyed: Keyed<M>) -> Vec<TraceEvent<M>> {
    keyed.sort_by_key(|(sum, p, i, _)| (*sum, *p, *i));
    keyed.into_iter().map(|(_, _, _, e)| e).collect()
}

/// Every trace file in `dir`, as (node, epoch), read off the file names
/// that [`trace_path`] gives.
fn traced(dir: &Path) -> Result<Vec<(String, u64)>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let stem = name.strip_suffix(".trace.jsonl")?.to_string();
            Some(
                match stem.rsplit_once(".e").map(|(id, e)| (id, e.parse::<u64>())) {
                    Some((id, Ok(epoch))) => (id.to_string(), epoch),
                    _ => (stem, 0),
                },
            )
        })
        .collect())
}

/// The epochs that have traces in `dir`, in order.
///
/// # Errors
/// `dir` cannot be read.
pub fn traced_epochs(dir: &Path) -> Result<Vec<u64>> {
    let mut epochs: Vec<u64> = traced(dir)?.into_iter().map(|(_, e)| e).collect();
    epochs.sort_unstable();
    epochs.dedup();
    Ok(epochs)
}

/// The names of the nodes with a trace of `epoch` in `dir`.
///
/// # Errors
/// `dir` cannot be read.
pub fn traced_nodes(dir: &Path, epoch: u64) -> Result<Vec<String>> {
    let mut nodes: Vec<String> = traced(dir)?
        .into_iter()
        .filter(|(_, e)| *e == epoch)
        .map(|(n, _)| n)
        .collect();
    nodes.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    Ok(nodes)
}

/// The part of `epoch`'s run around snapshot `snapshot`, for a picture of
/// it: from each node's trace, `margin` events before its first event of
/// the snapshot until `margin` after its last marker of it, merged as
/// [`load_events`] merges. Reads each file only as far as it must, so a
/// long trace costs little when the snapshot is early in it.
///
/// # Errors
/// A missing or malformed file, named with its line.
pub fn load_around<M: DeserializeOwned>(
    topology: &Topology,
    dir: &Path,
    epoch: u64,
    snapshot: cairn_core::SnapshotId,
    margin: usize,
) -> Result<Vec<TraceEvent<M>>> {
    use std::io::BufRead;
    let mention = format!("\"snapshot\":{},\"vc\"", snapshot.0);
    let mut keyed: Keyed<M> = Vec::new();
    for p in topology.processes() {
        let path = trace_path(dir, topology.name(p), epoch);
        let file = std::fs::File::open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let markers_due = topology.incoming(p).len();
        let mut before: std::collections::VecDeque<(usize, String)> =
            std::collections::VecDeque::new();
        let mut kept: Vec<(usize, String)> = Vec::new();
        let (mut started, mut markers, mut after) = (false, 0, 0);
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let Ok(line) = line else { break };
            let mine = line.contains(&mention);
            if !started {
                if !mine {
                    before.push_back((i, line));
                    if before.len() > margin {
                        before.pop_front();
                    }
                    continue;
                }
                started = true;
                kept.extend(before.drain(..));
            }
            if mine && line.contains("\"kind\":\"marker_receive\"") {
                markers += 1;
            }
            kept.push((i, line));
            if markers >= markers_due {
                after += 1;
                if after > margin {
                    break;
                }
            }
        }
        for (i, line) in kept {
            match parse_line(topology, &path, i, &line) {
                Ok(ev) => keyed.push((ev.vc.iter().sum(), p, i, ev)),
                // A line still being written ends the file.
                Err(_) if !line.ends_with('}') => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(merged(keyed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_files_name_their_node_and_epoch() {
        let dir = std::env::temp_dir().join(format!("cairn-traced-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["n1", "n10", "n2", "node.east"] {
            std::fs::write(trace_path(&dir, name, 0), "").unwrap();
        }
        std::fs::write(trace_path(&dir, "n1", 2), "").unwrap();
        std::fs::write(states_path(&dir, "n1", 3), "").unwrap();
        assert_eq!(traced_epochs(&dir).unwrap(), [0, 2]);
        assert_eq!(
            traced_nodes(&dir, 0).unwrap(),
            ["n1", "n2", "n10", "node.east"]
        );
        assert_eq!(traced_nodes(&dir, 2).unwrap(), ["n1"]);
        assert!(traced_nodes(&dir, 3).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Invariant: a trace never passes its limit, and what it holds is whole
    /// events a loader can read.
    #[test]
    fn a_trace_stops_whole_at_its_limit() {
        let dir = std::env::temp_dir().join(format!("cairn-trace-limit-{}", std::process::id()));
        let names = ["p0".to_string(), "p1".to_string()];
        let topology = Topology::new(names.clone(), &Topology::complete_pairs(&names)).unwrap();
        let mut t = TraceWriter::create(&dir, "p0", 0)
            .unwrap()
            .with_limit(Some(1000));
        let event = |i: u64| TraceEvent {
            process: ProcessId(0),
            event: cairn_core::trace::Event::Send {
                channel: cairn_core::ChannelId(0),
                seq: i,
                message: i,
            },
            vc: vec![i, 0],
        };
        let mut kept = 0;
        while t.write(&topology, &event(kept)).unwrap() == Written::Yes {
            kept += 1;
            assert!(kept < 1000, "the limit never stopped the trace");
        }
        assert!(kept > 5, "only {kept} events fit in 1000 bytes");
        // The event that did not fit is not half written.
        assert_eq!(t.write(&topology, &event(kept)).unwrap(), Written::Full);
        t.flush().unwrap();
        let text = std::fs::read_to_string(trace_path(&dir, "p0", 0)).unwrap();
        assert!(
            text.len() <= 1000 && text.len() > 900,
            "{} bytes",
            text.len()
        );
        assert_eq!(text.lines().count() as u64, kept);
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
