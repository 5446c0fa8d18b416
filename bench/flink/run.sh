#!/usr/bin/env bash
# Runs the bank on Apache Flink, the peer BENCHMARKS.md compares Cairn with:
# checkpoints off, aligned every 100 ms and unaligned every 100 ms, in
# interleaved rounds, then prints each run as JSON and a summary.
#
#   bench/flink/run.sh [ROUNDS] [SECONDS]       (default 3 rounds of 20 s)
#
# Needs python3 (to fetch the jars Flink's own PyPI wheel bundles) and a
# JDK 17 (javac, java). The jars are kept in target/flink. Not run in CI.
set -euo pipefail

rounds=${1:-3}
seconds=${2:-20}
version=2.3.0
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${CAIRN_FLINK_CACHE:-$repo/target/flink}
lib=$cache/pyflink/lib

for tool in python3 javac java; do
  command -v "$tool" >/dev/null || { echo "bench/flink/run.sh: $tool is not installed" >&2; exit 1; }
done
if [ ! -f "$lib/flink-dist-$version.jar" ]; then
  mkdir -p "$cache"
  echo "fetching Flink $version's jars (apache-flink-libraries, about 330 MB) into $cache" >&2
  python3 -m pip download --quiet --no-deps "apache-flink-libraries==$version" -d "$cache"
  python3 - "$cache" <<'PY'
import sys, zipfile, pathlib
cache = pathlib.Path(sys.argv[1])
wheel = next(cache.glob("apache_flink_libraries-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("pyflink/lib/") and name.endswith(".jar"):
            z.extract(name, cache)
wheel.unlink()
PY
fi
mkdir -p "$cache/classes"
javac -d "$cache/classes" -cp "$lib/*" "$here/BankJob.java"

out=$cache/results.jsonl
: > "$out"
for round in $(seq 1 "$rounds"); do
  for variant in off aligned unaligned; do
    echo "round $round/$rounds: $variant for ${seconds} s" >&2
    if ! java -cp "$cache/classes:$lib/*" BankJob "$variant" 100 "$seconds" 5 4 1000 \
        > "$cache/run.json" 2> "$cache/run.err"; then
      echo "the $variant run failed; its output:" >&2
      tail -40 "$cache/run.err" >&2
      exit 1
    fi
    sed "s/^{/{\"round\":$round,/" "$cache/run.json" | tee -a "$out"
  done
done

python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
off = {r["round"]: r["records_per_s"] for r in runs if r["variant"] == "off"}
print(f"{'variant':<10} {'records/s':>12} {'of off (paired)':>16} {'CPU ns/record':>14} {'ckpt p50 ms':>12} {'ckpt p99 ms':>12}")
for variant in ["off", "aligned", "unaligned"]:
    rs = [r for r in runs if r["variant"] == variant]
    rate = statistics.median(r["records_per_s"] for r in rs)
    paired = statistics.median(r["records_per_s"] / off[r["round"]] for r in rs)
    cpu = statistics.median(r["cpu_ns_per_record"] for r in rs)
    p50 = [r["checkpoint_p50_ms"] for r in rs if r["checkpoint_p50_ms"] is not None]
    p99 = [r["checkpoint_p99_ms"] for r in rs if r["checkpoint_p99_ms"] is not None]
    show = lambda xs: f"{statistics.median(xs):.0f}" if xs else "-"
    print(f"{variant:<10} {rate:>12,.0f} {paired:>16.3f} {cpu:>14.0f} {show(p50):>12} {show(p99):>12}")
PY
