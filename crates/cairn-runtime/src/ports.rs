//! Free loopback ports for a cluster on one machine (the demo, tests).
//!
//! Asking the OS for port 0 and letting the listener go races: until a node
//! binds the port, any outgoing connection on the machine may take it as
//! its local port, since the kernel draws those from the same ephemeral
//! range (on Linux 32768–60999), and the node then fails with "address
//! already in use". So ports are chosen below that range, where the
//! kernel never hands one out by itself, each checked by binding it, from
//! a random point and never the same one twice in a process.

use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The ports chosen from: below every common ephemeral range.
const LOW: u16 = 20_000;
const HIGH: u16 = 32_000;

/// `n` distinct loopback ports that were free a moment ago.
///
/// # Errors
/// Fewer than `n` ports in 20000–31999 could be bound on 127.0.0.1.
pub fn free_loopback_ports(n: usize) -> std::io::Result<Vec<u16>> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(HIGH - LOW);
    let start = (RandomState::new().hash_one(std::process::id()) % u64::from(span)) as u32;
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..span {
        if ports.len() == n {
            break;
        }
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = LOW + offset as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
            ports.push(port);
        }
    }
    if ports.len() < n {
        return Err(std::io::Error::other(format!(
            "only {} of {n} loopback ports in {LOW}-{} could be bound",
            ports.len(),
            HIGH - 1
        )));
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant: the ports are distinct, bindable, and outside Linux's
    /// ephemeral range, also across calls in one process.
    #[test]
    fn ports_are_distinct_and_below_the_ephemeral_range() {
        let mut all = free_loopback_ports(40).unwrap();
        all.extend(free_loopback_ports(40).unwrap());
        assert!(all.iter().all(|p| (LOW..HIGH).contains(p)), "{all:?}");
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "a port handed out twice: {all:?}");
        let held: Vec<TcpListener> = all
            .iter()
            .map(|p| TcpListener::bind(("127.0.0.1", *p)).unwrap())
            .collect();
        assert_eq!(held.len(), 80);
    }
}
