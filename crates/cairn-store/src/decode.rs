//! Reading a store's objects back: a manifest, a part, the restore point,
//! each checked against what names it, and the shape a snapshot's parts must
//! have together. Anything else is [`Error::Corrupt`], naming the object.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::format::{self, MANIFEST_MAGIC, PART_MAGIC};
use crate::snapshot::{FORMAT_VERSION, Manifest, Part, PartRef, RESTORE_KEY, counts};

/// Decodes snapshot `id`'s manifest from the bytes of its object, checking
/// the envelope, the format version and the id.
///
/// # Errors
/// [`Error::Corrupt`] naming the object and what is wrong.
pub fn decode_manifest(id: u64, bytes: &[u8]) -> Result<Manifest> {
    let key = format::manifest_key(id);
    let (m, _): (Manifest, u32) = format::unseal(MANIFEST_MAGIC, &key, bytes)?;
    if !(1..=FORMAT_VERSION).contains(&m.format_version) {
        return Err(Error::Corrupt {
            key,
            problem: format!(
                "format version {}, this build reads {FORMAT_VERSION}",
                m.format_version
            ),
        });
    }
    if m.snapshot != id {
        return Err(Error::Corrupt {
            key,
            problem: format!("it describes snapshot {}", m.snapshot),
        });
    }
    // Every object it names is where this snapshot's parts and chunks go,
    // never elsewhere in (or outside) the store.
    for p in &m.parts {
        let expected = format::part_key(id, &p.process);
        let bad_name = p.process.is_empty() || p.process.contains(['/', '\\']) || p.process == "..";
        if bad_name || p.key != expected {
            return Err(Error::Corrupt {
                key,
                problem: format!("it names {:?} as {:?}'s part", p.key, p.process),
            });
        }
        if let Some(c) = p
            .chunks
            .iter()
            .find(|c| !format::is_chunk_key(&p.process, &c.object, &c.sha256))
        {
            return Err(Error::Corrupt {
                key,
                problem: format!(
                    "it names {:?} as chunk {:?} of {:?}",
                    c.object, c.key, p.process
                ),
            });
        }
    }
    Ok(m)
}

/// Decodes the part `r` names from the bytes of its object, checking the
/// envelope, the manifest's checksum and the process.
///
/// # Errors
/// [`Error::Corrupt`] naming the part and what is wrong.
pub fn decode_part(r: &PartRef, bytes: &[u8]) -> Result<Part> {
    // A part cut short (or grown) is caught by its size, before any checksum.
    format::check_size(&r.key, bytes.len() as u64, r.bytes)?;
    let (part, crc): (Part, u32) = format::unseal(PART_MAGIC, &r.key, bytes)?;
    format::check_crc(&r.key, crc, r.crc32c)?;
    if part.process != r.process {
        return Err(Error::Corrupt {
            key: r.key.clone(),
            problem: format!("it is the part of {}, not {}", part.process, r.process),
        });
    }
    // The counts recovery went by must be what the part holds.
    let (channels, overtaken) = (counts(&part.channels), counts(&part.overtaken));
    if r.channels
        .as_ref()
        .is_some_and(|c| *c != channels || r.overtaken != overtaken)
    {
        return Err(Error::Corrupt {
            key: r.key.clone(),
            problem: format!(
                "it holds {channels:?} recorded and {overtaken:?} overtaken messages, but the manifest counts {:?} and {:?}",
                r.channels, r.overtaken
            ),
        });
    }
    Ok(part)
}

/// What a part says it holds: its process, the channels it recorded, and
/// the channels its markers overtook messages on, by name.
pub(crate) type PartShape<'a> = (&'a str, Vec<&'a str>, Vec<&'a str>);

/// Checks that the parts make a complete snapshot of `manifest`: every
/// process present once, every channel recorded exactly once by the process
/// it leads to, and each overtaken tail on a channel leading from its
/// process, at most once.
///
/// # Errors
/// [`Error::Corrupt`] naming the process or channel.
pub(crate) fn check_shape(manifest: &Manifest, parts: &[PartShape<'_>]) -> Result<()> {
    let key = format::manifest_key(manifest.snapshot);
    let corrupt = |problem: String| Error::Corrupt {
        key: key.clone(),
        problem,
    };
    let mut processes = BTreeSet::new();
    for (process, _, _) in parts {
        if !processes.insert(*process) {
            return Err(corrupt(format!("process {process} has two parts")));
        }
    }
    let mut recorded = BTreeSet::new();
    for (process, channels, _) in parts {
        for &name in channels {
            let to = name
                .split_once("->")
                .map(|(_, t)| t.split('#').next().unwrap_or(t));
            if to != Some(*process) {
                return Err(corrupt(format!(
                    "process {process} recorded channel {name}, which does not lead to it"
                )));
            }
            if !recorded.insert(name) {
                return Err(corrupt(format!("channel {name} is recorded twice")));
            }
        }
    }
    let wanted: BTreeSet<&str> = manifest.channels.iter().map(String::as_str).collect();
    let mut tails = BTreeSet::new();
    for (process, _, overtaken) in parts {
        for &name in overtaken {
            let from = name.split_once("->").map(|(f, _)| f);
            if from != Some(*process) || !wanted.contains(name) {
                return Err(corrupt(format!(
                    "process {process} recorded messages its marker overtook on {name}, which does not lead from it"
                )));
            }
            if !tails.insert(name) {
                return Err(corrupt(format!("channel {name} has two overtaken tails")));
            }
        }
    }
    if let Some(c) = wanted.difference(&recorded).next() {
        return Err(corrupt(format!("channel {c} is not recorded by any part")));
    }
    if let Some(c) = recorded.difference(&wanted).next() {
        return Err(corrupt(format!("channel {c} is not in the manifest")));
    }
    Ok(())
}

/// Decodes the restore point `cairn restore` leaves for a stopped cluster.
///
/// # Errors
/// [`Error::Corrupt`] if it is not a snapshot id.
pub fn decode_restore_point(bytes: &[u8]) -> Result<u64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::Corrupt {
            key: RESTORE_KEY.into(),
            problem: "not a snapshot id".into(),
        })
}
