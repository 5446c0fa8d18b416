//! A page-view tally, as a service of your own would embed Cairn.
//!
//! Each node serves hits (outside input, from its web front end) and tells
//! its peers its running count every few hits. The state of a node is what
//! it served and the latest count each peer told it. Cairn takes
//! consistent snapshots of the whole tally while it runs, and after a node
//! crashes it rolls the cluster back to the newest one.
//!
//! A consistent snapshot can never show a node knowing of more hits from a
//! peer than that peer had served when it recorded: [`consistent`] checks
//! that, from the recorded states and channels alone.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_core::{ChannelId, Context, Pace, Process, ProcessId, Topology};
use cairn_runtime::{ClusterConfig, Node, Snapshot};
use serde::{Deserialize, Serialize};

/// A message between nodes, or an input from outside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Outside input: one page view served here.
    Hit,
    /// Between nodes: "I have served this many".
    Served(u64),
}

/// One node's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Page views this node served.
    pub served: u64,
    /// The latest count each peer told this node, by peer.
    pub heard: BTreeMap<String, u64>,
}

/// The application's parameters (the config's `[app]` table).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// A node tells its peers its count after this many hits.
    pub tell_every: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params { tell_every: 5 }
    }
}

/// A node of the tally service.
#[derive(Debug)]
pub struct TallyNode {
    tally: Tally,
    tell_every: u64,
    peers: BTreeMap<ChannelId, String>,
}

impl Process for TallyNode {
    type Message = Event;
    type State = Tally;
    type Params = Params;

    fn new(params: &Params, me: ProcessId, topology: &Topology) -> Result<Self, String> {
        if params.tell_every == 0 {
            return Err("tell_every must be at least 1".into());
        }
        let peers = topology
            .incoming(me)
            .iter()
            .map(|&c| (c, topology.name(topology.channel(c).from).to_string()))
            .collect();
        Ok(TallyNode {
            tally: Tally::default(),
            tell_every: params.tell_every,
            peers,
        })
    }

    fn pace(&self) -> Pace {
        Pace::Passive
    }

    fn on_message(&mut self, channel: ChannelId, message: Event, _: &mut Context<'_, Event>) {
        if let (Event::Served(n), Some(peer)) = (message, self.peers.get(&channel)) {
            self.tally.heard.insert(peer.clone(), n);
        }
    }

    fn on_input(&mut self, input: Event, cx: &mut Context<'_, Event>) -> Result<(), String> {
        if input != Event::Hit {
            return Err("only hits come from outside".into());
        }
        self.tally.served += 1;
        if self.tally.served % self.tell_every == 0 {
            for c in cx.outgoing().to_vec() {
                cx.send(c, Event::Served(self.tally.served));
            }
        }
        Ok(())
    }

    fn state(&self) -> Tally {
        self.tally.clone()
    }

    fn restore(&mut self, state: Tally) {
        self.tally = state;
    }
}

/// Hits served in a snapshot, over every node.
pub fn total(s: &Snapshot<Tally, Event>) -> u64 {
    s.states.values().map(|t| t.served).sum()
}

/// Whether a snapshot is consistent: no node (or channel into it) knows of
/// more hits from a peer than that peer had served when it recorded, and
/// each channel's recorded counts are newer than what its receiver had heard.
///
/// # Errors
/// The first violation, named.
pub fn consistent(s: &Snapshot<Tally, Event>) -> Result<(), String> {
    for (name, messages) in &s.channels {
        let (from, to) = name.split_once("->").ok_or("a channel without ->")?;
        let served = s.states[from].served;
        let heard = s.states[to].heard.get(from).copied().unwrap_or(0);
        if heard > served {
            return Err(format!(
                "{to} heard {heard} from {from}, which had served {served}"
            ));
        }
        let mut last = heard;
        for m in messages {
            let Event::Served(n) = *m else {
                return Err(format!("a hit on {name}"));
            };
            if n <= last || n > served {
                return Err(format!(
                    "{name} holds {n} after {last}, from a node that had served {served}"
                ));
            }
            last = n;
        }
    }
    Ok(())
}

/// A config for `ports.len()` nodes on loopback (peer and admin port per
/// node), every node linked to every other, snapshots in `store`.
///
/// # Errors
/// The config is invalid.
pub fn config(ports: &[(u16, u16)], store: &str) -> Result<ClusterConfig, cairn_runtime::Error> {
    let mut b = ClusterConfig::builder("tally");
    for (i, (peer, admin)) in ports.iter().enumerate() {
        b = b.node(
            &format!("n{}", i + 1),
            &format!("127.0.0.1:{peer}"),
            &format!("127.0.0.1:{admin}"),
        );
    }
    b.channels_complete()
        .app("tally", &Params::default())
        .store(store)
        .snapshot_timeout(Duration::from_secs(3))
        .failure_timeout(Some(Duration::from_millis(500)))
        .insecure(true)
        .build()
}

/// Takes a snapshot, retrying while the cluster forms or rolls back.
///
/// # Errors
/// None succeeded within `limit`; the last error.
pub async fn snapshot(
    node: &Node<TallyNode>,
    limit: Duration,
) -> Result<Snapshot<Tally, Event>, cairn_runtime::Error> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match node.snapshot().await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What [`tour`] saw.
#[derive(Debug, Default)]
pub struct Tour {
    /// Hits served in the snapshot taken while hits poured in, and whether
    /// it was consistent.
    pub during: u64,
    /// Hits served in the snapshot taken after all the first hits.
    pub before_crash: u64,
    /// Hits served in the first snapshot after recovery.
    pub after_recovery: u64,
    /// Hits served at the end, after more hits.
    pub at_end: u64,
    /// The snapshot an operator restored (from a node that does not
    /// coordinate), and the hits served right after.
    pub restored: Option<(u64, u64)>,
}

/// Runs the tally on `ports` in this process: hits pour into every node
/// while a snapshot is taken; then a node crashes (its state is lost) and
/// comes back, the cluster rolls back to the newest snapshot, and the tally
/// carries on. Every snapshot is checked with [`consistent`].
///
/// # Errors
/// A step failed, or a snapshot was inconsistent or lost hits.
pub async fn tour(ports: &[(u16, u16)], store: &str) -> Result<Tour, String> {
    let config = config(ports, store).map_err(|e| e.to_string())?;
    let mut nodes = Vec::new();
    for n in &config.nodes {
        nodes.push(
            Node::<TallyNode>::start(config.clone(), &n.id)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let mut seen = Tour::default();
    let check =
        |s: &Snapshot<Tally, Event>| consistent(s).map_err(|e| format!("snapshot {}: {e}", s.id));
    let limit = Duration::from_secs(15);
    // Hits pour into every node while node 1 takes a snapshot.
    let (fed, during) = tokio::join!(pour(&nodes, 200), snapshot(&nodes[0], limit));
    fed?;
    let during = during.map_err(|e| e.to_string())?;
    check(&during)?;
    seen.during = total(&during);
    // Every hit so far was handled before this snapshot started.
    let before = snapshot(&nodes[1], limit)
        .await
        .map_err(|e| e.to_string())?;
    check(&before)?;
    seen.before_crash = total(&before);
    let epoch = before.epoch;
    // Node 3 crashes: its process and state are gone. It comes back as a
    // new life, and the cluster rolls back to the newest snapshot.
    let crashed = nodes.pop().ok_or("no nodes")?;
    let id = crashed.id().to_string();
    crashed.shutdown().await.map_err(|e| e.to_string())?;
    nodes.push(
        Node::<TallyNode>::start(config.clone(), &id)
            .await
            .map_err(|e| e.to_string())?,
    );
    let deadline = tokio::time::Instant::now() + limit;
    while nodes.iter().any(|n| {
        let s = n.status();
        s.epoch <= epoch || s.needs_restore
    }) {
        if tokio::time::Instant::now() > deadline {
            let now: Vec<_> = nodes.iter().map(Node::status).collect();
            return Err(format!(
                "the cluster did not recover from epoch {epoch} within {limit:?}: {now:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = snapshot(&nodes[2], limit)
        .await
        .map_err(|e| e.to_string())?;
    check(&after)?;
    seen.after_recovery = total(&after);
    pour(&nodes, 10).await?;
    let end = snapshot(&nodes[0], limit)
        .await
        .map_err(|e| e.to_string())?;
    check(&end)?;
    seen.at_end = total(&end);
    // An operator's restore, asked of a node that does not coordinate:
    // every node goes back to the snapshot taken before the crash.
    let to = nodes[1]
        .restore(Some(before.id))
        .await
        .map_err(|e| e.to_string())?;
    let again = snapshot(&nodes[1], limit)
        .await
        .map_err(|e| e.to_string())?;
    check(&again)?;
    seen.restored = to.map(|id| (id, total(&again)));
    for n in nodes {
        n.shutdown().await.map_err(|e| e.to_string())?;
    }
    Ok(seen)
}

/// Feeds `each` hits to every node, in turns.
async fn pour(nodes: &[Node<TallyNode>], each: u64) -> Result<(), String> {
    for _ in 0..each {
        for n in nodes {
            n.input(Event::Hit).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
