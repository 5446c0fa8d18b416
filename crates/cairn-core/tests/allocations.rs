//! With no snapshot in progress the engine allocates nothing per message;
//! while recording, memory follows the messages recorded.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_core::{ChannelId, Engine, ProcessId, SnapshotId, Topology};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn idle_engine_allocates_nothing_per_message() {
    let topo = Topology::new(["p", "q"], &[("p", "q"), ("q", "p")]).unwrap();
    let mut e: Engine<u64, u64> = Engine::new(&topo, ProcessId(1)).unwrap();
    // Warm the output queue once, as a running process would have.
    e.send(ChannelId(1), 0).unwrap();
    e.poll_output();
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in 0..10_000u64 {
        e.handle_message(ChannelId(0), &i).unwrap();
        e.send(ChannelId(1), i).unwrap();
        while e.poll_output().is_some() {}
    }
    assert_eq!(ALLOCS.load(Ordering::Relaxed) - before, 0);

    // Recording allocates, in proportion to what it records (amortised growth).
    e.start_snapshot(SnapshotId(0)).unwrap();
    while let Some(out) = e.poll_output() {
        if let cairn_core::Output::RecordState { snapshot } = out {
            e.record_state(snapshot, 0).unwrap();
        }
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in 0..10_000u64 {
        e.handle_message(ChannelId(0), &i).unwrap();
    }
    let recording = ALLOCS.load(Ordering::Relaxed) - before;
    assert!(
        recording > 0 && recording < 64,
        "{recording} allocations for 10,000 recorded messages"
    );
}
