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
    /// Hops per second per node on a cluster; absent means 2000.
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
