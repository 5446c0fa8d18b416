//! How objects are laid out and encoded.
//!
//! Every object is an envelope: a 4-byte magic (`CRNP` for a part, `CRNM`
//! for a manifest, `CRNC` for a chunk), a version byte, the crc32c of the
//! payload (4 bytes, big endian), then the payload: in CBOR with field names
//! for parts and manifests, so any tool can read a part as JSON without
//! knowing the application's types; a chunk's bytes as they are.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The envelope's version.
pub const ENVELOPE_VERSION: u8 = 1;
/// The magic of a part.
pub const PART_MAGIC: [u8; 4] = *b"CRNP";
/// The magic of a manifest.
pub const MANIFEST_MAGIC: [u8; 4] = *b"CRNM";
/// The magic of a chunk.
pub const CHUNK_MAGIC: [u8; 4] = *b"CRNC";
/// The envelope's header length.
pub(crate) const HEADER: usize = 9;

/// The folder of snapshot `id`.
pub fn snapshot_dir(id: u64) -> String {
    format!("snapshots/{id:020}")
}

/// The key of `process`'s part of snapshot `id`.
pub fn part_key(id: u64, process: &str) -> String {
    format!("{}/part-{process}.cbor", snapshot_dir(id))
}

/// The folder of every process's chunks.
pub const CHUNKS_DIR: &str = "chunks";

/// The folder of `process`'s chunks.
pub fn chunk_folder(process: &str) -> String {
    format!("{CHUNKS_DIR}/{process}")
}

/// The key of `process`'s chunk whose SHA-256 is `sha256` (hex).
pub fn chunk_key(process: &str, sha256: &str) -> String {
    format!("{}/{sha256}", chunk_folder(process))
}

/// Whether `key` is where `process`'s chunk `sha256` goes, and `sha256` is
/// 64 lowercase hex digits.
pub fn is_chunk_key(process: &str, key: &str, sha256: &str) -> bool {
    sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && key == chunk_key(process, sha256)
}

/// The key of snapshot `id`'s manifest.
pub fn manifest_key(id: u64) -> String {
    format!("{}/MANIFEST", snapshot_dir(id))
}

/// The snapshot whose manifest `key` is: what says it is committed.
pub fn committed_id(key: &str) -> Option<u64> {
    key.ends_with("/MANIFEST").then(|| id_of(key)).flatten()
}

/// The snapshot id a key belongs to, if it is under `snapshots/`.
pub fn id_of(key: &str) -> Option<u64> {
    key.strip_prefix("snapshots/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// Encodes `value` in an envelope; returns the bytes and the payload's crc32c.
pub fn seal<T: Serialize>(magic: [u8; 4], key: &str, value: &T) -> Result<(Bytes, u32)> {
    let mut payload = Vec::new();
    ciborium::into_writer(value, &mut payload).map_err(|e| Error::Backend {
        key: key.to_string(),
        problem: format!("cannot encode: {e}"),
    })?;
    Ok(seal_raw(magic, &payload))
}

/// Puts raw `payload` in an envelope; returns the bytes and its crc32c.
pub fn seal_raw(magic: [u8; 4], payload: &[u8]) -> (Bytes, u32) {
    let crc = crc32c::crc32c(payload);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&magic);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(payload);
    (Bytes::from(out), crc)
}

/// Opens an envelope, checking its magic, version and checksum.
///
/// # Errors
/// [`Error::Corrupt`] naming the key and what does not match.
pub fn unseal<T: DeserializeOwned>(magic: [u8; 4], key: &str, bytes: &[u8]) -> Result<(T, u32)> {
    let stored = check_envelope(magic, key, bytes)?;
    let value = ciborium::from_reader(&bytes[HEADER..]).map_err(|e| Error::Corrupt {
        key: key.to_string(),
        problem: format!("undecodable: {e}"),
    })?;
    Ok((value, stored))
}

/// Refuses an object whose size is not the one its manifest gives.
///
/// # Errors
/// [`Error::Corrupt`] naming the key and both sizes.
pub(crate) fn check_size(key: &str, actual: u64, expected: u64) -> Result<()> {
    if actual == expected {
        return Ok(());
    }
    Err(Error::Corrupt {
        key: key.to_string(),
        problem: format!("{actual} bytes, but the manifest says {expected}"),
    })
}

/// Refuses an object whose checksum is not the one its manifest gives.
///
/// # Errors
/// [`Error::Corrupt`] naming the key and both checksums.
pub(crate) fn check_crc(key: &str, actual: u32, expected: u32) -> Result<()> {
    if actual == expected {
        return Ok(());
    }
    Err(Error::Corrupt {
        key: key.to_string(),
        problem: format!("checksum {actual:08x} differs from the manifest's {expected:08x}"),
    })
}

/// Checks an envelope's magic, version and checksum without decoding its
/// payload; returns the checksum.
///
/// # Errors
/// [`Error::Corrupt`] naming the key and what does not match.
pub fn check_envelope(magic: [u8; 4], key: &str, bytes: &[u8]) -> Result<u32> {
    let corrupt = |problem: String| Error::Corrupt {
        key: key.to_string(),
        problem,
    };
    if bytes.len() < HEADER {
        return Err(corrupt(format!(
            "{} bytes is too short for a header",
            bytes.len()
        )));
    }
    if bytes[..4] != magic {
        return Err(corrupt(format!(
            "wrong magic {:?}",
            String::from_utf8_lossy(&bytes[..4])
        )));
    }
    if bytes[4] != ENVELOPE_VERSION {
        return Err(corrupt(format!(
            "envelope version {}, this build reads {ENVELOPE_VERSION}",
            bytes[4]
        )));
    }
    let stored = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
    let actual = crc32c::crc32c(&bytes[HEADER..]);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch: stored {stored:08x}, computed {actual:08x}"
        )));
    }
    Ok(stored)
}
