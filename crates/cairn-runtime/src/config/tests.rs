use super::*;

const BASE: &str = r#"
cluster = "c"
coordinator = "a"
channels = "complete"
[app]
name = "bank"
initial_balance = 5
[[nodes]]
id = "a"
address = "127.0.0.1:7001"
admin = 8001
[[nodes]]
id = "b"
address = "b.local:7002"
admin = "127.0.0.1:8002"
"#;

fn parse(text: &str) -> Result<ClusterConfig> {
    ClusterConfig::parse(Path::new("c.toml"), text, |_| None)
}

fn problem(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn snapshot_modes_parse_and_a_wrong_one_is_named() {
    assert_eq!(
        parse(BASE).unwrap().snapshots.mode,
        SnapshotMode::ChandyLamport
    );
    for mode in ["chandy-lamport", "aligned", "stop-the-world"] {
        let text = format!("{BASE}[snapshots]\nmode = \"{mode}\"\n");
        assert_eq!(parse(&text).unwrap().snapshots.mode.as_str(), mode);
    }
    let p = problem(&format!("{BASE}[snapshots]\nmode = \"flink\"\n"));
    assert!(
        p.contains("snapshots.mode") && p.contains("\"flink\""),
        "{p}"
    );
    let env = ClusterConfig::parse(Path::new("c.toml"), BASE, |k| {
        (k == "CAIRN_SNAPSHOT_MODE").then(|| "aligned".to_string())
    });
    assert_eq!(env.unwrap().snapshots.mode, SnapshotMode::Aligned);
}

#[test]
fn the_coordinator_is_one_node_a_list_of_candidates_or_every_node() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.candidates, vec![ProcessId(0)]);
    let list = parse(&BASE.replace(r#"coordinator = "a""#, r#"coordinator = ["b", "a"]"#)).unwrap();
    assert_eq!(list.candidates, vec![ProcessId(1), ProcessId(0)]);
    assert_eq!(list.coordinator, ProcessId(1));
    let all = parse(&BASE.replace("coordinator = \"a\"\n", "")).unwrap();
    assert_eq!(all.candidates, vec![ProcessId(0), ProcessId(1)]);
    assert!(
        problem(&BASE.replace(r#"coordinator = "a""#, r#"coordinator = ["a", "a"]"#))
            .contains("named twice")
    );
    assert!(
        problem(&BASE.replace(r#"coordinator = "a""#, "coordinator = []")).contains("at least one")
    );
    let env = ClusterConfig::parse(Path::new("c.toml"), BASE, |k| {
        (k == "CAIRN_COORDINATOR").then(|| "b, a".to_string())
    })
    .unwrap();
    assert_eq!(env.candidates, vec![ProcessId(1), ProcessId(0)]);
}

#[test]
fn complete_shorthand_and_defaults() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.topology.channel_count(), 2);
    assert_eq!(c.nodes[0].admin, "127.0.0.1:8001".parse().unwrap());
    assert_eq!(c.nodes[1].listen, "b.local:7002");
    assert_eq!(c.app.name, "bank");
    assert_eq!(c.app.params, serde_json::json!({"initial_balance": 5}));
    assert_eq!(c.snapshots.interval, None);
    assert_eq!(c.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
    assert_eq!(c.trace_limit_bytes, Some(DEFAULT_TRACE_LIMIT_MB << 20));
}

#[test]
fn overtaking_is_off_by_default_and_only_for_chandy_lamport() {
    use cairn_core::Overtaking;
    let sides = |v: &str| parse(&format!("{BASE}[snapshots]\novertake = {v}\n"));
    assert_eq!(
        parse(BASE).unwrap().snapshots.overtake,
        Overtaking::default()
    );
    assert_eq!(sides("true").unwrap().snapshots.overtake, Overtaking::BOTH);
    assert_eq!(
        sides("false").unwrap().snapshots.overtake,
        Overtaking::default()
    );
    for name in ["none", "sender", "receiver", "both"] {
        let got = sides(&format!("{name:?}")).unwrap().snapshots.overtake;
        assert_eq!(got.name(), name);
    }
    let p = problem(&format!("{BASE}[snapshots]\novertake = \"sideways\"\n"));
    assert!(
        p.contains("snapshots.overtake") && p.contains("sideways"),
        "{p}"
    );
    let p = problem(&format!(
        "{BASE}[snapshots]\novertake = \"receiver\"\nmode = \"aligned\"\n"
    ));
    assert!(
        p.contains("snapshots.overtake") && p.contains("aligned"),
        "{p}"
    );
    let env = |v: &str| {
        let v = v.to_string();
        ClusterConfig::parse(Path::new("c.toml"), BASE, move |k| {
            (k == "CAIRN_SNAPSHOT_OVERTAKE").then(|| v.clone())
        })
    };
    assert_eq!(env("true").unwrap().snapshots.overtake, Overtaking::BOTH);
    assert!(env("receiver").unwrap().snapshots.overtake.receiver);
    let p = env("yes").unwrap_err().to_string();
    assert!(
        p.contains("CAIRN_SNAPSHOT_OVERTAKE") && p.contains("yes"),
        "{p}"
    );
}

#[test]
fn a_trace_limit_is_in_mebibytes_and_zero_lifts_it() {
    let with =
        |v: &str| parse(&BASE.replace("channels =", &format!("trace_limit_mb = {v}\nchannels =")));
    assert_eq!(with("3").unwrap().trace_limit_bytes, Some(3 << 20));
    assert_eq!(with("0").unwrap().trace_limit_bytes, None);
    let p = with("\"big\"").unwrap_err().to_string();
    assert!(p.contains("trace_limit_mb"), "{p}");
}

#[test]
fn explicit_channels_may_repeat_a_pair() {
    let text = BASE.replace(
        r#"channels = "complete""#,
        r#"channels = [["a", "b"], ["a", "b"], ["b", "a"]]"#,
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.topology.channel_name(cairn_core::ChannelId(1)), "a->b#2");
}

#[test]
fn errors_name_the_file_the_key_and_the_problem() {
    assert_eq!(
        problem(&BASE.replace("address = \"127.0.0.1:7001\"", "address = \"nowhere\"")),
        "c.toml: nodes[0].address: \"nowhere\" is not host:port"
    );
    assert_eq!(
        problem(&BASE.replace("admin = 8001", "admin = 70000")),
        "c.toml: nodes[0].admin: 70000 is not a port number"
    );
    assert!(
        problem(&BASE.replace("admin = 8001", "admin = \"no-such-host.invalid:1\""))
            .starts_with("c.toml: nodes[0].admin: \"no-such-host.invalid:1\" is not a host:port")
    );
    // A host name is resolved, as addresses are.
    let c = parse(&BASE.replace("admin = 8001", "admin = \"localhost:8001\"")).unwrap();
    assert!(c.nodes[0].admin.ip().is_loopback());
    assert_eq!(c.nodes[0].admin.port(), 8001);
    assert!(
        problem(&BASE.replace(r#"coordinator = "a""#, r#"coordinator = "z""#))
            .starts_with("c.toml: coordinator: \"z\" is not a node")
    );
    assert!(
        problem(&BASE.replace(r#"channels = "complete""#, r#"channels = "mesh""#))
            .contains("channels: \"mesh\" is not a shorthand")
    );
    assert!(
        problem(&BASE.replace(r#"channels = "complete""#, r#"channels = [["a", "b"]]"#))
            .contains("strongly connected")
    );
    assert!(
        problem(&BASE.replace(r#"channels = "complete""#, r#"channels = [["a", "a"]]"#))
            .contains("channels: channel a->a")
    );
    let unknown = problem(&BASE.replace("cluster = \"c\"", "cluster = \"c\"\nclustr = 1"));
    assert!(
        unknown.starts_with("c.toml: ") && unknown.contains("clustr"),
        "{unknown}"
    );
    assert!(problem(&BASE.replace("[app]\nname = \"bank\"", "[app]")).contains("app.name"));
    assert!(
        problem(&(BASE.to_string() + "[snapshots]\ntimeout_ms = 0\n"))
            .contains("snapshots.timeout_ms")
    );
    assert!(
        problem(&BASE.replace("cluster = \"c\"", "cluster = \"c\"\nmax_frame_bytes = 10"))
            .contains("max_frame_bytes")
    );
    assert!(
        problem(&(BASE.to_string() + "[snapshots]\nwrite_mb_per_s = 99999999\n"))
            .contains("snapshots.write_mb_per_s: 99999999 is over")
    );
    assert!(
        problem(&(BASE.to_string() + "[snapshots]\nwrite_mb_per_s = -1\n"))
            .contains("write_mb_per_s")
    );
    let paced = |v: &str| {
        parse(&(BASE.to_string() + &format!("[snapshots]\nwrite_mb_per_s = {v}\n")))
            .unwrap()
            .snapshots
            .write_bytes_per_s
    };
    assert_eq!(paced("0"), None, "0 is no limit");
    assert_eq!(paced("64"), Some(64 << 20));
}

#[test]
fn environment_overrides_apply_and_are_validated() {
    let env = |k: &str| match k {
        "CAIRN_NODE_B_ADDRESS" => Some("10.1.2.3:9000".to_string()),
        "CAIRN_NODE_A_ADMIN" => Some("0.0.0.0:9100".to_string()),
        "CAIRN_SNAPSHOT_INTERVAL_MS" => Some("250".to_string()),
        "CAIRN_CLUSTER" => Some("prod".to_string()),
        _ => None,
    };
    let c = ClusterConfig::parse(Path::new("c.toml"), BASE, env).unwrap();
    assert_eq!(c.nodes[1].address, "10.1.2.3:9000");
    assert_eq!(c.nodes[0].admin, "0.0.0.0:9100".parse().unwrap());
    assert_eq!(c.snapshots.interval, Some(Duration::from_millis(250)));
    assert_eq!(c.cluster, "prod");
    let bad = |k: &str| (k == "CAIRN_SNAPSHOT_TIMEOUT_MS").then(|| "soon".to_string());
    let err = ClusterConfig::parse(Path::new("c.toml"), BASE, bad)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "c.toml: CAIRN_SNAPSHOT_TIMEOUT_MS: \"soon\" is not a whole number"
    );
}
