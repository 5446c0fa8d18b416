//! `cairn trace svg` and `cairn trace shiviz` on a real cluster's traces,
//! and `cairn sim --svg`. Invariant: the pictures say what the run did — the
//! cut runs through each node's record event, and the arrows drawn as
//! channel state are exactly the messages the committed snapshot holds
//! (which the coordinator assembled from the nodes' reports, not from the
//! traces the picture is drawn from).

mod common;

use std::collections::HashMap;
use std::process::Output;
use std::time::Duration;

use cairn_apps::bank::BankModel;
use cairn_core::trace::{Event, TraceEvent};
use common::{ONE_AT_A_TIME, TestCluster};
use serde_json::Value;

fn cairn(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .output()
        .unwrap()
}

fn has_class(n: &roxmltree::Node, class: &str) -> bool {
    n.attribute("class")
        .is_some_and(|c| c.split(' ').any(|x| x == class))
}

#[tokio::test]
async fn a_clusters_traces_draw_its_snapshots_and_load_into_shiviz() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = TestCluster::start("pictures", 4, "\"complete\"", 100).await;
    c.keep_files = true;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let docs = c.snapshots().await;
    assert!(docs.len() >= 3, "only {} snapshots", docs.len());
    let dir = c.dir.clone();
    let config = c.path.clone();
    let topo = c.config.topology.clone();
    c.stop_and_check(&BankModel, docs.clone()).await;
    let traces = dir.join("traces");
    let trace: Vec<TraceEvent<Value>> =
        cairn_runtime::tracefile::load_events(&topo, &traces, 0, false).unwrap();

    let mut with_state = 0;
    // Four are enough, and each reads the whole trace.
    for doc in docs.iter().take(4) {
        let svg = dir.join(format!("s{}.svg", doc.id));
        // Without --config the channels are read off the traces.
        let mut args = vec![
            "trace",
            "svg",
            "--trace-dir",
            traces.to_str().unwrap(),
            "-o",
            svg.to_str().unwrap(),
        ];
        let id = doc.id.to_string();
        args.extend(["--snapshot", &id]);
        if doc.id.0 % 2 == 0 {
            args.extend(["--config", config.to_str().unwrap()]);
        }
        let out = cairn(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&svg).unwrap();
        let xml = roxmltree::Document::parse(&text).unwrap();
        let row: HashMap<&str, &str> = xml
            .descendants()
            .filter(|n| has_class(n, "process"))
            .map(|n| {
                (
                    n.attribute("data-process").unwrap(),
                    n.attribute("y1").unwrap(),
                )
            })
            .collect();
        assert_eq!(row.len(), 4, "snapshot {}: a line per node", doc.id);
        // A record point per node, on its line, at its record event.
        let dots: Vec<_> = xml
            .descendants()
            .filter(|n| has_class(n, "record") && n.attribute("data-process").is_some())
            .collect();
        assert_eq!(dots.len(), 4, "snapshot {}", doc.id);
        let mut points = Vec::new();
        for d in &dots {
            let p = d.attribute("data-process").unwrap();
            assert_eq!(d.attribute("cy").unwrap(), row[p]);
            let i: usize = d.attribute("data-event").unwrap().parse().unwrap();
            assert_eq!(topo.name(trace[i].process), p);
            assert!(
                matches!(trace[i].event, Event::Record { snapshot } if snapshot == doc.id),
                "snapshot {}: event {i} is not {p}'s record",
                doc.id
            );
            points.push(format!(
                "{},{}",
                d.attribute("cx").unwrap(),
                d.attribute("cy").unwrap()
            ));
        }
        let cut = xml
            .descendants()
            .find(|n| has_class(n, "cut") && n.attribute("data-snapshot").is_some())
            .unwrap();
        let mut drawn: Vec<&str> = cut.attribute("points").unwrap().split(' ').collect();
        drawn.sort_unstable();
        points.sort();
        assert_eq!(drawn, points, "snapshot {}: the cut", doc.id);
        // The thick arrows are the committed snapshot's channel states.
        let mut recorded: HashMap<String, Vec<Value>> = HashMap::new();
        for a in xml.descendants().filter(|n| has_class(n, "recorded")) {
            if let Some(ch) = a.attribute("data-channel") {
                let m: Value = serde_json::from_str(a.attribute("data-message").unwrap()).unwrap();
                recorded.entry(ch.to_string()).or_default().push(m);
            }
        }
        let doc_json = serde_json::to_value(doc).unwrap();
        for ch in doc_json["channels"].as_array().unwrap() {
            let name = format!(
                "{}->{}",
                ch["from"].as_str().unwrap(),
                ch["to"].as_str().unwrap()
            );
            let want = ch["messages"].as_array().cloned().unwrap_or_default();
            with_state += usize::from(!want.is_empty());
            let got = recorded.remove(&name).unwrap_or_default();
            // All of them when the window holds the channel's marker (a busy
            // channel's state can outrun the 1500-event window, which the
            // title then says).
            let marker_drawn = xml.descendants().any(|n| {
                has_class(&n, "marker")
                    && !has_class(&n, "clipped")
                    && n.attribute("data-channel") == Some(name.as_str())
                    && n.attribute("data-snapshot") == Some(id.as_str())
            });
            if marker_drawn {
                assert_eq!(got, want, "snapshot {}: channel {name}", doc.id);
            } else {
                // An arrow is drawn when its send or its receive is in the
                // window, so those drawn are the recorded ones in order, with
                // gaps where a message was sent before the window and
                // received after it (a long queue can hold such messages
                // between ones received in it and ones sent in it).
                let mut rest = want.iter();
                assert!(
                    got.iter().all(|g| rest.any(|w| w == g)),
                    "snapshot {}: channel {name}: {got:?} is not in the order of {want:?}",
                    doc.id
                );
                assert!(
                    got.len() == want.len()
                        || text.contains("recorded messages lie outside this window"),
                    "snapshot {}: {name}: {} of {} drawn, and the title does not say so",
                    doc.id,
                    got.len(),
                    want.len(),
                );
            }
        }
        assert!(recorded.is_empty(), "snapshot {}: {recorded:?}", doc.id);
    }
    assert!(
        with_state > 0,
        "no snapshot recorded a channel state to compare"
    );

    // ShiViz: every event of every node, in a log ShiViz's default parser
    // reads (see cairn-sim's tests for the parse itself).
    let log = dir.join("run.shiviz");
    let out = cairn(&[
        "trace",
        "shiviz",
        "--trace-dir",
        traces.to_str().unwrap(),
        "-o",
        log.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(cairn_sim::output::SHIVIZ_REGEX));
    assert_eq!(lines.next(), Some(""));
    let rest: Vec<&str> = lines.collect();
    assert_eq!(rest.len(), 2 * trace.len());
    for (pair, ev) in rest.chunks(2).zip(&trace) {
        let (host, clock) = pair[1].split_once(' ').unwrap();
        assert_eq!(host, topo.name(ev.process));
        let clock: HashMap<String, u64> = serde_json::from_str(clock).unwrap();
        assert_eq!(clock[host], ev.vc[ev.process.index()]);
    }

    // Bad input: a folder with no traces, an epoch that is not there, a
    // snapshot never taken; each a clear error and exit 1.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for (args, says) in [
        (
            vec![
                "trace",
                "svg",
                "--trace-dir",
                empty.to_str().unwrap(),
                "-o",
                "/dev/null",
            ],
            "holds no traces",
        ),
        (
            vec![
                "trace",
                "shiviz",
                "--trace-dir",
                traces.to_str().unwrap(),
                "--epoch",
                "7",
                "-o",
                "/dev/null",
            ],
            "no traces of epoch 7",
        ),
        (
            vec![
                "trace",
                "svg",
                "--trace-dir",
                traces.to_str().unwrap(),
                "--snapshot",
                "99999",
                "-o",
                "/dev/null",
            ],
            "never recorded",
        ),
        (
            vec![
                "trace",
                "svg",
                "--trace-dir",
                traces.to_str().unwrap(),
                "--window",
                "9..3",
                "-o",
                "/dev/null",
            ],
            "FROM must be below TO",
        ),
    ] {
        let out = cairn(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
