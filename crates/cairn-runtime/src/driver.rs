//! The driver: the one task per node that feeds cairn-core's engine and the
//! user's process, and carries out the engine's outputs. The application is
//! never paused for a snapshot; recording happens as messages flow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_core::trace::{Event, TraceEvent, VectorClock};
use cairn_core::{
    ChannelId, Context, Engine, Output, Pace, Process, ProcessId, SnapshotId, StartOutcome,
    Topology,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{error, warn};

use crate::coordinator::LocalReport;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::tracefile::TraceWriter;
use crate::transport::{In, Out, Outbound};

/// A request to the driver from the admin API or the coordinator.
#[derive(Debug)]
pub(crate) enum Control {
    /// Start snapshot `id` here.
    Start {
        id: SnapshotId,
        reply: oneshot::Sender<std::result::Result<StartOutcome, String>>,
    },
}

/// Everything the driver owns.
pub(crate) struct Driver<P: Process> {
    pub me: ProcessId,
    pub topology: Arc<Topology>,
    pub engine: Engine<P::Message, P::State>,
    pub process: P,
    pub outbound: HashMap<ChannelId, Outbound<P::Message>>,
    pub inbound: mpsc::Receiver<In<P::Message>>,
    pub control: mpsc::Receiver<Control>,
    pub reports: mpsc::UnboundedSender<LocalReport>,
    pub room: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub trace: Option<TraceWriter>,
    pub clock: VectorClock,
    pub seq_out: HashMap<ChannelId, u64>,
    pub seq_in: HashMap<ChannelId, u64>,
    pub rng: ChaCha8Rng,
}

impl<P: Process> Driver<P> {
    /// A driver for process `me`, seeded from `seed`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: ProcessId,
        topology: Arc<Topology>,
        process: P,
        outbound: HashMap<ChannelId, Outbound<P::Message>>,
        inbound: mpsc::Receiver<In<P::Message>>,
        control: mpsc::Receiver<Control>,
        reports: mpsc::UnboundedSender<LocalReport>,
        room: Arc<Notify>,
        metrics: Arc<Metrics>,
        trace: Option<TraceWriter>,
        seed: u64,
    ) -> Result<Self> {
        Ok(Driver {
            engine: Engine::new(&topology, me)?,
            clock: VectorClock::new(me, topology.process_count()),
            me,
            topology,
            process,
            outbound,
            inbound,
            control,
            reports,
            room,
            metrics,
            trace,
            seq_out: HashMap::new(),
            seq_in: HashMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// Runs until `shutdown` turns true; returns the process's last state.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> P::State {
        let pace = self.process.pace();
        let mut timer = match pace {
            Pace::PerSecond(r) => Some(tokio::time::interval(Duration::from_secs_f64(1.0 / r))),
            _ => None,
        };
        loop {
            let continuous = pace == Pace::Continuous;
            let room = continuous && self.outbound.values().any(Outbound::has_room);
            let room_freed = self.room.clone();
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(c) = self.control.recv() => self.on_control(c),
                Some(first) = self.inbound.recv() => {
                    self.on_inbound(first);
                    for _ in 0..255 {
                        match self.inbound.try_recv() {
                            Ok(i) => self.on_inbound(i),
                            Err(_) => break,
                        }
                    }
                }
                _ = tick_or_never(&mut timer) => self.on_tick(),
                _ = tokio::task::yield_now(), if room => {
                    for _ in 0..32 {
                        self.on_tick();
                    }
                }
                _ = room_freed.notified(), if continuous && !room => {}
                _ = tokio::time::sleep(Duration::from_millis(5)), if continuous && !room => {}
            }
        }
        if let Some(t) = &mut self.trace {
            if let Err(e) = t.flush() {
                error!("{e}");
            }
        }
        self.process.state()
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Start { id, reply } => {
                let r = self.engine.start_snapshot(id).map_err(|e| e.to_string());
                self.pump();
                let _ = reply.send(r);
            }
        }
    }

    fn on_inbound(&mut self, i: In<P::Message>) {
        match i {
            In::Data {
                channel,
                message,
                vc,
            } => {
                if let Err(e) = self.engine.handle_message(channel, &message) {
                    error!("engine refused a message: {e}");
                    return;
                }
                Metrics::inc(&self.metrics.messages_received, 1);
                if self.trace.is_some() {
                    let seq = self.seq_in.entry(channel).or_insert(0);
                    let event = Event::Receive {
                        channel,
                        seq: *seq,
                        message: message.clone(),
                    };
                    *seq += 1;
                    let vc = self.clock.receive(vc.as_deref().unwrap_or(&[])).to_vec();
                    self.write_trace(event, vc);
                }
                let mut sends = Vec::new();
                let outgoing: Vec<ChannelId> = self.topology.outgoing(self.me).to_vec();
                let rng = &mut self.rng;
                let mut random = || rng.random::<u64>();
                self.process.on_message(
                    channel,
                    message,
                    &mut Context::new(&outgoing, &mut random, &mut sends),
                );
                self.send_all(sends);
            }
            In::Marker {
                channel,
                snapshot,
                vc,
            } => {
                if self.trace.is_some() {
                    let vc = self.clock.receive(vc.as_deref().unwrap_or(&[])).to_vec();
                    self.write_trace(
                        Event::MarkerReceive {
                            channel,
                            snapshot: SnapshotId(snapshot),
                        },
                        vc,
                    );
                }
                if let Err(e) = self.engine.handle_marker(channel, SnapshotId(snapshot)) {
                    warn!("ignored a marker: {e}");
                }
                self.pump();
            }
        }
    }

    fn on_tick(&mut self) {
        let open: Vec<ChannelId> = self
            .topology
            .outgoing(self.me)
            .iter()
            .copied()
            .filter(|c| self.outbound.get(c).is_some_and(Outbound::has_room))
            .collect();
        let mut sends = Vec::new();
        let rng = &mut self.rng;
        let mut random = || rng.random::<u64>();
        self.process
            .on_tick(&mut Context::new(&open, &mut random, &mut sends));
        self.send_all(sends);
    }

    fn send_all(&mut self, sends: Vec<(ChannelId, P::Message)>) {
        for (channel, message) in sends {
            if let Err(e) = self.engine.send(channel, message) {
                error!("the application sent on a channel it does not have: {e}");
            }
        }
        self.pump();
    }

    /// Carries out the engine's outputs, in order.
    fn pump(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Send { channel, message } => {
                    let vc = self.tick_trace(|seq_out| {
                        let seq = seq_out.entry(channel).or_insert(0);
                        *seq += 1;
                        Event::Send {
                            channel,
                            seq: *seq - 1,
                            message: message.clone(),
                        }
                    });
                    Metrics::inc(&self.metrics.messages_sent, 1);
                    if let Some(o) = self.outbound.get(&channel) {
                        o.push(Out::Data { message, vc });
                    }
                }
                Output::SendMarker { channel, snapshot } => {
                    let vc = self.tick_trace(|_| Event::MarkerSend { channel, snapshot });
                    if let Some(o) = self.outbound.get(&channel) {
                        o.push(Out::Marker {
                            snapshot: snapshot.0,
                            vc,
                        });
                    }
                }
                Output::RecordState { snapshot } => {
                    self.tick_trace(|_| Event::Record { snapshot });
                    Metrics::inc(&self.metrics.snapshots_recorded, 1);
                    let state = self.process.state();
                    if let Err(e) = self.engine.record_state(snapshot, state) {
                        error!("{e}");
                    }
                }
                Output::ChannelRecorded { .. } => {}
                Output::LocalSnapshotComplete(local) => match self.report(local) {
                    Ok(r) => {
                        let _ = self.reports.send(r);
                    }
                    Err(e) => error!("cannot encode a local snapshot: {e}"),
                },
            }
        }
    }

    /// Ticks the vector clock and writes the event, when tracing; returns the
    /// clock to put on the wire.
    fn tick_trace(
        &mut self,
        event: impl FnOnce(&mut HashMap<ChannelId, u64>) -> Event<P::Message>,
    ) -> Option<Vec<u64>> {
        self.trace.as_ref()?;
        let ev = event(&mut self.seq_out);
        let vc = self.clock.tick().to_vec();
        self.write_trace(ev, vc.clone());
        Some(vc)
    }

    fn write_trace(&mut self, event: Event<P::Message>, vc: Vec<u64>) {
        if let Some(t) = &mut self.trace {
            let ev = TraceEvent {
                process: self.me,
                event,
                vc,
            };
            if let Err(e) = t.write(&self.topology, &ev) {
                error!("{e}; tracing stops");
                self.trace = None;
            }
        }
    }

    fn report(
        &self,
        local: cairn_core::LocalSnapshot<P::Message, P::State>,
    ) -> serde_json::Result<LocalReport> {
        let mut bytes = 0u64;
        let mut channels = Vec::new();
        for rc in local.channels {
            let mut messages = Vec::with_capacity(rc.messages.len());
            for m in &rc.messages {
                let v = serde_json::to_value(m)?;
                bytes += v.to_string().len() as u64;
                messages.push(v);
            }
            channels.push((self.topology.channel_name(rc.channel), messages));
        }
        Metrics::inc(&self.metrics.recorded_channel_bytes, bytes);
        Ok(LocalReport {
            snapshot: local.snapshot,
            process: self.topology.name(local.process).to_string(),
            state: serde_json::to_value(&local.state)?,
            channels,
            part: None,
        })
    }
}

async fn tick_or_never(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
