//! A node inside your own program: [`Node::start`] runs one node of a
//! cluster on the caller's tokio runtime and returns a handle to take
//! snapshots (typed with the application's own state and message types),
//! read status, restore, feed outside input, and shut down.
//!
//! ```no_run
//! use cairn_runtime::{ClusterConfig, Node};
//! use cairn_apps::bank::Bank;
//!
//! # async fn go() -> Result<(), cairn_runtime::Error> {
//! let config = ClusterConfig::load("cluster.toml".as_ref())?;
//! let node = Node::<Bank>::start(config, "n1").await?;
//! let snapshot = node.snapshot().await?; // committed and durable
//! for (process, state) in &snapshot.states {
//!     println!("{process}: {state:?}");
//! }
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use cairn_core::Process;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::ClusterConfig;
use crate::control::initiation::start_here;
use crate::control::recovery::roll_back;
use crate::driver::Input;
use crate::error::{Error, Result};
use crate::node::{Embedding, run_node_with};
use crate::shared::Shared;

/// A committed global snapshot, typed: each process's recorded state and
/// each channel's recorded messages, as the application defines them.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot<S, M> {
    /// Its id.
    pub id: u64,
    /// The epoch it was taken in (each rollback begins a new one).
    pub epoch: u64,
    /// Each process's recorded state, by node id.
    pub states: BTreeMap<String, S>,
    /// Each channel's recorded messages, in order, by channel name
    /// (`"n1->n2"`, or `"n1->n2#1"` for a second channel between them).
    pub channels: BTreeMap<String, Vec<M>>,
}

impl<S, M> Snapshot<S, M> {
    /// The messages recorded on the channel from `from` to `to` (the first
    /// such channel), or none.
    pub fn channel(&self, from: &str, to: &str) -> &[M] {
        self.channels
            .get(&format!("{from}->{to}"))
            .map_or(&[], Vec::as_slice)
    }
}

/// How a node stands, as its `/status` says (a subset, typed).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node's id.
    pub node: String,
    /// The cluster's name.
    pub cluster: String,
    /// The epoch it is in.
    pub epoch: u64,
    /// The highest coordinator term it knows.
    pub term: u64,
    /// The coordinator it follows (or is).
    pub coordinator: String,
    /// Whether it coordinates.
    pub leading: bool,
    /// It restarted and lost its state, and awaits a restore.
    pub needs_restore: bool,
    /// Application messages sent and received since it started.
    pub messages_sent: u64,
    /// See `messages_sent`.
    pub messages_received: u64,
    /// Local snapshots it recorded.
    pub snapshots_recorded: u64,
}

/// A running node of a cluster, inside this program. Dropping it stops the
/// node too, without waiting; [`Node::shutdown`] waits for it to finish.
#[derive(Debug)]
pub struct Node<P: Process> {
    shared: Arc<Shared>,
    inputs: mpsc::Sender<Input<P::Message>>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<()>>>,
    _app: PhantomData<fn() -> P>,
}

impl<P: Process> Node<P> {
    /// Starts node `id` of `config`, running application `P` with the
    /// config's `[app]` parameters, on the current tokio runtime. Returns
    /// once its listeners are bound and its driver runs; the other nodes
    /// may start before or after.
    ///
    /// # Errors
    /// There is no node `id`, the parameters do not suit `P`, an address
    /// cannot be bound, or the store cannot be opened.
    pub async fn start(config: ClusterConfig, id: &str) -> Result<Self> {
        let me = config.node(id)?;
        let config = Arc::new(config);
        let (stop, shutdown) = watch::channel(false);
        let (inputs, inputs_rx) = mpsc::channel(1024);
        let (ready, ready_rx) = oneshot::channel();
        let embedding = Embedding {
            inputs: inputs_rx,
            ready,
        };
        let mut task = tokio::spawn(run_node_with::<P>(
            config,
            me,
            shutdown,
            None,
            Some(embedding),
        ));
        let shared = tokio::select! {
            shared = ready_rx => shared.ok(),
            // It ended before it ran: say why.
            ended = &mut task => match ended {
                Ok(Err(e)) => return Err(e),
                Ok(Ok(())) => None,
                Err(e) => return Err(Error::Protocol(format!("node {id} panicked at start: {e}"))),
            },
        };
        let shared =
            shared.ok_or_else(|| Error::Protocol(format!("node {id} stopped while starting")))?;
        Ok(Node {
            shared,
            inputs,
            stop,
            task: Some(task),
            _app: PhantomData,
        })
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        self.shared.name()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ClusterConfig {
        &self.shared.config
    }

    /// Gives this node's process outside input, handled as a local event of
    /// that process ([`Process::on_input`]) between its other events.
    ///
    /// # Errors
    /// The process refused it (its `on_input` said why), the node awaits a
    /// restore, or it has stopped.
    pub async fn input(&self, input: P::Message) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::Input(format!("node {} has stopped", self.id()));
        self.inputs
            .send((input, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(Error::Input)
    }

    /// This node's status.
    pub fn status(&self) -> NodeStatus {
        serde_json::from_value(crate::admin::status_value(&self.shared))
            .expect("a node's status always has every field of NodeStatus")
    }

    /// Starts a global snapshot here and waits until it is committed and
    /// durable in the store, then reads it back, typed.
    ///
    /// # Errors
    /// It could not start (a rollback is under way, too many in progress,
    /// the coordinator is unreachable), it failed (the error says why and
    /// what was missing), or it did not commit within the snapshot timeout.
    pub async fn snapshot(&self) -> Result<Snapshot<P::State, P::Message>> {
        let s = &self.shared;
        let id = start_here(s).await?.0;
        let deadline = Instant::now() + s.config.snapshots.timeout + Duration::from_secs(2);
        let failed = |problem: String| Error::Snapshot { id, problem };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(failed(format!(
                    "not committed within {:?}",
                    s.config.snapshots.timeout + Duration::from_secs(2)
                )));
            }
            let asked = s
                .client
                .get_json_within::<serde_json::Value>(
                    left.min(Duration::from_secs(1)),
                    s.coordinator_admin(),
                    &format!("/snapshots/{id}"),
                )
                .await;
            match asked {
                Ok((status, body)) if status.as_u16() == 500 => {
                    return Err(failed(crate::client::failure_reason(&body)));
                }
                // Complete; committed once its manifest is in the store.
                Ok((status, _)) if status.as_u16() == 200 && s.store.manifest(id).await.is_ok() => {
                    return self.read(id).await;
                }
                // In progress, or the coordinator is changing hands.
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads committed snapshot `id` from the store, typed.
    ///
    /// # Errors
    /// It is not in the store (never committed, or retention removed it), or
    /// it does not decode as this application's state and messages.
    pub async fn read(&self, id: u64) -> Result<Snapshot<P::State, P::Message>> {
        let stored = self
            .shared
            .store
            .load(id, &mut |_, _| {})
            .await
            .map_err(|e| Error::Snapshot {
                id,
                problem: e.to_string(),
            })?;
        let bad = |problem: String| Error::Snapshot { id, problem };
        let mut states = BTreeMap::new();
        let mut channels: BTreeMap<String, Vec<P::Message>> = BTreeMap::new();
        // What each receiver recorded, then what its sender's marker overtook.
        let tails = stored.parts.iter().flat_map(|p| &p.overtaken);
        for c in stored.parts.iter().flat_map(|p| &p.channels).chain(tails) {
            let messages = c
                .decode::<P::Message>()
                .map_err(|e| bad(format!("{e}: it does not decode as this application's")))?;
            channels.entry(c.name.clone()).or_default().extend(messages);
        }
        for (part, r) in stored.parts.into_iter().zip(&stored.manifest.parts) {
            let mut state: P::State = serde_json::from_value(part.state).map_err(|e| {
                bad(format!(
                    "the state of {} does not decode as this application's: {e}",
                    part.process
                ))
            })?;
            // A state split into chunks is whole only with them.
            let chunks = self
                .shared
                .store
                .read_chunks(r)
                .await
                .map_err(|e| bad(e.to_string()))?;
            if !chunks.is_empty() {
                P::join_state(&mut state, chunks)
                    .map_err(|e| bad(format!("the chunks of {}'s state: {e}", part.process)))?;
            }
            states.insert(part.process, state);
        }
        Ok(Snapshot {
            id,
            epoch: stored.manifest.epoch,
            states,
            channels,
        })
    }

    /// Rolls the whole cluster back to committed snapshot `id` (or the
    /// newest good one), in a new epoch; returns the snapshot it went to.
    /// From a node that does not coordinate, this asks the coordinator,
    /// which in a secure cluster needs the operator token
    /// (`[admin] operator_token_file`).
    ///
    /// # Errors
    /// The snapshot is not in the store, a node did not take the order, or
    /// the coordinator refused.
    pub async fn restore(&self, id: Option<u64>) -> Result<Option<u64>> {
        let s = &self.shared;
        let answer = match s.coordinator() {
            Some(c) => roll_back(s, &c, id).await?,
            None => {
                let mut client = s.client.clone();
                if let Some(f) = &s.config.security.operator_token_file {
                    client = client.with_token(crate::client::read_token(f)?);
                }
                let body = crate::RollbackRequest { snapshot: id };
                let (status, v) = client
                    .post_json::<_, serde_json::Value>(s.coordinator_admin(), "/rollback", &body)
                    .await?;
                if !status.is_success() {
                    return Err(Error::Admin {
                        url: "/rollback".into(),
                        problem: format!(
                            "{status}: {}",
                            v["error"].as_str().unwrap_or(&v.to_string())
                        ),
                    });
                }
                v
            }
        };
        Ok(answer["snapshot"].as_u64())
    }

    /// Stops the node and waits for it: its connections close, its trace is
    /// flushed, and the tasks it began end.
    ///
    /// # Errors
    /// What stopped the node, if it stopped by itself with an error.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(t) => t
                .await
                .map_err(|e| Error::Protocol(format!("node {} panicked: {e}", self.id())))?,
            None => Ok(()),
        }
    }
}

impl<P: Process> Drop for Node<P> {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
