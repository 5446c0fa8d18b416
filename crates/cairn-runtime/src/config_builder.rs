//! A cluster configuration built in Rust, with the same keys, defaults and
//! checks as the TOML file (which is one way to fill it).

use std::time::Duration;

use serde::Serialize;
use toml::{Table, Value};

use crate::config::ClusterConfig;
use crate::error::{Error, Result};

/// Builds a [`ClusterConfig`]; [`build`](ConfigBuilder::build) checks it
/// exactly as a file is checked.
///
/// ```
/// use std::time::Duration;
/// use cairn_runtime::ClusterConfig;
///
/// let config = ClusterConfig::builder("shop")
///     .node("n1", "127.0.0.1:7001", "127.0.0.1:7101")
///     .node("n2", "127.0.0.1:7002", "127.0.0.1:7102")
///     .channels_complete()
///     .app("bank", &serde_json::json!({ "initial_balance": 1000 }))
///     .store("memory://shop")
///     .snapshot_interval(Duration::from_millis(500))
///     .insecure(true)
///     .build()
///     .unwrap();
/// assert_eq!(config.nodes.len(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    table: Table,
    nodes: Vec<Value>,
    pairs: Vec<Value>,
    snapshots: Table,
    problem: Option<String>,
}

impl ConfigBuilder {
    pub(crate) fn new(cluster: String) -> Self {
        let mut table = Table::new();
        table.insert("cluster".into(), Value::String(cluster));
        ConfigBuilder {
            table,
            nodes: Vec::new(),
            pairs: Vec::new(),
            snapshots: Table::new(),
            problem: None,
        }
    }

    fn set(mut self, key: &str, value: Value) -> Self {
        self.table.insert(key.into(), value);
        self
    }

    /// A node: its id, where peers reach it (`host:port`), and its admin
    /// API (`ip:port`).
    pub fn node(mut self, id: &str, address: &str, admin: &str) -> Self {
        let mut n = Table::new();
        n.insert("id".into(), id.into());
        n.insert("address".into(), address.into());
        n.insert("admin".into(), admin.into());
        self.nodes.push(Value::Table(n));
        self
    }

    /// A channel from `from` to `to` (call once per channel; a second call
    /// with the same pair adds a second channel).
    pub fn channel(mut self, from: &str, to: &str) -> Self {
        self.pairs.push(Value::Array(vec![from.into(), to.into()]));
        self
    }

    /// A channel each way between every pair of nodes.
    pub fn channels_complete(self) -> Self {
        self.set("channels", "complete".into())
    }

    /// A one-way ring through the nodes in order.
    pub fn channels_ring(self) -> Self {
        self.set("channels", "ring".into())
    }

    /// The application's name (for tools and the store's manifests) and
    /// its parameters, which the application's `Params` must accept.
    pub fn app(mut self, name: &str, params: &impl Serialize) -> Self {
        let mut app = match Value::try_from(params) {
            Ok(Value::Table(t)) => t,
            Ok(other) => {
                self.problem = Some(format!(
                    "app: parameters must be a map, not a {}",
                    other.type_str()
                ));
                Table::new()
            }
            Err(e) => {
                self.problem = Some(format!("app: parameters cannot be written: {e}"));
                Table::new()
            }
        };
        app.insert("name".into(), name.into());
        self.set("app", Value::Table(app))
    }

    /// The nodes that may coordinate, in order (default: every node).
    pub fn coordinators(self, ids: &[&str]) -> Self {
        let list = ids.iter().map(|&i| Value::from(i)).collect();
        self.set("coordinator", Value::Array(list))
    }

    /// Where snapshots go: a path, `s3://bucket/prefix` (with the `s3`
    /// feature) or `memory://NAME` (one store per process and name).
    pub fn store(self, url: &str) -> Self {
        self.set("store", url.into())
    }

    /// Where durable data goes by default.
    pub fn data_dir(self, dir: impl AsRef<std::path::Path>) -> Self {
        self.set("data_dir", dir.as_ref().display().to_string().into())
    }

    /// Where nodes write their traces (for diagrams and checking).
    pub fn trace_dir(self, dir: impl AsRef<std::path::Path>) -> Self {
        self.set("trace_dir", dir.as_ref().display().to_string().into())
    }

    /// The size at which a node stops tracing an epoch (default 1024 MiB; 0: no limit).
    pub fn trace_limit_mb(self, mb: u64) -> Self {
        self.set(
            "trace_limit_mb",
            i64::try_from(mb).unwrap_or(i64::MAX).into(),
        )
    }

    /// Plain TCP and HTTP, checking nobody: only for tests and demos on one
    /// machine. Otherwise name the certificates with [`certs_dir`](Self::certs_dir).
    pub fn insecure(self, yes: bool) -> Self {
        self.set("insecure", yes.into())
    }

    /// The cluster's certificates (`cairn cert init` makes them).
    pub fn certs_dir(mut self, dir: impl AsRef<std::path::Path>) -> Self {
        let mut tls = Table::new();
        tls.insert(
            "certs_dir".into(),
            dir.as_ref().display().to_string().into(),
        );
        self.table.insert("tls".into(), Value::Table(tls));
        self
    }

    fn millis(mut self, key: &str, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.snapshots.insert(key.into(), Value::Integer(ms));
        self
    }

    /// The coordinator starts a snapshot this often.
    pub fn snapshot_interval(self, every: Duration) -> Self {
        self.millis("interval_ms", every)
    }

    /// A snapshot not complete after this long fails.
    pub fn snapshot_timeout(self, after: Duration) -> Self {
        self.millis("timeout_ms", after)
    }

    /// A node silent this long is unreachable; a coordinator silent this
    /// long is replaced. `None` turns automatic recovery off.
    pub fn failure_timeout(self, after: Option<Duration>) -> Self {
        self.millis("failure_timeout_ms", after.unwrap_or(Duration::ZERO))
    }

    /// How many complete snapshots the store keeps.
    pub fn retain(mut self, snapshots: usize) -> Self {
        let n = i64::try_from(snapshots).unwrap_or(i64::MAX);
        self.snapshots.insert("retain".into(), Value::Integer(n));
        self
    }

    /// Checks the configuration as a file is checked.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key and the problem.
    pub fn build(mut self) -> Result<ClusterConfig> {
        if let Some(problem) = self.problem {
            return Err(Error::Config {
                file: "<built in Rust>".into(),
                key: String::new(),
                problem,
            });
        }
        self.table.insert("nodes".into(), Value::Array(self.nodes));
        if !self.pairs.is_empty() {
            self.table
                .insert("channels".into(), Value::Array(self.pairs));
        }
        if !self.snapshots.is_empty() {
            self.table
                .insert("snapshots".into(), Value::Table(self.snapshots));
        }
        ClusterConfig::from_table(self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_config_is_checked_like_a_file() {
        let c = ClusterConfig::builder("c")
            .node("a", "127.0.0.1:1", "127.0.0.1:2")
            .node("b", "127.0.0.1:3", "127.0.0.1:4")
            .channel("a", "b")
            .channel("b", "a")
            .app("bank", &serde_json::json!({ "initial_balance": 5 }))
            .snapshot_timeout(Duration::from_millis(700))
            .failure_timeout(None)
            .trace_limit_mb(5)
            .insecure(true)
            .build()
            .unwrap();
        assert_eq!(c.topology.channel_count(), 2);
        assert_eq!(c.trace_limit_bytes, Some(5 << 20));
        assert_eq!(c.app.params["initial_balance"], 5);
        assert_eq!(c.snapshots.timeout, Duration::from_millis(700));
        assert_eq!(c.snapshots.failure_timeout, None);
        assert!(c.security.insecure);
        // The same checks as a file: a one-way pair is not strongly connected.
        let e = ClusterConfig::builder("c")
            .node("a", "127.0.0.1:1", "127.0.0.1:2")
            .node("b", "127.0.0.1:3", "127.0.0.1:4")
            .channel("a", "b")
            .app("bank", &serde_json::json!({}))
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("channels: the graph must be strongly connected"),
            "{e}"
        );
        let e = ClusterConfig::builder("c")
            .node("a", "127.0.0.1:1", "127.0.0.1:2")
            .channels_ring()
            .app("bank", &5)
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("parameters must be a map"), "{e}");
    }
}
