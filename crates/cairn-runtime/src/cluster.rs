//! A local cluster: every node of a config as a child process on this
//! machine, supervised. A node stops cleanly when its standard input closes,
//! so stopping the cluster is closing every child's stdin.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, ChildStdin, Command};

use crate::client::AdminClient;
use crate::config::ClusterConfig;
use crate::error::{Error, Result};

/// The running children of one cluster.
#[derive(Debug)]
pub struct Supervisor {
    children: Vec<Running>,
    exe: std::path::PathBuf,
    config_path: std::path::PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
    /// Each node's log goes to `<dir>/<id>.log` (appended) when set.
    log_dir: Option<std::path::PathBuf>,
    /// A command each node runs under, by id (`ip netns exec NS`, say).
    wrappers: std::collections::BTreeMap<String, Vec<String>>,
}

/// One node's restarts under [`Supervisor::keep_running`].
struct Life {
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    started: Instant,
}

impl Life {
    fn new() -> Self {
        Life {
            delays: Box::new(Self::backoff()),
            started: Instant::now(),
        }
    }

    fn backoff() -> impl Iterator<Item = Duration> + Send {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// How long to wait before the next start: afresh after a minute up.
    fn next_delay(&mut self) -> Duration {
        if self.started.elapsed() >= Duration::from_secs(60) {
            self.delays = Box::new(Self::backoff());
        }
        self.delays.next().unwrap_or(Duration::from_secs(30))
    }
}

#[derive(Debug)]
struct Running {
    id: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Supervisor {
    /// Starts `exe node --config CONFIG --id ID --stop-on-stdin-eof` for every
    /// node, with `env` added to each child's environment.
    ///
    /// # Errors
    /// A child cannot be started.
    pub fn spawn(
        exe: &Path,
        config_path: &Path,
        config: &ClusterConfig,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::spawn_with_args(exe, config_path, config, env, &[])
    }

    /// As [`Supervisor::spawn`], with `args` added to every node's command line.
    ///
    /// # Errors
    /// A child cannot be started.
    pub fn spawn_with_args(
        exe: &Path,
        config_path: &Path,
        config: &ClusterConfig,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Self> {
        Self::spawn_inner(exe, config_path, config, env, args, None, &|_| Vec::new())
    }

    /// As [`Supervisor::spawn`], each node logging to `<log_dir>/<id>.log`
    /// instead of this process's standard error.
    ///
    /// # Errors
    /// A child cannot be started or its log file created.
    pub fn spawn_logged(
        exe: &Path,
        config_path: &Path,
        config: &ClusterConfig,
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> Result<Self> {
        std::fs::create_dir_all(log_dir)
            .map_err(|e| Error::io(format!("creating {}", log_dir.display()), e))?;
        Self::spawn_inner(exe, config_path, config, env, &[], Some(log_dir), &|_| {
            Vec::new()
        })
    }

    /// As [`Supervisor::spawn`], each node started under the command
    /// `wrap(id)` returns (for example `["ip", "netns", "exec", "lab-1"]`, to
    /// run it on a host of its own), logging to `<log_dir>/<id>.log` if given.
    ///
    /// # Errors
    /// A child cannot be started or its log file created.
    pub fn spawn_wrapped(
        exe: &Path,
        config_path: &Path,
        config: &ClusterConfig,
        env: &[(&str, &str)],
        log_dir: Option<&Path>,
        wrap: &dyn Fn(&str) -> Vec<String>,
    ) -> Result<Self> {
        if let Some(dir) = log_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        Self::spawn_inner(exe, config_path, config, env, &[], log_dir, wrap)
    }

    fn spawn_inner(
        exe: &Path,
        config_path: &Path,
        config: &ClusterConfig,
        env: &[(&str, &str)],
        args: &[&str],
        log_dir: Option<&Path>,
        wrap: &dyn Fn(&str) -> Vec<String>,
    ) -> Result<Self> {
        let mut sup = Supervisor {
            wrappers: config
                .nodes
                .iter()
                .map(|n| (n.id.clone(), wrap(&n.id)))
                .filter(|(_, w)| !w.is_empty())
                .collect(),
            log_dir: log_dir.map(Path::to_path_buf),
            args: args.iter().map(|a| a.to_string()).collect(),
            children: Vec::new(),
            exe: exe.to_path_buf(),
            config_path: config_path.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for n in &config.nodes {
            let r = sup.start(&n.id)?;
            sup.children.push(r);
        }
        Ok(sup)
    }

    fn start(&self, id: &str) -> Result<Running> {
        let mut cmd = match self.wrappers.get(id).and_then(|w| w.split_first()) {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        cmd.arg("node")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--id")
            .arg(id)
            .arg("--stop-on-stdin-eof")
            .args(&self.args)
            .stdin(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.log_dir {
            let path = dir.join(format!("{id}.log"));
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            cmd.stderr(log);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting node {id} ({})", self.exe.display()), e))?;
        let stdin = child.stdin.take();
        Ok(Running {
            id: id.to_string(),
            child,
            stdin,
        })
    }

    /// Starts node `id` again after it died.
    ///
    /// # Errors
    /// The node cannot be started.
    pub fn restart(&mut self, id: &str) -> Result<()> {
        let fresh = self.start(id)?;
        if let Some(slot) = self.children.iter_mut().find(|r| r.id == id) {
            *slot = fresh;
        }
        Ok(())
    }

    /// The operating-system process id of node `id`, while it runs.
    pub fn pid(&self, id: &str) -> Option<u32> {
        self.children.iter().find(|r| r.id == id)?.child.id()
    }

    /// Waits until every node answers `GET /status` with all its outgoing
    /// channels connected, one of them coordinates, with its epoch
    /// established (over a used store, after resuming), and every node
    /// follows that coordinator's term.
    ///
    /// # Errors
    /// A node exited, or was not ready within `timeout`.
    pub async fn wait_ready(
        &mut self,
        config: &ClusterConfig,
        client: &AdminClient,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for (i, n) in config.nodes.iter().enumerate() {
            loop {
                if let Ok((status, v)) = client
                    .get_json::<serde_json::Value>(n.admin, "/status")
                    .await
                {
                    // Another process on this node's admin port (another
                    // cluster, or a node left running) is not this node.
                    // (Under a wrapper the node's pid may not be the child's.)
                    let pid = self.children[i].child.id().map(u64::from);
                    let wrapped = self.wrappers.contains_key(&n.id);
                    let theirs = v["pid"].as_u64().filter(|p| !wrapped && Some(*p) != pid);
                    let other_cluster = v["cluster"].as_str().filter(|c| *c != config.cluster);
                    if theirs.is_some() || other_cluster.is_some() {
                        return Err(Error::Admin {
                            url: client.url(n.admin, "/status"),
                            problem: format!(
                                "node {}'s admin address {} is answered by another process (pid {}, cluster {:?}), not the node this command started: are these ports taken by another cluster?",
                                n.id,
                                n.admin,
                                v["pid"],
                                v["cluster"].as_str().unwrap_or("?"),
                            ),
                        });
                    }
                    let links_up = v["channels_out"]
                        .as_object()
                        .is_none_or(|o| o.values().all(|c| c["connected"] != false));
                    if status.is_success() && links_up {
                        break;
                    }
                }
                if let Ok(Some(code)) = self.children[i].child.try_wait() {
                    return Err(Error::Admin {
                        url: client.url(n.admin, "/status"),
                        problem: format!("node {} exited ({code}) before it was ready", n.id),
                    });
                }
                if Instant::now() > deadline {
                    return Err(Error::Admin {
                        url: client.url(n.admin, "/status"),
                        problem: format!("node {} was not ready within {timeout:?}", n.id),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Then until one node coordinates, with its epoch established, and
        // every node follows its term: an order forged or sent in that term
        // is then judged by every node as the coordinator's.
        loop {
            let mut term = None;
            let mut terms = Vec::new();
            for n in &config.nodes {
                let v = client
                    .get_json::<serde_json::Value>(n.admin, "/status")
                    .await
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                if v["leading"] == true && v["ready"] == true {
                    term = v["term"].as_u64();
                }
                // A raw-baseline node has no coordinator to follow.
                if v.get("leading").is_some() || v.is_null() {
                    terms.push((n.id.as_str(), v["term"].as_u64()));
                }
            }
            let lagging: Vec<&str> = terms
                .iter()
                .filter(|(_, t)| term.is_none() || *t != term)
                .map(|(id, _)| *id)
                .collect();
            // (A raw-baseline cluster has no coordinator at all.)
            if terms.is_empty() || term.is_some() && lagging.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Admin {
                    url: "GET /status".into(),
                    problem: match term {
                        None => format!("no node was a ready coordinator within {timeout:?}"),
                        Some(t) => format!(
                            "nodes {lagging:?} did not follow the coordinator's term {t} within {timeout:?}"
                        ),
                    },
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until some child exits, and names it.
    pub async fn next_exit(&mut self) -> (String, std::io::Result<ExitStatus>) {
        self.next_exit_except(&BTreeSet::new()).await
    }

    /// As [`Supervisor::next_exit`], passing over the nodes in `waiting`
    /// (exited already, and waiting to be started again).
    async fn next_exit_except(
        &mut self,
        waiting: &BTreeSet<String>,
    ) -> (String, std::io::Result<ExitStatus>) {
        loop {
            for r in self
                .children
                .iter_mut()
                .filter(|r| !waiting.contains(&r.id))
            {
                match r.child.try_wait() {
                    Ok(Some(status)) => return (r.id.clone(), Ok(status)),
                    Ok(None) => {}
                    Err(e) => return (r.id.clone(), Err(e)),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Keeps every node running until `until` completes: a node that exits
    /// is started again after a back-off that grows while it keeps exiting
    /// (0.5 s doubling to 30 s, with jitter) and starts afresh once it has
    /// stayed up for a minute. The other nodes run on meanwhile; a node
    /// that keeps failing never takes them down. `say` hears each exit.
    ///
    /// # Errors
    /// A node cannot be started at all (its executable is gone, say).
    pub async fn keep_running(
        &mut self,
        until: impl std::future::Future<Output = ()>,
        say: &mut dyn FnMut(String),
    ) -> Result<()> {
        let mut lives: BTreeMap<String, Life> = BTreeMap::new();
        let mut due: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
        let mut until = std::pin::pin!(until);
        loop {
            let next = due
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(id, t)| (id.clone(), *t));
            let waiting: BTreeSet<String> = due.keys().cloned().collect();
            let wake = next.as_ref().map(|(_, t)| *t);
            tokio::select! {
                () = &mut until => return Ok(()),
                (id, status) = self.next_exit_except(&waiting) => {
                    let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    let delay = lives.entry(id.clone()).or_insert_with(Life::new).next_delay();
                    say(format!("node {id} exited ({how}); starting it again in {:.1} s", delay.as_secs_f64()));
                    due.insert(id, tokio::time::Instant::now() + delay);
                }
                () = async { tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)).await }, if wake.is_some() => {
                    if let Some((id, _)) = next {
                        due.remove(&id);
                        if let Some(life) = lives.get_mut(&id) {
                            life.started = Instant::now();
                        }
                        self.restart(&id)?;
                    }
                }
            }
        }
    }

    /// Stops every node: closes its stdin, waits up to `grace`, then kills it.
    /// Returns each node's exit status (`None` if it had to be killed).
    pub async fn stop(mut self, grace: Duration) -> Vec<(String, Option<ExitStatus>)> {
        for r in &mut self.children {
            r.stdin.take();
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut out = Vec::new();
        for mut r in self.children.drain(..) {
            let status = tokio::time::timeout_at(deadline, r.child.wait())
                .await
                .ok()
                .and_then(|s| s.ok());
            if status.is_none() {
                let _ = r.child.kill().await;
            }
            out.push((r.id, status));
        }
        out
    }
}
