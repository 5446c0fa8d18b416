//! Cairn over TCP: every node runs one user [`Process`](cairn_core::Process)
//! under one driver task that feeds cairn-core's engine and carries out its
//! outputs. Channels are FIFO and exactly-once across dropped connections;
//! a coordinator assembles global snapshots, commits them to a store, and
//! rolls the cluster back when a node loses its state.
//!
//! To run a node inside your own program, build a [`ClusterConfig`] (in
//! Rust with [`ClusterConfig::builder`], or from TOML with
//! [`ClusterConfig::load`]) and start a [`Node`]: its handle takes
//! snapshots typed with your application's state and messages, feeds your
//! process outside input, reads status, restores and shuts down.
//!
//! ```no_run
//! use std::time::Duration;
//! use cairn_apps::bank::Bank;
//! use cairn_runtime::{ClusterConfig, Node};
//!
//! # async fn go() -> Result<(), cairn_runtime::Error> {
//! let config = ClusterConfig::builder("shop")
//!     .node("n1", "127.0.0.1:7001", "127.0.0.1:7101")
//!     .node("n2", "127.0.0.1:7002", "127.0.0.1:7102")
//!     .channels_complete()
//!     .app("bank", &serde_json::json!({ "initial_balance": 1000 }))
//!     .store("snapshots")
//!     .insecure(true)
//!     .build()?;
//! let n1 = Node::<Bank>::start(config.clone(), "n1").await?;
//! let n2 = Node::<Bank>::start(config, "n2").await?;
//! let snapshot = n1.snapshot().await?;
//! let money: u64 = snapshot.states.values().map(|s| s.balance).sum();
//! # let _ = money;
//! n1.shutdown().await?;
//! n2.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The `cairn` CLI runs the same nodes as processes (`cairn node`), with
//! [`run_node`]; [`client::AdminClient`] talks to a running cluster's admin
//! API. The `s3` feature adds `s3://` stores.
#![warn(missing_docs)]

mod admin;
mod admin_auth;
mod baselines;
mod batch_queue;
pub mod client;
pub mod cluster;
pub mod config;
mod config_builder;
mod control;
mod coordinator;
mod dashboard;
mod driver;
mod embed;
mod error;
mod inbound;
mod metrics;
mod net;
mod node;
mod peers;
pub mod ports;
mod send_queue;
mod shared;
pub mod tls;
pub mod tracefile;
mod transport;
// The frames on peer links, for tests that speak the protocol as a hostile
// peer would. Not part of the API: it changes with the protocol version.
#[doc(hidden)]
pub mod wire;

pub use baselines::raw::run_raw_node;
pub use config::{ClusterConfig, ConfigBuilder};
pub use control::ControlError;
pub use control::initiation::{IdAnswer, IdRequest};
pub use control::recovery::{NodeRollback, RollbackRequest};
pub use embed::{Node, NodeStatus, Snapshot};
pub use error::{Error, Result};
pub use node::{run_node, run_node_seeded};
