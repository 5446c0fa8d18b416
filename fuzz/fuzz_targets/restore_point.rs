//! The restore point `cairn restore` leaves for a stopped cluster.
#![no_main]

use cairn_store::decode_restore_point;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = decode_restore_point(data) {
        assert_eq!(std::str::from_utf8(data).unwrap().trim().parse::<u64>().unwrap(), id);
    }
});
