//! Cairn over TCP: every node runs one user [`Process`](cairn_core::Process)
//! under one driver task that feeds cairn-core's engine and carries out its
//! outputs. Channels are FIFO and exactly-once across dropped connections;
//! a coordinator assembles global snapshots; every node serves an admin API.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cairn_runtime::{ClusterConfig, run_node};
//! use cairn_apps::bank::Bank;
//!
//! # async fn go() -> Result<(), cairn_runtime::Error> {
//! let config = Arc::new(ClusterConfig::load("cluster.toml".as_ref())?);
//! let me = config.node("n1")?;
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! run_node::<Bank>(config, me, shutdown).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod admin;
mod admin_auth;
mod baselines;
pub mod client;
pub mod cluster;
pub mod config;
pub mod control;
pub mod coordinator;
mod dashboard;
mod driver;
mod error;
mod inbound;
pub mod metrics;
mod net;
mod node;
mod peers;
mod shared;
pub mod tls;
pub mod tracefile;
mod transport;
pub mod wire;

pub use baselines::raw::run_raw_node;
pub use config::ClusterConfig;
pub use control::ControlError;
pub use control::initiation::{IdAnswer, IdRequest};
pub use control::recovery::{NodeRollback, RollbackRequest};
pub use error::{Error, Result};
pub use node::{run_node, run_node_seeded};
