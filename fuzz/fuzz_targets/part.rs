//! A part as read back from a store that may hold anything.
#![no_main]

use cairn_store::{PartRef, decode_part};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The checksum the manifest would name: the payload's, so that
    // decoding goes past the envelope.
    let crc = data.get(9..).map_or(0, crc32c::crc32c);
    let r = PartRef {
        process: "n1".into(),
        key: "snapshots/00000000000000000001/part-n1.cbor".into(),
        crc32c: crc,
        bytes: data.len() as u64,
    };
    if let Ok(p) = decode_part(&r, data) {
        assert_eq!(p.process, "n1");
    }
});
