//! The application trait: what a process does, with no I/O in sight, so the
//! same application runs in the simulator and over TCP.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ids::{ChannelId, ProcessId};
use crate::topology::Topology;

/// How a process acts on its own, besides answering messages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Only when a message arrives.
    Passive,
    /// As often as the runtime has room to send. A process whose ticks
    /// keep sending nothing is taken to have nothing to send for now: the
    /// TCP runtime ticks it again once a message or input reaches it, or
    /// after a millisecond (64 empty ticks in a row, so a process that
    /// sends on only some ticks is not slowed).
    Continuous,
    /// This many times a second.
    PerSecond(f64),
}

/// What a process may do while it handles an event: send on its outgoing
/// channels, and draw random numbers the runtime supplies.
pub struct Context<'a, M> {
    outgoing: &'a [ChannelId],
    random: &'a mut dyn FnMut() -> u64,
    sends: &'a mut Vec<(ChannelId, M)>,
}

impl<M> fmt::Debug for Context<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("outgoing", &self.outgoing)
            .field("queued", &self.sends.len())
            .finish()
    }
}

impl<'a, M> Context<'a, M> {
    /// A context offering `outgoing` channels, drawing from `random` and
    /// collecting sends into `sends`.
    pub fn new(
        outgoing: &'a [ChannelId],
        random: &'a mut dyn FnMut() -> u64,
        sends: &'a mut Vec<(ChannelId, M)>,
    ) -> Self {
        Context {
            outgoing,
            random,
            sends,
        }
    }

    /// The outgoing channels that have room for a message now.
    pub fn outgoing(&self) -> &[ChannelId] {
        self.outgoing
    }

    /// A random number.
    pub fn random(&mut self) -> u64 {
        (self.random)()
    }

    /// Sends `message` on `channel`, after everything sent before.
    pub fn send(&mut self, channel: ChannelId, message: M) {
        self.sends.push((channel, message));
    }
}

/// A piece of a large state, split out for storage: a key that stays the
/// same from one snapshot to the next, and the piece's bytes. A store keeps
/// a chunk whose bytes did not change since the process's previous part
/// without writing it again.
pub type Chunk = (String, Arc<[u8]>);

/// One user process. The runtime calls it from one task, one event at a time.
pub trait Process: Send + Sized + 'static {
    /// An application message.
    type Message: Clone + fmt::Debug + Serialize + DeserializeOwned + Send + 'static;
    /// The state a snapshot records.
    type State: Clone + fmt::Debug + PartialEq + Serialize + DeserializeOwned + Send + 'static;
    /// Parameters from the cluster configuration.
    type Params: fmt::Debug + DeserializeOwned + Default;

    /// The process `me` of `topology`, in its initial state.
    ///
    /// # Errors
    /// A sentence saying which parameter is unusable.
    fn new(params: &Self::Params, me: ProcessId, topology: &Topology) -> Result<Self, String>;

    /// How this process acts on its own.
    fn pace(&self) -> Pace;

    /// A message arrived on `channel`.
    fn on_message(
        &mut self,
        channel: ChannelId,
        message: Self::Message,
        cx: &mut Context<'_, Self::Message>,
    );

    /// The process's own turn to act (see [`Process::pace`]).
    fn on_tick(&mut self, _cx: &mut Context<'_, Self::Message>) {}

    /// Input from outside the system (a request, a user action), handed in
    /// by the program that runs this process. It is a local event of the
    /// process, like a tick: it may change the state and send messages, and
    /// a snapshot records its effect if and only if it came before the
    /// process recorded. The default refuses it, saying this application
    /// takes no input.
    ///
    /// # Errors
    /// A sentence saying why the input was refused; the state must then be
    /// unchanged.
    fn on_input(
        &mut self,
        _input: Self::Message,
        _cx: &mut Context<'_, Self::Message>,
    ) -> Result<(), String> {
        Err("this application takes no outside input".into())
    }

    /// The state to record now.
    fn state(&self) -> Self::State;

    /// Rebuilds the process from a recorded state.
    fn restore(&mut self, state: Self::State);

    /// Optional, for large states: takes the bulky parts of a recorded state
    /// out of it, as chunks with stable keys, leaving the rest (which is
    /// stored whole and checked by the oracle). [`Process::join_state`] puts
    /// them back. The default splits nothing.
    ///
    /// Runs off the process's own task, on a recorded copy. Sharing chunk
    /// buffers (`Arc`) between the live state and the recorded one, and
    /// replacing a buffer rather than changing it in place, lets the store
    /// see an unchanged chunk without reading it.
    fn split_state(_state: &mut Self::State) -> Vec<Chunk> {
        Vec::new()
    }

    /// Puts back the chunks [`Process::split_state`] took out of `state`.
    /// With no chunks (a state that was never split, such as the initial
    /// one), the state must be left as it is.
    ///
    /// # Errors
    /// A sentence saying which chunk does not fit.
    fn join_state(_state: &mut Self::State, chunks: Vec<Chunk>) -> Result<(), String> {
        match chunks.first() {
            None => Ok(()),
            Some((key, _)) => Err(format!(
                "chunk {key:?}: this application does not split its state"
            )),
        }
    }
}
