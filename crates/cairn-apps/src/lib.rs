//! Built-in applications that exercise Cairn, each with the transition model
//! the oracle replays and a conservation check for their snapshots.
//!
//! - [`bank`]: processes transfer money (`{"balance": n}`, `{"amount": n}`).
//! - [`token`]: processes pass tokens (`{"tokens": n}` for both).
//! - [`diffusing`], [`locks`] and [`ring`]: a diffusing computation, a lock
//!   service and a token ring, with the stable properties the paper names:
//!   termination, deadlock and a lost token. They are [`protocol::Protocol`]s,
//!   so the same definition runs in the simulator and on a cluster.
//!
//! ```
//! use cairn_apps::bank::{Bank, BankParams};
//! use cairn_core::{Context, Process, ProcessId, Topology};
//!
//! let topo = Topology::new(["a", "b"], &[("a", "b"), ("b", "a")]).unwrap();
//! let mut a = Bank::new(&BankParams { initial_balance: 5, ..BankParams::default() }, ProcessId(0), &topo).unwrap();
//! let mut sends = Vec::new();
//! let mut random = || 3;
//! a.on_tick(&mut Context::new(topo.outgoing(ProcessId(0)), &mut random, &mut sends));
//! assert_eq!(a.state().balance + sends[0].1.amount, 5);
//! ```
#![warn(missing_docs)]

pub mod ballast;
pub mod bank;
pub mod diffusing;
pub mod locks;
pub mod protocol;
pub mod ring;
pub mod token;

use cairn_core::{ChannelId, Context, Pace, SnapshotDoc, Topology};
use serde_json::Value;

/// The pace a `rate` parameter asks for: absent means as fast as possible.
fn pace_from_rate(rate: Option<f64>, unit: &str) -> Result<Pace, String> {
    match rate {
        None => Ok(Pace::Continuous),
        Some(r) if r.is_finite() && r > 0.0 => Ok(Pace::PerSecond(r)),
        Some(r) => Err(format!(
            "rate must be a positive number of {unit} per second, not {r}"
        )),
    }
}

/// Checks that every process's opening amount, summed, fits in a u64.
fn check_total(initial: u64, topology: &Topology, key: &str) -> Result<(), String> {
    initial
        .checked_mul(topology.process_count() as u64)
        .map(|_| ())
        .ok_or_else(|| format!("{key} times the number of processes overflows"))
}

/// A random outgoing channel with room, if any.
fn random_channel<M>(cx: &mut Context<'_, M>) -> Option<ChannelId> {
    let n = cx.outgoing().len() as u64;
    if n == 0 {
        return None;
    }
    let pick = (cx.random() % n) as usize;
    Some(cx.outgoing()[pick])
}

/// Money or tokens recorded in a snapshot of a built-in application:
/// `(in processes, in channels)`. `None` for an application that conserves
/// nothing Cairn knows of.
///
/// # Errors
/// A sentence naming the process or channel whose JSON lacks the amount.
pub fn conserved_totals(
    app: &str,
    doc: &SnapshotDoc<Value, Value>,
) -> Option<Result<(u64, u64), String>> {
    let (state_key, message_key) = match app {
        "bank" => ("balance", "amount"),
        "token" => ("tokens", "tokens"),
        _ => return None,
    };
    let amount = |v: &Value, key: &str, whose: String| {
        v.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{whose} has no whole-number {key:?}: {v}"))
    };
    Some((|| {
        let mut held = 0u64;
        for (name, state) in &doc.processes.0 {
            held = held
                .checked_add(amount(state, state_key, format!("process {name}"))?)
                .ok_or("total overflows")?;
        }
        let mut flying = 0u64;
        for ch in &doc.channels {
            for m in &ch.messages {
                let whose = format!("a message on {}->{}", ch.from, ch.to);
                flying = flying
                    .checked_add(amount(m, message_key, whose)?)
                    .ok_or("total overflows")?;
            }
        }
        Ok((held, flying))
    })())
}
