//! Recorded channel state: the messages a snapshot found in flight, kept in
//! the application's own encoding.
//!
//! A recorded message is stored as the bytes its channel carries it in
//! (postcard, the peer wire's encoding), not as a JSON value: recording
//! thousands of in-flight messages then costs one compact encoding each,
//! and a rollback decodes them straight back into the application's type.
//! Reading them as JSON (for people, and for the oracle) takes a
//! [`Decoder`] that knows the application's message type; tools that do
//! not know it show each message's bytes in hex ([`undecoded`]).
//!
//! Parts written before this kept JSON values (`messages`); they still
//! read, and restore, as they were.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One recorded channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredChannel {
    /// The channel's name, e.g. `n1->n2`.
    pub name: String,
    /// Its recorded messages in order, each in the application's encoding
    /// (see [`encode_message`]). Always written, so that a build from
    /// before binary channel state refuses the part (it requires
    /// `messages`) instead of reading its channels as empty.
    #[serde(default)]
    pub encoded: Vec<Bytes>,
    /// Its recorded messages as JSON values (`messages` in the part): parts
    /// written before binary channel state. Never written now.
    #[serde(rename = "messages", default, skip_serializing_if = "Vec::is_empty")]
    pub legacy: Vec<Value>,
}

/// Turns one recorded message's bytes into JSON, or says why it cannot.
pub type Decoder = fn(&[u8]) -> std::result::Result<Value, String>;

/// Encodes a message as its channel state keeps it.
///
/// # Errors
/// The message does not serialize (a serde error, as text).
pub fn encode_message<M: Serialize>(message: &M) -> std::result::Result<Bytes, String> {
    postcard::to_allocvec(message)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// Decodes a recorded message as `M`, refusing trailing bytes.
///
/// # Errors
/// The bytes are not one `M` (a serde error, as text).
pub fn decode_message<M: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<M, String> {
    match postcard::take_from_bytes(bytes) {
        Ok((m, [])) => Ok(m),
        Ok((_, rest)) => Err(format!("{} bytes left over after the message", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// A [`Decoder`] for messages of type `M`: `message_json::<M> as Decoder`.
///
/// # Errors
/// The bytes are not one `M`.
pub fn message_json<M: DeserializeOwned + Serialize>(
    bytes: &[u8],
) -> std::result::Result<Value, String> {
    let m: M = decode_message(bytes)?;
    serde_json::to_value(m).map_err(|e| e.to_string())
}

/// The [`Decoder`] for an application whose message type is unknown here:
/// each message as `{"encoded": "<hex>"}`.
///
/// # Errors
/// Never.
pub fn undecoded(bytes: &[u8]) -> std::result::Result<Value, String> {
    use std::fmt::Write;
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    Ok(serde_json::json!({ "encoded": hex }))
}

impl StoredChannel {
    /// A channel recorded in the application's encoding.
    pub fn new(name: String, encoded: Vec<Bytes>) -> Self {
        StoredChannel {
            name,
            encoded,
            legacy: Vec::new(),
        }
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.legacy.len() + self.encoded.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its messages as JSON, in order.
    ///
    /// # Errors
    /// Which message (by position) did not decode, and why.
    pub fn to_values(&self, decode: Decoder) -> std::result::Result<Vec<Value>, String> {
        let mut out = self.legacy.clone();
        for (i, b) in self.encoded.iter().enumerate() {
            out.push(decode(b).map_err(|e| self.bad(i, &e))?);
        }
        Ok(out)
    }

    /// Its messages as the application's type, in order.
    ///
    /// # Errors
    /// Which message (by position) did not decode, and why.
    pub fn decode<M: DeserializeOwned>(&self) -> std::result::Result<Vec<M>, String> {
        let mut out = Vec::with_capacity(self.len());
        for (i, v) in self.legacy.iter().enumerate() {
            out.push(serde_json::from_value(v.clone()).map_err(|e| self.bad(i, &e.to_string()))?);
        }
        for (i, b) in self.encoded.iter().enumerate() {
            out.push(decode_message(b).map_err(|e| self.bad(i, &e))?);
        }
        Ok(out)
    }

    fn bad(&self, i: usize, why: &str) -> String {
        format!("message {} recorded on {}: {why}", i + 1, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Transfer {
        amount: u64,
        note: String,
    }

    #[test]
    fn messages_round_trip_in_their_own_encoding() {
        let t = Transfer {
            amount: 7,
            note: "rent".into(),
        };
        let c = StoredChannel::new("a->b".into(), vec![encode_message(&t).unwrap()]);
        assert_eq!(c.decode::<Transfer>().unwrap(), vec![t]);
        assert_eq!(
            c.to_values(message_json::<Transfer>).unwrap(),
            vec![serde_json::json!({"amount": 7, "note": "rent"})]
        );
        assert_eq!(
            c.to_values(undecoded).unwrap()[0]["encoded"],
            "070472656e74"
        );
    }

    #[test]
    fn a_message_that_does_not_decode_is_named() {
        let mut b = encode_message(&Transfer {
            amount: 1,
            note: String::new(),
        })
        .unwrap()
        .to_vec();
        b.push(0);
        let c = StoredChannel::new("a->b".into(), vec![Bytes::new(), Bytes::from(b)]);
        let e = c.decode::<Transfer>().unwrap_err();
        assert!(e.contains("message 1 recorded on a->b"), "{e}");
        let e = c.to_values(message_json::<u64>).unwrap_err();
        assert!(e.contains("message 1 recorded on a->b"), "{e}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let e = decode_message::<u8>(&[1, 2]).unwrap_err();
        assert!(e.contains("1 bytes left over"), "{e}");
    }

    #[test]
    fn parts_from_before_read_their_json_messages() {
        let old: StoredChannel = serde_json::from_value(
            serde_json::json!({"name": "a->b", "messages": [{"amount": 3, "note": ""}]}),
        )
        .unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(
            old.decode::<Transfer>().unwrap(),
            vec![Transfer {
                amount: 3,
                note: String::new()
            }]
        );
    }
}
