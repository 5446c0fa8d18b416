//! A manifest as read back from a store that may hold anything.
#![no_main]

use cairn_store::decode_manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_manifest(1, data) {
        assert_eq!(m.snapshot, 1);
        // Whatever decodes can be shown (cairn snapshots show prints it).
        serde_json::to_vec(&m).unwrap();
    }
});
