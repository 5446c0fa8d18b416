//! Whatever bytes arrive, the frame decoders answer with a value or an
//! error, never a panic (the property-test stand-in for a fuzz target).

use cairn_runtime::wire::{self, Frame, Hello, MAGIC, PROTOCOL_VERSION};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = wire::decode::<Frame<u64>>(&bytes);
        let _ = wire::decode::<Frame<cairn_apps::bank::Transfer>>(&bytes);
        let _ = wire::decode_hello(&bytes);
    }

    #[test]
    fn damaged_hellos_are_refused_or_read_never_misread(flip in 0usize..64, node in "[a-z0-9]{1,8}") {
        let hello = Hello { magic: MAGIC, version: PROTOCOL_VERSION, cluster: "c".into(), node, channel: "a->b".into(), epoch: 3, incarnation: 9, peer_incarnation: Some((4, 3)) };
        let mut bytes = wire::encode(&hello).unwrap().to_vec();
        let i = flip % bytes.len();
        bytes[i] ^= 0x01;
        if let Ok(h) = wire::decode_hello(&bytes) {
            // A flipped bit that still decodes must still carry the magic and version.
            prop_assert_eq!(h.magic, MAGIC);
            prop_assert_eq!(h.version, PROTOCOL_VERSION);
        }
    }
}
