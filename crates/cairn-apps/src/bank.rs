//! The bank: each process holds a balance and transfers random amounts to
//! random outgoing neighbours, never overdrawing. Money is conserved: the
//! balances plus the transfers in flight always add up to the initial total.

use cairn_core::oracle::{AppEvent, Model};
use cairn_core::{ChannelId, Chunk, Context, Pace, Process, ProcessId, Topology};
use serde::{Deserialize, Serialize};

use crate::ballast::Ballast;

/// A process's state: `{"balance": n}`, plus `"ballast"` when the bank
/// carries `state_bytes` of inert state (to measure how snapshots scale with
/// the size of the state), and `"churn"` when part of it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balance {
    /// Money held.
    pub balance: u64,
    /// Inert bytes that ride along in every snapshot. Shared, not copied,
    /// when the state is recorded: a large state must be cheap to record
    /// for the application never to pause. Snapshots store it in chunks.
    #[serde(default, skip_serializing_if = "Ballast::is_empty")]
    pub ballast: Ballast,
    /// How the ballast changes, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn: Option<Churn>,
    /// Keep the ballast in the state when it is stored, instead of in
    /// chunks (the bank's `chunked = false`). Not part of the recorded state.
    #[serde(skip)]
    pub whole: bool,
}

/// Every `every` transfers received, the next `window` bytes of the ballast
/// are overwritten, so that a part of a large state changes between
/// snapshots (as in a real store whose hot keys move). Kept in the state,
/// so the oracle's model replays the same changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Transfers received between two rewrites.
    pub every: u64,
    /// Bytes rewritten each time.
    pub window: u64,
    /// Transfers received so far.
    pub received: u64,
}

impl Balance {
    /// Receives `amount`: the balance grows, and the ballast churns if due.
    fn receive(&mut self, amount: u64) -> Option<()> {
        self.balance = self.balance.checked_add(amount)?;
        if let Some(c) = &mut self.churn {
            c.received += 1;
            if c.received % c.every == 0 {
                let turn = c.received / c.every;
                let at = turn.wrapping_sub(1).wrapping_mul(c.window) as usize;
                self.ballast
                    .rewrite(at, c.window as usize, b'a' + (turn % 26) as u8);
            }
        }
        Some(())
    }
}

/// A transfer: `{"amount": n}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// Money moved.
    pub amount: u64,
}

/// The bank's parameters (the `[app]` table of a cluster config).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BankParams {
    /// Every process's opening balance.
    pub initial_balance: u64,
    /// Transfers per second per process; absent means as fast as possible.
    pub rate: Option<f64>,
    /// The largest single transfer.
    pub max_transfer: u64,
    /// Bytes of inert ballast in each process's state (default 0).
    pub state_bytes: usize,
    /// The share of the ballast rewritten every `churn_every` transfers
    /// received, from 0 (the default: it never changes) to 1.
    pub ballast_churn: f64,
    /// Transfers received between two rewrites of the ballast.
    pub churn_every: u64,
    /// Store the ballast in chunks, so a snapshot writes only the pieces
    /// that changed since the previous one (default true).
    pub chunked: bool,
}

impl Default for BankParams {
    fn default() -> Self {
        BankParams {
            initial_balance: 1000,
            rate: None,
            max_transfer: 10,
            state_bytes: 0,
            ballast_churn: 0.0,
            churn_every: 1000,
            chunked: true,
        }
    }
}

/// One bank process.
#[derive(Clone, Debug)]
pub struct Bank {
    state: Balance,
    pace: Pace,
    max_transfer: u64,
}

impl Process for Bank {
    type Message = Transfer;
    type State = Balance;
    type Params = BankParams;

    fn new(params: &BankParams, _me: ProcessId, topology: &Topology) -> Result<Self, String> {
        let pace = crate::pace_from_rate(params.rate, "transfers")?;
        if params.max_transfer == 0 {
            return Err("max_transfer must be at least 1".into());
        }
        crate::check_total(params.initial_balance, topology, "initial_balance")?;
        if params.state_bytes > 1 << 30 {
            return Err("state_bytes must be at most 1 GiB".into());
        }
        if !(0.0..=1.0).contains(&params.ballast_churn) {
            return Err(format!(
                "ballast_churn must be between 0 and 1, not {}",
                params.ballast_churn
            ));
        }
        if params.churn_every == 0 {
            return Err("churn_every must be at least 1".into());
        }
        let window = (params.state_bytes as f64 * params.ballast_churn).ceil() as u64;
        Ok(Bank {
            state: Balance {
                balance: params.initial_balance,
                ballast: Ballast::new(params.state_bytes),
                churn: (window > 0).then_some(Churn {
                    every: params.churn_every,
                    window,
                    received: 0,
                }),
                whole: !params.chunked,
            },
            pace,
            max_transfer: params.max_transfer,
        })
    }

    fn pace(&self) -> Pace {
        self.pace
    }

    fn on_message(&mut self, _: ChannelId, message: Transfer, _: &mut Context<'_, Transfer>) {
        // The total is conserved and fits (checked in `new`), so this cannot overflow.
        let _ = self.state.receive(message.amount);
    }

    fn on_tick(&mut self, cx: &mut Context<'_, Transfer>) {
        let balance = self.state.balance;
        if balance == 0 {
            return;
        }
        let Some(channel) = crate::random_channel(cx) else {
            return;
        };
        let amount = 1 + cx.random() % balance.min(self.max_transfer);
        self.state.balance -= amount;
        cx.send(channel, Transfer { amount });
    }

    fn state(&self) -> Balance {
        self.state.clone()
    }

    fn restore(&mut self, state: Balance) {
        let whole = self.state.whole;
        self.state = state;
        self.state.whole = whole;
    }

    fn split_state(state: &mut Balance) -> Vec<Chunk> {
        if state.whole {
            return Vec::new();
        }
        state.ballast.take_chunks()
    }

    fn join_state(state: &mut Balance, chunks: Vec<Chunk>) -> Result<(), String> {
        if chunks.is_empty() {
            return Ok(());
        }
        state.ballast.put_chunks(chunks)
    }
}

/// The bank's transitions, for the oracle: a transfer needs the money; a
/// receipt adds it.
#[derive(Clone, Copy, Debug, Default)]
pub struct BankModel;

impl Model for BankModel {
    type State = Balance;
    type Message = Transfer;

    fn apply(&self, _: ProcessId, s: &Balance, e: AppEvent<'_, Transfer>) -> Option<Balance> {
        let mut next = s.clone();
        match e {
            AppEvent::Send { message, .. } => {
                next.balance = s.balance.checked_sub(message.amount)?;
            }
            AppEvent::Receive { message, .. } => next.receive(message.amount)?,
        }
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_never_overdraw_and_conserve_money() {
        let topo = Topology::new(["a", "b"], &[("a", "b"), ("b", "a")]).unwrap();
        let params = BankParams {
            initial_balance: 7,
            ..BankParams::default()
        };
        let mut bank = Bank::new(&params, ProcessId(0), &topo).unwrap();
        let mut n = 0u64;
        let mut random = || {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            n >> 11
        };
        let mut sends = Vec::new();
        for _ in 0..50 {
            bank.on_tick(&mut Context::new(
                topo.outgoing(ProcessId(0)),
                &mut random,
                &mut sends,
            ));
        }
        let sent: u64 = sends.iter().map(|(_, t)| t.amount).sum();
        assert_eq!(bank.state().balance + sent, 7);
        assert_eq!(
            bank.state().balance,
            0,
            "it keeps sending until the money is gone"
        );
    }

    #[test]
    fn ballast_rides_in_the_state_shared_and_is_absent_by_default() {
        let topo = Topology::new(["a", "b"], &[("a", "b"), ("b", "a")]).unwrap();
        let plain = Bank::new(&BankParams::default(), ProcessId(0), &topo).unwrap();
        assert_eq!(
            serde_json::to_value(plain.state()).unwrap(),
            serde_json::json!({"balance": 1000})
        );
        let params = BankParams {
            state_bytes: 4096,
            ..BankParams::default()
        };
        let mut big = Bank::new(&params, ProcessId(0), &topo).unwrap();
        let (one, two) = (big.state(), big.state());
        assert_eq!(one.ballast.len(), 4096);
        assert!(
            one.ballast.shares_with(&two.ballast),
            "recording copies no bytes"
        );
        let back: Balance = serde_json::from_value(serde_json::to_value(&one).unwrap()).unwrap();
        assert_eq!(back, one);
        let mut split = one.clone();
        let chunks = Bank::split_state(&mut split);
        assert_eq!(
            serde_json::to_value(&split).unwrap(),
            serde_json::json!({"balance": 1000})
        );
        Bank::join_state(&mut split, chunks).unwrap();
        assert_eq!(split, one);
        big.restore(Balance {
            balance: 3,
            ..Balance::default()
        });
        assert!(big.state().ballast.is_empty());
    }

    /// The ballast churns as configured, and the oracle's model replays the
    /// same change from the state alone (or it would report every snapshot
    /// of a churning bank as unreachable).
    #[test]
    fn the_ballast_churns_every_so_many_receipts_and_the_model_agrees() {
        let topo = Topology::new(["a", "b"], &[("a", "b"), ("b", "a")]).unwrap();
        let params = BankParams {
            state_bytes: 3 * crate::ballast::PIECE,
            ballast_churn: 0.01,
            churn_every: 2,
            ..BankParams::default()
        };
        let mut bank = Bank::new(&params, ProcessId(0), &topo).unwrap();
        let mut model_state = bank.state();
        let before = bank.state();
        let mut sends = Vec::new();
        let mut random = || 7;
        for _ in 0..4 {
            let mut cx = Context::new(topo.outgoing(ProcessId(0)), &mut random, &mut sends);
            bank.on_message(ChannelId(1), Transfer { amount: 1 }, &mut cx);
            model_state = BankModel
                .apply(
                    ProcessId(0),
                    &model_state,
                    AppEvent::Receive {
                        channel: ChannelId(1),
                        message: &Transfer { amount: 1 },
                    },
                )
                .unwrap();
        }
        assert_eq!(bank.state(), model_state);
        assert_ne!(
            bank.state().ballast,
            before.ballast,
            "two rewrites happened"
        );
        let mut changed = bank.state();
        let mut was = before.clone();
        let changed = Bank::split_state(&mut changed);
        let was = Bank::split_state(&mut was);
        let moved = changed
            .iter()
            .zip(&was)
            .filter(|(a, b)| !std::sync::Arc::ptr_eq(&a.1, &b.1))
            .count();
        assert_eq!(moved, 1, "two 1% windows fall in the first piece");
        assert!(
            Bank::new(
                &BankParams {
                    ballast_churn: 1.5,
                    ..BankParams::default()
                },
                ProcessId(0),
                &topo
            )
            .unwrap_err()
            .contains("ballast_churn")
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let topo = Topology::new(["a"], &[] as &[(&str, &str)]).unwrap();
        let bad = BankParams {
            rate: Some(-1.0),
            ..BankParams::default()
        };
        assert!(
            Bank::new(&bad, ProcessId(0), &topo)
                .unwrap_err()
                .contains("rate")
        );
        let bad = BankParams {
            max_transfer: 0,
            ..BankParams::default()
        };
        assert!(
            Bank::new(&bad, ProcessId(0), &topo)
                .unwrap_err()
                .contains("max_transfer")
        );
    }
}
