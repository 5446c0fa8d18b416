//! `cairn bench --quick` runs end to end and produces every figure, so the
//! harness cannot rot. No timing is asserted: only that each variant and each
//! state size was measured, that control counts are exact (one marker per
//! channel per snapshot, no frame resent on loopback) and that every
//! snapshot conserved the money.

use serde_json::Value;

/// Runs `cairn bench --quick --json` with `more` arguments; it must succeed.
fn quick_bench(more: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["bench", "--quick", "--json"])
        .args(more)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cairn bench --quick {more:?} failed:\n{stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn quick_bench_produces_every_figure() {
    let report = quick_bench(&[]);
    let runs = report["runs"].as_array().unwrap();
    let names: Vec<&str> = runs
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "raw",
            "off",
            "off-insecure",
            "cl-1s",
            "cl-100ms",
            "cl-100ms-overtake",
            "cl-100ms-insecure",
            "stw-100ms",
            "aligned-100ms"
        ]
    );
    // What TLS costs: each secure variant with an insecure twin has its ratio.
    for name in ["off", "cl-100ms"] {
        let r = runs.iter().find(|r| r["variant"] == name).unwrap();
        assert!(r["vs_insecure"].as_f64().is_some_and(|v| v > 0.0), "{r}");
    }
    for r in runs {
        assert!(r["throughput"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["vs_raw"].is_number() && r["vs_off"].is_number(), "{r}");
        assert!(r["longest_pause_ms"].is_number(), "{r}");
        assert_eq!(r["frames_resent"], 0, "{r}");
        if r["variant"] == "raw" {
            assert!(r["hop_p50_us"].is_number(), "{r}");
        } else if r["variant"] != "off" && r["variant"] != "off-insecure" {
            for k in ["latency_p50_ms", "latency_p99_ms", "floor_ms"] {
                assert!(r[k].is_number(), "{k} missing: {r}");
            }
            assert_eq!(r["markers_exact"], true, "{r}");
            assert_eq!(
                r["markers_per_snapshot"].as_f64(),
                r["channels"].as_f64(),
                "{r}"
            );
            assert!(r["snapshots"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(r["durable"], r["snapshots"], "{r}");
            assert_eq!(r["conserved"], r["durable"], "{r}");
        }
    }
    let scaling = report["scaling"].as_array().unwrap();
    let rows: Vec<(u64, &str)> = scaling
        .iter()
        .map(|s| {
            (
                s["state_bytes"].as_u64().unwrap(),
                s["storage"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [(1 << 10, "chunks"), (1 << 20, "chunks"), (1 << 20, "whole")]
    );
    for s in scaling {
        for k in [
            "latency_p50_ms",
            "floor_ms",
            "longest_pause_ms",
            "idle_pause_ms",
            "recovery_ms",
            "read_ms",
            "written_share",
            "changed_share",
            "later_pause_ms",
        ] {
            assert!(s[k].is_number(), "{k} missing: {s}");
        }
        assert_eq!(s["conserved"], 1, "{s}");
        assert!(s["stored_bytes"].as_u64().unwrap() >= 4 * s["state_bytes"].as_u64().unwrap());
    }
    let paired = report["paired"].as_array().unwrap();
    assert_eq!(paired.len(), 1);
    assert!(
        paired[0]["throughput_vs_off"].as_f64().unwrap() > 0.0,
        "{paired:?}"
    );
    for r in runs {
        assert!(r["cpu_ns_per_msg"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(report["machine"]["cpus"].as_u64().unwrap() >= 1);
}

/// Invariant: `--only` measures what it names and exits 0 when nothing
/// failed. Without the raw baseline there is no floor to compare with, and
/// the report says so (null) instead of failing the run.
#[test]
fn only_without_the_raw_baseline_succeeds_without_a_floor() {
    let report = quick_bench(&["--only", "cl-1s"]);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{report}");
    let r = &runs[0];
    assert_eq!(r["variant"], "cl-1s");
    assert!(r["latency_p50_ms"].is_number(), "{r}");
    assert!(
        r["floor_ms"].is_null(),
        "a floor without the raw baseline: {r}"
    );
    assert_eq!(r["markers_exact"], true, "{r}");
    assert_eq!(r["conserved"], r["durable"], "{r}");
}
