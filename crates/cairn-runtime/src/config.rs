//! The cluster configuration: one TOML file for every node, with
//! environment-variable overrides so a node runs unchanged in a container.
//!
//! ```toml
//! cluster = "demo"            # connections from another cluster are refused
//! coordinator = "n1"          # assembles global snapshots; or candidates in order, ["n1", "n2"]; default: every node
//! channels = "complete"       # or [["n1", "n2"], ["n2", "n1"], ...]
//! data_dir = "cairn-data"     # optional; paths in this file are relative to its folder
//! store = "s3://bucket/pre"   # optional: where snapshots go (default <data_dir>/snapshots)
//! trace_dir = "traces"        # optional: every node writes its trace here
//! trace_limit_mb = 1024       # optional: a node stops tracing an epoch at this size; 0: no limit
//! max_frame_bytes = 16777216  # optional
//! insecure = false            # true: plain TCP and HTTP, anyone may connect (tests, demos)
//!
//! [tls]
//! certs_dir = "certs"         # ca.crt, node.<ID>.crt/.key, client.<NAME>.crt/.key (`cairn cert`);
//!                             # relative to this file's folder
//!
//! [admin]
//! read_token_file = "read.token"          # optional: a bearer token that may read
//! operator_token_file = "operator.token"  # optional: a bearer token that may also change things
//!
//! [[nodes]]
//! id = "n1"
//! address = "127.0.0.1:7101"  # where peers reach it (host:port)
//! admin = "127.0.0.1:7201"    # admin HTTP API: ip:port, host:port (resolved at load) or a bare port (127.0.0.1)
//! listen = "0.0.0.0:7101"     # optional: bind here instead of `address`
//!
//! [app]
//! name = "bank"               # bank or token, plus the app's parameters
//! initial_balance = 1000
//!
//! [snapshots]
//! interval_ms = 200           # optional: the coordinator starts one this often
//! timeout_ms = 5000
//! retain = 10                 # complete snapshots the store keeps
//! failure_timeout_ms = 1000   # silent this long: a node is unreachable, a coordinator replaced; 0 turns recovery off
//! mode = "chandy-lamport"     # or "aligned" or "stop-the-world", baselines to compare with
//! max_recorded_bytes = 268435456  # channel state one snapshot may record at one node
//! overtake = "none"           # or "sender", "receiver", "both" (true): markers overtake queued messages (chandy-lamport only)
//! write_mb_per_s = 0          # state chunks a node hashes and writes per second past an 8 MiB burst; 0: no limit
//!
//! [debug]                     # for tests only
//! allow_cut = false           # true: POST /debug/cut may drop a node's connections
//! stale_after_ms = 30000      # retention collects unnamed chunks and abandoned parts this old (default 4 timeouts, at least 30 s)
//! ```
//!
//! Overrides: `CAIRN_INSECURE`, `CAIRN_CERTS_DIR`, `CAIRN_CLUSTER`, `CAIRN_COORDINATOR`, `CAIRN_DATA_DIR`, `CAIRN_STORE`,
//! `CAIRN_TRACE_DIR`, `CAIRN_MAX_FRAME_BYTES`, `CAIRN_SNAPSHOT_INTERVAL_MS`,
//! `CAIRN_SNAPSHOT_TIMEOUT_MS`, `CAIRN_SNAPSHOT_MODE`, `CAIRN_SNAPSHOT_OVERTAKE`, and per node `CAIRN_NODE_<ID>_ADDRESS`,
//! `CAIRN_NODE_<ID>_ADMIN`, `CAIRN_NODE_<ID>_LISTEN` (the id upper-cased, with
//! `-` and `.` as `_`). Paths in the environment are relative to the caller's folder.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_core::{ProcessId, Topology};
use serde::Deserialize;

pub use crate::config_builder::ConfigBuilder;
use crate::error::{Error, Result};

/// The default bound on the channel state one snapshot records at one node: 256 MiB.
pub const DEFAULT_MAX_RECORDED_BYTES: u64 = 256 << 20;

/// How large one node's trace of one epoch grows before tracing stops, so
/// that a debugging aid never fills the disk the snapshot store is on.
pub const DEFAULT_TRACE_LIMIT_MB: u64 = 1024;

/// The default bound on one frame: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// A validated cluster configuration.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// The cluster's name, checked in every handshake.
    pub cluster: String,
    /// The nodes, in file order (process `i` is `nodes[i]`).
    pub nodes: Vec<NodeConfig>,
    /// Processes and channels.
    pub topology: Arc<Topology>,
    /// The node that assembles global snapshots: the first candidate.
    pub coordinator: ProcessId,
    /// The nodes that may coordinate, in order (`coordinator = "n1"` or
    /// `coordinator = ["n1", "n2"]`; every node, in config order, when absent).
    pub candidates: Vec<ProcessId>,
    /// The application every node runs.
    pub app: AppConfig,
    /// When snapshots are taken and given up on.
    pub snapshots: SnapshotConfig,
    /// Where durable data goes.
    pub data_dir: PathBuf,
    /// The snapshot store's URL: a path, `s3://bucket/prefix` or `memory://`
    /// (default: `<data_dir>/snapshots`).
    pub store: String,
    /// Where nodes write their traces, if anywhere.
    pub trace_dir: Option<PathBuf>,
    /// The size in bytes at which a node stops tracing an epoch (`None`: no limit).
    pub trace_limit_bytes: Option<u64>,
    /// The largest frame a node accepts.
    pub max_frame_bytes: usize,
    /// Whether `POST /debug/cut` may drop a node's connections (for tests).
    pub allow_cut: bool,
    /// `[debug] stale_after_ms`: how long retention leaves an unnamed chunk
    /// or an uncommitted snapshot's leftovers alone, instead of four
    /// snapshot timeouts (at least 30 s). For tests that make retention as
    /// eager as it can be; in a real cluster a short value fails snapshots
    /// whose fresh chunks it collects before their commit.
    pub stale_after: Option<Duration>,
    /// How members and operators prove who they are.
    pub security: SecurityConfig,
}

/// How members and operators prove who they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// `insecure = true` (or `CAIRN_INSECURE=true`): plain TCP and HTTP,
    /// nobody is checked. Only for tests and demos on one machine.
    pub insecure: bool,
    /// The certificates (`[tls] certs_dir`, relative to the config file's
    /// folder; `CAIRN_CERTS_DIR`).
    pub certs_dir: Option<PathBuf>,
    /// A file holding the bearer token that may read (`[admin] read_token_file`).
    pub read_token_file: Option<PathBuf>,
    /// A file holding the bearer token that may also change things
    /// (`[admin] operator_token_file`).
    pub operator_token_file: Option<PathBuf>,
}

/// One node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Its id (the process name).
    pub id: String,
    /// Where peers connect: `host:port`.
    pub address: String,
    /// Where it listens for peers.
    pub listen: String,
    /// Its admin HTTP API.
    pub admin: SocketAddr,
}

/// The application and its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct AppConfig {
    /// `bank` or `token`.
    pub name: String,
    /// The rest of the `[app]` table, for the application to read.
    pub params: serde_json::Value,
}

/// How a cluster takes snapshots. Chandy–Lamport is Cairn's algorithm; the
/// other two are the classic alternatives, built in so that their cost can be
/// measured side by side (`cairn bench`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Record on the first marker, keep processing every channel, record
    /// channel states. The application never stops.
    #[default]
    ChandyLamport,
    /// Aligned barriers, as Flink takes checkpoints: a node forwards markers
    /// on its first one, holds its own sends, blocks each input once its
    /// marker has arrived, and records its state (with empty channels) when
    /// markers have arrived on every input; then it replays what it blocked.
    Aligned,
    /// Stop the world: the coordinator pauses every node's sends, the
    /// channels drain behind aligned markers, every node records, and the
    /// coordinator resumes the cluster once the snapshot is durable.
    StopTheWorld,
}

impl SnapshotMode {
    /// Its name in a config: `chandy-lamport`, `aligned` or `stop-the-world`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::ChandyLamport => "chandy-lamport",
            SnapshotMode::Aligned => "aligned",
            SnapshotMode::StopTheWorld => "stop-the-world",
        }
    }

    /// The mode called `s`.
    ///
    /// # Errors
    /// Names the choices when `s` is none of them.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "chandy-lamport" => Ok(SnapshotMode::ChandyLamport),
            "aligned" => Ok(SnapshotMode::Aligned),
            "stop-the-world" => Ok(SnapshotMode::StopTheWorld),
            other => Err(format!(
                "{other:?} is not a snapshot mode: use \"chandy-lamport\", \"aligned\" or \"stop-the-world\""
            )),
        }
    }
}

/// Snapshot timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// How snapshots are taken.
    pub mode: SnapshotMode,
    /// The coordinator starts a snapshot this often, if set.
    pub interval: Option<Duration>,
    /// A snapshot not complete after this long is reported as failed.
    pub timeout: Duration,
    /// How many recent snapshots the coordinator keeps in memory.
    pub keep: usize,
    /// How many complete snapshots the store keeps.
    pub retain: usize,
    /// A node that does not answer the coordinator's heartbeat for this long
    /// is unreachable (nothing is rolled back for that alone), and a
    /// coordinator silent this long is replaced. A node that lost its state
    /// rolls the cluster back to the newest good snapshot once every node
    /// answers. `None` turns automatic recovery off.
    pub failure_timeout: Option<Duration>,
    /// The bytes of messages one snapshot may record at one node (over all
    /// its incoming channels); past it the snapshot fails, naming the channel.
    pub max_recorded_bytes: u64,
    /// Where markers overtake queued messages (`chandy-lamport` mode only).
    /// Sender side: a marker is placed ahead of the messages its channel's
    /// link has not yet written, recorded as the tail of the channel's state.
    /// Receiver side: a marker is taken ahead of the messages the node has
    /// read but not handled, recorded as the end of the receiver's part.
    pub overtake: cairn_core::Overtaking,
    /// Chunks of state a node hashes and writes per second (in bytes),
    /// past a burst of [`WRITE_BURST`] per part: a large first write shares
    /// the machine with the application instead of taking cores in one
    /// stretch. Quickened when needed to finish within half the time left
    /// before the snapshot's timeout. `None`: as fast as it can.
    pub write_bytes_per_s: Option<u64>,
}

/// What a part hashes and writes at full speed before
/// `snapshots.write_mb_per_s` applies: a part that changed a few chunks is
/// never slowed.
pub const WRITE_BURST: u64 = 8 << 20;

impl ClusterConfig {
    /// Reads and validates `path`, then applies environment overrides.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file, the key and the problem.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            file: path.display().to_string(),
            key: String::new(),
            problem: format!("cannot read it: {e}"),
        })?;
        Self::parse(path, &text, |k| std::env::var(k).ok())
    }

    /// Parses `text` as if read from `path`, taking overrides from `env`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file, the key and the problem.
    pub fn parse(path: &Path, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let file = path.display().to_string();
        let err = |key: &str, problem: String| Error::Config {
            file: file.clone(),
            key: key.to_string(),
            problem,
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| err("", e.to_string().trim().to_string()))?;
        Self::validate(path, raw, env)
    }

    /// A configuration built in Rust: see [`ConfigBuilder`].
    pub fn builder(cluster: impl Into<String>) -> ConfigBuilder {
        ConfigBuilder::new(cluster.into())
    }

    /// A configuration from the same keys as the file's, already parsed
    /// (what [`ConfigBuilder`] fills), checked like a file. Relative paths
    /// are the caller's; no environment override applies.
    pub(crate) fn from_table(table: toml::Table) -> Result<Self> {
        let path = Path::new("<built in Rust>");
        let raw: RawConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e| Error::Config {
                file: path.display().to_string(),
                key: String::new(),
                problem: e.to_string().trim().to_string(),
            })?;
        // Its parent is "": relative paths stay the caller's.
        Self::validate(path, raw, |_| None)
    }

    /// The node called `id`.
    ///
    /// # Errors
    /// [`Error::Config`] if there is none.
    pub fn node(&self, id: &str) -> Result<ProcessId> {
        self.topology.process(id).ok_or_else(|| Error::Config {
            file: self.file.display().to_string(),
            key: "nodes".into(),
            problem: format!("there is no node {id:?}"),
        })
    }

    /// The certificates folder, or `None` when the config says
    /// `insecure = true`.
    ///
    /// # Errors
    /// Neither is set: a node refuses to run without certificates unless
    /// told to run insecure.
    pub fn certs_dir(&self) -> Result<Option<&Path>> {
        match (&self.security.certs_dir, self.security.insecure) {
            (_, true) => Ok(None),
            (Some(d), false) => Ok(Some(d)),
            (None, false) => Err(Error::Config {
                file: self.file.display().to_string(),
                key: "tls.certs_dir".into(),
                problem: "no certificates: set [tls] certs_dir (make them with `cairn cert`) \
                          or CAIRN_CERTS_DIR, or say insecure = true to run without TLS"
                    .into(),
            }),
        }
    }

    /// The coordinator's admin API base URL.
    pub fn coordinator_admin(&self) -> SocketAddr {
        self.nodes[self.coordinator.index()].admin
    }
}

mod raw;
use raw::RawConfig;

#[cfg(test)]
mod tests;
