//! A lock service and its deadlocks. Every process owns one lock and is also
//! a client that, round after round, takes two other processes' locks, then
//! releases both. Taking them in a random order can deadlock; taking them in
//! ascending order (`ordered = true`) never does.
//!
//! State (JSON): `{"holder": 2, "grant_pending": false, "queue": [], "waiting": 1, "want": [], "held": [3], "rounds": 7}`.
//! Messages: `{"Request": {"lock": 1, "next": 3}}`, `{"Grant": {"lock": 1}}`, `{"Release": {"lock": 1}}`.

use std::collections::BTreeMap;

use cairn_core::oracle::{AppEvent, Model};
use cairn_core::{ChannelId, GlobalSnapshot, ProcessId, StableProperty, Topology};
use serde::{Deserialize, Serialize};

use crate::protocol::Protocol;

/// A process's state: its lock (owner side) and its own progress (client side).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockState {
    /// The client holding this process's lock (or about to be granted it).
    pub holder: Option<u32>,
    /// The holder was chosen but its grant not yet sent.
    pub grant_pending: bool,
    /// Clients waiting for this process's lock, in order.
    pub queue: Vec<u32>,
    /// The lock this client asked for and has not got yet.
    pub waiting: Option<u32>,
    /// Locks still to ask for, in order.
    pub want: Vec<u32>,
    /// Locks this client holds.
    pub held: Vec<u32>,
    /// Rounds completed (both locks taken and released).
    pub rounds: u64,
}

/// A lock-service message. Locks are named by their owner's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum LockMsg {
    /// Client to owner: I want your lock (and will want `next` after it).
    Request {
        /// The lock.
        lock: u32,
        /// The second lock of the round, on the first request.
        next: Option<u32>,
    },
    /// Owner to client: the lock is yours.
    Grant {
        /// The lock.
        lock: u32,
    },
    /// Client to owner: I am done with the lock.
    Release {
        /// The lock.
        lock: u32,
    },
}

/// Parameters (the `[app]` table).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocksParams {
    /// Take locks in ascending order, which cannot deadlock.
    pub ordered: bool,
}

/// The lock service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locks {
    ordered: bool,
    /// Each channel's (from, to) process index.
    ends: Vec<(u32, u32)>,
}

impl Locks {
    fn channel_to(&self, topo: &Topology, from: u32, to: u32) -> Option<ChannelId> {
        topo.find_channel(ProcessId(from), ProcessId(to), 0)
    }
}

impl Model for Locks {
    type State = LockState;
    type Message = LockMsg;

    fn apply(&self, me: ProcessId, s: &LockState, e: AppEvent<'_, LockMsg>) -> Option<LockState> {
        let mut n = s.clone();
        let idle = s.waiting.is_none() && s.want.is_empty() && s.held.is_empty();
        match e {
            AppEvent::Send { message, channel } => {
                let to = self.ends.get(channel.index())?.1;
                match *message {
                    LockMsg::Request { lock, next } => {
                        if s.waiting.is_some() || lock != to {
                            return None;
                        }
                        if idle {
                            n.want = next.into_iter().collect();
                        } else if s.want.first() == Some(&lock) && next.is_none() {
                            n.want.remove(0);
                        } else {
                            return None;
                        }
                        n.waiting = Some(lock);
                    }
                    LockMsg::Grant { lock } => {
                        if lock != me.0 || !s.grant_pending || s.holder != Some(to) {
                            return None;
                        }
                        n.grant_pending = false;
                    }
                    LockMsg::Release { lock } => {
                        let i = s.held.iter().position(|&l| l == lock)?;
                        if s.waiting.is_some() || !s.want.is_empty() || lock != to {
                            return None;
                        }
                        n.held.remove(i);
                        if n.held.is_empty() {
                            n.rounds += 1;
                        }
                    }
                }
            }
            AppEvent::Receive { message, channel } => {
                let from = self.ends.get(channel.index())?.0;
                match *message {
                    LockMsg::Request { lock, .. } => {
                        if lock != me.0 {
                            return None;
                        }
                        if s.holder.is_none() {
                            n.holder = Some(from);
                            n.grant_pending = true;
                        } else {
                            n.queue.push(from);
                        }
                    }
                    LockMsg::Grant { lock } => {
                        if s.waiting != Some(lock) || lock != from {
                            return None;
                        }
                        n.waiting = None;
                        n.held.push(lock);
                    }
                    LockMsg::Release { lock } => {
                        if lock != me.0 || s.grant_pending || s.holder != Some(from) {
                            return None;
                        }
                        if s.queue.is_empty() {
                            n.holder = None;
                        } else {
                            n.holder = Some(n.queue.remove(0));
                            n.grant_pending = true;
                        }
                    }
                }
            }
        }
        Some(n)
    }
}

impl Protocol for Locks {
    type Params = LocksParams;

    fn from_params(params: &LocksParams, topo: &Topology) -> Result<Self, String> {
        let n = topo.process_count() as u32;
        if n < 3 {
            return Err("the lock service needs at least 3 processes".into());
        }
        for a in 0..n {
            for b in 0..n {
                if a != b && topo.find_channel(ProcessId(a), ProcessId(b), 0).is_none() {
                    return Err(format!(
                        "the lock service needs channels both ways between every pair; {} -> {} is missing",
                        topo.name(ProcessId(a)),
                        topo.name(ProcessId(b))
                    ));
                }
            }
        }
        let ends = topo
            .channel_ids()
            .map(|c| (topo.channel(c).from.0, topo.channel(c).to.0))
            .collect();
        Ok(Locks {
            ordered: params.ordered,
            ends,
        })
    }

    fn initial(&self, _: ProcessId, _: &Topology) -> LockState {
        LockState::default()
    }

    fn next_sends(
        &self,
        me: ProcessId,
        s: &LockState,
        topo: &Topology,
        random: &mut dyn FnMut() -> u64,
    ) -> Vec<(ChannelId, LockMsg)> {
        let mut out = Vec::new();
        let send = |to: u32, m: LockMsg, out: &mut Vec<(ChannelId, LockMsg)>| {
            if let Some(c) = self.channel_to(topo, me.0, to) {
                out.push((c, m));
            }
        };
        if let (true, Some(h)) = (s.grant_pending, s.holder) {
            send(h, LockMsg::Grant { lock: me.0 }, &mut out);
        }
        if s.waiting.is_some() {
            return out;
        }
        if let Some(&lock) = s.want.first() {
            send(lock, LockMsg::Request { lock, next: None }, &mut out);
        } else if !s.held.is_empty() {
            for &lock in &s.held {
                send(lock, LockMsg::Release { lock }, &mut out);
            }
        } else {
            // Idle: pick two other processes' locks for the next round.
            let n = topo.process_count() as u64;
            let a = ((me.0 as u64 + 1 + random() % (n - 1)) % n) as u32;
            let mut b = ((me.0 as u64 + 1 + random() % (n - 1)) % n) as u32;
            if b == a {
                b = ((b as u64 + 1) % n) as u32;
                if b == me.0 {
                    b = ((b as u64 + 1) % n) as u32;
                }
            }
            let (first, second) = if self.ordered {
                (a.min(b), a.max(b))
            } else {
                (a, b)
            };
            send(
                first,
                LockMsg::Request {
                    lock: first,
                    next: Some(second),
                },
                &mut out,
            );
        }
        out
    }
}

/// One edge of a wait-for cycle: `process` waits for `lock`, held by `holder`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Wait {
    /// The waiting process.
    pub process: String,
    /// The lock it waits for (named by its owner).
    pub lock: String,
    /// The process holding that lock.
    pub holder: String,
}

/// Deadlock: a cycle in the wait-for graph built from the processes' states
/// and the grants and releases still in flight.
#[derive(Clone, Copy, Debug, Default)]
pub struct Deadlock;

impl StableProperty<LockMsg, LockState> for Deadlock {
    type Evidence = Vec<Wait>;

    fn name(&self) -> &str {
        "deadlock"
    }

    fn evaluate(
        &self,
        topo: &Topology,
        snap: &GlobalSnapshot<LockMsg, LockState>,
    ) -> Option<Vec<Wait>> {
        let in_flight = |from: u32, to: u32, m: &LockMsg| {
            topo.find_channel(ProcessId(from), ProcessId(to), 0)
                .is_some_and(|c| snap.channels[c.index()].contains(m))
        };
        // waits_on[p] = (lock, holder) when p is blocked on a lock held by someone.
        let mut waits_on: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
        for (p, s) in snap.states.iter().enumerate() {
            let p = p as u32;
            let Some(lock) = s.waiting else { continue };
            let owner = snap.states.get(lock as usize)?;
            let Some(holder) = owner.holder else { continue };
            let granting = holder == p
                && (owner.grant_pending || in_flight(lock, p, &LockMsg::Grant { lock }));
            let releasing = in_flight(holder, lock, &LockMsg::Release { lock });
            if !granting && !releasing && holder != p {
                waits_on.insert(p, (lock, holder));
            }
        }
        // Follow the edges from each blocked process; a revisit closes a cycle.
        for &start in waits_on.keys() {
            let mut path = vec![start];
            let mut at = start;
            while let Some(&(_, next)) = waits_on.get(&at) {
                if let Some(i) = path.iter().position(|&q| q == next) {
                    let cycle = &path[i..];
                    return Some(
                        cycle
                            .iter()
                            .map(|&q| {
                                let (lock, holder) = waits_on[&q];
                                Wait {
                                    process: topo.name(ProcessId(q)).to_string(),
                                    lock: topo.name(ProcessId(lock)).to_string(),
                                    holder: topo.name(ProcessId(holder)).to_string(),
                                }
                            })
                            .collect(),
                    );
                }
                path.push(next);
                at = next;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::SnapshotId;

    fn topo() -> Topology {
        let n = ["a", "b", "c"];
        let pairs: Vec<(&str, &str)> = n
            .iter()
            .flat_map(|x| n.iter().filter(move |y| *y != x).map(move |y| (*x, *y)))
            .collect();
        Topology::new(n, &pairs).unwrap()
    }

    /// a holds b's lock and waits for c's; c's lock is held by b, who waits for
    /// its own lock, which a holds.
    fn cycle() -> Vec<LockState> {
        vec![
            LockState {
                waiting: Some(2),
                held: vec![1],
                ..LockState::default()
            },
            LockState {
                holder: Some(0),
                queue: vec![],
                waiting: Some(1),
                held: vec![2],
                ..LockState::default()
            },
            LockState {
                holder: Some(1),
                ..LockState::default()
            },
        ]
    }

    fn snap(
        topo: &Topology,
        states: Vec<LockState>,
        flying: &[(&str, LockMsg)],
    ) -> GlobalSnapshot<LockMsg, LockState> {
        let mut channels = vec![Vec::new(); topo.channel_count()];
        for (c, m) in flying {
            channels[topo.channel_by_name(c).unwrap().index()].push(*m);
        }
        GlobalSnapshot {
            id: SnapshotId(0),
            states,
            channels,
        }
    }

    #[test]
    fn a_wait_for_cycle_is_a_deadlock_and_names_its_members() {
        let t = topo();
        let found = Deadlock.evaluate(&t, &snap(&t, cycle(), &[])).unwrap();
        let who: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|w| (w.process.as_str(), w.lock.as_str(), w.holder.as_str()))
            .collect();
        assert_eq!(who, vec![("a", "c", "b"), ("b", "b", "a")]);
    }

    #[test]
    fn messages_in_flight_that_would_unblock_the_cycle_are_not_a_deadlock() {
        let t = topo();
        // b's release of c's lock is on its way to c.
        assert!(
            Deadlock
                .evaluate(
                    &t,
                    &snap(&t, cycle(), &[("b->c", LockMsg::Release { lock: 2 })])
                )
                .is_none()
        );
        // The owner of the lock a waits for has already granted it to a.
        let mut s = cycle();
        s[2].holder = Some(0);
        assert!(
            Deadlock
                .evaluate(
                    &t,
                    &snap(&t, s.clone(), &[("c->a", LockMsg::Grant { lock: 2 })])
                )
                .is_none()
        );
        s[2].grant_pending = true;
        assert!(Deadlock.evaluate(&t, &snap(&t, s, &[])).is_none());
    }
}
