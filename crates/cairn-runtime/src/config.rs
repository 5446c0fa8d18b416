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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster: String,
    coordinator: Option<RawCandidates>,
    channels: RawChannels,
    nodes: Vec<RawNode>,
    app: toml::Table,
    #[serde(default)]
    snapshots: RawSnapshots,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    trace_dir: Option<PathBuf>,
    trace_limit_mb: Option<u64>,
    max_frame_bytes: Option<u64>,
    #[serde(default)]
    debug: RawDebug,
    insecure: Option<bool>,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    admin: RawAdmin,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certs_dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    read_token_file: Option<PathBuf>,
    operator_token_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCandidates {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawChannels {
    Shorthand(String),
    List(Vec<(String, String)>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: String,
    address: String,
    admin: toml::Value,
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSnapshots {
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    keep: Option<usize>,
    retain: Option<usize>,
    failure_timeout_ms: Option<u64>,
    mode: Option<String>,
    max_recorded_bytes: Option<u64>,
    overtake: Option<RawOvertake>,
    write_mb_per_s: Option<u64>,
}

/// `snapshots.overtake`: a side's name, or true (both) or false (none).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawOvertake {
    Flag(bool),
    Sides(String),
}

fn overtaking(raw: Option<&RawOvertake>) -> std::result::Result<cairn_core::Overtaking, String> {
    match raw {
        None | Some(RawOvertake::Flag(false)) => Ok(cairn_core::Overtaking::default()),
        Some(RawOvertake::Flag(true)) => Ok(cairn_core::Overtaking::BOTH),
        Some(RawOvertake::Sides(name)) => cairn_core::Overtaking::from_name(name).ok_or_else(|| {
            format!("{name:?} is not one of \"none\", \"sender\", \"receiver\", \"both\", true or false")
        }),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDebug {
    #[serde(default)]
    allow_cut: bool,
}

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

    /// Applies environment overrides to `raw`, read from `path`, and checks it.
    fn validate(
        path: &Path,
        mut raw: RawConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let file = path.display().to_string();
        let err = |key: &str, problem: String| Error::Config {
            file: file.clone(),
            key: key.to_string(),
            problem,
        };

        // Environment overrides, each validated below like the file's own value.
        let var = |name: &str| env(name).map(|v| (name.to_string(), v));
        if let Some((name, v)) = var("CAIRN_INSECURE") {
            raw.insecure = Some(match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(err(&name, format!("{v:?} is not true or false"))),
            });
        }
        // The environment's folder is the caller's; the file's is relative to the file.
        let here = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let beside = |p: PathBuf| if p.is_relative() { here.join(p) } else { p };
        let certs_dir = match var("CAIRN_CERTS_DIR") {
            Some((_, v)) => Some(PathBuf::from(v)),
            None => raw.tls.certs_dir.take().map(beside),
        };
        let security = SecurityConfig {
            insecure: raw.insecure.unwrap_or(false),
            certs_dir,
            read_token_file: raw.admin.read_token_file.take().map(beside),
            operator_token_file: raw.admin.operator_token_file.take().map(beside),
        };
        if let Some((_, v)) = var("CAIRN_CLUSTER") {
            raw.cluster = v;
        }
        if let Some((_, v)) = var("CAIRN_COORDINATOR") {
            // A comma-separated list of candidates, or one node.
            raw.coordinator = Some(RawCandidates::Many(
                v.split(',').map(|c| c.trim().to_string()).collect(),
            ));
        }
        // Paths the file names are relative to its folder, so that a command
        // run from anywhere finds the same data; the environment's are the caller's.
        raw.data_dir = raw.data_dir.take().map(beside);
        raw.trace_dir = raw.trace_dir.take().map(beside);
        raw.store = raw.store.take().map(|url| {
            if url.contains("://") {
                url
            } else {
                beside(PathBuf::from(url)).display().to_string()
            }
        });
        if let Some((_, v)) = var("CAIRN_DATA_DIR") {
            raw.data_dir = Some(v.into());
        }
        if let Some((_, v)) = var("CAIRN_STORE") {
            raw.store = Some(v);
        }
        if let Some((_, v)) = var("CAIRN_TRACE_DIR") {
            raw.trace_dir = Some(v.into());
        }
        let number = |(name, v): (String, String)| {
            v.parse::<u64>()
                .map_err(|_| err(&name, format!("{v:?} is not a whole number")))
        };
        if let Some(v) = var("CAIRN_MAX_FRAME_BYTES") {
            raw.max_frame_bytes = Some(number(v)?);
        }
        if let Some(v) = var("CAIRN_SNAPSHOT_INTERVAL_MS") {
            raw.snapshots.interval_ms = Some(number(v)?);
        }
        if let Some(v) = var("CAIRN_SNAPSHOT_TIMEOUT_MS") {
            raw.snapshots.timeout_ms = Some(number(v)?);
        }
        if let Some((_, v)) = var("CAIRN_SNAPSHOT_MODE") {
            raw.snapshots.mode = Some(v);
        }
        if let Some((name, v)) = var("CAIRN_SNAPSHOT_OVERTAKE") {
            raw.snapshots.overtake = Some(match v.parse::<bool>() {
                Ok(flag) => RawOvertake::Flag(flag),
                Err(_) => RawOvertake::Sides(v),
            });
            overtaking(raw.snapshots.overtake.as_ref()).map_err(|why| err(&name, why))?;
        }
        for node in &mut raw.nodes {
            let key = node.id.to_uppercase().replace(['-', '.'], "_");
            if let Some((_, v)) = var(&format!("CAIRN_NODE_{key}_ADDRESS")) {
                node.address = v;
            }
            if let Some((_, v)) = var(&format!("CAIRN_NODE_{key}_ADMIN")) {
                node.admin = toml::Value::String(v);
            }
            if let Some((_, v)) = var(&format!("CAIRN_NODE_{key}_LISTEN")) {
                node.listen = Some(v);
            }
        }

        if raw.cluster.is_empty() {
            return Err(err("cluster", "must not be empty".into()));
        }
        if raw.nodes.is_empty() {
            return Err(err("nodes", "list at least one node".into()));
        }
        let mut nodes = Vec::new();
        for (i, n) in raw.nodes.iter().enumerate() {
            let key = |k: &str| format!("nodes[{i}].{k}");
            check_host_port(&n.address).map_err(|p| err(&key("address"), p))?;
            let listen = n.listen.clone().unwrap_or_else(|| n.address.clone());
            check_host_port(&listen).map_err(|p| err(&key("listen"), p))?;
            let admin = match &n.admin {
                toml::Value::Integer(port) => u16::try_from(*port)
                    .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
                    .map_err(|_| err(&key("admin"), format!("{port} is not a port number"))),
                toml::Value::String(s) => match s.parse::<u16>() {
                    Ok(p) => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p)),
                    // An ip:port, or a host:port resolved now (the first address).
                    Err(_) => std::net::ToSocketAddrs::to_socket_addrs(s.as_str())
                        .map_err(|e| e.to_string())
                        .and_then(|mut a| {
                            a.next().ok_or_else(|| "it resolves to no address".into())
                        })
                        .map_err(|e| {
                            err(
                                &key("admin"),
                                format!("{s:?} is not a host:port, an ip:port or a port ({e})"),
                            )
                        }),
                },
                other => Err(err(
                    &key("admin"),
                    format!("{other:?} is not a host:port, an ip:port or a port"),
                )),
            }?;
            nodes.push(NodeConfig {
                id: n.id.clone(),
                address: n.address.clone(),
                listen,
                admin,
            });
        }
        let names: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let pairs: Vec<(String, String)> = match &raw.channels {
            RawChannels::Shorthand(s) if s == "complete" => Topology::complete_pairs(&names),
            RawChannels::Shorthand(s) if s == "ring" => Topology::ring_pairs(&names),
            RawChannels::Shorthand(s) => {
                return Err(err(
                    "channels",
                    format!(
                        "{s:?} is not a shorthand: use \"complete\", \"ring\" or a list of [from, to] pairs"
                    ),
                ));
            }
            RawChannels::List(list) => list.clone(),
        };
        let topology = Topology::new(names.clone(), &pairs).map_err(|e| {
            let key = if matches!(
                e,
                cairn_core::Error::DuplicateProcess(_) | cairn_core::Error::BadProcessName(_)
            ) {
                "nodes"
            } else {
                "channels"
            };
            err(key, e.to_string())
        })?;
        if !topology.is_strongly_connected() {
            let cut: Vec<String> = topology
                .processes()
                .filter(|&p| !topology.unreachable_from(&[p]).is_empty())
                .map(|p| topology.name(p).to_string())
                .collect();
            return Err(err(
                "channels",
                format!(
                    "the graph must be strongly connected so any node can start a snapshot; from {cut:?} some nodes cannot be reached"
                ),
            ));
        }
        let named: Vec<String> = match &raw.coordinator {
            None => names.clone(),
            Some(RawCandidates::One(c)) => vec![c.clone()],
            Some(RawCandidates::Many(list)) => list.clone(),
        };
        if named.is_empty() {
            return Err(err("coordinator", "name at least one candidate".into()));
        }
        let mut candidates: Vec<ProcessId> = Vec::new();
        for c in &named {
            let p = topology
                .process(c)
                .ok_or_else(|| err("coordinator", format!("{c:?} is not a node")))?;
            if candidates.contains(&p) {
                return Err(err("coordinator", format!("{c:?} is named twice")));
            }
            candidates.push(p);
        }
        let coordinator = candidates[0];
        let name = match raw.app.remove("name") {
            Some(toml::Value::String(s)) => s,
            _ => {
                return Err(err(
                    "app.name",
                    "must name the application, e.g. \"bank\"".into(),
                ));
            }
        };
        let params = serde_json::to_value(&raw.app)
            .map_err(|e| err("app", format!("parameters cannot be read: {e}")))?;
        let timeout_ms = raw.snapshots.timeout_ms.unwrap_or(5000);
        if timeout_ms == 0 {
            return Err(err("snapshots.timeout_ms", "must be at least 1".into()));
        }
        let mode = match &raw.snapshots.mode {
            Some(m) => SnapshotMode::parse(m).map_err(|p| err("snapshots.mode", p))?,
            None => SnapshotMode::default(),
        };
        let data_dir = raw
            .data_dir
            .clone()
            .unwrap_or_else(|| beside(PathBuf::from("cairn-data")));
        if let Some(url) = &raw.store {
            cairn_store::Store::open(url).map_err(|e| err("store", e.to_string()))?;
        }
        let overtake = overtaking(raw.snapshots.overtake.as_ref())
            .map_err(|why| err("snapshots.overtake", why))?;
        if overtake.any() && mode != SnapshotMode::ChandyLamport {
            return Err(err(
                "snapshots.overtake",
                format!(
                    "markers overtake messages only in mode \"chandy-lamport\", not {:?}",
                    mode.as_str()
                ),
            ));
        }
        let write_mb_per_s = match raw.snapshots.write_mb_per_s {
            None | Some(0) => None,
            Some(mb) if mb > 1 << 20 => {
                return Err(err(
                    "snapshots.write_mb_per_s",
                    format!("{mb} is over 1048576 (1 TiB a second); 0 means no limit"),
                ));
            }
            Some(mb) => Some(mb),
        };
        let max_frame_bytes = raw
            .max_frame_bytes
            .unwrap_or(DEFAULT_MAX_FRAME_BYTES as u64);
        if !(1024..=(1 << 30)).contains(&max_frame_bytes) {
            return Err(err(
                "max_frame_bytes",
                format!("{max_frame_bytes} is outside 1 KiB to 1 GiB"),
            ));
        }
        Ok(ClusterConfig {
            file: path.to_path_buf(),
            cluster: raw.cluster,
            nodes,
            topology: Arc::new(topology),
            coordinator,
            candidates,
            app: AppConfig { name, params },
            snapshots: SnapshotConfig {
                mode,
                interval: raw
                    .snapshots
                    .interval_ms
                    .filter(|&ms| ms > 0)
                    .map(Duration::from_millis),
                timeout: Duration::from_millis(timeout_ms),
                keep: raw.snapshots.keep.unwrap_or(100).max(1),
                retain: raw.snapshots.retain.unwrap_or(10).max(1),
                failure_timeout: match raw.snapshots.failure_timeout_ms {
                    Some(0) => None,
                    ms => Some(Duration::from_millis(ms.unwrap_or(1000))),
                },
                max_recorded_bytes: raw
                    .snapshots
                    .max_recorded_bytes
                    .unwrap_or(DEFAULT_MAX_RECORDED_BYTES),
                overtake,
                write_bytes_per_s: write_mb_per_s.map(|mb| mb << 20),
            },
            store: raw
                .store
                .unwrap_or_else(|| data_dir.join("snapshots").display().to_string()),
            data_dir,
            trace_dir: raw.trace_dir,
            trace_limit_bytes: match raw.trace_limit_mb.unwrap_or(DEFAULT_TRACE_LIMIT_MB) {
                0 => None,
                mb => Some(mb.saturating_mul(1 << 20)),
            },
            max_frame_bytes: max_frame_bytes as usize,
            allow_cut: raw.debug.allow_cut,
            security,
        })
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

fn check_host_port(s: &str) -> std::result::Result<(), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{s:?} is not host:port"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
