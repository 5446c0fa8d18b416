//! Processes and the directed channels between them (the paper's labelled graph).

use std::collections::{HashMap, VecDeque};

use crate::error::{Error, Result};
use crate::ids::{ChannelId, ProcessId};

/// One directed channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    /// The sending process.
    pub from: ProcessId,
    /// The receiving process.
    pub to: ProcessId,
    /// 0 for the first channel from `from` to `to`, 1 for the second, and so on:
    /// the paper allows several channels between one ordered pair.
    pub lane: u32,
}

/// A validated system graph: named processes and directed channels.
///
/// Any directed graph without self-channels is accepted. Whether a snapshot
/// can finish depends on who starts it: see [`Topology::check_reachable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    names: Vec<String>,
    by_name: HashMap<String, ProcessId>,
    channels: Vec<Channel>,
    incoming: Vec<Vec<ChannelId>>,
    outgoing: Vec<Vec<ChannelId>>,
}

impl Topology {
    /// Builds a topology from process names and `(from, to)` channel pairs.
    /// A pair listed twice makes two parallel channels.
    ///
    /// # Errors
    /// An empty process list, a duplicate or malformed name, a channel naming
    /// an unknown process, or a channel from a process to itself.
    pub fn new<N, S>(names: N, channels: &[(S, S)]) -> Result<Self>
    where
        N: IntoIterator,
        N::Item: Into<String>,
        S: AsRef<str>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.is_empty() {
            return Err(Error::EmptyTopology);
        }
        let mut by_name = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok {
                return Err(Error::BadProcessName(name.clone()));
            }
            if by_name.insert(name.clone(), ProcessId(i as u32)).is_some() {
                return Err(Error::DuplicateProcess(name.clone()));
            }
        }
        let mut topo = Topology {
            incoming: vec![Vec::new(); names.len()],
            outgoing: vec![Vec::new(); names.len()],
            names,
            by_name,
            channels: Vec::new(),
        };
        let mut lanes: HashMap<(ProcessId, ProcessId), u32> = HashMap::new();
        for (from, to) in channels {
            let (from, to) = (from.as_ref(), to.as_ref());
            let lookup = |n: &str| {
                topo.process(n).ok_or_else(|| Error::UnknownProcess {
                    from: from.to_string(),
                    to: to.to_string(),
                    unknown: n.to_string(),
                })
            };
            let (f, t) = (lookup(from)?, lookup(to)?);
            if f == t {
                return Err(Error::SelfChannel(from.to_string()));
            }
            let lane = lanes.entry((f, t)).or_insert(0);
            let id = ChannelId(topo.channels.len() as u32);
            topo.channels.push(Channel {
                from: f,
                to: t,
                lane: *lane,
            });
            *lane += 1;
            topo.outgoing[f.index()].push(id);
            topo.incoming[t.index()].push(id);
        }
        Ok(topo)
    }

    /// Channel pairs of a complete graph over `names`: one channel each way
    /// between every two processes.
    pub fn complete_pairs(names: &[String]) -> Vec<(String, String)> {
        names
            .iter()
            .flat_map(|a| {
                names
                    .iter()
                    .filter(move |b| *b != a)
                    .map(move |b| (a.clone(), b.clone()))
            })
            .collect()
    }

    /// Channel pairs of a one-way ring over `names`, in order.
    pub fn ring_pairs(names: &[String]) -> Vec<(String, String)> {
        let n = names.len();
        if n < 2 {
            return Vec::new();
        }
        (0..n)
            .map(|i| (names[i].clone(), names[(i + 1) % n].clone()))
            .collect()
    }

    /// The number of processes.
    pub fn process_count(&self) -> usize {
        self.names.len()
    }

    /// The number of channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Every process id, in declaration order.
    pub fn processes(&self) -> impl ExactSizeIterator<Item = ProcessId> + '_ {
        (0..self.names.len() as u32).map(ProcessId)
    }

    /// Every channel id, in declaration order.
    pub fn channel_ids(&self) -> impl ExactSizeIterator<Item = ChannelId> + '_ {
        (0..self.channels.len() as u32).map(ChannelId)
    }

    /// The process called `name`.
    pub fn process(&self, name: &str) -> Option<ProcessId> {
        self.by_name.get(name).copied()
    }

    /// The name of process `p`. Panics if `p` is not of this topology.
    pub fn name(&self, p: ProcessId) -> &str {
        &self.names[p.index()]
    }

    /// The channel `c`. Panics if `c` is not of this topology.
    pub fn channel(&self, c: ChannelId) -> &Channel {
        &self.channels[c.index()]
    }

    /// The channel's printable name: `N1->N2`, or `N1->N2#2` for the second
    /// channel between the same pair.
    pub fn channel_name(&self, c: ChannelId) -> String {
        let ch = self.channel(c);
        let base = format!("{}->{}", self.name(ch.from), self.name(ch.to));
        if ch.lane == 0 {
            base
        } else {
            format!("{base}#{}", ch.lane + 1)
        }
    }

    /// The channel with the printable name `name` (see [`Topology::channel_name`]).
    pub fn channel_by_name(&self, name: &str) -> Option<ChannelId> {
        let (pair, lane) = match name.rsplit_once('#') {
            Some((pair, lane)) => (pair, lane.parse::<u32>().ok()?.checked_sub(1)?),
            None => (name, 0),
        };
        let (from, to) = pair.split_once("->")?;
        self.find_channel(self.process(from)?, self.process(to)?, lane)
    }

    /// The `lane`-th channel from `from` to `to`.
    pub fn find_channel(&self, from: ProcessId, to: ProcessId, lane: u32) -> Option<ChannelId> {
        self.outgoing
            .get(from.index())?
            .iter()
            .copied()
            .find(|&c| self.channels[c.index()].to == to && self.channels[c.index()].lane == lane)
    }

    /// Channels into `p`, in declaration order.
    pub fn incoming(&self, p: ProcessId) -> &[ChannelId] {
        &self.incoming[p.index()]
    }

    /// Channels out of `p`, in declaration order.
    pub fn outgoing(&self, p: ProcessId) -> &[ChannelId] {
        &self.outgoing[p.index()]
    }

    /// The longest of the shortest paths between two processes, in channels:
    /// how many hops a marker wave needs at most to reach every process from
    /// any initiator. `None` when some process cannot reach another.
    pub fn diameter(&self) -> Option<usize> {
        let n = self.process_count();
        let mut longest = 0;
        for from in 0..n {
            let mut dist = vec![usize::MAX; n];
            dist[from] = 0;
            let mut queue = std::collections::VecDeque::from([from]);
            while let Some(p) = queue.pop_front() {
                for &c in &self.outgoing[p] {
                    let to = self.channels[c.index()].to.index();
                    if dist[to] == usize::MAX {
                        dist[to] = dist[p] + 1;
                        queue.push_back(to);
                    }
                }
            }
            longest = longest.max(dist.into_iter().max().unwrap_or(0));
        }
        (longest != usize::MAX).then_some(longest)
    }

    /// Processes that no path of channels reaches from any of `initiators`.
    pub fn unreachable_from(&self, initiators: &[ProcessId]) -> Vec<ProcessId> {
        let mut seen = vec![false; self.names.len()];
        let mut queue: VecDeque<ProcessId> = VecDeque::new();
        for &p in initiators {
            if p.index() < seen.len() && !seen[p.index()] {
                seen[p.index()] = true;
                queue.push_back(p);
            }
        }
        while let Some(p) = queue.pop_front() {
            for &c in self.outgoing(p) {
                let to = self.channels[c.index()].to;
                if !seen[to.index()] {
                    seen[to.index()] = true;
                    queue.push_back(to);
                }
            }
        }
        self.processes().filter(|p| !seen[p.index()]).collect()
    }

    /// Checks that a snapshot started by `initiators` can finish: markers must
    /// reach every process (the paper's Section 3.3).
    ///
    /// # Errors
    /// [`Error::Unreachable`] naming every process no marker can reach.
    pub fn check_reachable(&self, initiators: &[ProcessId]) -> Result<()> {
        let missing = self.unreachable_from(initiators);
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::Unreachable {
            processes: missing.iter().map(|&p| self.name(p).to_string()).collect(),
            initiators: initiators
                .iter()
                .map(|&p| self.name(p).to_string())
                .collect(),
        })
    }

    /// True when every process reaches every other, so any single process can
    /// start a snapshot.
    pub fn is_strongly_connected(&self) -> bool {
        self.processes()
            .all(|p| self.unreachable_from(&[p]).is_empty())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn diameter_counts_hops_of_the_longest_shortest_path() {
        let names: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
        let ring = Topology::new(names.clone(), &Topology::ring_pairs(&names)).unwrap();
        assert_eq!(ring.diameter(), Some(4));
        let complete = Topology::new(names.clone(), &Topology::complete_pairs(&names)).unwrap();
        assert_eq!(complete.diameter(), Some(1));
        let one_way = Topology::new(["a", "b"], &[("a", "b")]).unwrap();
        assert_eq!(one_way.diameter(), None);
    }

    use super::*;

    #[test]
    fn parallel_channels_get_lanes_and_names() {
        let t = Topology::new(["p", "q"], &[("p", "q"), ("p", "q"), ("q", "p")]).unwrap();
        assert_eq!(t.channel_name(ChannelId(0)), "p->q");
        assert_eq!(t.channel_name(ChannelId(1)), "p->q#2");
        assert_eq!(t.channel_by_name("p->q#2"), Some(ChannelId(1)));
        assert_eq!(t.channel_by_name("q->p"), Some(ChannelId(2)));
        assert_eq!(t.channel_by_name("q->p#2"), None);
        assert_eq!(t.outgoing(ProcessId(0)), &[ChannelId(0), ChannelId(1)]);
        assert!(t.is_strongly_connected());
    }

    #[test]
    fn self_channel_is_rejected_by_name() {
        let err = Topology::new(["a", "b"], &[("a", "a")]).unwrap_err();
        assert_eq!(err, Error::SelfChannel("a".into()));
    }

    #[test]
    fn unknown_and_duplicate_processes_are_rejected() {
        assert!(matches!(
            Topology::new(["a"], &[("a", "z")]),
            Err(Error::UnknownProcess { unknown, .. }) if unknown == "z"
        ));
        assert_eq!(
            Topology::new(["a", "a"], &[] as &[(&str, &str)]).unwrap_err(),
            Error::DuplicateProcess("a".into())
        );
        assert_eq!(
            Topology::new(Vec::<String>::new(), &[] as &[(&str, &str)]).unwrap_err(),
            Error::EmptyTopology
        );
        assert!(matches!(
            Topology::new(["a b"], &[] as &[(&str, &str)]),
            Err(Error::BadProcessName(_))
        ));
    }

    #[test]
    fn unreachable_processes_are_named() {
        // a -> b -> c, and d only sends to a: nobody reaches d.
        let t = Topology::new(["a", "b", "c", "d"], &[("a", "b"), ("b", "c"), ("d", "a")]).unwrap();
        let err = t.check_reachable(&[ProcessId(0)]).unwrap_err();
        assert_eq!(
            err,
            Error::Unreachable {
                processes: vec!["d".into()],
                initiators: vec!["a".into()],
            }
        );
        assert!(err.to_string().contains("\"d\""));
        assert!(t.check_reachable(&[ProcessId(0), ProcessId(3)]).is_ok());
        assert!(!t.is_strongly_connected());
    }
}
