//! A part as read back from a store that may hold anything.
#![no_main]

use cairn_store::{PartRef, decode_part};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The envelope's checksum, and the one the manifest would name, are
    // made to match the payload for inputs of even length, so that decoding goes past
    // the envelope into CBOR.
    let mut bytes = data.to_vec();
    let mut crc = 0;
    if bytes.len() >= 9 && bytes.len() % 2 == 0 {
        crc = crc32c::crc32c(&bytes[9..]);
        bytes[5..9].copy_from_slice(&crc.to_be_bytes());
    }
    let r = PartRef {
        process: "n1".into(),
        key: "snapshots/00000000000000000001/part-n1.cbor".into(),
        crc32c: crc,
        bytes: bytes.len() as u64,
        channels: None,
        overtaken: Default::default(),
        chunks: Vec::new(),
    };
    if let Ok(p) = decode_part(&r, &bytes) {
        assert_eq!(p.process, "n1");
        // Recorded messages are the application's bytes: decoding them as
        // some type, or showing them, refuses or succeeds, never panics.
        for c in p.channels.iter().chain(&p.overtaken) {
            let _ = c.decode::<(u64, String, Vec<u32>)>();
            let _ = c.to_values(cairn_store::message_json::<(u8, Option<String>)>);
            assert!(c.to_values(cairn_store::undecoded).is_ok());
        }
    }
});
