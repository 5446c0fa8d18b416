//! The bytes a peer sends after its hello: split by the length-delimited
//! codec, each frame decoded as the bank's frames. Nothing may panic, and
//! no frame over the limit may be accepted.
#![no_main]

use bytes::BytesMut;
use cairn_apps::bank::Transfer;
use cairn_runtime::wire::{self, Frame};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut codec = wire::codec(LIMIT);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        assert!(frame.len() <= LIMIT);
        let _ = wire::decode::<Frame<Transfer>>(&frame);
        let _ = wire::decode::<Frame<()>>(&frame);
    }
});
