//! Running one seed of a scenario: the simulation, the operator's script,
//! the restarts it asks for, and the checks every run ends with. Each run
//! prints its seed, how to replay it, and a digest of what it checked.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::harness::{self, Cluster, Taken};

/// What the operator's script asks of the simulation between steps.
#[derive(Debug, Default)]
pub struct Ctl {
    /// Hosts to restart (turmoil bounces them) before the next step.
    pub bounce: Vec<String>,
}

/// State the script and the run loop share.
pub type Shared<T> = Rc<RefCell<T>>;

/// A stream of numbers from a seed (splitmix64), for the faults.
#[derive(Debug)]
pub struct Dice(pub u64);

impl Dice {
    /// The next number.
    pub fn roll(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.roll() % n
    }

    /// A duration from `from` to `to` ms.
    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

/// Runs one seed of scenario `name`: `script` is the operator, it may ask
/// for node restarts through `Ctl`, and it returns the snapshots to check
/// (with the epochs whose traces the oracle reads: a crashed node's life
/// leaves its epoch's trace incomplete).
pub fn run_seed<F, Fut>(name: &str, seed: u64, script: F)
where
    F: FnOnce(Rc<Cluster>, Shared<Ctl>) -> Fut + 'static,
    Fut: std::future::Future<Output = (Vec<Taken>, Vec<u64>)> + 'static,
{
    run_seed_on(name, seed, None, script);
}

/// As [`run_seed`], on links that break and repair at random (`flaky`);
/// returns the digest of the snapshots checked.
pub fn run_seed_on<F, Fut>(name: &str, seed: u64, flaky: Option<(f64, f64)>, script: F) -> u64
where
    F: FnOnce(Rc<Cluster>, Shared<Ctl>) -> Fut + 'static,
    Fut: std::future::Future<Output = (Vec<Taken>, Vec<u64>)> + 'static,
{
    run_on(harness::cluster(name, seed, 4), name, flaky, script)
}

/// Runs `script` on the cluster `c` (of `c.seed`), as [`run_seed_on`] does.
pub fn run_on<F, Fut>(c: Cluster, name: &str, flaky: Option<(f64, f64)>, script: F) -> u64
where
    F: FnOnce(Rc<Cluster>, Shared<Ctl>) -> Fut + 'static,
    Fut: std::future::Future<Output = (Vec<Taken>, Vec<u64>)> + 'static,
{
    let seed = c.seed;
    eprintln!("{name}: seed {seed} (replay with CAIRN_DST_SEED={seed})");
    let _watchdog = harness::Watchdog::new(name, seed, Duration::from_secs(120));
    let c = Rc::new(c);
    let mut sim = harness::sim(&c, Duration::from_secs(180), flaky);
    let ctl: Shared<Ctl> = Rc::default();
    let gathered: Shared<Option<(Vec<Taken>, Vec<u64>)>> = Rc::default();
    let (c2, ctl2, out) = (c.clone(), ctl.clone(), gathered.clone());
    sim.client("operator", async move {
        let result = script(c2.clone(), ctl2).await;
        harness::stop_all(&c2);
        // Let every node stop and write the end of its trace.
        tokio::time::sleep(Duration::from_secs(4)).await;
        *out.borrow_mut() = Some(result);
        Ok(())
    });
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => panic!("{name}: seed {seed} failed: {e}"),
        }
        for host in std::mem::take(&mut ctl.borrow_mut().bounce) {
            sim.bounce(host.as_str());
        }
    }
    let (docs, epochs) = gathered.borrow_mut().take().expect("the script finished");
    let checked: Vec<Taken> = docs
        .iter()
        .filter(|(e, _)| epochs.contains(e))
        .cloned()
        .collect();
    harness::conserve(&c, &docs);
    let n = harness::check(&c, &checked);
    let digest = harness::digest(&docs);
    eprintln!(
        "{name}: seed {seed}: {} snapshots conserve, {n} pass the oracle (digest {digest:016x})",
        docs.len(),
    );
    let _ = std::fs::remove_dir_all(&c.dir);
    digest
}
