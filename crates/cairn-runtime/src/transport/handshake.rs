//! The sender's half of a channel's handshake: it says hello (who it is,
//! for which channel, in which epoch and life) and learns from the welcome
//! where the receiver's sequence stands, or from a reject why not.

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::{HANDSHAKE_TIMEOUT, Identity};
use crate::error::{Error, Result};
use crate::peers::Seen;
use crate::tls::{BoxRead, BoxWrite};
use crate::wire::{
    self, Frame, FrameWriter, Hello, MAGIC, PROTOCOL_VERSION, RejectKind, WriteError,
};

/// Says hello on a new connection of `channel` (to node `peer`) in `epoch`;
/// the next sequence number the receiver expects.
pub(super) async fn handshake(
    id: &Identity,
    channel: &str,
    peer: usize,
    epoch: u64,
    now: &watch::Receiver<u64>,
    reader: &mut FramedRead<BoxRead, LengthDelimitedCodec>,
    writer: &mut FramedWrite<BoxWrite, FrameWriter>,
) -> Result<u64> {
    let hello = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        cluster: id.cluster.clone(),
        node: id.node.clone(),
        channel: channel.to_string(),
        epoch,
        incarnation: id.peers.me,
        peer_incarnation: id.peers.known(peer),
    };
    writer.send(&hello).await.map_err(|e| match e {
        WriteError::Io(e) => Error::io("sending hello", e),
        WriteError::Unsendable(why) => Error::Protocol(why),
    })?;
    let reply = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next())
        .await
        .map_err(|_| Error::Protocol("no answer to hello".into()))?
        .ok_or_else(|| Error::Protocol("peer closed the connection after hello".into()))?
        .map_err(|e| Error::Protocol(e.to_string()))?;
    match wire::decode::<Frame<()>>(&reply)? {
        Frame::Welcome {
            next_seq,
            incarnation,
            peer_incarnation,
        } => {
            // A rollback while the hello travelled: this connection belongs
            // to the old epoch, and judging this node by it would take how
            // the peer saw its life before the restore for a new restart.
            if *now.borrow() != epoch {
                return Err(Error::Protocol(format!(
                    "{channel}: the epoch moved during the handshake; reconnecting in the new one"
                )));
            }
            if id.peers.judge_me(peer_incarnation, epoch) == Seen::Restarted {
                return Err(Error::Restarted(format!(
                    "{channel}: the peer knew an earlier life of this node"
                )));
            }
            if id.peers.judge(peer, incarnation, epoch, epoch) == Seen::Restarted {
                return Err(Error::Restarted(format!(
                    "{channel}: the peer restarted and lost its state"
                )));
            }
            id.peers.adopt(peer, incarnation, epoch);
            Ok(next_seq)
        }
        Frame::Reject {
            reason,
            kind: RejectKind::SenderRestarted,
        } => {
            // Refused for a life this node has since restored (a rollback
            // while the hello travelled): that restart is settled.
            if *now.borrow() == epoch {
                id.peers.mark_needs_restore();
            }
            Err(Error::Restarted(reason))
        }
        Frame::Reject {
            reason,
            kind: RejectKind::ReceiverRestarted | RejectKind::Epoch,
        } => Err(Error::Epoch(reason)),
        Frame::Reject {
            reason,
            kind: RejectKind::Refused,
        } => Err(Error::Protocol(format!(
            "peer refused the channel: {reason}"
        ))),
        other => Err(Error::Protocol(format!(
            "unexpected answer to hello: {other:?}"
        ))),
    }
}
