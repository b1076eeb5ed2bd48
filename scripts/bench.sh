#!/usr/bin/env bash
# Benchmarks livekit-recorder against a replica of the original ("seed") GStreamer pipeline on the
# busy demo page: CPU of everything a recording runs, frames delivered, duplicated and dropped
# frames, A/V offset and drift, bitrate, encoder quality (SSIM at equal bitrate on identical
# frames), start/stop latency, reservation ack latency and the idle daemon; and the egress worker's
# StartEgress claim latency (idle), claim-to-response latency and StartEgress-to-ACTIVE time
# (tests/egress_bench.rs, an ignored test built here with cargo in the profile of the binary).
#
#   bash scripts/bench.sh [path/to/livekit-recorder]      (default target/debug/livekit-recorder)
#
# Environment: BENCH_SECONDS (measured window per recording, default 30), BENCH_ONLY (comma list
# of ours720,seed720,ours1080,seed1080,service,egress,quality; default all), BENCH_QUIET_LOAD (1-min
# load average to wait for before each measured run, default 0.6), BENCH_QUIET_MAX (longest wait
# for it, seconds, default 180), BENCH_RESERVATIONS (default 300), BENCH_EGRESS_N (egresses
# recorded one after another, default 5), BENCH_EGRESS_SECONDS (recorded per egress after ACTIVE,
# default 3), BENCH_EGRESS_CLAIMS (idle claims, default 50), BENCH_KEEP=1 (keep the temp dir).
# Prints one markdown table and writes it to out/bench.md; exits non-zero if a run failed.
# The work is done by scripts/bench/bench.py; it cleans up every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/livekit-recorder}"

missing=()
for tool in python3 ffmpeg ffprobe gst-launch-1.0 Xvfb pulseaudio pactl redis-server stdbuf; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -ne 0 ]; then
  echo "bench: missing tools: ${missing[*]} (run: bash deploy/install-deps.sh)" >&2
  exit 2
fi
if ! python3 -c 'import redis' >/dev/null 2>&1; then
  echo "bench: installing the Python redis client ..." >&2
  python3 -m pip install --quiet redis >&2
fi
if [ ! -x "$bin" ]; then
  echo "bench: no recorder binary at $bin (build it first: cargo build)" >&2
  exit 2
fi

# The egress rows run tests/egress_bench.rs; build it now, before anything is measured (cargo also
# builds the livekit-recorder binary it runs, in the same profile).
only=",${BENCH_ONLY:-egress},"
only="${only// /}"
if [[ "$only" == *,egress,* ]]; then
  if ! command -v cargo >/dev/null 2>&1; then
    echo "bench: the egress rows need cargo (or leave egress out of BENCH_ONLY)" >&2
    exit 2
  fi
  profile=()
  case "$bin" in */release/*) profile=(--release) ;; esac
  echo "bench: building tests/egress_bench.rs ..." >&2
  cargo test --locked "${profile[@]}" --no-run --test egress_bench >&2
  BENCH_EGRESS_TEST="$(cargo test --locked "${profile[@]}" --no-run --test egress_bench \
    --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "egress_bench" \
            and m.get("executable"):
        print(m["executable"])
')"
  if [ -z "$BENCH_EGRESS_TEST" ]; then
    echo "bench: could not find the egress bench executable" >&2
    exit 2
  fi
  export BENCH_EGRESS_TEST
fi
mkdir -p out
# exec: signals (Ctrl-C, kill) reach the Python process directly; it stops what it started.
exec python3 scripts/bench/bench.py "$bin"
