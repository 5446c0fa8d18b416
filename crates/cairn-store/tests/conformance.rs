//! One conformance suite, run against every backend: memory, a local
//! directory, and S3 against a real S3-compatible server on loopback
//! (`scripts/test` starts one and sets `CAIRN_S3_TEST_URL`; under CI the S3
//! run is required, elsewhere it is skipped with a notice when unset).

use bytes::Bytes;
use cairn_store::{Error, Manifest, Part, PartRef, Store, StoredChannel};
use serde_json::json;

fn part(id: u64, process: &str, state: u64, channels: Vec<(&str, Vec<u64>)>) -> Part {
    Part {
        snapshot: id,
        process: process.into(),
        state: json!({"balance": state}),
        channels: channels
            .into_iter()
            .map(|(n, m)| StoredChannel {
                name: n.into(),
                messages: m.into_iter().map(|a| json!({"amount": a})).collect(),
            })
            .collect(),
        initial: Some(json!({"balance": 10})),
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
    assert!(
        matches!(store.load(1, &mut |_, _| {}).await, Err(Error::NotFound { key }) if key.ends_with("MANIFEST"))
    );

    // Commit, read back, and the shared JSON shape.
    snapshot(&store, 2).await;
    assert_eq!(store.list().await.unwrap(), vec![2], "{name}");
    let mut seen = Vec::new();
    let s = store
        .load(2, &mut |done, total| seen.push((done, total)))
        .await
        .unwrap();
    assert_eq!(seen, vec![(0, 2), (1, 2), (2, 2)], "{name}: progress");
    s.check_complete().unwrap();
    assert_eq!(
        s.to_json(),
        json!({"id": 2, "processes": {"a": {"balance": 10}, "b": {"balance": 7}},
               "channels": [{"from": "a", "to": "b", "messages": []}, {"from": "b", "to": "a", "messages": [{"amount": 3}]}]})
    );

    // Create-if-absent: a second commit of the same snapshot is refused.
    let again = Manifest::new(2, "other", "bank", vec![], vec![]);
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

    // An incomplete snapshot (a channel nobody recorded) is caught.
    let a = store.write_part(&part(4, "a", 10, vec![])).await.unwrap();
    store
        .commit(&Manifest::new(
            4,
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

    // Retention: keep the newest N and pinned ones, never the newest, and
    // collect the orphaned parts of snapshot 1.
    snapshot(&store, 5).await;
    assert!(
        matches!(store.delete(5, false).await, Err(Error::Refused(_))),
        "{name}: the newest snapshot was deletable"
    );
    let deleted = store.retain(2, &[2]).await.unwrap();
    assert_eq!(deleted, vec![1, 3], "{name}");
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
}

#[tokio::test]
async fn memory_backend_conforms() {
    conformance(Store::open("memory://").unwrap()).await;
}

#[tokio::test]
async fn local_directory_backend_conforms() {
    let dir = std::env::temp_dir().join(format!("cairn-store-conformance-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    conformance(Store::open(dir.to_str().unwrap()).unwrap()).await;
    // No staging file is left behind.
    let leftovers = walk(&dir)
        .into_iter()
        .filter(|p| p.contains(".staging"))
        .count();
    assert_eq!(leftovers, 0);
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
    assert!(
        Store::open("s3://")
            .unwrap_err()
            .to_string()
            .contains("name a bucket")
    );
}
