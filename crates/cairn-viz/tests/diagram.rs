//! The diagrams, read back as XML: the cut, the record points and the arrows
//! are where the trace says they are, and the thick arrows are exactly the
//! channel states the simulator's snapshot recorded (which the viz crate
//! does not see).

use std::collections::HashMap;
use std::sync::Arc;

use cairn_core::SnapshotId;
use cairn_core::trace::Event;
use cairn_sim::workload::{Workload, random_topology, run_random};
use cairn_sim::{Config, Outcome, Simulator, TokenModel, Tokens};
use cairn_viz::{Options, svg};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn run(seed: u64, n: usize, ticks: u64) -> Outcome<Tokens, Tokens> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let topo = Arc::new(random_topology(&mut rng, n, n));
    let config = Config {
        seed,
        ..Config::default()
    };
    let mut sim = Simulator::new(topo, TokenModel, vec![Tokens { tokens: 7 }; n], config).unwrap();
    let workload = Workload {
        ticks,
        ..Workload::default()
    };
    run_random(&mut sim, &workload).unwrap();
    sim.finish().unwrap()
}

fn num(node: roxmltree::Node, attr: &str) -> f64 {
    node.attribute(attr)
        .unwrap_or_else(|| panic!("no {attr}"))
        .parse()
        .unwrap()
}

fn class_has(node: &roxmltree::Node, class: &str) -> bool {
    node.attribute("class")
        .is_some_and(|c| c.split(' ').any(|x| x == class))
}

/// Checks one diagram of snapshot `s` against the run; returns how many
/// arrows it holds.
fn check(run: &Outcome<Tokens, Tokens>, s: SnapshotId, text: &str, seed: u64) -> usize {
    let topo = &run.topology;
    let doc =
        roxmltree::Document::parse(text).unwrap_or_else(|e| panic!("seed {seed}: not XML: {e}"));
    let row: HashMap<String, f64> = doc
        .descendants()
        .filter(|n| n.has_tag_name("line") && class_has(n, "process"))
        .map(|n| {
            (
                n.attribute("data-process").unwrap().to_string(),
                num(n, "y1"),
            )
        })
        .collect();
    assert_eq!(
        row.len(),
        topo.process_count(),
        "seed {seed}: a line per process"
    );

    // Record points sit on their process's line, at the event the trace
    // says; the cut runs through exactly those points, in row order.
    let mut dots: Vec<(f64, f64)> = Vec::new();
    let mut record_x: HashMap<String, f64> = HashMap::new();
    for d in doc
        .descendants()
        .filter(|n| n.has_tag_name("circle") && class_has(n, "record"))
    {
        let Some(p) = d.attribute("data-process") else {
            continue;
        };
        assert_eq!(
            num(d, "cy"),
            row[p],
            "seed {seed}: {p}'s record point is off its line"
        );
        let i: usize = d.attribute("data-event").unwrap().parse().unwrap();
        let e = &run.trace[i];
        assert_eq!(topo.name(e.process), p, "seed {seed}");
        assert!(
            matches!(e.event, Event::Record { snapshot } if snapshot == s),
            "seed {seed}: event {i} is not {p}'s record"
        );
        dots.push((num(d, "cx"), num(d, "cy")));
        record_x.insert(p.to_string(), num(d, "cx"));
    }
    assert_eq!(
        dots.len(),
        topo.process_count(),
        "seed {seed}: every process recorded"
    );
    let cut = doc
        .descendants()
        .find(|n| {
            n.has_tag_name("polyline")
                && class_has(n, "cut")
                && n.attribute("data-snapshot").is_some()
        })
        .expect("a cut");
    let points: Vec<(f64, f64)> = cut
        .attribute("points")
        .unwrap()
        .split(' ')
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect();
    dots.sort_by(|a, b| a.1.total_cmp(&b.1));
    assert_eq!(
        points, dots,
        "seed {seed}: the cut must run through the record points"
    );

    // Arrows: from the sender's line to the receiver's, pointing right, one
    // per receive of the trace, at the events the trace names.
    let mut arrows = 0;
    let mut recorded: HashMap<String, Vec<String>> = HashMap::new();
    for a in doc
        .descendants()
        .filter(|n| n.has_tag_name("line") && n.attribute("data-channel").is_some())
    {
        arrows += 1;
        let channel = a.attribute("data-channel").unwrap();
        let c = topo.channel_by_name(channel).unwrap();
        let ch = topo.channel(c);
        assert_eq!(
            num(a, "y1"),
            row[topo.name(ch.from)],
            "seed {seed}: {channel} starts off its sender"
        );
        assert_eq!(
            num(a, "y2"),
            row[topo.name(ch.to)],
            "seed {seed}: {channel} ends off its receiver"
        );
        assert!(
            num(a, "x1") < num(a, "x2"),
            "seed {seed}: {channel} points left"
        );
        let marker = class_has(&a, "marker");
        if let (Some(si), Some(ri)) = (a.attribute("data-send"), a.attribute("data-recv")) {
            let (si, ri): (usize, usize) = (si.parse().unwrap(), ri.parse().unwrap());
            match (&run.trace[si].event, &run.trace[ri].event) {
                (
                    Event::Send {
                        channel: a1,
                        seq: s1,
                        ..
                    },
                    Event::Receive {
                        channel: a2,
                        seq: s2,
                        ..
                    },
                ) => {
                    assert!(
                        !marker && *a1 == c && *a2 == c && s1 == s2,
                        "seed {seed}: arrow {si}->{ri}"
                    );
                }
                (
                    Event::MarkerSend {
                        channel: a1,
                        snapshot: m1,
                    },
                    Event::MarkerReceive {
                        channel: a2,
                        snapshot: m2,
                    },
                ) => {
                    assert!(
                        marker && *a1 == c && *a2 == c && m1 == m2,
                        "seed {seed}: marker {si}->{ri}"
                    );
                }
                other => panic!("seed {seed}: arrow {si}->{ri} joins {other:?}"),
            }
            // The cut is consistent in the picture: no message received
            // left of the cut was sent right of it.
            if !marker {
                let rx = record_x[topo.name(ch.to)];
                let sx = record_x[topo.name(ch.from)];
                if num(a, "x2") < rx {
                    assert!(
                        num(a, "x1") < sx,
                        "seed {seed}: {channel} crosses the cut backwards"
                    );
                }
            }
        }
        if class_has(&a, "recorded") {
            assert!(!marker, "seed {seed}: a marker drawn as channel state");
            recorded
                .entry(channel.to_string())
                .or_default()
                .push(a.attribute("data-message").unwrap().to_string());
        }
    }
    let receives = run.trace[..]
        .iter()
        .filter(|e| matches!(e.event, Event::Receive { .. } | Event::MarkerReceive { .. }))
        .count();
    assert!(
        arrows >= receives,
        "seed {seed}: {arrows} arrows for {receives} receives"
    );

    // The thick arrows are the snapshot's channel states, as the simulator
    // recorded them.
    let snap = run.snapshots.iter().find(|g| g.id == s).unwrap();
    for c in topo.channel_ids() {
        let want: Vec<String> = snap.channels[c.index()]
            .iter()
            .map(|m| serde_json::to_string(m).unwrap())
            .collect();
        let got = recorded.remove(&topo.channel_name(c)).unwrap_or_default();
        assert_eq!(
            got,
            want,
            "seed {seed}: channel {} state",
            topo.channel_name(c)
        );
    }
    arrows
}

#[test]
fn the_cut_and_arrows_are_where_the_trace_says() {
    let mut with_state = 0;
    for seed in 0..20 {
        let run = run(seed, 4, 60);
        let Some(snap) = run.snapshots.first() else {
            continue;
        };
        // The whole run, so every arrow is whole.
        let options = Options {
            snapshot: Some(snap.id),
            window: Some(0..run.trace.len()),
            ..Options::default()
        };
        let text = svg(&run.topology, &run.trace, &options).unwrap();
        check(&run, snap.id, &text, seed);
        with_state += usize::from(snap.channels.iter().any(|c| !c.is_empty()));
    }
    assert!(
        with_state > 3,
        "too few snapshots recorded a channel state to test with"
    );
}

/// Fifty processes and a long run stay a picture a person can read: the
/// default window holds the snapshot and at most `max_events` events, and
/// the drawing stays within a few thousand pixels.
#[test]
fn fifty_processes_and_a_long_run_stay_readable() {
    let run = run(7, 50, 400);
    assert!(run.trace.len() > 3000, "{} events", run.trace.len());
    let snap = run.snapshots.last().unwrap();
    let text = svg(
        &run.topology,
        &run.trace,
        &Options {
            snapshot: Some(snap.id),
            ..Options::default()
        },
    )
    .unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let root = doc.root_element();
    let (w, h) = (num(root, "width"), num(root, "height"));
    assert!(w <= 4000.0 && h <= 1400.0, "{w} x {h}");
    let events = root.attribute("data-events").unwrap();
    let (a, b) = events.split_once("..").unwrap();
    let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
    assert!(b - a <= Options::default().max_events && b > a, "{events}");
    assert!(
        a > 0 || b < run.trace.len(),
        "the default window should not be the whole run"
    );
}

#[test]
fn a_bad_window_or_snapshot_is_a_clear_error() {
    let run = run(1, 3, 30);
    let e = svg(
        &run.topology,
        &run.trace,
        &Options {
            window: Some(5..5),
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("not within"), "{e}");
    let e = svg(
        &run.topology,
        &run.trace,
        &Options {
            snapshot: Some(SnapshotId(9999)),
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("never recorded"), "{e}");
}

/// A window too small for the snapshot still draws what it holds, and says
/// how many recorded messages it leaves out: drawn plus left out is the
/// snapshot's whole channel state.
#[test]
fn a_small_window_says_what_it_leaves_out() {
    let mut checked = 0;
    for seed in 0..20 {
        let run = run(seed, 4, 60);
        let Some(snap) = run
            .snapshots
            .iter()
            .find(|s| s.channels.iter().map(Vec::len).sum::<usize>() > 3)
        else {
            continue;
        };
        let total: usize = snap.channels.iter().map(Vec::len).sum();
        let options = Options {
            snapshot: Some(snap.id),
            max_events: 12,
            margin: 0,
            ..Options::default()
        };
        let text = svg(&run.topology, &run.trace, &options).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap();
        let drawn = doc
            .descendants()
            .filter(|n| class_has(n, "recorded") && n.attribute("data-channel").is_some())
            .count();
        let title = doc
            .descendants()
            .find(|n| class_has(n, "title"))
            .unwrap()
            .text()
            .unwrap()
            .trim()
            .to_string();
        let outside = title
            .split("; ")
            .find_map(|p| p.strip_suffix(" recorded messages lie outside this window"))
            .map_or(0, |n| n.parse::<usize>().unwrap());
        assert_eq!(drawn + outside, total, "seed {seed}: {title}");
        checked += usize::from(outside > 0);
    }
    assert!(checked > 0, "no window left a recorded message out");
}
