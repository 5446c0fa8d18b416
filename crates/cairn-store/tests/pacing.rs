//! Paced chunk writes (`snapshots.write_mb_per_s`): a paced part is the
//! same part as an unpaced one, spread over time past its burst, and it
//! never takes more than half the time left before its deadline, so pacing
//! never fails a snapshot. Time is tokio's paused clock: the waits are
//! exact and cost nothing.

use std::sync::Arc;
use std::time::Duration;

use cairn_store::{Chunk, ChunkCache, Pace, Part, Store};
use serde_json::json;
use tokio::time::Instant;

fn part(id: u64) -> Part {
    Part {
        snapshot: id,
        process: "n1".into(),
        state: json!({"balance": 5}),
        channels: Vec::new(),
        initial: None,
        epoch: 0,
        overtaken: Vec::new(),
    }
}

fn pieces() -> Vec<Chunk> {
    [b'a', b'b', b'c']
        .iter()
        .enumerate()
        .map(|(i, &b)| (format!("ballast/{i:06}"), Arc::from(vec![b; 1000])))
        .collect()
}

fn pace(bytes_per_s: u64, burst: u64) -> ChunkCache {
    ChunkCache::paced(Some(Pace { bytes_per_s, burst }))
}

#[tokio::test(start_paused = true)]
async fn a_paced_part_is_the_same_part_spread_over_time() {
    let chunks = pieces();
    let (plain, plain_stats) = Store::open("memory://")
        .unwrap()
        .write_part_chunked(&part(1), &chunks, &mut ChunkCache::default())
        .await
        .unwrap();

    // 3000 bytes hashed and 3000 written, at 1000 a second.
    let store = Store::open("memory://").unwrap();
    let mut cache = pace(1000, 0);
    let t = Instant::now();
    let (paced, stats) = store
        .write_part_chunked(&part(1), &chunks, &mut cache)
        .await
        .unwrap();
    assert_eq!(t.elapsed(), Duration::from_secs(6));
    assert_eq!(paced.chunks, plain.chunks);
    assert_eq!(stats, plain_stats);
    assert_eq!(store.read_chunks(&paced).await.unwrap(), chunks);

    // Nothing changed: nothing hashed or written, nothing to wait for.
    let t = Instant::now();
    let (again, stats) = store
        .write_part_chunked(&part(2), &chunks, &mut cache)
        .await
        .unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
    assert_eq!((stats.written, again.chunks), (0, plain.chunks.clone()));

    // Within the burst, no wait either; past it, only the rest is paced.
    for (burst, took) in [(6000, 0), (4000, 2)] {
        let t = Instant::now();
        Store::open("memory://")
            .unwrap()
            .write_part_chunked(&part(1), &chunks, &mut pace(1000, burst))
            .await
            .unwrap();
        assert_eq!(t.elapsed(), Duration::from_secs(took), "burst {burst}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_pace_too_slow_for_the_deadline_quickens_to_meet_it() {
    let chunks = pieces();
    // At one byte a second the part would take 6000 s; its snapshot times
    // out in 4 s, so it goes at the pace that ends it within 2 s.
    let mut cache = pace(1, 0);
    cache.finish_by(Instant::now() + Duration::from_secs(4));
    let t = Instant::now();
    let store = Store::open("memory://").unwrap();
    let (r, _) = store
        .write_part_chunked(&part(1), &chunks, &mut cache)
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(
        took > Duration::ZERO && took <= Duration::from_secs(2),
        "took {took:?}"
    );
    assert_eq!(store.read_chunks(&r).await.unwrap(), chunks);

    // A deadline already past: full speed, never a wait.
    let mut late = pace(1, 0);
    late.finish_by(Instant::now());
    let t = Instant::now();
    Store::open("memory://")
        .unwrap()
        .write_part_chunked(&part(1), &chunks, &mut late)
        .await
        .unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
}
