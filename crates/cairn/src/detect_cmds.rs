//! `cairn detect termination|deadlock|lost-token`, in the simulator or on a
//! running cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use cairn_apps::diffusing::{Diffusing, DiffusingParams, Termination};
use cairn_apps::locks::{Deadlock, Locks, LocksParams};
use cairn_apps::protocol::Protocol;
use cairn_apps::ring::{LostToken, Ring, RingParams};
use cairn_core::{Detector, GlobalSnapshot, SnapshotDoc, StableProperty, Topology};
use cairn_runtime::client::AdminClient;
use cairn_runtime::{ClusterConfig, IdAnswer};
use cairn_sim::detect::detect;
use cairn_sim::workload::random_topology;
use cairn_sim::{Config, Simulator};
use clap::ValueEnum;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A stable property Cairn can detect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Property {
    /// A diffusing computation has terminated (app `diffusing`).
    Termination,
    /// The lock service is deadlocked (app `locks`).
    Deadlock,
    /// The token ring has lost its token (app `ring`).
    LostToken,
}

impl Property {
    fn app(self) -> &'static str {
        match self {
            Property::Termination => "diffusing",
            Property::Deadlock => "locks",
            Property::LostToken => "ring",
        }
    }
}

/// What a detection found, for people or (with `--json`) programs.
fn print(property: &str, found: Option<(usize, u64, String, Value)>, rounds: usize, json: bool) {
    if json {
        let out = match &found {
            Some((n, id, when, evidence)) => {
                json!({"property": property, "detected": true, "snapshots": n, "snapshot": id, "when": when, "evidence": evidence})
            }
            None => json!({"property": property, "detected": false, "snapshots": rounds}),
        };
        println!("{out}");
        return;
    }
    match found {
        Some((n, id, when, evidence)) => {
            let evidence = match evidence {
                Value::String(s) => s,
                // A deadlock's cycle: who waits for whose lock, held by whom.
                Value::Array(waits) if waits.iter().all(|w| w.get("holder").is_some()) => {
                    let links: Vec<String> = waits
                        .iter()
                        .map(|w| {
                            format!(
                                "{} waits for {}'s lock, held by {}",
                                w["process"].as_str().unwrap_or("?"),
                                w["lock"].as_str().unwrap_or("?"),
                                w["holder"].as_str().unwrap_or("?")
                            )
                        })
                        .collect();
                    format!("wait-for cycle: {}", links.join("; "))
                }
                other => other.to_string(),
            };
            println!("{property} detected after {n} snapshots (snapshot {id}, {when}): {evidence}");
        }
        None => println!("{property} not detected in {rounds} snapshots"),
    }
}

/// Runs the property's application in the simulator and detects it.
/// Returns whether it was detected.
pub fn simulated(
    property: Property,
    seed: u64,
    processes: usize,
    max_rounds: usize,
    json: bool,
) -> Result<bool> {
    if processes < 3 {
        bail!("--processes must be at least 3");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    eprintln!("seed {seed} (replay with --seed {seed})");
    match property {
        Property::Termination => {
            let topo = random_topology(&mut rng, processes, processes);
            let app = Diffusing::from_params(&DiffusingParams::default(), &topo)
                .map_err(anyhow::Error::msg)?;
            run_sim(topo, app, Termination, seed, max_rounds, json)
        }
        Property::Deadlock => {
            let names: Vec<String> = (1..=processes).map(|i| format!("N{i}")).collect();
            let pairs = Topology::complete_pairs(&names);
            let topo = Topology::new(names, &pairs)?;
            let app = Locks::from_params(&LocksParams { ordered: false }, &topo)
                .map_err(anyhow::Error::msg)?;
            run_sim(topo, app, Deadlock, seed, max_rounds, json)
        }
        Property::LostToken => {
            let names: Vec<String> = (1..=processes).map(|i| format!("N{i}")).collect();
            let pairs = Topology::ring_pairs(&names);
            let topo = Topology::new(names, &pairs)?;
            let params = RingParams {
                lose_at_hop: Some(rng.random_range(5..60)),
                rate: None,
            };
            let app = Ring::from_params(&params, &topo).map_err(anyhow::Error::msg)?;
            run_sim(topo, app, LostToken, seed, max_rounds, json)
        }
    }
}

fn run_sim<A, P>(
    topo: Topology,
    app: A,
    property: P,
    seed: u64,
    max_rounds: usize,
    json: bool,
) -> Result<bool>
where
    A: Protocol,
    P: StableProperty<A::Message, A::State>,
    P::Evidence: Serialize,
{
    let name = property.name().to_string();
    let topo = Arc::new(topo);
    let initial = topo.processes().map(|p| app.initial(p, &topo)).collect();
    let mut sim = Simulator::new(
        topo,
        app.clone(),
        initial,
        Config {
            seed,
            ..Config::default()
        },
    )?;
    let outcome = detect(&mut sim, property, max_rounds, 3)?;
    let found = outcome.detection.map(|d| {
        let tick = outcome.rounds.last().map_or(0, |r| r.ended_at);
        (
            d.rounds,
            d.snapshot.id.0,
            format!("tick {tick}"),
            serde_json::to_value(&d.evidence).unwrap_or(Value::Null),
        )
    });
    let detected = found.is_some();
    // The snapshots behind the answer are judged by the oracle too.
    let run = sim.finish()?;
    if let Some(v) = run.verify(&app).first() {
        bail!("the oracle rejected a snapshot of this run: {v}");
    }
    print(&name, found, outcome.rounds.len(), json);
    Ok(detected)
}

/// Takes snapshots of a running cluster until the property shows or time runs out.
pub async fn on_cluster(
    config: &ClusterConfig,
    client: &AdminClient,
    property: Property,
    limit: Duration,
    json: bool,
) -> Result<bool> {
    if config.app.name != property.app() {
        bail!(
            "{}: app.name: detecting {property:?} needs the {:?} application, this cluster runs {:?}",
            config.file.display(),
            property.app(),
            config.app.name
        );
    }
    match property {
        Property::Termination => cluster_loop(config, client, Termination, limit, json).await,
        Property::Deadlock => cluster_loop(config, client, Deadlock, limit, json).await,
        Property::LostToken => cluster_loop(config, client, LostToken, limit, json).await,
    }
}

async fn cluster_loop<M, S, P>(
    config: &ClusterConfig,
    client: &AdminClient,
    property: P,
    limit: Duration,
    json: bool,
) -> Result<bool>
where
    M: DeserializeOwned,
    S: DeserializeOwned,
    P: StableProperty<M, S>,
    P::Evidence: Serialize,
{
    let name = property.name().to_string();
    let mut detector = Detector::new(property);
    let coordinator = config.nodes[crate::cluster_cmds::find_coordinator(config, client)
        .await
        .index()]
    .admin;
    let started = Instant::now();
    while started.elapsed() < limit {
        let (status, answer): (_, Value) = client
            .post_json(coordinator, "/snapshots", &json!({}))
            .await?;
        if !status.is_success() {
            bail!("the coordinator refused a snapshot: {status} {answer}");
        }
        let id = serde_json::from_value::<IdAnswer>(answer)?.id;
        // A snapshot started before the limit is waited for (at most its own
        // timeout past the limit) and evaluated: none is taken for nothing.
        let give_up = limit + config.snapshots.timeout + Duration::from_secs(1);
        let doc: SnapshotDoc<M, S> = loop {
            let (status, body): (_, Value) = client
                .get_json(coordinator, &format!("/snapshots/{}", id.0))
                .await?;
            match status.as_u16() {
                200 => break serde_json::from_value(body)?,
                202 if started.elapsed() < give_up => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                202 => bail!("snapshot {id} did not complete within its timeout"),
                _ => bail!("snapshot {id} failed: {body}"),
            }
        };
        let snapshot = GlobalSnapshot::from_doc(&config.topology, doc)?;
        if let Some(d) = detector.observe(&config.topology, snapshot) {
            let when = format!(
                "{:.2} s after detection started",
                started.elapsed().as_secs_f64()
            );
            let evidence = serde_json::to_value(&d.evidence)?;
            print(
                &name,
                Some((d.rounds, d.snapshot.id.0, when, evidence)),
                d.rounds,
                json,
            );
            return Ok(true);
        }
    }
    print(&name, None, detector.rounds(), json);
    Ok(false)
}
