//! The driver's trace: each event with its vector clock, and each epoch's
//! states file, when the cluster is tracing.

use std::collections::HashMap;

use cairn_core::trace::{Event, TraceEvent};
use cairn_core::{ChannelId, Process};
use tracing::{error, warn};

use super::Driver;
use crate::error::Result;
use crate::tracefile::{States, Written, write_states};

impl<P: Process> Driver<P> {
    /// Flushes the trace and writes this epoch's states file, when tracing.
    pub(super) fn end_epoch(&mut self) -> Result<()> {
        if let Some(t) = &mut self.trace {
            t.flush()?;
        }
        if let (Some(dir), Some(initial)) = (&self.trace_dir, self.epoch_initial.clone()) {
            let states = States {
                initial,
                last: self.process.state(),
                initial_channels: std::mem::take(&mut self.epoch_channels),
                initial_overtaken: std::mem::take(&mut self.epoch_tails),
            };
            write_states(dir, &self.name, self.epoch, &states)?;
        }
        Ok(())
    }

    /// Ticks the vector clock and writes the event, when tracing; returns the
    /// clock to put on the wire.
    pub(crate) fn tick_trace(
        &mut self,
        event: impl FnOnce(&mut HashMap<ChannelId, u64>) -> Event<P::Message>,
    ) -> Option<Vec<u64>> {
        self.trace.as_ref()?;
        let ev = event(&mut self.seq_out);
        let vc = self.clock.tick().to_vec();
        self.write_trace(ev, vc.clone());
        Some(vc)
    }

    pub(super) fn flush_trace(&mut self) {
        if let Some(t) = &mut self.trace
            && let Err(e) = t.flush()
        {
            error!("{e}; tracing stops");
            self.trace = None;
        }
    }

    pub(super) fn write_trace(&mut self, event: Event<P::Message>, vc: Vec<u64>) {
        let Some(t) = &mut self.trace else { return };
        let ev = TraceEvent {
            process: self.me,
            event,
            vc,
        };
        match t.write(&self.topology, &ev) {
            Ok(Written::Yes) => {}
            Ok(Written::Full) => {
                warn!(
                    path = %t.path().display(),
                    limit_mb = self.trace_limit.unwrap_or(0) >> 20,
                    "the trace reached trace_limit_mb; tracing stops until the next epoch"
                );
                self.flush_trace();
                self.trace = None;
            }
            Err(e) => {
                error!("{e}; tracing stops");
                self.trace = None;
            }
        }
    }
}
