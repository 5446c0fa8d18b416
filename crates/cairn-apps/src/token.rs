//! The token application: each process holds tokens and every message carries
//! some, so the total is conserved and every snapshot can be checked for it.

use cairn_core::oracle::{AppEvent, Model};
use cairn_core::{ChannelId, Context, GlobalSnapshot, Pace, Process, ProcessId, Topology};
use serde::{Deserialize, Serialize};

/// A process's state: `{"tokens": n}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    /// Tokens held.
    pub tokens: u64,
}

/// The token application's transitions: sending n tokens needs at least n;
/// receiving n adds n.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenModel;

impl Model for TokenModel {
    type State = Tokens;
    type Message = Tokens;

    fn apply(&self, _: ProcessId, state: &Tokens, event: AppEvent<'_, Tokens>) -> Option<Tokens> {
        let tokens = match event {
            AppEvent::Send { message, .. } => state.tokens.checked_sub(message.tokens)?,
            AppEvent::Receive { message, .. } => state.tokens.checked_add(message.tokens)?,
        };
        Some(Tokens { tokens })
    }
}

/// Tokens recorded in processes and in channels.
pub fn recorded_tokens(snapshot: &GlobalSnapshot<Tokens, Tokens>) -> (u64, u64) {
    let held = snapshot.states.iter().map(|s| s.tokens).sum();
    let in_flight = snapshot.channels.iter().flatten().map(|m| m.tokens).sum();
    (held, in_flight)
}

/// The token process's parameters (the `[app]` table of a cluster config).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenParams {
    /// Tokens every process starts with.
    pub initial_tokens: u64,
    /// Tokens passed on per second per process; absent means as fast as possible.
    pub rate: Option<f64>,
}

impl Default for TokenParams {
    fn default() -> Self {
        TokenParams {
            initial_tokens: 10,
            rate: None,
        }
    }
}

/// A process of the token application at run time: it passes one token at a
/// time to a random outgoing neighbour.
#[derive(Clone, Debug)]
pub struct TokenProcess {
    tokens: u64,
    pace: Pace,
}

impl Process for TokenProcess {
    type Message = Tokens;
    type State = Tokens;
    type Params = TokenParams;

    fn new(params: &TokenParams, _me: ProcessId, topology: &Topology) -> Result<Self, String> {
        let pace = crate::pace_from_rate(params.rate, "tokens")?;
        crate::check_total(params.initial_tokens, topology, "initial_tokens")?;
        Ok(TokenProcess {
            tokens: params.initial_tokens,
            pace,
        })
    }

    fn pace(&self) -> Pace {
        self.pace
    }

    fn on_message(&mut self, _: ChannelId, message: Tokens, _: &mut Context<'_, Tokens>) {
        self.tokens = self.tokens.saturating_add(message.tokens);
    }

    fn on_tick(&mut self, cx: &mut Context<'_, Tokens>) {
        if self.tokens == 0 {
            return;
        }
        let Some(channel) = crate::random_channel(cx) else {
            return;
        };
        self.tokens -= 1;
        cx.send(channel, Tokens { tokens: 1 });
    }

    fn state(&self) -> Tokens {
        Tokens {
            tokens: self.tokens,
        }
    }

    fn restore(&mut self, state: Tokens) {
        self.tokens = state.tokens;
    }
}
