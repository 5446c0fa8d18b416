//! The token application: each process holds tokens and every message carries
//! some, so the total is conserved and every snapshot can be checked for it.

use cairn_core::oracle::{AppEvent, Model};
use cairn_core::{GlobalSnapshot, ProcessId};
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
