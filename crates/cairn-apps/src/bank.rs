//! The bank: each process holds a balance and transfers random amounts to
//! random outgoing neighbours, never overdrawing. Money is conserved: the
//! balances plus the transfers in flight always add up to the initial total.

use std::sync::Arc;

use cairn_core::oracle::{AppEvent, Model};
use cairn_core::{ChannelId, Context, Pace, Process, ProcessId, Topology};
use serde::{Deserialize, Serialize};

/// A process's state: `{"balance": n}`, plus `"ballast"` when the bank
/// carries `state_bytes` of inert state (to measure how snapshots scale with
/// the size of the state).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balance {
    /// Money held.
    pub balance: u64,
    /// Inert bytes that ride along in every snapshot. Shared, not copied,
    /// when the state is recorded: a large state must be cheap to record
    /// for the application never to pause.
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub ballast: Arc<str>,
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
}

impl Default for BankParams {
    fn default() -> Self {
        BankParams {
            initial_balance: 1000,
            rate: None,
            max_transfer: 10,
            state_bytes: 0,
        }
    }
}

/// One bank process.
#[derive(Clone, Debug)]
pub struct Bank {
    balance: u64,
    ballast: Arc<str>,
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
        Ok(Bank {
            balance: params.initial_balance,
            ballast: "b".repeat(params.state_bytes).into(),
            pace,
            max_transfer: params.max_transfer,
        })
    }

    fn pace(&self) -> Pace {
        self.pace
    }

    fn on_message(&mut self, _: ChannelId, message: Transfer, _: &mut Context<'_, Transfer>) {
        // The total is conserved and fits (checked in `new`), so this cannot overflow.
        self.balance = self.balance.saturating_add(message.amount);
    }

    fn on_tick(&mut self, cx: &mut Context<'_, Transfer>) {
        if self.balance == 0 {
            return;
        }
        let Some(channel) = crate::random_channel(cx) else {
            return;
        };
        let amount = 1 + cx.random() % self.balance.min(self.max_transfer);
        self.balance -= amount;
        cx.send(channel, Transfer { amount });
    }

    fn state(&self) -> Balance {
        Balance {
            balance: self.balance,
            ballast: self.ballast.clone(),
        }
    }

    fn restore(&mut self, state: Balance) {
        self.balance = state.balance;
        self.ballast = state.ballast;
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
        let balance = match e {
            AppEvent::Send { message, .. } => s.balance.checked_sub(message.amount)?,
            AppEvent::Receive { message, .. } => s.balance.checked_add(message.amount)?,
        };
        Some(Balance {
            balance,
            ballast: s.ballast.clone(),
        })
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
            Arc::ptr_eq(&one.ballast, &two.ballast),
            "recording copies no bytes"
        );
        let back: Balance = serde_json::from_value(serde_json::to_value(&one).unwrap()).unwrap();
        assert_eq!(back, one);
        big.restore(Balance {
            balance: 3,
            ballast: "xy".into(),
        });
        assert_eq!(&*big.state().ballast, "xy");
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
