//! The wire protocol between nodes: length-delimited frames over TCP, each
//! frame one postcard-encoded [`Frame`].
//!
//! Every connection carries one directed channel. The sender opens it with a
//! [`Hello`]; the receiver answers [`Frame::Welcome`] with the sequence
//! number it expects next (so unacknowledged frames are resent and nothing is
//! duplicated), or [`Frame::Reject`] with a reason, and closes. The hello
//! starts with a magic and the protocol version so that a peer of another
//! version is refused by name, whatever else changed.
//!
//! In a secure cluster the connection is TLS 1.3 and the sender proves
//! who it is with its node certificate: the receiver admits a hello only
//! when the certificate's node id is the hello's `node` (see
//! [`crate::tls`]). The hello itself carries no secret.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio_util::codec::{Encoder, LengthDelimitedCodec};

use crate::error::{Error, Result};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 4;

/// The first bytes of every hello.
pub const MAGIC: [u8; 4] = *b"CRN1";

/// What a node says when it opens a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The cluster's name.
    pub cluster: String,
    /// The sending node's id.
    pub node: String,
    /// The channel's name, e.g. `n1->n2`.
    pub channel: String,
    /// The sender's epoch: it grows with every rollback, and a channel
    /// connects only between nodes in the same epoch.
    pub epoch: u64,
    /// The sender's incarnation: a random value chosen when its process
    /// started. A new one means the process restarted and lost its state.
    pub incarnation: u64,
    /// The receiver's incarnation as the sender last saw it, and in which
    /// epoch; `None` before they ever spoke. A receiver that finds another
    /// value here restarted since.
    pub peer_incarnation: Option<(u64, u64)>,
}

/// Why a receiver refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectKind {
    /// Not a member, another cluster, a wrong channel, a bad hello.
    Refused,
    /// The two nodes are in different epochs (a rollback is reaching them).
    Epoch,
    /// The sender restarted (a new incarnation) and lost its state: it
    /// needs a restore before it exchanges messages again.
    SenderRestarted,
    /// The receiver restarted and needs a restore.
    ReceiverRestarted,
}

/// One frame after the hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame<M> {
    /// The receiver accepts the channel and expects `next_seq` next.
    Welcome {
        /// The next sequence number the receiver will accept.
        next_seq: u64,
        /// The receiver's incarnation.
        incarnation: u64,
        /// The sender's incarnation as the receiver last saw it, and in
        /// which epoch (`None` before they ever spoke).
        peer_incarnation: Option<(u64, u64)>,
    },
    /// The receiver refuses the connection.
    Reject {
        /// Why, in words.
        reason: String,
        /// Why, for the sender to act on.
        kind: RejectKind,
    },
    /// An application message.
    Data {
        /// Per-channel frame sequence number, from 1.
        seq: u64,
        /// The epoch it was sent in; a frame of another epoch is discarded.
        epoch: u64,
        /// The message.
        message: M,
        /// The sender's vector clock, when the cluster is tracing.
        vc: Option<Vec<u64>>,
    },
    /// A marker.
    Marker {
        /// Per-channel frame sequence number, from 1.
        seq: u64,
        /// The epoch it was sent in; a frame of another epoch is discarded.
        epoch: u64,
        /// The snapshot.
        snapshot: u64,
        /// The sender's vector clock, when the cluster is tracing.
        vc: Option<Vec<u64>>,
    },
    /// Every frame before `next_seq` has been received.
    Ack {
        /// The next sequence number the receiver expects.
        next_seq: u64,
    },
}

/// The framing codec, bounded to `max_frame_bytes`.
pub fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

/// The sending side of [`codec`]: each frame is encoded with postcard
/// straight into the connection's write buffer, behind the length prefix
/// [`codec`] reads (four bytes, big-endian). A frame over the limit is
/// refused before anything of it is left in the buffer.
#[derive(Clone, Copy, Debug)]
pub struct FrameWriter {
    max_frame_bytes: usize,
}

impl FrameWriter {
    /// A writer of frames of at most `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameWriter { max_frame_bytes }
    }
}

/// Why a frame was not written.
#[derive(Debug)]
pub enum WriteError {
    /// The connection failed.
    Io(std::io::Error),
    /// The value cannot be a frame: its encoding failed, or it is over the
    /// limit. The connection is intact and nothing of the frame was written.
    Unsendable(String),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Io(e)
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Io(e) => write!(f, "{e}"),
            WriteError::Unsendable(why) => f.write_str(why),
        }
    }
}

/// Postcard's output going straight into a `BytesMut`.
struct Appender<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for Appender<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.put_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.put_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// The length prefix's size.
const PREFIX: usize = 4;

impl<T: Serialize> Encoder<T> for FrameWriter {
    type Error = WriteError;

    fn encode(&mut self, value: T, dst: &mut BytesMut) -> std::result::Result<(), WriteError> {
        let start = dst.len();
        dst.put_u32(0);
        if let Err(e) = postcard::serialize_with_flavor(&value, Appender(dst)) {
            dst.truncate(start);
            return Err(WriteError::Unsendable(format!(
                "cannot encode a frame: {e}"
            )));
        }
        let len = dst.len() - start - PREFIX;
        if len > self.max_frame_bytes {
            dst.truncate(start);
            return Err(WriteError::Unsendable(format!(
                "a frame of {len} bytes is over max_frame_bytes ({})",
                self.max_frame_bytes
            )));
        }
        let prefix = u32::try_from(len).expect("max_frame_bytes is at most 1 GiB");
        dst[start..start + PREFIX].copy_from_slice(&prefix.to_be_bytes());
        Ok(())
    }
}

/// Encodes a value for one frame.
///
/// # Errors
/// [`Error::Protocol`] if the value cannot be encoded.
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes> {
    postcard::to_allocvec(value)
        .map(Bytes::from)
        .map_err(|e| Error::Protocol(format!("cannot encode a frame: {e}")))
}

/// Decodes one frame.
///
/// # Errors
/// [`Error::Protocol`] naming what could not be decoded.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::Protocol(format!("malformed frame ({} bytes): {e}", bytes.len())))
}

/// Decodes a hello, refusing another protocol by name before reading the rest.
///
/// # Errors
/// [`Error::Protocol`] for a bad magic, another version or a malformed hello.
pub fn decode_hello(bytes: &[u8]) -> Result<Hello> {
    let (prefix, _): (([u8; 4], u32), _) = postcard::take_from_bytes(bytes)
        .map_err(|_| Error::Protocol("the connection did not open with a Cairn hello".into()))?;
    if prefix.0 != MAGIC {
        return Err(Error::Protocol(
            "the connection did not open with a Cairn hello".into(),
        ));
    }
    if prefix.1 != PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "peer speaks protocol version {}, this node speaks {PROTOCOL_VERSION}",
            prefix.1
        )));
    }
    decode(bytes)
}

/// What a failed read means: the peer went away (an end of stream, a
/// reset, TLS closed without notice: logged quietly), or it broke the
/// protocol (a frame over the limit, bad TLS: worth a warning).
pub(crate) fn read_error(context: &str, e: std::io::Error) -> Error {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    if matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted
    ) {
        Error::io(format!("{context}: the peer went away"), e)
    } else {
        Error::Protocol(format!("{context}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_other_versions_are_named() {
        let mut hello = Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            cluster: "c".into(),
            node: "n1".into(),
            channel: "n1->n2".into(),
            epoch: 0,
            incarnation: 7,
            peer_incarnation: Some((3, 0)),
        };
        assert_eq!(decode_hello(&encode(&hello).unwrap()).unwrap(), hello);
        hello.version = 9;
        let err = decode_hello(&encode(&hello).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("version 9"), "{err}");
        assert!(decode_hello(b"GET / HTTP/1.1\r\n").is_err());
        assert!(decode::<Frame<u64>>(&[200, 1, 2]).is_err());
    }

    /// Invariant: a frame written straight into the buffer reads back as
    /// the same frame through [`codec`], and one over the limit leaves the
    /// buffer as it was (the frames around it stay whole).
    #[test]
    fn frames_written_in_place_read_back_and_oversized_ones_leave_no_trace() {
        use tokio_util::codec::Decoder;
        let mut w = FrameWriter::new(1024);
        let mut buf = BytesMut::new();
        let small = |seq| Frame::Data {
            seq,
            epoch: 3,
            message: vec![7u8; 10],
            vc: Some(vec![1, 2]),
        };
        w.encode(small(1), &mut buf).unwrap();
        let before = buf.clone();
        let big = Frame::Data {
            seq: 2,
            epoch: 3,
            message: vec![0u8; 2000],
            vc: None,
        };
        let err = w.encode(big, &mut buf).unwrap_err().to_string();
        assert!(err.contains("over max_frame_bytes (1024)"), "{err}");
        assert_eq!(buf, before, "a refused frame left bytes behind");
        w.encode(small(2), &mut buf).unwrap();
        let mut read = codec(1024);
        for seq in 1..=2 {
            let frame = read.decode(&mut buf).unwrap().expect("a whole frame");
            assert_eq!(frame, encode(&small(seq)).unwrap());
        }
        assert!(buf.is_empty());
    }
}
