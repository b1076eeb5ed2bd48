#!/usr/bin/env bash
# Benchmarks livekit-recorder against a replica of the original ("seed") GStreamer pipeline on the
# busy demo page and on production-like pages (heavy: a canvas/CSS animation stress page; grid4,
# grid9: a room grid of 4 / 9 looping 720p30 videos with sound, half VP8+Opus, half H.264+AAC,
# generated with ffmpeg on the first run and cached in out/bench-media/): CPU of everything a
# recording runs (in total and by process: Chromium renderer, GPU, browser, other; X server;
# PulseAudio; recorder or gst-launch), frames delivered, gaps, duplicated and dropped
# frames, A/V offset and drift, bitrate, encoder quality (SSIM at equal bitrate on identical
# frames), start/stop latency, reservation ack latency and the idle daemon; and the egress worker's
# StartEgress claim latency (idle), claim-to-response latency and StartEgress-to-ACTIVE time
# (tests/egress_bench.rs, an ignored test built here with cargo in the profile of the binary).
#
#   bash scripts/bench.sh [path/to/livekit-recorder]      (default target/debug/livekit-recorder)
#
# Environment: BENCH_SECONDS (measured window per recording, default 30), BENCH_PAGE_SECONDS
# (window of the heavy/grid rows, default 20 or BENCH_SECONDS if less: keeps the whole run near
# 20-25 min on 2 cores), BENCH_PAGE_WARMUP (page rows: seconds recorded before the window, default
# 3), BENCH_ONLY (comma list of ours720,seed720,ours1080,seed1080, ours720-heavy,seed720-heavy,
# ours720-grid4,seed720-grid4,ours720-grid9,seed720-grid9, the same with 1080, xvfb720,
# xvfb720-heavy, ... (ours forced onto Xvfb: by default on the demo and heavy pages), service,
# egress,quality; default all), BENCH_QUIET_LOAD (1-min load average to wait for before each measured run,
# default 0.6), BENCH_QUIET_BUSY (or until the whole machine used fewer cores than this over 5 s,
# default 0.25; 0 = the load average only), BENCH_QUIET_MAX (longest wait for either, seconds,
# default 180), BENCH_RESERVATIONS (default 300), BENCH_EGRESS_N (egresses
# recorded one after another, default 5), BENCH_EGRESS_SECONDS (recorded per egress after ACTIVE,
# default 3), BENCH_EGRESS_CLAIMS (idle claims, default 50), BENCH_KEEP=1 (keep the temp dir).
# Prints one markdown table (and a "capacity" line per size: cores per recording = the largest CPU
# among the ours rows of that size) and writes it to out/bench.md; exits non-zero if a run failed.
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
