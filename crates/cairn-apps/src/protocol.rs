//! Applications defined by their transitions: the oracle's [`Model`] says
//! what each send and receive does to a process's state, and
//! [`Protocol::next_sends`] says what a process sends in a given state. One
//! definition then runs in the simulator and, through [`ProtocolProcess`], on
//! a cluster, and every state change is a send or a receive the trace shows.

use std::fmt;
use std::sync::Arc;

use cairn_core::oracle::{AppEvent, Model};
use cairn_core::{ChannelId, Context, Pace, Process, ProcessId, Topology};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An application given by its transitions and its sending rule.
pub trait Protocol: Model + Clone + fmt::Debug + Send + Sync + 'static {
    /// Parameters from the cluster configuration's `[app]` table.
    type Params: fmt::Debug + DeserializeOwned + Default;

    /// The protocol for `topology`, from its parameters.
    ///
    /// # Errors
    /// A sentence naming the unusable parameter or topology.
    fn from_params(params: &Self::Params, topology: &Topology) -> Result<Self, String>;

    /// Process `me`'s initial state.
    fn initial(&self, me: ProcessId, topology: &Topology) -> Self::State;

    /// What `me` sends now from `state`, in order. Each send must be enabled
    /// in the state the previous ones leave.
    fn next_sends(
        &self,
        me: ProcessId,
        state: &Self::State,
        topology: &Topology,
        random: &mut dyn FnMut() -> u64,
    ) -> Vec<(ChannelId, Self::Message)>;

    /// How often a node's process acts on its own on a cluster.
    fn pace(&self) -> Pace {
        Pace::PerSecond(2000.0)
    }

    /// Whether a node acts at once when a message arrives (on a cluster),
    /// or only on its own turns ([`Protocol::pace`]), which bounds how fast
    /// it sends.
    fn acts_on_receipt(&self) -> bool {
        true
    }
}

/// A [`Protocol`] as a runtime [`Process`].
#[derive(Debug)]
pub struct ProtocolProcess<A: Protocol> {
    protocol: A,
    me: ProcessId,
    topology: Arc<Topology>,
    state: A::State,
}

impl<A: Protocol> ProtocolProcess<A> {
    /// Carries out `sends` from the current state, keeping those that are
    /// enabled and go on a channel in `open`.
    fn act(
        &mut self,
        open: &[ChannelId],
        random: &mut dyn FnMut() -> u64,
    ) -> Vec<(ChannelId, A::Message)> {
        let wanted = self
            .protocol
            .next_sends(self.me, &self.state, &self.topology, random);
        let mut out = Vec::new();
        for (channel, message) in wanted {
            if !open.contains(&channel) {
                break;
            }
            let event = AppEvent::Send {
                channel,
                message: &message,
            };
            match self.protocol.apply(self.me, &self.state, event) {
                Some(next) => self.state = next,
                None => break,
            }
            out.push((channel, message));
        }
        out
    }
}

impl<A> Process for ProtocolProcess<A>
where
    A: Protocol,
    A::Message: Serialize + DeserializeOwned + Send + 'static,
    A::State: Serialize + DeserializeOwned + Send + 'static,
{
    type Message = A::Message;
    type State = A::State;
    type Params = A::Params;

    fn new(params: &A::Params, me: ProcessId, topology: &Topology) -> Result<Self, String> {
        let protocol = A::from_params(params, topology)?;
        let state = protocol.initial(me, topology);
        Ok(ProtocolProcess {
            protocol,
            me,
            topology: Arc::new(topology.clone()),
            state,
        })
    }

    fn pace(&self) -> Pace {
        self.protocol.pace()
    }

    fn on_message(
        &mut self,
        channel: ChannelId,
        message: A::Message,
        cx: &mut Context<'_, A::Message>,
    ) {
        let event = AppEvent::Receive {
            channel,
            message: &message,
        };
        if let Some(next) = self.protocol.apply(self.me, &self.state, event) {
            self.state = next;
        }
        if self.protocol.acts_on_receipt() {
            self.on_tick(cx);
        }
    }

    fn on_tick(&mut self, cx: &mut Context<'_, A::Message>) {
        let open = cx.outgoing().to_vec();
        let sends = {
            let mut random = || cx.random();
            self.act(&open, &mut random)
        };
        for (channel, message) in sends {
            cx.send(channel, message);
        }
    }

    fn state(&self) -> A::State {
        self.state.clone()
    }

    fn restore(&mut self, state: A::State) {
        self.state = state;
    }
}
