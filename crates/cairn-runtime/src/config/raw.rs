//! The configuration as the file spells it, and how it becomes a
//! [`ClusterConfig`]: environment overrides applied, then every key checked,
//! each problem named by its key.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
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
    stale_after_ms: Option<u64>,
}

impl ClusterConfig {
    /// Applies environment overrides to `raw`, read from `path`, and checks it.
    pub(super) fn validate(
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
            stale_after: raw.debug.stale_after_ms.map(Duration::from_millis),
            security,
        })
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
