//! Only members get in. Each test names the invariant it protects:
//! - only a certificate of the cluster's CA, naming the node a hello
//!   claims, opens a peer link; everything else is refused by name at the
//!   door, and the money is untouched;
//! - the admin API reads only with credentials and changes things only for
//!   operators;
//! - a member's own credentials let it speak only as itself and within its
//!   role (forgeries from inside are refused, logged and counted);
//! - no node runs without certificates unless told to run insecure.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_apps::bank::BankModel;
use cairn_runtime::client::AdminClient;
use cairn_runtime::tls::Identity;
use cairn_runtime::tls::certs::{self, Validity};
use cairn_runtime::wire::{self, Frame, Hello, MAGIC, PROTOCOL_VERSION};
use common::{
    BANK, ONE_AT_A_TIME, TestCluster, cairn, certs_dir, client_as, send_tls, signal, text,
    write_full_config,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn hello(cluster: &str, node: &str, channel: &str) -> Vec<u8> {
    framed(
        &wire::encode(&Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            cluster: cluster.into(),
            node: node.into(),
            channel: channel.into(),
            epoch: 0,
            incarnation: 42,
            peer_incarnation: None,
        })
        .unwrap(),
    )
}

fn rejection(answer: &[u8]) -> String {
    assert!(answer.len() > 4, "no answer");
    match wire::decode::<Frame<()>>(&answer[4..]).unwrap() {
        Frame::Reject { reason, .. } => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// A folder that trusts the cluster's CA but holds `who`'s certificate
/// made by `make` (another CA's, an expired one...).
fn forged_dir(name: &str, who: &Identity, make: impl FnOnce(&Path)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-forged-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    make(&dir);
    // Trust the real CA, whatever signed the certificate presented.
    std::fs::copy(certs_dir().join("ca.crt"), dir.join("ca.crt.real")).unwrap();
    std::fs::rename(dir.join("ca.crt.real"), dir.join("ca.crt")).unwrap();
    assert!(dir.join(format!("{}.crt", certs::stem(who))).exists());
    dir
}

/// Invariant: only a certificate of the cluster's CA whose node id is the
/// hello's opens a peer link. Each other caller is refused with a named
/// reason in the node's log and a count in `cairn_peers_refused_total`,
/// and the cluster's money is untouched.
#[tokio::test]
async fn strangers_are_refused_at_the_door() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, path) = write_full_config(
        "door",
        3,
        "\"complete\"",
        100,
        BANK,
        "",
        "timeout_ms = 10000",
    );
    let c = TestCluster::start_logged(dir, path).await;
    let target = c.config.nodes[1].address.clone();
    let real = certs_dir();

    // A plain-TCP hello.
    let mut tcp = tokio::net::TcpStream::connect(&target).await.unwrap();
    tcp.write_all(&hello("door", "n1", "n1->n2")).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(6), tcp.read_to_end(&mut answer)).await;
    assert!(
        answer.len() < 4 || wire::decode::<Frame<()>>(&answer[4..]).is_err(),
        "a plain-TCP hello got a frame back"
    );

    // TLS with no client certificate.
    let r = rejection(
        &send_tls(&target, &real, None, &hello("door", "n1", "n1->n2"))
            .await
            .unwrap(),
    );
    assert!(r.contains("presented no client certificate"), "{r}");

    // A certificate from another CA.
    let n1 = Identity::node("n1");
    let other = forged_dir("other-ca", &n1, |d| {
        certs::ensure_cluster(d, &["n1".to_string()]).unwrap();
    });
    let e = send_tls(&target, &other, Some(&n1), &hello("door", "n1", "n1->n2")).await;
    assert!(e.is_err(), "another CA's certificate was let in: {e:?}");

    // n2's certificate claiming to be n3.
    let r = rejection(
        &send_tls(
            &target,
            &real,
            Some(&Identity::node("n2")),
            &hello("door", "n3", "n3->n2"),
        )
        .await
        .unwrap(),
    );
    assert!(r.contains("its certificate is node n2's"), "{r}");

    // An expired certificate signed by the cluster's own CA.
    let expired = forged_dir("expired", &n1, |d| {
        std::fs::create_dir_all(d).unwrap();
        std::fs::copy(real.join("ca.crt"), d.join("ca.crt")).unwrap();
        std::fs::copy(real.join("ca.key"), d.join("ca.key")).unwrap();
        let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        certs::create_leaf(
            d,
            &n1,
            &[],
            Validity {
                not_before: long_ago,
                not_after: long_ago + time::Duration::days(1),
            },
        )
        .unwrap();
    });
    let e = send_tls(&target, &expired, Some(&n1), &hello("door", "n1", "n1->n2")).await;
    assert!(e.is_err(), "an expired certificate was let in: {e:?}");

    // A client certificate used as a node.
    let r = rejection(
        &send_tls(
            &target,
            &real,
            Some(&Identity::client("root")),
            &hello("door", "n1", "n1->n2"),
        )
        .await
        .unwrap(),
    );
    assert!(
        r.contains("a client certificate, which cannot open a peer link"),
        "{r}"
    );

    // Each refusal is in n2's log by name, and counted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = c.log("n2");
    for reason in [
        "refused a peer connection: TLS: handshake",
        "presented no client certificate",
        "UnknownIssuer",
        "certificate expired",
        "its certificate is node n2's",
        "a client certificate, which cannot open a peer link",
    ] {
        assert!(
            log.contains(reason),
            "n2's log does not name {reason:?}:\n{log}"
        );
    }
    let refused = common::counter(c.config.nodes[1].admin, "cairn_peers_refused_total").await;
    assert!(refused >= 6, "cairn_peers_refused_total is {refused}");

    // The cluster carried on and its money is exactly what it was.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let snaps = c.snapshots().await;
    assert!(snaps.len() >= 3);
    c.stop_and_check(&BankModel, snaps).await;
    for d in [other, expired] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Invariant: the admin API reads only with credentials (a certificate of
/// the cluster's CA or a token) and changes anything only for an operator
/// (a client certificate or the operator token); the read token never
/// changes anything, and a node certificate is no operator's.
#[tokio::test]
async fn the_admin_api_needs_credentials_and_only_operators_change_things() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, path) = write_full_config(
        "admin",
        3,
        "\"complete\"",
        0,
        BANK,
        "admin = { read_token_file = \"read.token\", operator_token_file = \"operator.token\" }",
        "timeout_ms = 10000",
    );
    std::fs::write(dir.join("read.token"), "r3ad-s3cret\n").unwrap();
    std::fs::write(dir.join("operator.token"), "0p3rator-s3cret\n").unwrap();
    let c = TestCluster::start_from(dir.clone(), path.clone()).await;
    let at = c.coordinator();

    // A caller that connects and never says anything holds up nobody.
    let _silent = tokio::net::TcpStream::connect(at).await.unwrap();
    // Plain HTTP does not even get an answer.
    assert!(
        AdminClient::insecure()
            .get_json::<Value>(at, "/status")
            .await
            .is_err()
    );
    // TLS with no credentials: 401 for reads and changes alike.
    let nobody = client_as(None);
    let (st, _) = nobody.get_text(at, "/status").await.unwrap();
    assert_eq!(st.as_u16(), 401);
    let (st, _) = nobody
        .post_json::<_, Value>(at, "/snapshots", &json!({}))
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 401);
    // A wrong token is refused too.
    let wrong = client_as(None).with_token("guess".into());
    assert_eq!(wrong.get_text(at, "/status").await.unwrap().0.as_u16(), 403);

    // The read token reads, and changes nothing.
    let reader = client_as(None).with_token("r3ad-s3cret".into());
    for p in ["/status", "/snapshots", "/metrics"] {
        assert!(reader.get_text(at, p).await.unwrap().0.is_success(), "{p}");
    }
    for p in ["/snapshots", "/rollback", "/metrics/reset-peaks"] {
        let (st, v) = reader
            .post_json::<_, Value>(at, p, &json!({}))
            .await
            .unwrap();
        assert_eq!(st.as_u16(), 403, "{p}: {v}");
    }
    // The operator token starts a snapshot.
    let op_token = client_as(None).with_token("0p3rator-s3cret".into());
    let (st, v) = op_token
        .post_json::<_, Value>(at, "/snapshots", &json!({}))
        .await
        .unwrap();
    assert!(st.is_success(), "{v}");

    // A node's certificate reads but is no operator, and an operator's
    // certificate is no node.
    let node = client_as(Some(&Identity::node("n2")));
    assert!(node.get_text(at, "/status").await.unwrap().0.is_success());
    let (st, _) = node
        .post_json::<_, Value>(at, "/snapshots", &json!({}))
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 403);
    let operator = common::operator();
    let (st, v) = operator
        .post_json::<_, Value>(at, "/internal/pause", &json!({ "term": 0 }))
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 403, "{v}");
    // The operator's certificate does everything an operator does.
    let (st, v) = operator
        .post_json::<_, Value>(at, "/snapshots", &json!({}))
        .await
        .unwrap();
    assert!(st.is_success(), "{v}");
    let (st, _) = operator
        .post_json::<_, Value>(at, "/metrics/reset-peaks", &json!({}))
        .await
        .unwrap();
    assert!(st.is_success());

    // The CLI presents client.root by default; a user without a certificate
    // gets a clear error, and with the read token reads.
    let p = path.to_str().unwrap();
    let out = cairn(&["status", "--config", p, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cairn(&["status", "--config", p, "--user", "mallory"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("client.mallory.crt"),
        "{}",
        text(&out.stderr)
    );
    let token = dir.join("read.token");
    let out = cairn(&[
        "status",
        "--config",
        p,
        "--user",
        "mallory",
        "--token-file",
        token.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cairn(&[
        "snapshot",
        "--config",
        p,
        "--user",
        "mallory",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));

    let (_, metrics) = common::client::get_text(at, "/metrics").await.unwrap();
    assert!(
        metrics.contains("cairn_admin_refused_total{node=\"n1\"}"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let snaps = c.snapshots().await;
    assert!(snaps.len() >= 2);
    c.stop_and_check_with(&BankModel, snaps, 0).await;
}

/// Invariant: whatever a member's credentials, it speaks only as itself
/// and within its role. A rollback skipping epochs (even from the
/// coordinator), a rollback or pause from a node that does not coordinate,
/// a report for another node and a part outside its snapshot's folder are
/// each refused with a log line and a metric, and nothing of them lands.
#[tokio::test]
async fn forgeries_from_members_are_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (dir, path) = write_full_config(
        "forge",
        3,
        "\"complete\"",
        0,
        BANK,
        "",
        "timeout_ms = 20000\nfailure_timeout_ms = 0",
    );
    let mut c = TestCluster::start_logged(dir, path).await;
    let (n1, n2, n3) = (
        client_as(Some(&Identity::node("n1"))),
        c.config.nodes[1].admin,
        client_as(Some(&Identity::node("n3"))),
    );
    let (_, status): (_, Value) = common::client::get_json(n2, "/status").await.unwrap();
    let term = status["term"].as_u64().unwrap();

    // An epoch that is not the next one, even from the coordinator itself.
    let (st, v) = n1
        .post_json::<_, Value>(
            n2,
            "/internal/rollback",
            &json!({ "term": term, "epoch": 99, "snapshot": null, "in_flight": {} }),
        )
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 409, "{v}");
    // A rollback and a pause from a node that does not coordinate.
    let (st, v) = n3
        .post_json::<_, Value>(
            n2,
            "/internal/rollback",
            &json!({ "term": term, "epoch": 1, "snapshot": null, "in_flight": {} }),
        )
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("must come from node n1, not from node n3"),
        "{v}"
    );
    let (st, v) = n3
        .post_json::<_, Value>(n2, "/internal/pause", &json!({ "term": term }))
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 403, "{v}");

    // A snapshot held open by a frozen n3, then forged reports for it.
    let pid3 = c.supervisor().pid("n3").unwrap();
    signal(pid3, "-STOP");
    let (st, v) = common::client::post_json::<_, Value>(c.coordinator(), "/snapshots", &json!({}))
        .await
        .unwrap();
    assert!(st.is_success(), "{v}");
    let id = v["id"].as_u64().unwrap();
    let epoch = v["epoch"].as_u64().unwrap();
    let report = |process: &str, key: &str| {
        json!({
            "snapshot": id, "process": process, "epoch": epoch, "state": {"balance": 1_000_000},
            "channels": [], "part": {"process": process, "key": key, "crc32c": 0, "bytes": 1}
        })
    };
    // n2 reports n3's part.
    let n2c = client_as(Some(&Identity::node("n2")));
    let own_key = cairn_store::format::part_key(id, "n3");
    let (st, v) = n2c
        .post_json::<_, Value>(
            c.coordinator(),
            "/internal/reports",
            &report("n3", &own_key),
        )
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 403, "{v}");
    // n3's certificate (held by whoever stole it while n3 sleeps) points
    // its part outside the snapshot's folder.
    let (st, v) = n3
        .post_json::<_, Value>(
            c.coordinator(),
            "/internal/reports",
            &report("n3", "snapshots/00000000000000000001/part-n1.cbor"),
        )
        .await
        .unwrap();
    assert_eq!(st.as_u16(), 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains(&own_key), "{v}");
    signal(pid3, "-CONT");

    // Each refusal is logged and counted where it happened.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log2 = c.log("n2");
    assert!(
        log2.contains("must come from node n1, not from node n3"),
        "{log2}"
    );
    let log1 = c.log("n1");
    assert!(
        log1.contains("n3's report must come from node n3, not from node n2"),
        "{log1}"
    );
    for node in [0, 1] {
        let refused =
            common::counter(c.config.nodes[node].admin, "cairn_orders_refused_total").await;
        assert!(refused >= 1, "n{} counted no refused order", node + 1);
    }
    // The held snapshot completes with n3's real part, and every snapshot
    // conserves the money: nothing forged landed.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (st, doc): (_, Value) =
            common::client::get_json(c.coordinator(), &format!("/snapshots/{id}"))
                .await
                .unwrap();
        if st.as_u16() == 200 {
            break;
        }
        assert!(
            st.as_u16() == 202 && std::time::Instant::now() < deadline,
            "{doc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = cairn_store::Store::open(&c.config.store).unwrap();
    let manifest = store.manifest(id).await.unwrap();
    assert!(
        manifest
            .parts
            .iter()
            .all(|p| p.key == cairn_store::format::part_key(id, &p.process))
    );
    let snaps = c.snapshots().await;
    c.stop_and_check_with(&BankModel, snaps, 0).await;
}

/// Invariant: no node runs without certificates unless told to; one told
/// to says so in its log and in its status.
#[tokio::test]
async fn a_node_without_certificates_refuses_to_start_unless_told_insecure() {
    let (dir, path) = write_full_config(
        "insecure",
        2,
        "\"complete\"",
        0,
        BANK,
        "# insecure unless said",
        "timeout_ms = 10000",
    );
    let p = path.to_str().unwrap();
    let out = cairn(&["node", "--config", p, "--id", "n1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("tls.certs_dir") && err.contains("insecure = true"),
        "{err}"
    );
    let out = cairn(&["status", "--config", p]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("tls.certs_dir"));

    // Told so by the environment, it runs, warns, and shows it.
    let config = cairn_runtime::ClusterConfig::load(&path).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["node", "--config", p, "--id", "n1", "--stop-on-stdin-eof"])
        .env("CAIRN_INSECURE", "true")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let plain = AdminClient::insecure();
    let admin = config.nodes[0].admin;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok((_, v)) = plain.get_json::<Value>(admin, "/status").await {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the insecure node never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["insecure"], true);
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["status", "--config", p])
        .env("CAIRN_INSECURE", "true")
        .output()
        .unwrap();
    assert!(
        text(&shown.stdout).contains("INSECURE"),
        "{}",
        text(&shown.stdout)
    );
    drop(child.stdin.take());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        text(&out.stderr).contains("running INSECURE"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}
