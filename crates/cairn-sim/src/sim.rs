//! The timed, seeded discrete-event simulator.

use std::sync::Arc;

use cairn_core::oracle::{self, Model, Run, Violation};
use cairn_core::trace::TraceEvent;
use cairn_core::{ChannelId, GlobalSnapshot, Overtaking, ProcessId, SnapshotId, Topology};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, SimError};
use crate::system::{Fault, System};

/// How a simulation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The seed of every random choice. The same seed replays the same run.
    pub seed: u64,
    /// Each packet takes 1 to `max_delay` ticks, drawn at send time (FIFO kept).
    pub max_delay: u64,
    /// After the script, give up if snapshots are still incomplete after this many ticks.
    pub max_ticks: u64,
    /// A planted fault, for testing the oracle.
    pub fault: Option<Fault>,
    /// Whether markers overtake messages (see [`System::set_overtaking`]).
    /// With receiver-side overtaking, a marker that is due is taken at once,
    /// ahead of the messages before it.
    pub overtaking: Overtaking,
    /// With sender-side overtaking, the most messages one marker jumps
    /// (see [`System::set_jump_limit`]).
    pub jump_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0,
            max_delay: 5,
            max_ticks: 1_000_000,
            fault: None,
            overtaking: Overtaking::default(),
            jump_limit: usize::MAX,
        }
    }
}

/// One scripted step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<M> {
    /// The application at `from` sends `message` on `channel`.
    Send {
        /// The sender.
        from: ProcessId,
        /// The outgoing channel.
        channel: ChannelId,
        /// The message.
        message: M,
    },
    /// A new snapshot (ids 0, 1, 2, ... in order) started by every process
    /// listed, in the same tick.
    Snapshot {
        /// The initiators.
        initiators: Vec<ProcessId>,
    },
    /// Let time pass: deliver what is due, tick by tick.
    Tick(u64),
}

/// A seeded simulation of one system.
#[derive(Debug)]
pub struct Simulator<D: Model> {
    system: System<D>,
    rng: ChaCha8Rng,
    config: Config,
    now: u64,
    next_snapshot: u64,
}

/// Everything a finished run leaves: what the oracle and the printers need.
#[derive(Clone, Debug)]
pub struct Outcome<M, S> {
    /// The seed that replays this run.
    pub seed: u64,
    /// The system.
    pub topology: Arc<Topology>,
    /// Completed snapshots, in id order.
    pub snapshots: Vec<GlobalSnapshot<M, S>>,
    /// Every event, in execution order.
    pub trace: Vec<TraceEvent<M>>,
    /// States before the run.
    pub initial: Vec<S>,
    /// States at the end of the run.
    pub final_states: Vec<S>,
    /// Ticks simulated.
    pub ticks: u64,
}

impl<D: Model> Simulator<D> {
    /// A simulator of `topology` running `model` from `initial` states.
    ///
    /// # Errors
    /// [`SimError::Setup`] for a bad configuration.
    pub fn new(
        topology: Arc<Topology>,
        model: D,
        initial: Vec<D::State>,
        config: Config,
    ) -> Result<Self> {
        if config.max_delay == 0 {
            return Err(SimError::Setup("max delay must be at least 1 tick".into()));
        }
        let mut system = System::new(topology, model, initial)?;
        system.set_fault(config.fault);
        system.set_overtaking(config.overtaking);
        system.set_jump_limit(config.jump_limit);
        Ok(Simulator {
            system,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            now: 0,
            next_snapshot: 0,
        })
    }

    /// The simulated world now.
    pub fn system(&self) -> &System<D> {
        &self.system
    }

    /// The current tick.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The random source, for workloads that must replay with the seed.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// The application at `from` sends `message` on `channel` now.
    ///
    /// # Errors
    /// The model does not allow it, or the channel is not outgoing at `from`.
    pub fn send(&mut self, from: ProcessId, channel: ChannelId, message: D::Message) -> Result<()> {
        let (rng, max) = (&mut self.rng, self.config.max_delay);
        let mut delay = || rng.random_range(1..=max);
        self.system
            .send(from, channel, message, self.now, &mut delay)
    }

    /// Starts a new snapshot at every process in `initiators`, now. Returns its id.
    ///
    /// # Errors
    /// [`cairn_core::Error::Unreachable`] if markers from the initiators cannot
    /// reach every process.
    pub fn snapshot(&mut self, initiators: &[ProcessId]) -> Result<SnapshotId> {
        self.system.topology().check_reachable(initiators)?;
        let id = SnapshotId(self.next_snapshot);
        self.next_snapshot += 1;
        for &p in initiators {
            self.join_snapshot(p, id)?;
        }
        Ok(id)
    }

    /// `process` also starts snapshot `id` (a no-op if it already recorded it).
    ///
    /// # Errors
    /// A core error from the engine.
    pub fn join_snapshot(&mut self, process: ProcessId, id: SnapshotId) -> Result<()> {
        let (rng, max) = (&mut self.rng, self.config.max_delay);
        let mut delay = || rng.random_range(1..=max);
        self.system
            .start_snapshot(process, id, self.now, &mut delay)?;
        Ok(())
    }

    /// Advances one tick and delivers everything due, oldest first.
    ///
    /// # Errors
    /// A core error from an engine.
    pub fn tick(&mut self) -> Result<()> {
        self.now = self.now.saturating_add(1);
        loop {
            let topo = self.system.topology().clone();
            let early = topo.channel_ids().find(|&c| {
                self.system
                    .early_marker(c)
                    .is_some_and(|at| self.system.in_flight(c)[at].deliver_at <= self.now)
            });
            if let Some(c) = early {
                let (rng, max) = (&mut self.rng, self.config.max_delay);
                let mut delay = || rng.random_range(1..=max);
                self.system.take_marker_early(c, self.now, &mut delay)?;
                continue;
            }
            let due = topo
                .channel_ids()
                .filter(|&c| self.system.can_deliver(c))
                .filter_map(|c| {
                    let head = self.system.in_flight(c).front()?;
                    (head.deliver_at <= self.now).then_some(((head.deliver_at, head.order), c))
                })
                .min();
            let Some((_, c)) = due else { return Ok(()) };
            let (rng, max) = (&mut self.rng, self.config.max_delay);
            let mut delay = || rng.random_range(1..=max);
            self.system.deliver(c, self.now, &mut delay)?;
        }
    }

    /// Runs scripted commands in order.
    ///
    /// # Errors
    /// The first command that cannot be carried out.
    pub fn run_script(&mut self, script: &[Command<D::Message>]) -> Result<()> {
        for cmd in script {
            match cmd {
                Command::Send {
                    from,
                    channel,
                    message,
                } => self.send(*from, *channel, message.clone())?,
                Command::Snapshot { initiators } => {
                    self.snapshot(initiators)?;
                }
                Command::Tick(k) => {
                    for done in 0..*k {
                        if self.system.is_quiet() {
                            // Nothing can happen until the next send: skip ahead.
                            self.now = self.now.saturating_add(k - done);
                            break;
                        }
                        self.tick()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Ticks until every started snapshot is complete, then returns the run.
    ///
    /// # Errors
    /// [`SimError::Stalled`] naming what each incomplete snapshot lacks, if
    /// nothing more can move or `max_ticks` pass.
    pub fn finish(mut self) -> Result<Outcome<D::Message, D::State>> {
        let deadline = self.now.saturating_add(self.config.max_ticks);
        while !self.system.incomplete().is_empty() {
            let stuck = self.system.is_quiet() && !self.system.release_held_markers();
            if stuck || self.now >= deadline {
                let lacks: Vec<String> = self
                    .system
                    .incomplete()
                    .into_iter()
                    .map(|(id, p, c)| {
                        format!("snapshot {id} lacks processes {p:?} and channels {c:?}")
                    })
                    .collect();
                return Err(SimError::Stalled(lacks.join("; ")));
            }
            self.tick()?;
        }
        let s = &self.system;
        Ok(Outcome {
            seed: self.config.seed,
            topology: s.topology().clone(),
            snapshots: s.completed().values().cloned().collect(),
            trace: s.trace().to_vec(),
            initial: s.initial_states().to_vec(),
            final_states: s.states().to_vec(),
            ticks: self.now,
        })
    }
}

impl<M, S> Outcome<M, S> {
    /// Runs the oracle on every snapshot of this run.
    pub fn verify<D: Model<Message = M, State = S>>(&self, model: &D) -> Vec<Violation> {
        let run = Run {
            topology: &self.topology,
            trace: &self.trace,
            initial: &self.initial,
            initial_channels: &[],
            final_states: &self.final_states,
        };
        oracle::check(model, &run, &self.snapshots)
    }
}
