//! Readers for the COS 418 snapshot assignment's formats: `.top` topologies,
//! `.events` scripts and `.snap` expected snapshots (described in
//! `shared/conformance/cos418-chandy-lamport/SOURCE.txt`).
//!
//! One extension: a `snapshot` line may name several servers, which start the
//! same snapshot together (`snapshot N1 N3`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_core::{GlobalSnapshot, SnapshotId, Topology};

use crate::error::{Result, SimError};
use crate::sim::Command;
use cairn_apps::token::Tokens;

/// A parsed `.top` file: the topology and each server's initial tokens.
#[derive(Clone, Debug)]
pub struct TopologyFile {
    /// Servers and their links.
    pub topology: Topology,
    /// Initial tokens, in server order.
    pub initial: Vec<Tokens>,
}

/// A parsed `.snap` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedSnapshot {
    /// The snapshot id.
    pub id: SnapshotId,
    /// Tokens recorded at each server.
    pub servers: BTreeMap<String, u64>,
    /// Messages recorded in flight, as `(from, to, tokens)` in the file's order.
    pub messages: Vec<(String, String, u64)>,
}

/// Where the COS 418 data lives, for tests: `$CAIRN_COS418_DIR` if set, else
/// `shared/conformance/cos418-chandy-lamport` in `start` or the nearest
/// folder above it that has one. Prints a `SKIPPED` notice and returns
/// `None` when there is none (the data has no license, so it is never
/// copied into the repository).
pub fn find_data(start: &Path) -> Option<PathBuf> {
    const REL: &str = "shared/conformance/cos418-chandy-lamport";
    let (found, looked) = match std::env::var_os("CAIRN_COS418_DIR") {
        Some(dir) => (
            Some(PathBuf::from(&dir)),
            format!("at {}", PathBuf::from(dir).display()),
        ),
        None => (
            start.ancestors().map(|a| a.join(REL)).find(|d| d.is_dir()),
            format!("in ../{REL} above {}", start.display()),
        ),
    };
    let found = found.filter(|d| d.join("SOURCE.txt").is_file());
    if found.is_none() {
        eprintln!("SKIPPED: COS418 data not found {looked} (set CAIRN_COS418_DIR to point at it)");
    }
    found
}

fn parse_err(file: &str, line: usize, problem: impl Into<String>) -> SimError {
    SimError::Parse {
        file: file.to_string(),
        line,
        problem: problem.into(),
    }
}

/// Non-empty, non-comment lines with their 1-based numbers.
fn lines(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i, l.split_whitespace().collect()))
}

fn number(file: &str, line: usize, what: &str, s: &str) -> Result<u64> {
    s.parse().map_err(|_| {
        parse_err(
            file,
            line,
            format!("{what} must be a whole number, found {s:?}"),
        )
    })
}

/// Parses a `.top` file; `file` names it in errors.
///
/// # Errors
/// [`SimError::Parse`] naming the line and the problem.
pub fn parse_topology(file: &str, text: &str) -> Result<TopologyFile> {
    let mut it = lines(text);
    let (l, first) = it
        .next()
        .ok_or_else(|| parse_err(file, 0, "empty topology file"))?;
    if first.len() != 1 {
        return Err(parse_err(
            file,
            l,
            "the first line must be the number of servers",
        ));
    }
    let n = number(file, l, "the number of servers", first[0])?;
    let mut names = Vec::new();
    let mut initial = Vec::new();
    for _ in 0..n {
        let (l, f) = it
            .next()
            .ok_or_else(|| parse_err(file, 0, format!("expected {n} server lines")))?;
        if f.len() != 2 {
            return Err(parse_err(file, l, "expected \"<server> <tokens>\""));
        }
        names.push(f[0].to_string());
        initial.push(Tokens {
            tokens: number(file, l, "tokens", f[1])?,
        });
    }
    if initial
        .iter()
        .try_fold(0u64, |sum, t| sum.checked_add(t.tokens))
        .is_none()
    {
        return Err(parse_err(
            file,
            0,
            "the servers' tokens add up to more than 2^64 - 1",
        ));
    }
    let mut links = Vec::new();
    for (l, f) in it {
        if f.len() != 2 {
            return Err(parse_err(file, l, "expected a link \"<src> <dst>\""));
        }
        if f[0] != f[1] {
            links.push((f[0].to_string(), f[1].to_string()));
        }
    }
    let topology = Topology::new(names, &links).map_err(|e| parse_err(file, 0, e.to_string()))?;
    Ok(TopologyFile { topology, initial })
}

/// Parses an `.events` file against `topology`.
///
/// # Errors
/// [`SimError::Parse`] naming the line and the problem.
pub fn parse_events(file: &str, text: &str, topology: &Topology) -> Result<Vec<Command<Tokens>>> {
    let server = |l: usize, name: &str| {
        topology
            .process(name)
            .ok_or_else(|| parse_err(file, l, format!("unknown server {name:?}")))
    };
    let mut script = Vec::new();
    for (l, f) in lines(text) {
        let cmd = match f.as_slice() {
            ["send", src, dst, n] => {
                let (from, to) = (server(l, src)?, server(l, dst)?);
                let channel = topology
                    .find_channel(from, to, 0)
                    .ok_or_else(|| parse_err(file, l, format!("there is no link {src}->{dst}")))?;
                Command::Send {
                    from,
                    channel,
                    message: Tokens {
                        tokens: number(file, l, "tokens", n)?,
                    },
                }
            }
            ["snapshot", who @ ..] if !who.is_empty() => Command::Snapshot {
                initiators: who.iter().map(|w| server(l, w)).collect::<Result<_>>()?,
            },
            ["tick"] => Command::Tick(1),
            ["tick", k] => Command::Tick(number(file, l, "tick count", k)?),
            _ => {
                return Err(parse_err(
                    file,
                    l,
                    format!(
                        "unknown command {:?}: expected \"send <src> <dst> <n>\", \"snapshot <server>...\" or \"tick [k]\"",
                        f.join(" ")
                    ),
                ));
            }
        };
        script.push(cmd);
    }
    Ok(script)
}

/// Parses a `.snap` file.
///
/// # Errors
/// [`SimError::Parse`] naming the line and the problem.
pub fn parse_snapshot(file: &str, text: &str) -> Result<ExpectedSnapshot> {
    let mut it = lines(text);
    let (l, first) = it
        .next()
        .ok_or_else(|| parse_err(file, 0, "empty snapshot file"))?;
    if first.len() != 1 {
        return Err(parse_err(file, l, "the first line must be the snapshot id"));
    }
    let id = SnapshotId(number(file, l, "the snapshot id", first[0])?);
    let mut servers = BTreeMap::new();
    let mut messages = Vec::new();
    for (l, f) in it {
        match f.as_slice() {
            [name, tokens] => {
                servers.insert(name.to_string(), number(file, l, "tokens", tokens)?);
            }
            [src, dst, token] => {
                let n = token
                    .strip_prefix("token(")
                    .and_then(|t| t.strip_suffix(')'))
                    .ok_or_else(|| {
                        parse_err(file, l, format!("expected token(<n>), found {token:?}"))
                    })?;
                messages.push((
                    src.to_string(),
                    dst.to_string(),
                    number(file, l, "tokens", n)?,
                ));
            }
            _ => return Err(parse_err(file, l, "expected 2 or 3 fields")),
        }
    }
    Ok(ExpectedSnapshot {
        id,
        servers,
        messages,
    })
}

impl ExpectedSnapshot {
    /// Compares a recorded snapshot with this one, as the course harness does:
    /// same id, same tokens at every server, and the same messages in flight
    /// in the same order. Order is compared per channel, since a snapshot
    /// keeps each channel's messages in order but not their interleaving
    /// across channels into one destination.
    ///
    /// # Errors
    /// A sentence naming the first difference.
    pub fn compare(
        &self,
        topology: &Topology,
        got: &GlobalSnapshot<Tokens, Tokens>,
    ) -> std::result::Result<(), String> {
        if got.id != self.id {
            return Err(format!("expected snapshot {}, got {}", self.id, got.id));
        }
        let servers: BTreeMap<String, u64> = topology
            .processes()
            .map(|p| (topology.name(p).to_string(), got.states[p.index()].tokens))
            .collect();
        if servers != self.servers {
            return Err(format!(
                "snapshot {}: server tokens {servers:?}, expected {:?}",
                self.id, self.servers
            ));
        }
        let mut expected: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
        for (from, to, n) in &self.messages {
            expected
                .entry((from.clone(), to.clone()))
                .or_default()
                .push(*n);
        }
        let mut recorded: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
        for c in topology.channel_ids() {
            let ch = topology.channel(c);
            for m in &got.channels[c.index()] {
                let key = (
                    topology.name(ch.from).to_string(),
                    topology.name(ch.to).to_string(),
                );
                recorded.entry(key).or_default().push(m.tokens);
            }
        }
        if recorded != expected {
            return Err(format!(
                "snapshot {}: messages in flight {recorded:?}, expected {expected:?}",
                self.id
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_errors_name_the_line() {
        let err = parse_topology("t.top", "2\nN1 1\nN2 x\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.top:3: tokens must be a whole number, found \"x\""
        );
        let err = parse_topology("t.top", "2\nN1 1\n").unwrap_err();
        assert!(err.to_string().contains("expected 2 server lines"), "{err}");
        let err = parse_topology("t.top", "2\nN1 18446744073709551615\nN2 1\n").unwrap_err();
        assert!(err.to_string().contains("add up to more than"), "{err}");
        let err = parse_topology("t.top", "1\nN1 1\nN1 N9\n").unwrap_err();
        assert!(err.to_string().contains("unknown process \"N9\""), "{err}");
    }

    #[test]
    fn events_errors_name_the_line() {
        let top = parse_topology("t.top", "2\nN1 1\nN2 0\nN1 N2\n").unwrap();
        let err = parse_events("e", "tick\nsend N2 N1 1\n", &top.topology).unwrap_err();
        assert_eq!(err.to_string(), "e:2: there is no link N2->N1");
        let err = parse_events("e", "jump N1\n", &top.topology).unwrap_err();
        assert!(err.to_string().starts_with("e:1: unknown command"), "{err}");
        let script = parse_events("e", "snapshot N1 N2\ntick 3\n", &top.topology).unwrap();
        assert_eq!(script.len(), 2);
        assert_eq!(script[1], Command::Tick(3));
    }

    #[test]
    fn snap_files_parse_messages_in_order() {
        let s = parse_snapshot("s", "1\nN1 0\nN2 4\nN1 N2 token(3)\nN1 N2 token(2)\n").unwrap();
        assert_eq!(s.id, SnapshotId(1));
        assert_eq!(
            s.messages,
            vec![("N1".into(), "N2".into(), 3), ("N1".into(), "N2".into(), 2)]
        );
        assert!(parse_snapshot("s", "0\nN1 N2 coin(3)\n").is_err());
    }
}
