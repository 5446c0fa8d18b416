//! A bank cluster on turmoil hosts `n1`..`nN`, an operator host, and the
//! checks every run ends with: each snapshot conserves the money, and the
//! oracle accepts each (its states put back together with their chunks from
//! the store) against the merged traces of its epoch.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use cairn_apps::bank::{Balance, Bank, BankModel, Transfer};
use cairn_core::oracle::{self, Run};
use cairn_core::{GlobalSnapshot, Process, SnapshotDoc};
use cairn_runtime::client::AdminClient;
use cairn_runtime::tls::{Identity, Security};
use cairn_runtime::{ClusterConfig, run_node_seeded};
use serde_json::Value;
use tokio::sync::watch;

/// Each node's starting balance.
pub const BALANCE: u64 = 1000;

/// Each state carries three pieces of ballast stored in chunks, 1% of which
/// is rewritten every 40 transfers received: parts are written
/// incrementally, and rollbacks restore chunks, under every fault. The
/// store keeps every snapshot (unless a scenario says otherwise), so the
/// check can read each one back whole.
const BALLAST: &str = "state_bytes = 1100000\nballast_churn = 0.01\nchurn_every = 40";

/// The seeds to run: `CAIRN_DST_SEED` alone if set, else `CAIRN_DST_SEEDS`
/// of them (default `default`), derived from the scenario's name.
pub fn seeds(scenario: &str, default: u64) -> Vec<u64> {
    if let Some(one) = std::env::var("CAIRN_DST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![one];
    }
    let n = std::env::var("CAIRN_DST_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    let base = scenario.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (0..n).map(|i| base.wrapping_add(i) % 1_000_000).collect()
}

/// One simulated cluster: its config, folder and seed.
#[derive(Debug)]
pub struct Cluster {
    /// Config, certificates and traces.
    pub dir: PathBuf,
    /// The cluster's config.
    pub config: Arc<ClusterConfig>,
    /// The seed of this run.
    pub seed: u64,
    /// Shutdown switches of the running nodes' lives.
    stops: Rc<RefCell<Vec<watch::Sender<bool>>>>,
}

/// A run that passed leaves nothing behind in the temporary folder; a
/// failed one keeps its traces there for a post-mortem.
impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "seed {}: the run's files are kept in {}",
                self.seed,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes the config of an `n`-node bank cluster for `seed`: hosts get
/// turmoil's addresses 192.168.0.1.. in order, the store is in memory
/// (shared by every host, like S3 beyond the partitions), every node is a
/// coordinator candidate, and markers overtake queued messages on the sides
/// `seed % 4` picks: none, sender, receiver, both.
pub fn cluster(scenario: &str, seed: u64, n: usize) -> Cluster {
    cluster_with(scenario, seed, n, |toml| toml)
}

/// As [`cluster`], with the configuration's text passed through `tweak`
/// before it is written (to change a default or add a table).
pub fn cluster_with(
    scenario: &str,
    seed: u64,
    n: usize,
    tweak: impl FnOnce(String) -> String,
) -> Cluster {
    // `CAIRN_DST_LOG=info` (a tracing filter) shows the nodes' logs.
    if let Ok(filter) = std::env::var("CAIRN_DST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let dir = std::env::temp_dir().join(format!(
        "cairn-dst-{}-{scenario}-{seed}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let certs = dir.join("certs");
    cairn_runtime::tls::certs::ensure_cluster(&certs, &ids).unwrap();
    let candidates: Vec<String> = ids.iter().map(|i| format!("{i:?}")).collect();
    // Every run has a store of its own, even the same seed twice.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Markers overtake on the sides the seed picks, so that every scenario
    // runs each way across the seeds.
    let overtake = ["none", "sender", "receiver", "both"][(seed % 4) as usize];
    eprintln!("{scenario}: seed {seed}: markers overtake on side(s) {overtake:?}");
    let mut toml = format!(
        "cluster = \"dst\"\ntls = {{ certs_dir = {certs:?} }}\nchannels = \"complete\"\ntrace_dir = {:?}\n\
         store = \"memory://dst-{scenario}-{seed}-{run}\"\ncoordinator = [{}]\n\n\
         [app]\nname = \"bank\"\ninitial_balance = {BALANCE}\nrate = 200\n{BALLAST}\n\n\
         [snapshots]\ninterval_ms = 100\ntimeout_ms = 1500\nfailure_timeout_ms = 1000\nkeep = 10000\nretain = 100000\n\
         overtake = \"{overtake}\"\n",
        dir.join("traces"),
        candidates.join(", "),
    );
    for i in 1..=n {
        toml += &format!(
            "\n[[nodes]]\nid = \"n{i}\"\naddress = \"192.168.0.{i}:7000\"\nadmin = \"192.168.0.{i}:7100\"\n"
        );
    }
    let path = dir.join("cluster.toml");
    std::fs::write(&path, tweak(toml)).unwrap();
    let config = Arc::new(ClusterConfig::load(&path).unwrap());
    Cluster {
        dir,
        config,
        seed,
        stops: Rc::default(),
    }
}

/// A simulation of `c` for `seed`: links delay each segment by 1 to 10 ms,
/// and the run may last `limit` of simulated time. With `flaky` =
/// `(fail, repair)`, each segment sent breaks its link with probability
/// `fail` (everything on it is dropped) and each one sent on a broken link
/// repairs it with probability `repair`.
pub fn sim<'a>(c: &Cluster, limit: Duration, flaky: Option<(f64, f64)>) -> turmoil::Sim<'a> {
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(c.seed)
        .simulation_duration(limit)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        .tcp_capacity(1 << 16);
    if let Some((fail, repair)) = flaky {
        builder.fail_rate(fail).repair_rate(repair);
    }
    let mut sim = builder.build();
    for (i, n) in c.config.nodes.iter().enumerate() {
        let config = c.config.clone();
        let stops = c.stops.clone();
        let lives = Rc::new(RefCell::new(0u64));
        let seed = c.seed;
        sim.host(n.id.as_str(), move || {
            let config = config.clone();
            let (stop, stopped) = watch::channel(false);
            stops.borrow_mut().push(stop);
            let life = {
                let mut l = lives.borrow_mut();
                *l += 1;
                *l
            };
            // Each life of each node draws from its own stream.
            let seed = seed ^ ((i as u64 + 1) << 40) ^ (life << 52);
            async move {
                run_node_seeded::<Bank>(config, cairn_core::ProcessId(i as u32), stopped, seed)
                    .await?;
                Ok(())
            }
        });
        assert_eq!(
            sim.lookup(n.id.as_str()).to_string(),
            format!("192.168.0.{}", i + 1),
            "turmoil gave {} another address",
            n.id
        );
    }
    sim
}

/// Stops every node's current life cleanly (their traces end whole).
pub fn stop_all(c: &Cluster) {
    for s in c.stops.borrow().iter() {
        let _ = s.send(true);
    }
}

/// The operator's client (`client.root`).
pub fn operator(c: &Cluster) -> AdminClient {
    let certs = c.dir.join("certs");
    AdminClient::with_security(Arc::new(
        Security::load(&certs, Some(&Identity::client("root"))).unwrap(),
    ))
}

/// Node `i`'s `/status`, if it answers within a second.
pub async fn status(client: &AdminClient, c: &Cluster, i: usize) -> Option<Value> {
    let admin = c.config.nodes[i].admin;
    let answer = client
        .get_json_within(Duration::from_secs(1), admin, "/status")
        .await;
    answer.ok().map(|(_, v)| v)
}

/// The snapshot summaries node `i` holds as coordinator.
pub async fn summaries(client: &AdminClient, c: &Cluster, i: usize) -> Vec<Value> {
    let admin = c.config.nodes[i].admin;
    client
        .get_json::<Vec<Value>>(admin, "/snapshots")
        .await
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// A complete snapshot and the epoch it was taken in.
pub type Taken = (u64, SnapshotDoc<Value, Value>);

/// GETs `path` from node `i`, retrying for up to 30 s of simulated time
/// (the operator's links may be down for a while too); panics naming the
/// seed if it never gets an answer, so nothing is skipped unseen.
async fn get_surely(client: &AdminClient, c: &Cluster, i: usize, path: &str) -> (u16, Value) {
    let admin = c.config.nodes[i].admin;
    for _ in 0..300 {
        if let Ok((st, v)) = client.get_json::<Value>(admin, path).await {
            return (st.as_u16(), v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("seed {}: n{} never answered GET {path}", c.seed, i + 1);
}

/// Every complete snapshot node `i` holds as coordinator (none if it does
/// not coordinate).
pub async fn complete(client: &AdminClient, c: &Cluster, i: usize) -> Vec<Taken> {
    let (st, list) = get_surely(client, c, i, "/snapshots").await;
    if st != 200 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for s in list.as_array().into_iter().flatten() {
        if s["status"] != "complete" {
            continue;
        }
        let (st, doc) = get_surely(client, c, i, &format!("/snapshots/{}", s["id"])).await;
        // A snapshot may leave the coordinator's memory between the list and the read.
        if st == 200 {
            let epoch = s["epoch"].as_u64().unwrap_or_default();
            out.push((epoch, serde_json::from_value(doc).unwrap()));
        }
    }
    out
}

/// The newest snapshot id any node lists now (0 if none): snapshots with a
/// higher id started after this moment. Ids, unlike wall-clock stamps, do
/// not depend on how fast the simulation runs.
pub async fn newest_id(client: &AdminClient, c: &Cluster) -> u64 {
    let mut newest = 0;
    for i in 0..c.config.nodes.len() {
        for s in summaries(client, c, i).await {
            newest = newest.max(s["id"].as_u64().unwrap_or(0));
        }
    }
    newest
}

/// Waits (in simulated time) until node `i` coordinates and is ready.
pub async fn ready(client: &AdminClient, c: &Cluster, i: usize) -> Value {
    for _ in 0..300 {
        if let Some(v) = status(client, c, i).await {
            if v["leading"] == true && v["ready"] == true {
                return v;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "seed {}: n{} never became a ready coordinator",
        c.seed,
        i + 1
    );
}

/// Every snapshot in `docs` conserves the money.
pub fn conserve(c: &Cluster, docs: &[Taken]) {
    let total = BALANCE * c.config.nodes.len() as u64;
    for (_, d) in docs {
        let (held, flying) = cairn_apps::conserved_totals("bank", d).unwrap().unwrap();
        assert_eq!(
            held + flying,
            total,
            "seed {}: snapshot {} does not conserve the money",
            c.seed,
            d.id
        );
    }
}

/// A digest of the snapshots a run gathered: the same seed gives the same
/// digest when the run replays exactly.
pub fn digest(docs: &[Taken]) -> u64 {
    let text = serde_json::to_string(docs).unwrap_or_default();
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Checks every snapshot in `docs`: the money is conserved, and the oracle
/// accepts it against the merged traces of its epoch. Returns how many.
pub fn check(c: &Cluster, docs: &[Taken]) -> usize {
    conserve(c, docs);
    let topo = &c.config.topology;
    let mut by_epoch: std::collections::BTreeMap<u64, Vec<GlobalSnapshot<_, _>>> =
        Default::default();
    let store = cairn_store::Store::open(&c.config.store).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (epoch, d) in docs {
        let mut typed: SnapshotDoc<Transfer, Balance> =
            serde_json::from_value(serde_json::to_value(d).unwrap()).unwrap();
        rt.block_on(join_chunks(&store, &mut typed, c.seed));
        let snap = GlobalSnapshot::from_doc(topo, typed).unwrap();
        by_epoch.entry(*epoch).or_default().push(snap);
    }
    for (epoch, snaps) in &by_epoch {
        let run = cairn_runtime::tracefile::load_epoch(topo, &c.dir.join("traces"), *epoch)
            .unwrap_or_else(|e| panic!("seed {}: epoch {epoch}'s traces: {e}", c.seed));
        let violations = oracle::check(
            &BankModel,
            &Run {
                topology: topo,
                trace: &run.trace,
                initial: &run.initial,
                initial_channels: &run.initial_channels,
                final_states: &run.last,
            },
            snaps,
        );
        for v in violations.iter().take(5) {
            eprintln!("seed {} epoch {epoch}: {v}", c.seed);
        }
        assert!(
            violations.is_empty(),
            "seed {}: {} oracle violations in epoch {epoch}",
            c.seed,
            violations.len()
        );
    }
    docs.len()
}

/// Puts back into `doc`'s states the chunks its parts name in the store
/// (the coordinator serves states without them), so that the oracle checks
/// every byte of each state.
async fn join_chunks(
    store: &cairn_store::Store,
    doc: &mut SnapshotDoc<Transfer, Balance>,
    seed: u64,
) {
    let m = store
        .manifest(doc.id.0)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: snapshot {}'s manifest: {e}", doc.id));
    for part in &m.parts {
        let chunks = store
            .read_chunks(part)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: snapshot {}'s chunks: {e}", doc.id));
        assert!(
            !chunks.is_empty(),
            "seed {seed}: {}'s part of {} has no chunks",
            part.process,
            doc.id
        );
        let state = doc
            .processes
            .get_mut(&part.process)
            .unwrap_or_else(|| panic!("seed {seed}: snapshot {} lacks {}", doc.id, part.process));
        Bank::join_state(state, chunks).unwrap();
    }
}

/// Ends the test process, naming the seed, if one seed runs longer than a
/// wall-clock limit: a simulation that stops making progress would
/// otherwise hang CI with no seed to replay.
#[derive(Debug)]
pub struct Watchdog(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Watchdog {
    /// Starts watching seed `seed` of `scenario`.
    pub fn new(scenario: &str, seed: u64, limit: Duration) -> Self {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, scenario) = (done.clone(), scenario.to_string());
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < limit {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!(
                "{scenario}: seed {seed} ran for over {limit:?} of wall time without finishing; \
                 replay with CAIRN_DST_SEED={seed}"
            );
            std::process::exit(101);
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
