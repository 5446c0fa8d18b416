//! The `cairn` command line: a thin layer over the library crates.

use std::fs;
use std::hash::{BuildHasher, RandomState};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn_runtime::ClusterConfig;
use cairn_sim::{demo, token};
use clap::{Parser, Subcommand};

mod bench_cmds;
mod bench_report;
mod bench_scaling;
mod cert_cmds;
mod cluster_cmds;
mod demo_cluster;
mod detect_cmds;
mod present;
mod sim_cmd;
mod snapshots_cmds;
mod trace_cmds;

/// Consistent global snapshots for message-passing programs (Chandy–Lamport).
#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about,
    after_help = "Logs go to stderr. RUST_LOG sets what they show (e.g. RUST_LOG=debug, or RUST_LOG=cairn_runtime=debug); the default is warn, and info for `cairn node`.\nCAIRN_CONFIG names the cluster config when --config is not given."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// More log output: -v info, -vv debug, -vvv trace (RUST_LOG, when set, wins).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Errors only in the log output.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a local 5-node bank cluster under load, snapshot it every 200 ms
    /// and check that every snapshot conserves the money. With --simulated,
    /// run the simulator demo instead.
    Demo {
        /// Run the simulated 8-process token system, every snapshot checked by the oracle.
        #[arg(long)]
        simulated: bool,
        /// Seed of the simulated run; a random one is chosen and printed when absent.
        #[arg(long, requires = "simulated")]
        seed: Option<u64>,
        /// How long the cluster demo takes snapshots.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
        seconds: u64,
        /// Print the result as JSON on stdout (the running commentary goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// Measure what snapshots cost a running cluster: throughput against a
    /// raw framed-TCP baseline and against no snapshots, snapshot latency
    /// against its floor, the longest processing pause, markers per
    /// snapshot, stop-the-world and aligned barriers side by side, and how
    /// all of it scales with the size of the state. Exits 1 if a figure is
    /// missing or a control count is wrong.
    Bench {
        /// A short run that still produces every figure (what CI runs).
        #[arg(long)]
        quick: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Run only these variants and skip state-size scaling, e.g. to profile
        /// one. `cl-100ms-sender` and `cl-100ms-receiver` (overtaking on one
        /// side) run only when named here. The paired on/off comparison runs
        /// when `off` and `cl-100ms` are both named.
        #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(bench_cmds::VARIANTS.map(|v| v.name)))]
        only: Vec<String>,
        /// Per-process state sizes for the scaling runs, in bytes
        /// (default 1 KiB, 1 MiB and 64 MiB; --quick: 1 KiB and 1 MiB).
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(0..=(1 << 30)))]
        state_bytes: Vec<u64>,
        /// Cluster sizes to run (default 4 and 8; --quick: 4).
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(2..=32))]
        nodes: Vec<u64>,
        /// Topologies to run: complete, ring (default both; --quick: complete).
        #[arg(long, value_delimiter = ',', value_parser = ["complete", "ring"])]
        topology: Vec<String>,
    },
    /// Run one node of a cluster.
    Node {
        /// The cluster configuration (TOML).
        #[arg(long)]
        config: PathBuf,
        /// This node's id.
        #[arg(long)]
        id: String,
        /// Write this node's trace (JSON Lines) and states into this folder.
        #[arg(long)]
        trace_dir: Option<PathBuf>,
        /// Stop cleanly when standard input closes (how `cairn cluster` stops its nodes).
        #[arg(long)]
        stop_on_stdin_eof: bool,
        /// Run as the raw framed-TCP baseline that `cairn bench` measures
        /// against: the same application and framing, none of Cairn (plain
        /// TCP, so the config must say insecure = true).
        #[arg(long, conflicts_with = "trace_dir")]
        raw_baseline: bool,
    },
    /// Start every node of a config as a local child process and supervise them.
    Cluster {
        /// The cluster configuration (TOML).
        #[arg(long, env = "CAIRN_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        auth: cluster_cmds::AuthArgs,
    },
    /// Take a snapshot of a running cluster now and print it as JSON. Gives
    /// up (exit 1, with the reason) 2 s after the snapshot timeout.
    Snapshot {
        /// The cluster configuration (TOML).
        #[arg(long, env = "CAIRN_CONFIG")]
        config: PathBuf,
        /// Start it at this node (default: the coordinator).
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        auth: cluster_cmds::AuthArgs,
    },
    /// Detect a stable property by taking snapshots one after another: in the
    /// simulator, or on a running cluster with --config. Exit 0 when detected,
    /// 1 when the limit ran out first.
    Detect {
        /// The property.
        property: detect_cmds::Property,
        /// A running cluster's configuration (its app must fit the property:
        /// diffusing, locks or ring); without it, run in the simulator.
        #[arg(long)]
        config: Option<PathBuf>,
        /// On a cluster: start no snapshot after this many seconds (one already
        /// started is still waited for and evaluated).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        time_limit: u64,
        /// In the simulator: the seed (random and printed when absent).
        #[arg(long)]
        seed: Option<u64>,
        /// In the simulator: the number of processes.
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(3..=1000))]
        processes: u64,
        /// In the simulator: give up after this many snapshots.
        #[arg(long, default_value_t = 200)]
        max_snapshots: usize,
        /// Print one JSON object instead of a sentence.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        auth: cluster_cmds::AuthArgs,
    },
    /// Roll a running cluster back to a snapshot: every node restores its part
    /// in a new epoch, and recorded in-flight messages are delivered again.
    /// Waits at most 20 s for the rollback.
    Restore {
        /// The cluster configuration (TOML).
        #[arg(long, env = "CAIRN_CONFIG")]
        config: PathBuf,
        /// The snapshot (default: the newest complete, uncorrupted one).
        #[arg(long)]
        snapshot: Option<u64>,
        #[command(flatten)]
        auth: cluster_cmds::AuthArgs,
    },
    /// List, show, verify or delete the snapshots in a store.
    Snapshots {
        #[command(flatten)]
        store: snapshots_cmds::StoreArgs,
        #[command(subcommand)]
        action: snapshots_cmds::Action,
    },
    /// Show the nodes, channels and recent snapshots of a running cluster.
    /// Asks every node at once and waits at most 1 s; names the nodes that
    /// did not answer and those the coordinator cannot reach (exit 1).
    Status {
        /// The cluster configuration (TOML).
        #[arg(long, env = "CAIRN_CONFIG")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        auth: cluster_cmds::AuthArgs,
    },
    /// Make and list the cluster's certificates: a CA, one per node, one
    /// per operator or tool (files named as CockroachDB names them).
    Cert {
        #[command(subcommand)]
        action: cert_cmds::CertAction,
    },
    /// Run a COS 418 topology and events script in the simulator and print the
    /// snapshots as a JSON array.
    Sim {
        /// The topology file (.top).
        #[arg(long)]
        topology: PathBuf,
        /// The events script (.events).
        #[arg(long)]
        events: PathBuf,
        /// Seed of the random delays; a random one is chosen and printed when absent.
        #[arg(long)]
        seed: Option<u64>,
        /// Each message and marker takes 1 to this many ticks.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        max_delay: u64,
        /// Write the run as JSON Lines here.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Write the run as a ShiViz log here.
        #[arg(long)]
        shiviz: Option<PathBuf>,
        /// Draw the run as a space-time diagram (SVG) here, with a snapshot's cut.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// The snapshot whose cut the diagram draws (default: the first).
        #[arg(long, requires = "svg")]
        svg_snapshot: Option<u64>,
        /// Let markers overtake messages: jump the sender's unwritten ones,
        /// be taken ahead of the receiver's unhandled ones, or both.
        #[arg(long, value_enum, default_value_t = sim_cmd::Overtake::None)]
        overtake: sim_cmd::Overtake,
    },
    /// Turn a cluster's traces (`cairn node --trace-dir`) into a space-time
    /// diagram or a ShiViz log.
    Trace {
        #[command(subcommand)]
        action: trace_cmds::TraceAction,
    },
    /// Print shell completions: `cairn completions bash > /etc/bash_completion.d/cairn`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Cmd::Node { .. }
            | Cmd::Cluster { .. }
            | Cmd::Demo {
                simulated: false,
                ..
            }
            | Cmd::Bench { .. }
    ) {
        quiet_broken_pipe();
    }
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) if matches!(cli.command, Cmd::Node { .. }) => "info",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A command whose output is piped into `head` ends quietly when the pipe
/// closes, as `cat` does, instead of panicking on the failed write: Rust
/// ignores SIGPIPE, and this restores the default. Not for the commands
/// that run or supervise nodes, which write to their children's pipes and
/// must outlive any reader.
fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: called at start, before any thread exists; SIG_DFL is a valid
    // action for SIGPIPE.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Demo {
            simulated: false,
            seconds,
            json,
            ..
        } => {
            let ok = runtime()?.block_on(demo_cluster::run(seconds, json))?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Bench {
            quick,
            json,
            only,
            state_bytes,
            nodes,
            topology,
        } => {
            let mut plan = bench_cmds::Plan::new(quick);
            if !only.is_empty() {
                plan.only = only;
                plan.state_sizes.clear();
            }
            if !nodes.is_empty() {
                plan.nodes = nodes.iter().map(|&n| n as usize).collect();
            }
            if !topology.is_empty() {
                plan.topologies = topology;
            }
            if !state_bytes.is_empty() {
                plan.state_sizes = state_bytes.iter().map(|&b| b as usize).collect();
            }
            let report = runtime()?.block_on(bench_report::run(&plan, quick))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                bench_report::print(&report);
            }
            let problems = bench_report::problems(&report);
            for p in &problems {
                eprintln!("error: {p}");
            }
            Ok(if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Node {
            config,
            id,
            trace_dir,
            stop_on_stdin_eof,
            raw_baseline,
        } => {
            let cfg = cluster_cmds::load(&config)?;
            runtime()?.block_on(cluster_cmds::node(
                cfg,
                &id,
                trace_dir.as_deref(),
                stop_on_stdin_eof,
                raw_baseline,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cluster { config, auth } => {
            let cfg = cluster_cmds::load(&config)?;
            let client = auth.client(&cfg)?;
            runtime()?.block_on(cluster_cmds::cluster(&config, &cfg, &client))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Snapshot { config, node, auth } => {
            let cfg = ClusterConfig::load(&config)?;
            let client = auth.client(&cfg)?;
            runtime()?.block_on(cluster_cmds::snapshot(&cfg, &client, node.as_deref()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { config, json, auth } => {
            let cfg = ClusterConfig::load(&config)?;
            let client = auth.client(&cfg)?;
            let healthy = runtime()?.block_on(cluster_cmds::status(&cfg, &client, json))?;
            Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Restore {
            config,
            snapshot,
            auth,
        } => {
            let cfg = ClusterConfig::load(&config)?;
            let client = auth.client(&cfg)?;
            runtime()?.block_on(cluster_cmds::restore(&cfg, &client, snapshot))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cert { action } => cert_cmds::run(&action),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "cairn", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Snapshots { store, action } => {
            runtime()?.block_on(snapshots_cmds::run(&store, &action))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Detect {
            property,
            config,
            time_limit,
            seed,
            processes,
            max_snapshots,
            json,
            auth,
        } => {
            let found = match config {
                Some(path) => {
                    let cfg = cluster_cmds::load(&path)?;
                    let client = auth.client(&cfg)?;
                    let limit = std::time::Duration::from_secs(time_limit);
                    runtime()?.block_on(detect_cmds::on_cluster(
                        &cfg, &client, property, limit, json,
                    ))?
                }
                None => detect_cmds::simulated(
                    property,
                    seed.unwrap_or_else(random_seed),
                    processes as usize,
                    max_snapshots,
                    json,
                )?,
            };
            Ok(if found {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Demo { seed, json, .. } => {
            let seed = seed.unwrap_or_else(random_seed);
            let report = demo::run_demo(seed).context("the demo run failed")?;
            if json {
                let topo = &report.run.topology;
                let snapshots: Vec<serde_json::Value> = report
                    .run
                    .snapshots
                    .iter()
                    .map(|s| {
                        let (held, flying) = token::recorded_tokens(s);
                        serde_json::json!({
                            "snapshot": s.to_doc(topo),
                            "held": held,
                            "in_flight": flying,
                            "conserved": held + flying == report.total,
                        })
                    })
                    .collect();
                let out = serde_json::json!({
                    "seed": report.run.seed,
                    "total": report.total,
                    "snapshots": snapshots,
                    "violations": report.violations.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "passed": report.passed(),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("{report}");
            }
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Sim {
            topology,
            events,
            seed,
            max_delay,
            trace,
            shiviz,
            svg,
            svg_snapshot,
            overtake,
        } => {
            let seed = seed.unwrap_or_else(random_seed);
            eprintln!("seed {seed} (replay with --seed {seed})");
            let outputs = sim_cmd::SimOutputs {
                trace,
                shiviz,
                svg,
                svg_snapshot,
            };
            let config = cairn_sim::Config {
                seed,
                max_delay,
                overtaking: overtake.into(),
                ..cairn_sim::Config::default()
            };
            sim_cmd::sim(&topology, &events, config, &outputs)
        }
        Cmd::Trace { action } => {
            trace_cmds::run(action)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One thread is enough for a node, and keeps a cluster of them light on two cores.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write_file(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let file =
        fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = BufWriter::new(file);
    body(&mut w)
        .and_then(|()| w.flush())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn random_seed() -> u64 {
    RandomState::new().hash_one(std::process::id())
}
