//! The first frame of every connection, from anyone who can reach the port.
#![no_main]

use cairn_runtime::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = wire::decode_hello(data) {
        // Whatever decodes carries this build's magic and version.
        assert_eq!(h.magic, wire::MAGIC);
        assert_eq!(h.version, wire::PROTOCOL_VERSION);
    }
});
