//! The `cairn` binary, run as a user would.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn cairn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn cos418() -> Option<PathBuf> {
    cairn_sim::cos418::find_data(env!("CARGO_MANIFEST_DIR").as_ref())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn demo_checks_every_snapshot_and_exits_zero() {
    let out = cairn(&["demo", "--simulated", "--seed", "7"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("Simulated 8 processes"), "{stdout}");
    assert!(stdout.contains("passed the oracle"), "{stdout}");
    assert!(
        stdout.lines().filter(|l| l.ends_with("consistent")).count() >= 2,
        "{stdout}"
    );
    // The same seed prints the same run.
    assert_eq!(
        text(&cairn(&["demo", "--simulated", "--seed", "7"]).stdout),
        stdout
    );
}

#[test]
fn sim_prints_the_snapshots_and_writes_trace_and_shiviz() {
    let Some(dir) = cos418() else { return };
    let tmp = scratch("sim");
    let (trace, shiviz, svg) = (
        tmp.join("run.jsonl"),
        tmp.join("run.log"),
        tmp.join("run.svg"),
    );
    let out = cairn(&[
        "sim",
        "--topology",
        dir.join("8nodes.top").to_str().unwrap(),
        "--events",
        dir.join("8nodes-sequential-snapshots.events")
            .to_str()
            .unwrap(),
        "--seed",
        "9",
        "--max-delay",
        "10",
        "--trace",
        trace.to_str().unwrap(),
        "--shiviz",
        shiviz.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "--svg-snapshot",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("seed 9"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let snaps = v.as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["processes"]["N1"]["tokens"], 9);
    let n2n3 = snaps[0]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["from"] == "N2" && c["to"] == "N3")
        .unwrap();
    assert_eq!(n2n3["messages"], serde_json::json!([{"tokens": 2}]));
    let lines = std::fs::read_to_string(&trace).unwrap();
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "send");
    assert!(
        std::fs::read_to_string(&shiviz)
            .unwrap()
            .starts_with("(?<event>")
    );
    // The diagram draws snapshot 1's cut through all eight processes.
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
    let xml = roxmltree::Document::parse(&svg).unwrap();
    let records = xml
        .descendants()
        .filter(|n| {
            n.attribute("class") == Some("record") && n.attribute("data-snapshot") == Some("1")
        })
        .count();
    assert_eq!(records, 8);
    assert!(
        xml.descendants()
            .any(|n| n.attribute("class") == Some("cut")
                && n.attribute("data-snapshot") == Some("1"))
    );
    // Replaying the seed reproduces the output exactly.
    let again = cairn(&[
        "sim",
        "--topology",
        dir.join("8nodes.top").to_str().unwrap(),
        "--events",
        dir.join("8nodes-sequential-snapshots.events")
            .to_str()
            .unwrap(),
        "--seed",
        "9",
        "--max-delay",
        "10",
    ]);
    assert_eq!(again.stdout, out.stdout);
    std::fs::remove_dir_all(tmp).ok();
}

/// Invariant: with markers overtaking messages on either side, `cairn sim`
/// still prints snapshots the oracle accepts and that conserve the tokens,
/// and overtaking shows: more messages are recorded in flight than with
/// markers in their FIFO place.
#[test]
fn sim_with_overtaking_markers_stays_consistent_and_records_more_in_flight() {
    let Some(dir) = cos418() else { return };
    let in_flight = |mode: &str| -> usize {
        let out = cairn(&[
            "sim",
            "--topology",
            dir.join("10nodes.top").to_str().unwrap(),
            "--events",
            dir.join("10nodes.events").to_str().unwrap(),
            "--seed",
            "3",
            "--overtake",
            mode,
        ]);
        assert!(out.status.success(), "{mode}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("all consistent"), "{mode}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["channels"].as_array().unwrap())
            .map(|c| c["messages"].as_array().unwrap().len())
            .sum()
    };
    let fifo = in_flight("none");
    for mode in ["sender", "receiver", "both"] {
        let n = in_flight(mode);
        assert!(
            n > fifo,
            "{mode}: {n} recorded in flight, {fifo} without overtaking"
        );
    }
    let bad = cairn(&[
        "sim",
        "--topology",
        "x.top",
        "--events",
        "y",
        "--overtake",
        "sideways",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("sideways"));
}

#[test]
fn bad_arguments_and_files_give_clear_errors_and_nonzero_exits() {
    let out = cairn(&["sim", "--topology", "x.top"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --events is a usage error"
    );
    assert!(text(&out.stderr).contains("--events"));
    let out = cairn(&[
        "sim",
        "--topology",
        "a",
        "--events",
        "b",
        "--max-delay",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("max-delay"),
        "{}",
        text(&out.stderr)
    );
    let out = cairn(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));

    let out = cairn(&["sim", "--topology", "/nonexistent/t.top", "--events", "e"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read /nonexistent/t.top"),
        "{}",
        text(&out.stderr)
    );

    // Bad files: each gives exit 1 and a message naming what was wrong.
    let tmp = scratch("bad");
    let (top, ev) = (tmp.join("t.top"), tmp.join("t.events"));
    let two = "2\nN1 1\nN2 0\nN1 N2\nN2 N1\n";
    let cases = [
        (
            two,
            "send N1 N2 1\nsnapshot N7\n",
            "t.events:2: unknown server \"N7\"",
        ),
        (two, "send N1 N2 5\n", "process N1: cannot send"),
        (two, "tick\nteleport N1\n", "t.events:2: unknown command"),
        (
            "2\nN1 one\n",
            "tick\n",
            "t.top:2: tokens must be a whole number",
        ),
        (
            "2\nN1 1\nN2 0\nN1 N1 N2\n",
            "tick\n",
            "t.top:4: expected a link",
        ),
        // A snapshot that can never finish is refused, naming the unreachable process.
        (
            "3\nN1 1\nN2 0\nN3 0\nN1 N2\nN2 N1\nN3 N1\n",
            "snapshot N1\n",
            "[\"N3\"] cannot be reached",
        ),
    ];
    for (top_text, ev_text, expected) in cases {
        std::fs::write(&top, top_text).unwrap();
        std::fs::write(&ev, ev_text).unwrap();
        let out = cairn(&[
            "sim",
            "--topology",
            top.to_str().unwrap(),
            "--events",
            ev.to_str().unwrap(),
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{ev_text:?}: {err}");
        assert!(
            err.contains(expected),
            "{ev_text:?}: expected {expected:?} in {err}"
        );
        assert!(
            out.stdout.is_empty(),
            "no snapshots are printed for bad input"
        );
    }
    std::fs::remove_dir_all(tmp).ok();
}

/// Invariant: certificate files are made once and never replaced, keys are
/// readable by their owner only, and `cert list` tells what each is and
/// fails when one has expired.
#[test]
fn cert_commands_make_list_and_never_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("certs");
    let d = dir.to_str().unwrap();
    // Nothing signs without a CA.
    let out = cairn(&["cert", "create-node", "n1", "--certs-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("ca.crt"),
        "{}",
        text(&out.stderr)
    );
    for args in [
        vec!["cert", "create-ca", "--certs-dir", d],
        vec![
            "cert",
            "create-node",
            "n1",
            "--certs-dir",
            d,
            "--host",
            "10.1.2.3",
            "--host",
            "db.example",
        ],
        vec!["cert", "create-client", "root", "--certs-dir", d],
    ] {
        let out = cairn(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    for key in ["ca.key", "node.n1.key", "client.root.key"] {
        let mode = std::fs::metadata(dir.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key} has mode {mode:o}");
    }
    // Never overwritten: the second CA is refused and the first is intact.
    let before = std::fs::read(dir.join("ca.crt")).unwrap();
    let out = cairn(&["cert", "create-ca", "--certs-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(dir.join("ca.crt")).unwrap(), before);
    let out = cairn(&["cert", "create-node", "n1", "--certs-dir", d]);
    assert_eq!(out.status.code(), Some(1));

    let out = cairn(&["cert", "list", "--certs-dir", d, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<(String, String)> = list
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().into(),
                c["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(kinds[1], ("client".into(), "root".into()));
    assert_eq!(kinds[2], ("node".into(), "n1".into()));
    assert_eq!(kinds[0].0, "ca");
    assert!(
        list.iter()
            .all(|c| c["expired"] == false && c["has_key"] == true)
    );
    // The node's certificate lasts 5 years, the CA's 10.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let years =
        |c: &serde_json::Value| (c["not_after_unix"].as_i64().unwrap() - now) / (365 * 86_400);
    assert_eq!(years(&list[0]), 10);
    assert_eq!(years(&list[2]), 5);
    let table = cairn(&["cert", "list", "--certs-dir", d]);
    assert!(text(&table.stdout).contains("node.n1.crt"));

    // An expired certificate makes `list` fail, saying which.
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    cairn_runtime::tls::certs::create_leaf(
        &dir,
        &cairn_runtime::tls::Identity::client("old"),
        &[],
        cairn_runtime::tls::certs::Validity {
            not_before: long_ago,
            not_after: long_ago + time::Duration::days(1),
        },
    )
    .unwrap();
    let out = cairn(&["cert", "list", "--certs-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("EXPIRED"),
        "{}",
        text(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Operator edges: a config's paths are the file's (not the caller's), a
/// store that is not there is an error, `CAIRN_CONFIG` stands in for
/// `--config`, bad arguments exit 2, a closed pipe ends a command quietly,
/// and the help names `RUST_LOG`.
#[test]
fn paths_stores_env_exit_codes_and_pipes_behave_as_an_operator_expects() {
    let dir = scratch("edges");
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        "cluster = \"c\"\ninsecure = true\ndata_dir = \"data\"\nchannels = \"complete\"\n\
         nodes = [{ id = \"n1\", address = \"127.0.0.1:1\", admin = \"localhost:2\" }, { id = \"n2\", address = \"127.0.0.1:3\", admin = 4 }]\n\
         [app]\nname = \"my-own-app\"\n",
    )
    .unwrap();
    let run_in = |cwd: &str, args: &[&str], env: Option<(&str, &std::path::Path)>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.current_dir(cwd).args(args).env_remove("CAIRN_CONFIG");
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let c = config.to_str().unwrap();
    // Before the cluster ever ran there is no store: an error, from anywhere.
    let out = run_in("/", &["snapshots", "--config", c, "list"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let expected = dir.join("data").join("snapshots");
    assert!(
        err.contains(&format!("no store at {}", expected.display())),
        "the store is beside the config file, not in /: {err}"
    );
    std::fs::create_dir_all(&expected).unwrap();
    // Run from / and from the config's folder alike, with CAIRN_CONFIG too.
    for (cwd, args, env) in [
        ("/", vec!["snapshots", "--config", c, "list"], None),
        (
            dir.to_str().unwrap(),
            vec!["snapshots", "--config", "c.toml", "list"],
            None,
        ),
        (
            "/",
            vec!["snapshots", "list"],
            Some(("CAIRN_CONFIG", config.as_path())),
        ),
    ] {
        let out = run_in(cwd, &args, env);
        assert!(
            out.status.success(),
            "{args:?} in {cwd}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("no complete snapshots"),
            "{}",
            text(&out.stdout)
        );
    }
    // A cluster that is not running: say so, and what to do.
    let out = cairn(&["snapshot", "--config", c]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is the cluster running?"),
        "{}",
        text(&out.stderr)
    );
    // Restoring a snapshot the store does not hold names it and what is there.
    let out = cairn(&["restore", "--config", c, "--snapshot", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "snapshot 3 is not in the store (never committed, or retention removed it); it holds no committed snapshot"
        ),
        "{}",
        text(&out.stderr)
    );
    let out = cairn(&["snapshots", "--store", "/nonexistent/cairn-store", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no store at /nonexistent/cairn-store"));
    // Bad arguments are usage errors: exit 2.
    let out = cairn(&["detect", "deadlock", "--processes", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // The help says how to see more logs; -v and -q set the level, not both.
    let help = text(&cairn(&["--help"]).stdout);
    assert!(help.contains("RUST_LOG") && help.contains("--verbose") && help.contains("--quiet"));
    assert_eq!(
        cairn(&["-v", "-q", "snapshots", "list"]).status.code(),
        Some(2)
    );
    // Shell completions.
    let out = cairn(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("snapshots"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(cairn(&["completions", "tcsh"]).status.code(), Some(2));
    // A reader that stops early: no panic, no error message.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["demo", "--simulated", "--seed", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the pipe closes before anything is printed
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert_ne!(out.status.code(), Some(101), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
