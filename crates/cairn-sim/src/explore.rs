//! Exhaustive exploration: every interleaving of a small bounded run, every
//! FIFO delivery order included (and, with receiver-side overtaking, every
//! point at which a marker may be taken ahead of messages), checked at each
//! end state.

use cairn_core::oracle::Model;
use cairn_core::{ChannelId, ProcessId, SnapshotId};

use crate::error::Result;
use crate::system::System;

/// A step the explorer can take besides delivering a channel's head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<M> {
    /// The application at `from` sends `message` on `channel`.
    Send {
        /// The sender.
        from: ProcessId,
        /// The channel.
        channel: ChannelId,
        /// The message.
        message: M,
    },
    /// `process` starts snapshot `id`.
    Start {
        /// The initiator.
        process: ProcessId,
        /// The snapshot.
        id: SnapshotId,
    },
    /// Deliver the head of `channel` (the explorer adds these itself).
    Deliver(ChannelId),
    /// Take the first marker on `channel` ahead of the messages before it,
    /// with receiver-side overtaking (the explorer adds these itself).
    TakeMarkerEarly(ChannelId),
}

/// What an exploration covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// End states reached (each a distinct interleaving).
    pub runs: u64,
    /// Steps taken in all.
    pub steps: u64,
}

/// Explores every interleaving from `start`: at each state, every step from
/// `choices` and every deliverable channel head, up to `max_depth` steps.
/// `check` sees every end state, where nothing is enabled or the depth ran out.
///
/// # Errors
/// The first failing check, or step error, with the steps that led to it.
pub fn explore<D, C, K>(
    start: &System<D>,
    max_depth: usize,
    choices: &C,
    check: &mut K,
) -> std::result::Result<Stats, String>
where
    D: Model + Clone,
    C: Fn(&System<D>) -> Vec<Step<D::Message>>,
    K: FnMut(&System<D>) -> std::result::Result<(), String>,
{
    let mut stats = Stats::default();
    let mut path = Vec::new();
    walk(start, max_depth, choices, check, &mut path, &mut stats)?;
    Ok(stats)
}

fn walk<D, C, K>(
    sys: &System<D>,
    depth: usize,
    choices: &C,
    check: &mut K,
    path: &mut Vec<Step<D::Message>>,
    stats: &mut Stats,
) -> std::result::Result<(), String>
where
    D: Model + Clone,
    C: Fn(&System<D>) -> Vec<Step<D::Message>>,
    K: FnMut(&System<D>) -> std::result::Result<(), String>,
{
    let mut steps = choices(sys);
    steps.extend(
        sys.topology()
            .channel_ids()
            .filter(|&c| sys.can_deliver(c))
            .map(Step::Deliver),
    );
    steps.extend(
        sys.topology()
            .channel_ids()
            .filter(|&c| sys.early_marker(c).is_some())
            .map(Step::TakeMarkerEarly),
    );
    if steps.is_empty() || depth == 0 {
        stats.runs += 1;
        return check(sys).map_err(|e| format!("{e}\n  after steps {path:?}"));
    }
    for step in steps {
        let mut next = sys.clone();
        take(&mut next, &step).map_err(|e| format!("{e}\n  at step {step:?} after {path:?}"))?;
        stats.steps += 1;
        path.push(step);
        walk(&next, depth - 1, choices, check, path, stats)?;
        path.pop();
    }
    Ok(())
}

fn take<D: Model>(sys: &mut System<D>, step: &Step<D::Message>) -> Result<()> {
    let mut no_delay = || 1;
    match step {
        Step::Send {
            from,
            channel,
            message,
        } => sys.send(*from, *channel, message.clone(), 0, &mut no_delay),
        Step::Start { process, id } => sys
            .start_snapshot(*process, *id, 0, &mut no_delay)
            .map(|_| ()),
        Step::Deliver(c) => sys.deliver(*c, 0, &mut no_delay).map(|_| ()),
        Step::TakeMarkerEarly(c) => sys.take_marker_early(*c, 0, &mut no_delay).map(|_| ()),
    }
}
