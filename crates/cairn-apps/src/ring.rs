//! A token ring and the loss of its token. One token travels round the ring,
//! one hop at a time. In fault mode the process that receives hop
//! `lose_at_hop` drops it, and the token is gone for good.
//!
//! State `{"tokens": n, "hop": h}` (the last hop seen). Message `{"tokens": 1, "hop": h}`.

use cairn_core::oracle::{AppEvent, Model};
use cairn_core::{ChannelId, GlobalSnapshot, Pace, ProcessId, StableProperty, Topology};
use serde::{Deserialize, Serialize};

use crate::protocol::Protocol;

/// A process's state, and the token as a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingToken {
    /// Tokens held (or carried).
    pub tokens: u64,
    /// The hop count: the last one seen (state) or this one (message).
    pub hop: u64,
}

/// Parameters (the `[app]` table).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingParams {
    /// Fault mode: the receiver of this hop loses the token.
    pub lose_at_hop: Option<u64>,
    /// Hops per second per node on a cluster (at most: a node passes the
    /// token on at its next turn); absent means 2000.
    pub rate: Option<f64>,
}

/// The token ring.
#[derive(Clone, Debug, PartialEq)]
pub struct Ring {
    lose_at_hop: Option<u64>,
    pace: Pace,
}

impl Model for Ring {
    type State = RingToken;
    type Message = RingToken;

    fn apply(&self, _: ProcessId, s: &RingToken, e: AppEvent<'_, RingToken>) -> Option<RingToken> {
        match e {
            AppEvent::Send { message, .. } => Some(RingToken {
                tokens: s.tokens.checked_sub(message.tokens)?,
                hop: message.hop,
            }),
            AppEvent::Receive { message, .. } => {
                let lost = self.lose_at_hop == Some(message.hop);
                Some(RingToken {
                    tokens: if lost {
                        s.tokens
                    } else {
                        s.tokens.checked_add(message.tokens)?
                    },
                    hop: message.hop,
                })
            }
        }
    }
}

impl Protocol for Ring {
    type Params = RingParams;

    fn from_params(params: &RingParams, topo: &Topology) -> Result<Self, String> {
        if let Some(p) = topo.processes().find(|&p| topo.outgoing(p).is_empty()) {
            return Err(format!(
                "every node of a ring needs an outgoing channel; {} has none",
                topo.name(p)
            ));
        }
        let pace = crate::pace_from_rate(params.rate.or(Some(2000.0)), "hops")?;
        Ok(Ring {
            lose_at_hop: params.lose_at_hop,
            pace,
        })
    }

    fn initial(&self, me: ProcessId, _: &Topology) -> RingToken {
        RingToken {
            tokens: u64::from(me == ProcessId(0)),
            hop: 0,
        }
    }

    fn next_sends(
        &self,
        me: ProcessId,
        s: &RingToken,
        topo: &Topology,
        _: &mut dyn FnMut() -> u64,
    ) -> Vec<(ChannelId, RingToken)> {
        if s.tokens == 0 {
            return Vec::new();
        }
        let token = RingToken {
            tokens: 1,
            hop: s.hop + 1,
        };
        vec![(topo.outgoing(me)[0], token)]
    }

    fn pace(&self) -> Pace {
        self.pace
    }

    /// The token moves on the node's turns only, so `rate` bounds its hops.
    fn acts_on_receipt(&self) -> bool {
        false
    }
}

/// Lost token: no token in any process or channel.
#[derive(Clone, Copy, Debug, Default)]
pub struct LostToken;

impl StableProperty<RingToken, RingToken> for LostToken {
    type Evidence = String;

    fn name(&self) -> &str {
        "lost-token"
    }

    fn evaluate(
        &self,
        topo: &Topology,
        s: &GlobalSnapshot<RingToken, RingToken>,
    ) -> Option<String> {
        let held: u64 = s.states.iter().map(|t| t.tokens).sum();
        let flying: u64 = s.channels.iter().flatten().map(|t| t.tokens).sum();
        (held + flying == 0).then(|| {
            let last = s.states.iter().map(|t| t.hop).max().unwrap_or(0);
            format!(
                "no token in any of {} processes or {} channels; the last hop recorded was {last}",
                topo.process_count(),
                topo.channel_count()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolProcess;
    use cairn_core::{Context, Process};

    /// The ring's `rate` bounds its hops: a node that receives the token
    /// passes it on at its next turn, not at once (on a cluster it moved
    /// about 39,000 hops a second with rate = 10).
    #[test]
    fn the_token_waits_for_the_nodes_turn() {
        let names = vec!["a".to_string(), "b".to_string()];
        let topo = Topology::new(names.clone(), &Topology::ring_pairs(&names)).unwrap();
        let params = RingParams {
            rate: Some(10.0),
            ..RingParams::default()
        };
        let mut b = ProtocolProcess::<Ring>::new(&params, ProcessId(1), &topo).unwrap();
        assert_eq!(b.pace(), Pace::PerSecond(10.0));
        let out = topo.outgoing(ProcessId(1)).to_vec();
        let into_b = topo.incoming(ProcessId(1))[0];
        let (mut sends, mut random) = (Vec::new(), || 4);
        let token = RingToken { tokens: 1, hop: 1 };
        b.on_message(
            into_b,
            token,
            &mut Context::new(&out, &mut random, &mut sends),
        );
        assert!(sends.is_empty(), "passed on at receipt: {sends:?}");
        assert_eq!(b.state().tokens, 1);
        b.on_tick(&mut Context::new(&out, &mut random, &mut sends));
        assert_eq!(sends, vec![(out[0], RingToken { tokens: 1, hop: 2 })]);
        assert_eq!(b.state().tokens, 0);
    }
}
