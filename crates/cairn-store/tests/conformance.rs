//! One conformance suite, run against every backend: memory, a local
//! directory, and S3 against a real S3-compatible server on loopback
//! (`scripts/test` starts one and sets `CAIRN_S3_TEST_URL`; under CI the S3
//! run is required, elsewhere it is skipped with a notice when unset).

use std::time::Duration;

use bytes::Bytes;
use cairn_store::{
    EpochRecord, Error, Manifest, Part, PartRef, Retention, Store, StoredChannel, TermRecord,
};
use serde_json::json;

/// The test application's message.
#[derive(serde::Serialize, serde::Deserialize)]
struct Amount {
    amount: u64,
}

/// Reads the test application's recorded messages as JSON.
const AMOUNTS: cairn_store::Decoder = cairn_store::message_json::<Amount>;

/// A recorded channel of transfers of these amounts, in the wire's encoding.
fn channel(name: &str, amounts: &[u64]) -> StoredChannel {
    let encoded = amounts
        .iter()
        .map(|&amount| cairn_store::encode_message(&Amount { amount }).unwrap())
        .collect();
    StoredChannel::new(name.into(), encoded)
}

fn part(id: u64, process: &str, state: u64, channels: Vec<(&str, Vec<u64>)>) -> Part {
    Part {
        snapshot: id,
        process: process.into(),
        state: json!({"balance": state}),
        channels: channels.into_iter().map(|(n, m)| channel(n, &m)).collect(),
        initial: Some(json!({"balance": 10})),
        epoch: 0,
        overtaken: Vec::new(),
    }
}

/// Writes and commits a 2-process snapshot `id` (a <-> b).
async fn snapshot(store: &Store, id: u64) -> Vec<PartRef> {
    let a = store
        .write_part(&part(id, "a", 10, vec![("b->a", vec![3])]))
        .await
        .unwrap();
    let b = store
        .write_part(&part(id, "b", 7, vec![("a->b", vec![])]))
        .await
        .unwrap();
    let refs = vec![a, b];
    let m = Manifest::new(
        id,
        0,
        "test",
        "bank",
        refs.clone(),
        vec!["a->b".into(), "b->a".into()],
    );
    store.commit(&m).await.unwrap();
    refs
}

async fn conformance(store: Store) {
    let name = store.url().to_string();
    // Empty.
    assert_eq!(store.list().await.unwrap(), Vec::<u64>::new(), "{name}");
    assert!(store.latest_good().await.unwrap().0.is_none());

    // Parts without a manifest are no snapshot.
    store
        .write_part(&part(1, "a", 10, vec![("b->a", vec![])]))
        .await
        .unwrap();
    assert!(
        store.list().await.unwrap().is_empty(),
        "{name}: an uncommitted snapshot is listed"
    );
    assert!(matches!(
        store.load(1, &mut |_, _| {}).await,
        Err(Error::NoSnapshot { id: 1, .. })
    ));

    // Commit, read back, and the shared JSON shape.
    snapshot(&store, 2).await;
    assert_eq!(store.list().await.unwrap(), vec![2], "{name}");
    let missing = store.load(7, &mut |_, _| {}).await.unwrap_err().to_string();
    assert_eq!(
        missing,
        "snapshot 7 is not in the store (never committed, or retention removed it); it holds snapshot 2 only",
        "{name}"
    );
    let mut seen = Vec::new();
    let s = store
        .load(2, &mut |done, total| seen.push((done, total)))
        .await
        .unwrap();
    let sizes: Vec<u64> = store
        .manifest(2)
        .await
        .unwrap()
        .parts
        .iter()
        .map(|p| p.bytes)
        .collect();
    let total = sizes.iter().sum();
    assert!(sizes.iter().all(|&b| b > 0), "{name}: {sizes:?}");
    assert_eq!(
        seen,
        vec![(0, total), (sizes[0], total), (total, total)],
        "{name}: progress in bytes"
    );
    s.check_complete().unwrap();
    assert_eq!(
        s.to_json(AMOUNTS).unwrap(),
        json!({"id": 2, "processes": {"a": {"balance": 10}, "b": {"balance": 7}},
               "channels": [{"from": "a", "to": "b", "messages": []}, {"from": "b", "to": "a", "messages": [{"amount": 3}]}]})
    );

    // Create-if-absent: a second commit of the same snapshot is refused.
    let again = Manifest::new(2, 0, "other", "bank", vec![], vec![]);
    assert!(
        matches!(store.commit(&again).await, Err(Error::AlreadyExists { .. })),
        "{name}: manifest overwritten"
    );
    assert_eq!(
        store.manifest(2).await.unwrap().cluster,
        "test",
        "{name}: the first commit stands"
    );

    // Corruption is detected, names the part, and recovery falls back.
    let refs = snapshot(&store, 3).await;
    let mut bytes = store.raw(&refs[1].key).await.unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    store
        .overwrite_raw(&refs[1].key, Bytes::from(bytes))
        .await
        .unwrap();
    match store.load(3, &mut |_, _| {}).await {
        Err(Error::Corrupt { key, problem }) => {
            assert_eq!(key, refs[1].key);
            assert!(problem.contains("checksum"), "{problem}");
        }
        other => panic!("{name}: corruption not detected: {other:?}"),
    }
    let (good, skipped) = store.latest_good().await.unwrap();
    assert_eq!(
        good.unwrap().manifest.snapshot,
        2,
        "{name}: fall back to the previous complete snapshot"
    );
    assert_eq!(skipped[0].0, 3);
    // Recovery's check reads no part: a corrupt one is for the node that
    // reads it to find (read_part), and once one has, recovery passes over
    // that snapshot.
    let none = std::collections::BTreeSet::new();
    let (point, _) = store.latest_recovery_point_in(None, &none).await.unwrap();
    assert_eq!(point.unwrap().manifest.snapshot, 3, "{name}");
    let e = store.read_part(&refs[1]).await.unwrap_err().to_string();
    assert!(
        e.contains(&refs[1].key) && e.contains("checksum"),
        "{name}: {e}"
    );
    let unusable = std::collections::BTreeSet::from([3]);
    let (point, skipped) = store
        .latest_recovery_point_in(None, &unusable)
        .await
        .unwrap();
    let point = point.unwrap();
    assert_eq!(point.manifest.snapshot, 2, "{name}");
    assert!(!point.decoded, "{name}: the parts were decoded");
    assert_eq!(point.in_flight, s.in_flight(), "{name}");
    assert_eq!(skipped[0].0, 3, "{name}");
    assert!(
        skipped[0].1.contains("unusable"),
        "{name}: {}",
        skipped[0].1
    );
    // A part that is not there at all is the coordinator's to find.
    store.delete_raw(&refs[1].key).await.unwrap();
    let (_, skipped) = store.latest_recovery_point_in(None, &none).await.unwrap();
    assert!(
        skipped[0].0 == 3 && skipped[0].1.contains("missing"),
        "{name}: {skipped:?}"
    );

    // An incomplete snapshot (a channel nobody recorded) is caught.
    let a = store.write_part(&part(4, "a", 10, vec![])).await.unwrap();
    store
        .commit(&Manifest::new(
            4,
            0,
            "test",
            "bank",
            vec![a],
            vec!["b->a".into()],
        ))
        .await
        .unwrap();
    let err = store
        .load(4, &mut |_, _| {})
        .await
        .unwrap()
        .check_complete()
        .unwrap_err();
    assert!(
        err.to_string().contains("channel b->a is not recorded"),
        "{err}"
    );

    // Retention: keep the newest N and live ones, never the newest, and
    // collect the parts of snapshot 1 once it is known dead.
    snapshot(&store, 5).await;
    assert!(
        matches!(store.delete(5, false).await, Err(Error::Refused(_))),
        "{name}: the newest snapshot was deletable"
    );
    let policy = |keep: usize, live: &[u64], dead: &[u64]| Retention {
        keep,
        live: live.iter().copied().collect(),
        dead: dead.iter().copied().collect(),
        stale_after: Duration::from_secs(3600),
        ..Retention::default()
    };
    let deleted = store.retain(&policy(2, &[2], &[])).await.unwrap();
    assert_eq!(deleted, vec![3], "{name}: snapshot 1 is not known dead yet");
    let deleted = store.retain(&policy(2, &[2], &[1])).await.unwrap();
    assert_eq!(deleted, vec![1], "{name}");
    assert_eq!(store.list().await.unwrap(), vec![2, 4, 5], "{name}");
    assert!(matches!(
        store
            .raw(&format!(
                "{}/part-a.cbor",
                cairn_store::format::snapshot_dir(1)
            ))
            .await,
        Err(Error::NotFound { .. })
    ));
    store.delete(2, false).await.unwrap();
    assert_eq!(store.list().await.unwrap(), vec![4, 5], "{name}");

    // Out-of-order commits: snapshot 7 commits while 6 is still in
    // progress. Retention, even keeping one, never touches 6's parts; once 6
    // commits it is whole.
    let six_a = store
        .write_part(&part(6, "a", 10, vec![("b->a", vec![3])]))
        .await
        .unwrap();
    snapshot(&store, 7).await;
    store.retain(&policy(1, &[6], &[])).await.unwrap();
    let six_b = store
        .write_part(&part(6, "b", 7, vec![("a->b", vec![])]))
        .await
        .unwrap();
    store
        .commit(&Manifest::new(
            6,
            0,
            "test",
            "bank",
            vec![six_a, six_b],
            vec!["a->b".into(), "b->a".into()],
        ))
        .await
        .unwrap();
    store
        .load(6, &mut |_, _| {})
        .await
        .unwrap_or_else(|e| panic!("{name}: retention deleted a live part: {e}"))
        .check_complete()
        .unwrap();
    // Leftovers nobody wrote to for `stale_after` are collected.
    store.write_part(&part(8, "a", 10, vec![])).await.unwrap();
    let mut stale = policy(1, &[], &[]);
    stale.stale_after = Duration::ZERO;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let deleted = store.retain(&stale).await.unwrap();
    assert!(deleted.contains(&8), "{name}: {deleted:?}");
    assert_eq!(store.list().await.unwrap(), vec![7], "{name}");

    identities(&store).await;
}

/// Parts are never replaced, ids and epochs never repeat, and recovery
/// stays on the current timeline.
async fn identities(store: &Store) {
    let name = store.url().to_string();
    // The same bytes again are a successful retry; other bytes a conflict.
    let p = part(20, "a", 10, vec![]);
    store.write_part(&p).await.unwrap();
    store.write_part(&p).await.unwrap();
    let other = part(20, "a", 11, vec![]);
    match store.write_part(&other).await {
        Err(Error::Conflict { key, problem }) => {
            assert!(key.ends_with("part-a.cbor"), "{key}");
            assert!(problem.contains("never replaced"), "{problem}");
        }
        r => panic!("{name}: a part was replaced: {r:?}"),
    }
    assert_eq!(
        store.write_part(&p).await.unwrap().crc32c,
        store.write_part(&p).await.unwrap().crc32c
    );

    // Ids continue above partial snapshots, leases and the restore point.
    let h = store.history().await.unwrap();
    assert!(h.used && h.next_id == 21, "{name}: {h:?}");
    let block = store.lease_ids(h.next_id, 10, "n1").await.unwrap();
    assert_eq!(block, 21..31);
    assert!(
        matches!(
            store.lease_ids(21, 10, "n2").await,
            Err(Error::AlreadyExists { .. })
        ),
        "{name}: two writers leased one block"
    );
    assert_eq!(store.history().await.unwrap().next_id, 31, "{name}");
    store.set_restore_point(7).await.unwrap();
    assert_eq!(store.history().await.unwrap().next_id, 31);

    // Epochs: each begins once; recovery stays on the current timeline.
    let record = |epoch, parent, restored| EpochRecord {
        epoch,
        parent,
        restored,
        by: "n1".into(),
        incarnation: 9,
        created_unix_ms: 0,
        term: 0,
    };
    store.begin_epoch(&record(0, None, None)).await.unwrap();
    assert!(matches!(
        store.begin_epoch(&record(0, None, None)).await,
        Err(Error::AlreadyExists { .. })
    ));
    store
        .begin_epoch(&record(1, Some(0), Some(7)))
        .await
        .unwrap();
    assert_eq!(store.history().await.unwrap().newest_epoch, Some(1));
    // Snapshot 40 of epoch 0 commits late, after epoch 1 restored 7: it is
    // on an abandoned timeline and never chosen.
    let late = store
        .write_part(&Part {
            epoch: 0,
            ..part(40, "a", 10, vec![("b->a", vec![])])
        })
        .await
        .unwrap();
    let late_b = store
        .write_part(&Part {
            epoch: 0,
            ..part(40, "b", 7, vec![("a->b", vec![])])
        })
        .await
        .unwrap();
    store
        .commit(&Manifest::new(
            40,
            0,
            "test",
            "bank",
            vec![late, late_b],
            vec!["a->b".into(), "b->a".into()],
        ))
        .await
        .unwrap();
    let (good, skipped) = store.latest_good().await.unwrap();
    assert_eq!(good.unwrap().manifest.snapshot, 7, "{name}: {skipped:?}");
    assert!(skipped[0].1.contains("abandon") || skipped[0].1.contains("does not continue"));
    assert_eq!(store.take_restore_point().await.unwrap(), Some(7));
    racing_candidates(store).await;
}

/// Several candidates claim each term at once: exactly one wins, every
/// time, and every candidate learns who.
async fn racing_candidates(store: &Store) {
    let name = store.url().to_string();
    assert!(store.newest_term().await.unwrap().is_none());
    for term in 1..=25u64 {
        let mut claims = tokio::task::JoinSet::new();
        for n in 0..5u64 {
            let store = store.clone();
            claims.spawn(async move {
                let mine = TermRecord {
                    term,
                    node: format!("n{n}"),
                    incarnation: 100 + n,
                    created_unix_ms: 0,
                };
                (mine.node.clone(), store.claim_term(&mine).await.unwrap())
            });
        }
        let mut winners = std::collections::BTreeSet::new();
        let mut won = 0;
        while let Some(r) = claims.join_next().await {
            let (me, holder) = r.unwrap();
            if holder.node == me {
                won += 1;
            }
            winners.insert(holder.node);
        }
        assert_eq!(won, 1, "{name}: term {term} was won {won} times");
        assert_eq!(
            winners.len(),
            1,
            "{name}: term {term} has two holders: {winners:?}"
        );
        assert_eq!(
            store.newest_term().await.unwrap().unwrap().node,
            *winners.first().unwrap()
        );
    }
}

#[tokio::test]
async fn memory_backend_conforms() {
    conformance(Store::open("memory://").unwrap()).await;
}

#[tokio::test]
async fn local_directory_backend_conforms() {
    let dir = std::env::temp_dir().join(format!("cairn-store-conformance-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(dir.to_str().unwrap()).unwrap();
    conformance(store.clone()).await;
    // No staging file is left behind.
    let leftovers = walk(&dir)
        .into_iter()
        .filter(|p| p.contains(".staging"))
        .count();
    assert_eq!(leftovers, 0);
    // A staging file left by a process killed mid-write is collected once
    // it is stale, and not before.
    let folder = dir.join(cairn_store::format::snapshot_dir(99));
    std::fs::create_dir_all(&folder).unwrap();
    let stale = folder.join(".part-n1.cbor.4242.0.staging");
    let fresh = folder.join(".part-n2.cbor.4242.1.staging");
    for f in [&stale, &fresh] {
        std::fs::write(f, b"half a part").unwrap();
    }
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let policy = Retention {
        keep: 10,
        stale_after: Duration::from_secs(600),
        ..Retention::default()
    };
    store.retain(&policy).await.unwrap();
    assert!(!stale.exists(), "a stale staging file was kept");
    assert!(
        fresh.exists(),
        "a staging file still being written was deleted"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

// Built with the `s3` feature: `cargo test --workspace` has it (the cairn
// CLI turns it on), `cargo test -p cairn-store --features s3` too.
#[cfg(feature = "s3")]
#[tokio::test]
async fn s3_backend_conforms() {
    let Ok(base) = std::env::var("CAIRN_S3_TEST_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "CAIRN_S3_TEST_URL is unset under CI: scripts/test must start the S3 server"
        );
        eprintln!(
            "SKIPPED: CAIRN_S3_TEST_URL is not set (scripts/test starts an S3-compatible server and sets it)"
        );
        return;
    };
    let url = format!("{}/run-{}", base.trim_end_matches('/'), std::process::id());
    conformance(Store::open(&url).unwrap()).await;
}

#[test]
fn bad_urls_are_named() {
    let err = Store::open("ftp://x").unwrap_err().to_string();
    assert!(err.contains("unknown scheme \"ftp\""), "{err}");
    let s3 = Store::open("s3://").unwrap_err().to_string();
    if cfg!(feature = "s3") {
        assert!(s3.contains("name a bucket"), "{s3}");
    } else {
        assert!(s3.contains("no S3 support"), "{s3}");
    }
}

/// Invariant: recorded messages are kept in the application's encoding and
/// read back as they were sent; a part written before that (its messages as
/// JSON values) still reads the same; and a message that does not decode as
/// the application's is refused naming its part, channel and position,
/// never read as something else.
#[tokio::test]
async fn recorded_messages_read_back_in_either_encoding() {
    let store = Store::open("memory://encodings").unwrap();
    // A part in the format before binary channel state: no `encoded`.
    let old = json!({"snapshot": 1, "process": "a", "state": {"balance": 10},
                     "channels": [{"name": "b->a", "messages": [{"amount": 8}, {"amount": 9}]}],
                     "initial": {"balance": 10}, "epoch": 0});
    let key = cairn_store::format::part_key(1, "a");
    let (bytes, crc32c) =
        cairn_store::format::seal(cairn_store::format::PART_MAGIC, &key, &old).unwrap();
    store.overwrite_raw(&key, bytes.clone()).await.unwrap();
    let a = PartRef {
        process: "a".into(),
        key,
        crc32c,
        bytes: bytes.len() as u64,
        channels: Some([("b->a".to_string(), 2)].into()),
        overtaken: Default::default(),
        chunks: Vec::new(),
    };
    let b = store
        .write_part(&part(1, "b", 7, vec![("a->b", vec![4, 5])]))
        .await
        .unwrap();
    let channels = vec!["a->b".to_string(), "b->a".to_string()];
    store
        .commit(&Manifest::new(1, 0, "test", "bank", vec![a, b], channels))
        .await
        .unwrap();
    let s = store.load(1, &mut |_, _| {}).await.unwrap();
    s.check_complete().unwrap();
    assert_eq!(
        s.to_json(AMOUNTS).unwrap()["channels"],
        json!([{"from": "a", "to": "b", "messages": [{"amount": 4}, {"amount": 5}]},
               {"from": "b", "to": "a", "messages": [{"amount": 8}, {"amount": 9}]}])
    );
    let amounts = |c: &StoredChannel| -> Vec<u64> {
        let typed: Vec<Amount> = c.decode().unwrap();
        typed.into_iter().map(|t| t.amount).collect()
    };
    assert_eq!(amounts(&s.parts[0].channels[0]), vec![8, 9]);
    assert_eq!(amounts(&s.parts[1].channels[0]), vec![4, 5]);
    assert_eq!(s.in_flight()["b->a"], 2);

    // Another application's messages: refused by part and message.
    let e = s
        .to_json(cairn_store::message_json::<String>)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("part-b.cbor") && e.contains("message 1 recorded on a->b"),
        "{e}"
    );
    // A tool that does not know the application shows the bytes.
    let shown = s.to_json(cairn_store::undecoded).unwrap();
    assert_eq!(
        shown["channels"][0]["messages"][1],
        json!({"encoded": "05"})
    );
}

/// Invariant: a channel's state is what its receiver recorded followed by
/// what its sender's marker overtook, wherever a snapshot is read: the JSON
/// shape, the counts recovery numbers messages after, and the completeness
/// check, which refuses a tail its process could not have recorded.
#[tokio::test]
async fn overtaken_tails_follow_what_the_receiver_recorded() {
    let store = Store::open("memory://tails").unwrap();
    let a = Part {
        overtaken: vec![channel("a->b", &[5, 6])],
        ..part(1, "a", 10, vec![("b->a", vec![])])
    };
    let b = part(1, "b", 7, vec![("a->b", vec![4])]);
    let refs = vec![
        store.write_part(&a).await.unwrap(),
        store.write_part(&b).await.unwrap(),
    ];
    let channels = vec!["a->b".to_string(), "b->a".to_string()];
    store
        .commit(&Manifest::new(1, 0, "test", "bank", refs, channels.clone()))
        .await
        .unwrap();
    let s = store.load(1, &mut |_, _| {}).await.unwrap();
    assert_eq!(s.parts[0], a, "the tail survives the store");
    s.check_complete().unwrap();
    assert_eq!(
        s.to_json(AMOUNTS).unwrap()["channels"][0],
        json!({"from": "a", "to": "b", "messages": [{"amount": 4}, {"amount": 5}, {"amount": 6}]})
    );
    assert_eq!(s.in_flight()["a->b"], 3);
    assert_eq!(s.in_flight()["b->a"], 0);

    // A tail on a channel that does not lead from its process is refused.
    let mut wrong = s.clone();
    wrong.parts[1].overtaken = a.overtaken.clone();
    wrong.parts[0].overtaken.clear();
    let e = wrong.check_complete().unwrap_err().to_string();
    assert!(
        e.contains("process b") && e.contains("a->b") && e.contains("does not lead from it"),
        "{e}"
    );
    // A part written before tails existed reads with none.
    let old = serde_json::to_value(&b).unwrap();
    assert!(
        old.get("overtaken").is_none(),
        "an empty tail list is not written"
    );
}

/// Invariant: recovery's check of a snapshot from its manifest (no part
/// decoded) refuses what the full check refuses, and counts the same
/// messages in flight, tails included; a manifest written before parts
/// carried counts is read whole instead.
#[tokio::test]
async fn recovery_checks_a_snapshot_from_its_manifest_and_checksums() {
    let store = Store::open("memory://recovery-point").unwrap();
    let a = Part {
        overtaken: vec![channel("a->b", &[5])],
        ..part(1, "a", 10, vec![("b->a", vec![1, 2])])
    };
    let b = part(1, "b", 7, vec![("a->b", vec![4])]);
    let refs = vec![
        store.write_part(&a).await.unwrap(),
        store.write_part(&b).await.unwrap(),
    ];
    assert_eq!(refs[0].overtaken["a->b"], 1);
    let channels = vec!["a->b".to_string(), "b->a".to_string()];
    let manifest = Manifest::new(1, 0, "test", "bank", refs.clone(), channels.clone());
    store.commit(&manifest).await.unwrap();
    let point = store.recovery_point(1).await.unwrap();
    assert!(!point.decoded);
    let whole = store.load(1, &mut |_, _| {}).await.unwrap();
    assert_eq!(point.in_flight, whole.in_flight());
    assert_eq!(point.in_flight["a->b"], 2);
    assert_eq!(point.in_flight["b->a"], 2);

    // What the full check refuses, the manifest's counts refuse too.
    let mut twice = manifest.clone();
    twice.parts[1].channels = refs[0].channels.clone();
    let e = twice.in_flight().unwrap_err().to_string();
    assert!(
        e.contains("b->a") && e.contains("does not lead to it"),
        "{e}"
    );
    let mut tail = manifest.clone();
    tail.parts[1].overtaken = refs[0].overtaken.clone();
    let e = tail.in_flight().unwrap_err().to_string();
    assert!(e.contains("does not lead from it"), "{e}");
    let mut missing = manifest.clone();
    missing.parts[1].channels = Some(Default::default());
    let e = missing.in_flight().unwrap_err().to_string();
    assert!(e.contains("a->b") && e.contains("not recorded"), "{e}");

    // A part cut short is caught by its size, before any checksum.
    let bytes = store.raw(&refs[0].key).await.unwrap();
    store
        .overwrite_raw(&refs[0].key, bytes.slice(..bytes.len() - 1))
        .await
        .unwrap();
    match store.read_part(&refs[0]).await {
        Err(Error::Corrupt { key, problem }) => {
            assert_eq!(key, refs[0].key);
            assert!(problem.contains("bytes"), "{problem}");
        }
        other => panic!("a short part was not caught: {other:?}"),
    }
    store.overwrite_raw(&refs[0].key, bytes).await.unwrap();

    // A manifest of the old shape: the parts are read and checked whole.
    let mut old_refs = Vec::new();
    for p in [&a, &b] {
        let again = Part {
            snapshot: 2,
            ..p.clone()
        };
        old_refs.push(store.write_part(&again).await.unwrap());
    }
    for r in &mut old_refs {
        r.channels = None;
        r.overtaken.clear();
    }
    let old = Manifest::new(2, 0, "test", "bank", old_refs, channels);
    let encoded = serde_json::to_value(&old).unwrap();
    assert!(
        encoded["parts"][0].get("channels").is_none(),
        "absent counts are not written"
    );
    store.commit(&old).await.unwrap();
    let point = store.recovery_point(2).await.unwrap();
    assert!(point.decoded);
    assert_eq!(point.in_flight, whole.in_flight());
    assert!(matches!(
        store.recovery_point(9).await,
        Err(Error::NoSnapshot { id: 9, .. })
    ));

    // Counts that are not what a part holds make that part unreadable to
    // the node that restores it.
    let mut wrong = refs.clone();
    wrong[1].channels = Some([("a->b".to_string(), 2)].into());
    let forged = Manifest::new(
        3,
        0,
        "test",
        "bank",
        wrong.clone(),
        manifest.channels.clone(),
    );
    store.commit(&forged).await.unwrap();
    match store.read_part(&wrong[1]).await {
        Err(Error::Corrupt { key, problem }) => {
            assert_eq!(key, refs[1].key);
            assert!(problem.contains("manifest counts"), "{problem}");
        }
        other => panic!("wrong counts were not caught: {other:?}"),
    }
}
