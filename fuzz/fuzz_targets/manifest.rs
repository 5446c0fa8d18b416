//! A manifest as read back from a store that may hold anything.
#![no_main]

use cairn_store::decode_manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The envelope's checksum is made to match the payload for inputs of even length,
    // so that decoding goes past the envelope into CBOR.
    let mut bytes = data.to_vec();
    if bytes.len() >= 9 && bytes.len() % 2 == 0 {
        let crc = crc32c::crc32c(&bytes[9..]);
        bytes[5..9].copy_from_slice(&crc.to_be_bytes());
    }
    if let Ok(m) = decode_manifest(1, &bytes) {
        assert_eq!(m.snapshot, 1);
        // Whatever decodes can be shown (cairn snapshots show prints it).
        serde_json::to_vec(&m).unwrap();
    }
});
