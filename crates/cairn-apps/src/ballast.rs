//! The bank's ballast: inert bytes that ride in a process's state, to
//! measure how snapshots scale with the size of the state. They are held in
//! pieces of [`PIECE`] bytes, each shared between the live state and every
//! recorded copy, so recording copies nothing and changing some bytes copies
//! only the pieces they fall in. Snapshots store each piece as a chunk, and
//! a piece that did not change is not written again.

use std::fmt;
use std::sync::Arc;

use cairn_core::Chunk;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The size of a piece (the last one may be shorter).
pub const PIECE: usize = 1 << 19;

/// Inert bytes, in shared pieces. In JSON it is one string.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Ballast {
    pieces: Vec<Arc<[u8]>>,
}

impl fmt::Debug for Ballast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ballast({} bytes)", self.len())
    }
}

impl Ballast {
    /// `len` bytes of `b`.
    pub fn new(len: usize) -> Self {
        Self::from_bytes(&vec![b'b'; len])
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        Ballast {
            pieces: bytes.chunks(PIECE).map(Arc::from).collect(),
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(|p| p.len()).sum()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Whether every piece is shared with `other` (nothing was copied).
    pub fn shares_with(&self, other: &Ballast) -> bool {
        self.pieces.len() == other.pieces.len()
            && self
                .pieces
                .iter()
                .zip(&other.pieces)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// Overwrites `window` bytes with `byte`, starting at `at` (wrapping
    /// around the end). Only the pieces the window falls in are copied.
    pub fn rewrite(&mut self, at: usize, window: usize, byte: u8) {
        let len = self.len();
        if len == 0 {
            return;
        }
        let window = window.min(len);
        let mut done = 0;
        while done < window {
            let pos = (at + done) % len;
            let start = pos % PIECE;
            let piece = &mut self.pieces[pos / PIECE];
            let end = (start + window - done).min(piece.len());
            if piece[start..end].iter().any(|&b| b != byte) {
                let mut owned = piece.to_vec();
                owned[start..end].fill(byte);
                *piece = Arc::from(owned);
            }
            done += end - start;
        }
    }

    /// Takes the pieces out as chunks keyed `ballast/<index>`.
    pub fn take_chunks(&mut self) -> Vec<Chunk> {
        std::mem::take(&mut self.pieces)
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("ballast/{i:06}"), p))
            .collect()
    }

    /// Puts back what [`Ballast::take_chunks`] took, checking the keys.
    ///
    /// # Errors
    /// A chunk is not the next piece of a ballast, or is larger than one.
    pub fn put_chunks(&mut self, chunks: Vec<Chunk>) -> Result<(), String> {
        let mut pieces = Vec::with_capacity(chunks.len());
        for (i, (key, bytes)) in chunks.into_iter().enumerate() {
            if key != format!("ballast/{i:06}") {
                return Err(format!(
                    "chunk {key:?} is not the bank's piece {i} (ballast/{i:06})"
                ));
            }
            if bytes.len() > PIECE {
                return Err(format!(
                    "chunk {key:?} holds {} bytes, more than a piece ({PIECE})",
                    bytes.len()
                ));
            }
            pieces.push(bytes);
        }
        self.pieces = pieces;
        Ok(())
    }
}

impl Serialize for Ballast {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut all = Vec::with_capacity(self.len());
        for p in &self.pieces {
            all.extend_from_slice(p);
        }
        let text = String::from_utf8(all).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Ballast {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if !text.is_ascii() {
            return Err(D::Error::custom("the ballast must be ASCII"));
        }
        Ok(Ballast::from_bytes(text.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_copies_only_the_pieces_it_touches() {
        let a = Ballast::new(3 * PIECE + 10);
        let mut b = a.clone();
        b.rewrite(PIECE - 2, 4, b'x');
        assert_eq!(b.len(), a.len());
        let same: Vec<bool> = (0..4)
            .map(|i| Arc::ptr_eq(&a.pieces[i], &b.pieces[i]))
            .collect();
        assert_eq!(same, [false, false, true, true]);
        assert_eq!(&b.pieces[0][PIECE - 2..], b"xx");
        assert_eq!(&b.pieces[1][..3], b"xxb");
        // Wrapping around the end.
        b.rewrite(3 * PIECE + 8, 4, b'y');
        assert_eq!(&b.pieces[3][8..], b"yy");
        assert_eq!(&b.pieces[0][..3], b"yyb");
    }

    #[test]
    fn chunks_round_trip_and_bad_ones_are_named() {
        let mut a = Ballast::new(PIECE + 1);
        let whole = a.clone();
        let chunks = a.take_chunks();
        assert!(a.is_empty());
        assert_eq!(chunks[1].0, "ballast/000001");
        a.put_chunks(chunks.clone()).unwrap();
        assert!(a.shares_with(&whole));
        let mut swapped = chunks;
        swapped.swap(0, 1);
        assert!(
            a.put_chunks(swapped)
                .unwrap_err()
                .contains("ballast/000001")
        );
        let json = serde_json::to_string(&Ballast::new(3)).unwrap();
        assert_eq!(json, "\"bbb\"");
        assert_eq!(
            serde_json::from_str::<Ballast>(&json).unwrap(),
            Ballast::new(3)
        );
        assert!(serde_json::from_str::<Ballast>("\"é\"").is_err());
    }
}
