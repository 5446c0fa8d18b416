//! What a run writes: the JSON Lines trace reads back into a trace the oracle
//! judges the same way, and the ShiViz log keeps ShiViz's rules.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use cairn_core::trace::{TraceEvent, TraceRecord};
use cairn_core::{GlobalSnapshot, SnapshotDoc};
use cairn_sim::output::{SHIVIZ_REGEX, snapshots_json, write_shiviz, write_trace};
use cairn_sim::workload::{Workload, random_topology, run_random};
use cairn_sim::{Config, Outcome, Simulator, TokenModel, Tokens};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

fn run(seed: u64) -> Outcome<Tokens, Tokens> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let topo = Arc::new(random_topology(&mut rng, 6, 6));
    let config = Config {
        seed,
        ..Config::default()
    };
    let mut sim = Simulator::new(topo, TokenModel, vec![Tokens { tokens: 7 }; 6], config).unwrap();
    run_random(&mut sim, &Workload::default()).unwrap();
    sim.finish().unwrap()
}

#[test]
fn json_lines_trace_reads_back_and_passes_the_oracle() {
    for seed in 0..20 {
        let run = run(seed);
        let mut buf = Vec::new();
        write_trace(&mut buf, &run.topology, &run.trace).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().count(), run.trace.len());
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for key in ["process", "kind", "vc"] {
            assert!(first.get(key).is_some(), "{key} missing in {first}");
        }
        let back: Vec<TraceEvent<Tokens>> = text
            .lines()
            .map(|l| {
                let rec: TraceRecord<Tokens> = serde_json::from_str(l).unwrap();
                TraceEvent::from_record(&run.topology, rec).unwrap()
            })
            .collect();
        assert_eq!(back, run.trace, "seed {seed}");
        let mut reread = run.clone();
        reread.trace = back;
        assert!(reread.verify(&TokenModel).is_empty(), "seed {seed}");
        // And a corrupted file is caught the same way.
        let bad = text.replacen("\"kind\":\"receive\"", "\"kind\":\"send\"", 1);
        let parsed: Vec<TraceEvent<Tokens>> = bad
            .lines()
            .map(|l| {
                TraceEvent::from_record(&run.topology, serde_json::from_str(l).unwrap()).unwrap()
            })
            .collect();
        reread.trace = parsed;
        assert!(
            !reread.verify(&TokenModel).is_empty(),
            "seed {seed}: corrupted trace passed"
        );
    }
}

#[test]
fn trace_records_with_missing_fields_are_named_errors() {
    let run = run(1);
    let rec: TraceRecord<Tokens> =
        serde_json::from_str(r#"{"process":"N1","kind":"send","channel":"N1->N2","vc":{"N1":1}}"#)
            .unwrap();
    let err = TraceEvent::from_record(&run.topology, rec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a seq"), "{err}");
    let rec: TraceRecord<Tokens> =
        serde_json::from_str(r#"{"process":"N9","kind":"record","snapshot":0,"vc":{}}"#).unwrap();
    assert!(
        TraceEvent::from_record(&run.topology, rec)
            .unwrap_err()
            .to_string()
            .contains("unknown process")
    );
}

/// ShiViz's rules, as trace-formats.md lists them: each host's own entry
/// starts at 1 and grows by one per event; every host in a clock exists; each
/// receive's clock is the merge of the receiver's previous clock and the
/// sender's clock at the send, plus one.
#[test]
fn shiviz_log_keeps_shiviz_rules() {
    let run = run(3);
    let mut buf = Vec::new();
    write_shiviz(&mut buf, &run.topology, &run.trace).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(SHIVIZ_REGEX));
    assert_eq!(lines.next(), Some(""));
    let rest: Vec<&str> = lines.collect();
    assert_eq!(rest.len(), 2 * run.trace.len());
    let hosts: Vec<String> = run
        .topology
        .processes()
        .map(|p| run.topology.name(p).to_string())
        .collect();
    let mut last: HashMap<String, HashMap<String, u64>> = HashMap::new();
    // Clocks of sends in flight, per channel-ish key (sender, receiver), FIFO.
    let mut in_flight: HashMap<String, VecDeque<HashMap<String, u64>>> = HashMap::new();
    for (pair, ev) in rest.chunks(2).zip(&run.trace) {
        let (host, clock) = pair[1].split_once(' ').unwrap();
        let clock: HashMap<String, u64> = serde_json::from_str(clock).unwrap();
        assert!(
            clock.keys().all(|h| hosts.contains(h)),
            "unknown host in {clock:?}"
        );
        let prev = last.remove(host).unwrap_or_default();
        assert_eq!(
            clock[host],
            prev.get(host).copied().unwrap_or(0) + 1,
            "{host}: own entry must grow by one"
        );
        let text = pair[0];
        let channel = text
            .split(" on ")
            .nth(1)
            .map(|c| c.split([' ', ':']).next().unwrap().to_string());
        let mut expected = prev.clone();
        if text.starts_with("receive") {
            let sent = in_flight
                .get_mut(channel.as_ref().unwrap())
                .unwrap()
                .pop_front()
                .unwrap();
            for (h, n) in sent {
                let e = expected.entry(h).or_insert(0);
                *e = (*e).max(n);
            }
        }
        *expected.entry(host.to_string()).or_insert(0) += 1;
        assert_eq!(clock, expected, "event {text:?} at {host}");
        if text.starts_with("send") {
            in_flight
                .entry(channel.unwrap())
                .or_default()
                .push_back(clock.clone());
        }
        assert_eq!(host, run.topology.name(ev.process));
        last.insert(host.to_string(), clock);
    }
}

#[test]
fn snapshot_json_is_an_array_in_the_shared_shape() {
    let run = run(5);
    let json = snapshots_json(&run.topology, &run.snapshots).unwrap();
    let v: Value = serde_json::from_str(&json).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), run.snapshots.len());
    for (i, s) in arr.iter().enumerate() {
        assert_eq!(s["id"], i as u64, "in id order");
        assert_eq!(s["processes"].as_object().unwrap().len(), 6);
        assert_eq!(
            s["processes"]["N1"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["tokens"]
        );
        let channels = s["channels"].as_array().unwrap();
        assert_eq!(
            channels.len(),
            run.topology.channel_count(),
            "every channel listed"
        );
        for c in channels {
            assert!(c["from"].is_string() && c["to"].is_string() && c["messages"].is_array());
        }
    }
    let docs: Vec<SnapshotDoc<Tokens, Tokens>> = serde_json::from_str(&json).unwrap();
    for (doc, snap) in docs.into_iter().zip(&run.snapshots) {
        assert_eq!(&GlobalSnapshot::from_doc(&run.topology, doc).unwrap(), snap);
    }
}

/// The log parses as ShiViz parses it, both ways in: pasted whole into the
/// text box under ShiViz's default parser (a global, multi-line match of
/// that regex over the text), or uploaded (line 1 is the parser, line 2 the
/// delimiter, the rest the log). Each match is one event, in order, with the
/// right host, clock and text, even though every message here is a JSON
/// object, which once made lines parse as clocks.
#[test]
fn shiviz_log_parses_under_shivizs_default_regex_pasted_or_uploaded() {
    const DEFAULT: &str = r"(?<event>.*)\n(?<host>\S*) (?<clock>{.*})";
    assert_eq!(SHIVIZ_REGEX, DEFAULT);
    // JavaScript reads a brace that starts no repetition as itself; Rust's
    // regex wants it escaped.
    let js = DEFAULT.replace('{', r"\{").replace('}', r"\}");
    let re = regex::Regex::new(&format!("(?m){js}")).unwrap();
    for seed in 0..5 {
        let run = run(seed);
        let mut buf = Vec::new();
        write_shiviz(&mut buf, &run.topology, &run.trace).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let uploaded = text.splitn(3, '\n').nth(2).unwrap();
        for (how, log) in [("pasted", text.as_str()), ("uploaded", uploaded)] {
            let got: Vec<_> = re.captures_iter(log).collect();
            assert_eq!(
                got.len(),
                run.trace.len(),
                "seed {seed}, {how}: events found"
            );
            for (m, ev) in got.iter().zip(&run.trace) {
                let host = run.topology.name(ev.process);
                assert_eq!(&m["host"], host, "seed {seed}, {how}");
                let clock: HashMap<String, u64> = serde_json::from_str(&m["clock"]).unwrap();
                let want = ev
                    .to_record(&run.topology)
                    .vc
                    .0
                    .into_iter()
                    .collect::<HashMap<_, _>>();
                assert_eq!(clock, want, "seed {seed}, {how}");
                let text = cairn_sim::output::shiviz_text(&run.topology, &ev.event).unwrap();
                assert_eq!(&m["event"], text, "seed {seed}, {how}");
            }
        }
    }
}
