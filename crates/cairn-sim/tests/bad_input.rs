//! COS418 files with arbitrary content give an error naming the file and
//! line, never a panic.

use std::sync::Arc;

use cairn_sim::cos418::{parse_events, parse_snapshot, parse_topology};
use cairn_sim::{Config, Simulator, TokenModel};
use proptest::prelude::*;

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,3}",
        "N[0-9] [0-9]{1,20}",
        "N[0-9] N[0-9]",
        "send N[0-9] N[0-9] -?[0-9]{1,25}",
        "snapshot( N[0-9]){0,3}",
        "tick( [0-9]{1,25})?",
        "N[0-9] N[0-9] token\\([0-9x]{0,3}\\)?",
        "\\PC{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn cos418_parsers_never_panic(lines in proptest::collection::vec(line(), 0..12)) {
        let text = lines.join("\n");
        if let Ok(top) = parse_topology("x.top", &text) {
            let _ = parse_events("x.events", &text, &top.topology);
        } else if let Err(e) = parse_topology("x.top", &text) {
            prop_assert!(e.to_string().starts_with("x.top:"), "{}", e);
        }
        let fixed = parse_topology("t.top", "2\nN1 5\nN2 0\nN1 N2\nN2 N1").unwrap();
        match parse_events("x.events", &text, &fixed.topology) {
            Err(e) => prop_assert!(e.to_string().starts_with("x.events:"), "{}", e),
            // Any script that parses runs to an end or an error, never a hang:
            // huge ticks on a quiet system are skipped, not stepped.
            Ok(script) => {
                let config = Config { max_ticks: 10_000, ..Config::default() };
                let mut sim = Simulator::new(Arc::new(fixed.topology.clone()), TokenModel, fixed.initial.clone(), config).unwrap();
                if sim.run_script(&script).is_ok() {
                    if let Ok(run) = sim.finish() {
                        prop_assert!(run.verify(&TokenModel).is_empty());
                    }
                }
            }
        }
        if let Err(e) = parse_snapshot("x.snap", &text) {
            prop_assert!(e.to_string().starts_with("x.snap:"), "{}", e);
        }
    }
}

#[test]
fn huge_ticks_neither_hang_nor_overflow() {
    let top = parse_topology("t.top", "2\nN1 5\nN2 0\nN1 N2\nN2 N1").unwrap();
    let script = parse_events(
        "t.events",
        "tick 18446744073709551615\nsend N1 N2 1\nsnapshot N1\ntick 18446744073709551615\n",
        &top.topology,
    )
    .unwrap();
    let mut sim = Simulator::new(
        Arc::new(top.topology),
        TokenModel,
        top.initial,
        Config::default(),
    )
    .unwrap();
    sim.run_script(&script).unwrap();
    let run = sim.finish().unwrap();
    assert_eq!(run.snapshots.len(), 1);
    assert!(run.verify(&TokenModel).is_empty());
}
