//! What `GET /metrics` serves: Prometheus's text format (0.0.4), written by
//! the `prometheus` crate. Names follow Prometheus's conventions (base units,
//! `_total` on counters), which `promtool check metrics` checks in the test
//! suite. Every series carries the node's name as the label `node`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Upper bounds of the snapshot-duration histogram, in seconds.
const SNAPSHOT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the processing-pause histogram, in seconds.
const PAUSE_BUCKETS: [f64; 10] = [
    0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// One node's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Application messages sent.
    pub messages_sent: IntCounter,
    /// Application messages received.
    pub messages_received: IntCounter,
    /// Snapshots this node recorded its state for.
    pub snapshots_recorded: IntCounter,
    /// Bytes of application messages recorded in channel states here.
    pub recorded_channel_bytes: IntCounter,
    /// Bytes of state chunks this node wrote to the store.
    pub chunk_bytes_written: IntCounter,
    /// Bytes of state chunks its parts named without writing them again.
    pub chunk_bytes_reused: IntCounter,
    /// Connections to peers (re-)established by this node's channel senders.
    pub connections: IntCounter,
    /// Frames sent again after a reconnect because the peer had not acknowledged them.
    pub frames_resent: IntCounter,
    /// Application messages dropped because they cannot be sent: their
    /// encoding failed or is over `max_frame_bytes`.
    pub messages_unsendable: IntCounter,
    /// Rollbacks this node carried out.
    pub rollbacks: IntCounter,
    /// Snapshots the coordinator started.
    pub snapshots_started: IntCounter,
    /// Snapshots the coordinator completed.
    pub snapshots_completed: IntCounter,
    /// Snapshots whose manifest the coordinator committed to the store.
    pub snapshots_durable: IntCounter,
    /// Snapshots the coordinator gave up on.
    pub snapshots_failed: IntCounter,
    /// Markers this node sent (control traffic).
    pub markers_sent: IntCounter,
    /// Messages this node's markers overtook (recorded as channel tails).
    pub messages_overtaken: IntCounter,
    /// Connection attempts by this node's channel senders.
    pub connect_attempts: IntCounter,
    /// Peers seen restarted (a new incarnation with lost state).
    pub peer_restarts: IntCounter,
    /// Snapshots this node gave up locally: aborted by the coordinator,
    /// timed out here, over the recording limit, or its reporter backlogged.
    pub snapshots_aborted: IntCounter,
    /// Orders refused as stale or unauthorised (a forged or stale rollback, say).
    pub orders_refused: IntCounter,
    /// Admin requests refused: no or wrong credentials, or a caller that
    /// claims to be someone it is not.
    pub admin_refused: IntCounter,
    /// Admin-API connections this node opened to other nodes.
    pub control_connections: IntCounter,
    /// Peer connections refused at the door: no TLS, no or a wrong
    /// certificate, or a hello that names another node.
    pub peers_refused: IntCounter,
    /// The highest coordinator term this node has seen.
    pub term: IntGauge,
    /// 1 while this node coordinates, else 0.
    pub leading: IntGauge,
    /// On the coordinator: nodes silent for the failure timeout.
    pub nodes_unreachable: IntGauge,
    /// 1 while this node restarted and waits for a restore, else 0.
    pub needs_restore: IntGauge,
    /// The node's epoch (set when scraped).
    pub epoch: IntGauge,
    /// On the coordinator: snapshots started and not yet complete or failed
    /// (set when scraped).
    pub snapshots_in_progress: IntGauge,
    /// On the coordinator: the id of the newest snapshot it committed.
    pub last_durable_id: IntGauge,
    /// On the coordinator: when it committed that snapshot (Unix seconds).
    pub last_durable_timestamp: Gauge,
    /// Start to complete, and start to durable, of each global snapshot.
    snapshot_seconds: HistogramVec,
    /// Every stretch in which this node could process no message.
    pause_seconds: Histogram,
    /// The longest such stretch, in microseconds, since the last
    /// `POST /metrics/reset-peaks`. Only `cairn bench` reads it (in
    /// `/status`); scrapers read the histogram, which nobody resets.
    pub longest_pause_us: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new("")
    }
}

impl Metrics {
    /// Metrics of the node named `node`.
    ///
    /// # Panics
    /// Never for these fixed names (a duplicate or malformed name is a bug,
    /// which the unit tests catch).
    pub fn new(node: &str) -> Self {
        let labels = HashMap::from([("node".to_string(), node.to_string())]);
        let registry = Registry::new_custom(None, Some(labels)).expect("valid labels");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let int_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique name");
            g
        };
        let build = IntGauge::with_opts(
            Opts::new(
                "cairn_build_info",
                "Always 1; the labels say which build runs.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid gauge");
        build.set(1);
        registry.register(Box::new(build)).expect("unique name");
        let last_durable_timestamp = Gauge::new(
            "cairn_last_durable_snapshot_timestamp_seconds",
            "On the coordinator: when it last committed a snapshot to the store (Unix time).",
        )
        .expect("valid gauge");
        registry
            .register(Box::new(last_durable_timestamp.clone()))
            .expect("unique name");
        let snapshot_seconds = HistogramVec::new(
            HistogramOpts::new(
                "cairn_snapshot_duration_seconds",
                "On the coordinator: from a snapshot's start until it was complete (until=\"complete\": every state and channel reported) or durable (until=\"durable\": its manifest committed to the store).",
            )
            .buckets(SNAPSHOT_BUCKETS.to_vec()),
            &["until"],
        )
        .expect("valid histogram");
        registry
            .register(Box::new(snapshot_seconds.clone()))
            .expect("unique name");
        let pause_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "cairn_processing_pause_seconds",
                "Stretches in which this node could process no message: one driver step, or (aligned and stop-the-world modes) an input held blocked or sends held paused.",
            )
            .buckets(PAUSE_BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        registry
            .register(Box::new(pause_seconds.clone()))
            .expect("unique name");
        Metrics {
            messages_sent: counter("cairn_messages_sent_total", "Application messages sent."),
            messages_received: counter(
                "cairn_messages_received_total",
                "Application messages received.",
            ),
            snapshots_recorded: counter(
                "cairn_snapshots_recorded_total",
                "Snapshots this node recorded its state for.",
            ),
            recorded_channel_bytes: counter(
                "cairn_recorded_channel_bytes_total",
                "Bytes of messages recorded in channel states.",
            ),
            chunk_bytes_written: counter(
                "cairn_chunk_bytes_written_total",
                "Bytes of state chunks written to the store.",
            ),
            chunk_bytes_reused: counter(
                "cairn_chunk_bytes_reused_total",
                "Bytes of unchanged state chunks named again without writing them.",
            ),
            connections: counter(
                "cairn_connections_total",
                "Channel connections established (reconnects included).",
            ),
            frames_resent: counter(
                "cairn_frames_resent_total",
                "Frames resent after a reconnect.",
            ),
            messages_unsendable: counter(
                "cairn_messages_unsendable_total",
                "Application messages dropped: they cannot be encoded or are over max_frame_bytes.",
            ),
            rollbacks: counter(
                "cairn_rollbacks_total",
                "Rollbacks to a snapshot this node carried out.",
            ),
            snapshots_started: counter(
                "cairn_snapshots_started_total",
                "Snapshots started by the coordinator.",
            ),
            snapshots_completed: counter(
                "cairn_snapshots_completed_total",
                "Global snapshots completed (every state and channel reported).",
            ),
            snapshots_durable: counter(
                "cairn_snapshots_durable_total",
                "Global snapshots committed to the store.",
            ),
            snapshots_failed: counter(
                "cairn_snapshots_failed_total",
                "Global snapshots that failed (timed out, or not committed).",
            ),
            markers_sent: counter("cairn_markers_sent_total", "Markers sent."),
            messages_overtaken: counter(
                "cairn_messages_overtaken_total",
                "Messages a marker overtook on their way out, recorded as the tail of their channel's state.",
            ),
            connect_attempts: counter(
                "cairn_connect_attempts_total",
                "Connection attempts by channel senders.",
            ),
            peer_restarts: counter(
                "cairn_peer_restarts_total",
                "Peers seen restarted with their state lost.",
            ),
            snapshots_aborted: counter(
                "cairn_snapshots_aborted_total",
                "Snapshots given up at this node.",
            ),
            orders_refused: counter(
                "cairn_orders_refused_total",
                "Orders refused as stale or unauthorised.",
            ),
            admin_refused: counter(
                "cairn_admin_refused_total",
                "Admin API requests refused for missing or wrong credentials.",
            ),
            control_connections: counter(
                "cairn_control_connections_total",
                "HTTP/2 connections this node opened to other nodes' admin APIs (each stays open for many requests).",
            ),
            peers_refused: counter(
                "cairn_peers_refused_total",
                "Peer connections refused: no TLS, a wrong certificate, or a hello naming another node.",
            ),
            term: int_gauge(
                "cairn_term",
                "The highest coordinator term this node has seen.",
            ),
            leading: int_gauge(
                "cairn_coordinating",
                "1 while this node is the coordinator.",
            ),
            nodes_unreachable: int_gauge(
                "cairn_nodes_unreachable",
                "On the coordinator: nodes that have not answered for the failure timeout.",
            ),
            needs_restore: int_gauge(
                "cairn_needs_restore",
                "1 while this node restarted and waits for a restore.",
            ),
            epoch: int_gauge(
                "cairn_epoch",
                "This node's epoch: how many rollbacks its timeline has been through.",
            ),
            snapshots_in_progress: int_gauge(
                "cairn_snapshots_in_progress",
                "On the coordinator: snapshots started and not yet complete or failed.",
            ),
            last_durable_id: int_gauge(
                "cairn_last_durable_snapshot_id",
                "On the coordinator: the id of the snapshot it last committed to the store.",
            ),
            last_durable_timestamp,
            snapshot_seconds,
            pause_seconds,
            longest_pause_us: AtomicU64::new(0),
            registry,
        }
    }

    /// Counts `by` more.
    pub fn inc(counter: &IntCounter, by: u64) {
        counter.inc_by(by);
    }

    /// Sets a gauge.
    pub fn set(gauge: &IntGauge, v: u64) {
        gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
    }

    /// Notes a pause in message processing: into the histogram, and into
    /// the peak that `cairn bench` reads and resets.
    pub fn note_pause(&self, d: Duration) {
        self.pause_seconds.observe(d.as_secs_f64());
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.longest_pause_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Forgets the longest pause, so the next reading covers only what
    /// follows. The histogram is not touched.
    pub fn reset_peaks(&self) {
        self.longest_pause_us.store(0, Ordering::Relaxed);
    }

    /// Records how long one global snapshot took to complete.
    pub fn observe_complete(&self, d: Duration) {
        self.snapshot_seconds
            .with_label_values(&["complete"])
            .observe(d.as_secs_f64());
    }

    /// Records how long one global snapshot took to become durable, and
    /// that it is now the newest durable one.
    pub fn observe_durable(&self, id: u64, d: Duration) {
        self.snapshot_seconds
            .with_label_values(&["durable"])
            .observe(d.as_secs_f64());
        Metrics::set(&self.last_durable_id, id);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_durable_timestamp.set(now.as_secs_f64());
    }

    /// Notes the newest snapshot in the store when this node begins to
    /// coordinate, unless it has already committed a newer one.
    pub fn note_durable_in_store(&self, id: u64, created_unix_ms: u64) {
        if self.last_durable_id.get() < i64::try_from(id).unwrap_or(i64::MAX) {
            Metrics::set(&self.last_durable_id, id);
            self.last_durable_timestamp
                .set(Duration::from_millis(created_unix_ms).as_secs_f64());
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_has_the_node_label_and_the_conventional_names() {
        let m = Metrics::new("n1");
        Metrics::inc(&m.messages_sent, 3);
        m.observe_complete(Duration::from_millis(20));
        m.observe_durable(7, Duration::from_millis(30));
        m.note_pause(Duration::from_micros(300));
        let text = m.render();
        assert!(
            text.contains("cairn_messages_sent_total{node=\"n1\"} 3"),
            "{text}"
        );
        assert!(text.contains("cairn_build_info{version=\""), "{text}");
        assert!(
            text.contains("cairn_last_durable_snapshot_id{node=\"n1\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("cairn_snapshot_duration_seconds_count{until=\"durable\",node=\"n1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cairn_processing_pause_seconds_bucket{node=\"n1\",le=\"0.0005\"} 1"),
            "{text}"
        );
        assert!(!text.contains("microseconds"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains("node=\"n1\""), "{line}");
        }
    }

    #[test]
    fn the_store_never_lowers_what_this_coordinator_committed() {
        let m = Metrics::new("n2");
        m.note_durable_in_store(5, 1_000);
        assert_eq!(m.last_durable_id.get(), 5);
        assert!((m.last_durable_timestamp.get() - 1.0).abs() < 1e-9);
        m.observe_durable(9, Duration::from_millis(3));
        m.note_durable_in_store(7, 2_000);
        assert_eq!(m.last_durable_id.get(), 9);
        assert!(m.last_durable_timestamp.get() > 1_000_000.0);
    }

    #[test]
    fn reset_peaks_leaves_the_histogram_alone() {
        let m = Metrics::new("n1");
        m.note_pause(Duration::from_millis(2));
        m.reset_peaks();
        assert_eq!(m.longest_pause_us.load(Ordering::Relaxed), 0);
        assert!(
            m.render()
                .contains("cairn_processing_pause_seconds_count{node=\"n1\"} 1")
        );
    }
}
