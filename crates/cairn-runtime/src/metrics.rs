//! Counters for `GET /metrics`, in Prometheus text format.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the snapshot-duration histogram, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One node's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Application messages sent.
    pub messages_sent: AtomicU64,
    /// Application messages received.
    pub messages_received: AtomicU64,
    /// Snapshots this node recorded its state for.
    pub snapshots_recorded: AtomicU64,
    /// Bytes of application messages recorded in channel states here.
    pub recorded_channel_bytes: AtomicU64,
    /// Connections to peers (re-)established by this node's channel senders.
    pub connections: AtomicU64,
    /// Frames sent again after a reconnect because the peer had not acknowledged them.
    pub frames_resent: AtomicU64,
    /// Rollbacks this node carried out.
    pub rollbacks: AtomicU64,
    /// Snapshots the coordinator started.
    pub snapshots_started: AtomicU64,
    /// Snapshots the coordinator completed.
    pub snapshots_completed: AtomicU64,
    /// Snapshots whose manifest the coordinator committed to the store.
    pub snapshots_durable: AtomicU64,
    /// Snapshots the coordinator gave up on.
    pub snapshots_failed: AtomicU64,
    /// Markers this node sent (control traffic).
    pub markers_sent: AtomicU64,
    /// The longest time, in microseconds, this node could process no
    /// message: one driver step, or (aligned and stop-the-world modes) an
    /// input held blocked or sends held paused. Reset by
    /// `POST /metrics/reset-peaks`.
    pub longest_pause_us: AtomicU64,
    /// Connection attempts by this node's channel senders.
    pub connect_attempts: AtomicU64,
    /// Peers seen restarted (a new incarnation with lost state).
    pub peer_restarts: AtomicU64,
    /// 1 while this node restarted and waits for a restore, else 0.
    pub needs_restore: AtomicU64,
    /// Snapshots this node gave up locally: aborted by the coordinator,
    /// timed out here, over the recording limit, or its reporter backlogged.
    pub snapshots_aborted: AtomicU64,
    /// Orders refused as stale or unauthorised (a forged or stale rollback, say).
    pub orders_refused: AtomicU64,
    /// Admin requests refused: no or wrong credentials, or a caller that
    /// claims to be someone it is not.
    pub admin_refused: AtomicU64,
    /// Admin-API connections this node opened to other nodes.
    pub control_connections: AtomicU64,
    /// Peer connections refused at the door: no TLS, no or a wrong
    /// certificate, or a hello that names another node.
    pub peers_refused: AtomicU64,
    /// The highest coordinator term this node has seen.
    pub term: AtomicU64,
    /// 1 while this node coordinates, else 0.
    pub leading: AtomicU64,
    /// On the coordinator: nodes silent for the failure timeout.
    pub nodes_unreachable: AtomicU64,
    durations: Mutex<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Counts one more.
    pub fn inc(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    /// Notes a pause in message processing; keeps the longest.
    pub fn note_pause(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.longest_pause_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Forgets the longest pause, so the next reading covers only what follows.
    pub fn reset_peaks(&self) {
        self.longest_pause_us.store(0, Ordering::Relaxed);
    }

    /// Records one completed snapshot's duration.
    pub fn observe_duration(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let mut h = self.durations.lock().unwrap_or_else(|p| p.into_inner());
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The Prometheus text exposition of every counter, labelled with the node.
    pub fn render(&self, node: &str) -> String {
        let mut out = String::new();
        let counters = [
            (
                "cairn_messages_sent_total",
                "Application messages sent.",
                &self.messages_sent,
            ),
            (
                "cairn_messages_received_total",
                "Application messages received.",
                &self.messages_received,
            ),
            (
                "cairn_snapshots_recorded_total",
                "Snapshots this node recorded its state for.",
                &self.snapshots_recorded,
            ),
            (
                "cairn_recorded_channel_bytes_total",
                "Bytes of messages recorded in channel states.",
                &self.recorded_channel_bytes,
            ),
            (
                "cairn_connections_total",
                "Channel connections established (reconnects included).",
                &self.connections,
            ),
            (
                "cairn_frames_resent_total",
                "Frames resent after a reconnect.",
                &self.frames_resent,
            ),
            (
                "cairn_rollbacks_total",
                "Rollbacks to a snapshot this node carried out.",
                &self.rollbacks,
            ),
            (
                "cairn_snapshots_started_total",
                "Snapshots started by the coordinator.",
                &self.snapshots_started,
            ),
            (
                "cairn_snapshots_completed_total",
                "Global snapshots completed.",
                &self.snapshots_completed,
            ),
            (
                "cairn_snapshots_durable_total",
                "Global snapshots committed to the store.",
                &self.snapshots_durable,
            ),
            (
                "cairn_snapshots_failed_total",
                "Global snapshots that timed out.",
                &self.snapshots_failed,
            ),
            (
                "cairn_markers_sent_total",
                "Markers sent.",
                &self.markers_sent,
            ),
            (
                "cairn_connect_attempts_total",
                "Connection attempts by channel senders.",
                &self.connect_attempts,
            ),
            (
                "cairn_peer_restarts_total",
                "Peers seen restarted with their state lost.",
                &self.peer_restarts,
            ),
            (
                "cairn_snapshots_aborted_total",
                "Snapshots given up at this node.",
                &self.snapshots_aborted,
            ),
            (
                "cairn_orders_refused_total",
                "Orders refused as stale or unauthorised.",
                &self.orders_refused,
            ),
            (
                "cairn_control_connections_total",
                "HTTP/2 connections this node opened to other nodes' admin APIs (each stays open for many requests).",
                &self.control_connections,
            ),
            (
                "cairn_admin_refused_total",
                "Admin API requests refused for missing or wrong credentials.",
                &self.admin_refused,
            ),
            (
                "cairn_peers_refused_total",
                "Peer connections refused: no TLS, a wrong certificate, or a hello naming another node.",
                &self.peers_refused,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{node=\"{node}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in [
            (
                "cairn_term",
                "The highest coordinator term this node has seen.",
                &self.term,
            ),
            (
                "cairn_coordinating",
                "1 while this node is the coordinator.",
                &self.leading,
            ),
            (
                "cairn_nodes_unreachable",
                "On the coordinator: nodes that have not answered for the failure timeout.",
                &self.nodes_unreachable,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{node=\"{node}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let name = "cairn_needs_restore";
        let _ = writeln!(
            out,
            "# HELP {name} 1 while this node restarted and waits for a restore.\n# TYPE {name} gauge\n{name}{{node=\"{node}\"}} {}",
            self.needs_restore.load(Ordering::Relaxed)
        );
        let name = "cairn_longest_pause_microseconds";
        let _ = writeln!(
            out,
            "# HELP {name} Longest pause in message processing since the last reset.\n# TYPE {name} gauge\n{name}{{node=\"{node}\"}} {}",
            self.longest_pause_us.load(Ordering::Relaxed)
        );
        let h = self.durations.lock().unwrap_or_else(|p| p.into_inner());
        let name = "cairn_snapshot_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From start to complete global snapshot.\n# TYPE {name} histogram"
        );
        for (b, c) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(out, "{name}_bucket{{node=\"{node}\",le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{node=\"{node}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{node=\"{node}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{node=\"{node}\"}} {}", h.count);
        out
    }
}
