//! A diffusing computation and its termination (the paper's first example
//! of a stable property). Work starts at one process; each job, when
//! received, may spawn child jobs with a smaller time-to-live, so the
//! computation dies out after a random number of steps.
//!
//! State `{"pending": [ttl, ...]}`: the jobs this process still has to send
//! (it is active while the list is not empty). Message `{"ttl": t, "children": k}`:
//! a job; its receiver must send `k` jobs of ttl `t - 1` (none when `t` is 0).

use cairn_core::oracle::{AppEvent, Model};
use cairn_core::{ChannelId, GlobalSnapshot, ProcessId, StableProperty, Topology};
use serde::{Deserialize, Serialize};

use crate::protocol::Protocol;

/// A process's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Work {
    /// Time-to-live of each job still to send.
    pub pending: Vec<u64>,
}

/// A job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Time-to-live.
    pub ttl: u64,
    /// Jobs the receiver must spawn.
    pub children: u64,
}

/// Parameters (the `[app]` table).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiffusingParams {
    /// Time-to-live of the first jobs.
    pub ttl: u64,
    /// Jobs the starting process holds.
    pub initial_jobs: u64,
    /// Most children a job spawns.
    pub max_children: u64,
    /// Never die out: jobs keep their ttl and spawn at least one child (for
    /// showing a detector makes no false report).
    pub endless: bool,
}

impl Default for DiffusingParams {
    fn default() -> Self {
        DiffusingParams {
            ttl: 6,
            initial_jobs: 2,
            max_children: 3,
            endless: false,
        }
    }
}

/// The diffusing computation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diffusing {
    params: DiffusingParams,
}

impl Model for Diffusing {
    type State = Work;
    type Message = Job;

    fn apply(&self, _: ProcessId, s: &Work, e: AppEvent<'_, Job>) -> Option<Work> {
        let mut next = s.clone();
        match e {
            AppEvent::Send { message, .. } => {
                let i = next.pending.iter().position(|&t| t == message.ttl)?;
                next.pending.remove(i);
            }
            AppEvent::Receive { message, .. } if message.ttl > 0 => {
                let ttl = if self.params.endless {
                    message.ttl
                } else {
                    message.ttl - 1
                };
                let k = usize::try_from(message.children).ok()?;
                next.pending.extend(std::iter::repeat_n(ttl, k));
            }
            AppEvent::Receive { .. } => {}
        }
        Some(next)
    }
}

impl Protocol for Diffusing {
    type Params = DiffusingParams;

    fn from_params(params: &DiffusingParams, topology: &Topology) -> Result<Self, String> {
        if params.max_children > 64 {
            return Err("max_children must be at most 64".into());
        }
        if params.endless && params.max_children == 0 {
            return Err("an endless computation needs max_children of at least 1".into());
        }
        if topology.outgoing(ProcessId(0)).is_empty() {
            return Err("the first node starts the work and needs an outgoing channel".into());
        }
        Ok(Diffusing {
            params: params.clone(),
        })
    }

    fn initial(&self, me: ProcessId, _: &Topology) -> Work {
        let jobs = if me == ProcessId(0) {
            self.params.initial_jobs
        } else {
            0
        };
        Work {
            pending: vec![self.params.ttl; jobs as usize],
        }
    }

    fn next_sends(
        &self,
        me: ProcessId,
        s: &Work,
        topo: &Topology,
        random: &mut dyn FnMut() -> u64,
    ) -> Vec<(ChannelId, Job)> {
        let (Some(&ttl), out) = (s.pending.first(), topo.outgoing(me)) else {
            return Vec::new();
        };
        if out.is_empty() {
            return Vec::new();
        }
        let channel = out[(random() % out.len() as u64) as usize];
        let min = u64::from(self.params.endless);
        let children = min + random() % (self.params.max_children + 1 - min);
        vec![(channel, Job { ttl, children })]
    }
}

/// Termination: every process passive and every channel empty.
#[derive(Clone, Copy, Debug, Default)]
pub struct Termination;

impl StableProperty<Job, Work> for Termination {
    type Evidence = String;

    fn name(&self) -> &str {
        "termination"
    }

    fn evaluate(&self, topo: &Topology, s: &GlobalSnapshot<Job, Work>) -> Option<String> {
        let active = s.states.iter().any(|w| !w.pending.is_empty());
        if active || s.channels.iter().any(|c| !c.is_empty()) {
            return None;
        }
        Some(format!(
            "all {} processes are passive and all {} channels are empty",
            topo.process_count(),
            topo.channel_count()
        ))
    }
}
