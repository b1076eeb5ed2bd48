#!/usr/bin/env bash
# Serves demo/ on a free loopback port and records it for about 10 s to out/demo.mp4.
set -euo pipefail
bin="${1:-target/debug/livekit-recorder}"
seconds="${DEMO_SECONDS:-10}"
cd "$(dirname "$0")/.."
mkdir -p out
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory demo >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done

export LIVEKIT_RECORDER_CONFIG='file_output: {local: true}'
export RECORDING_REQUEST="{\"url\": \"http://127.0.0.1:$port/\", \"filepath\": \"out/demo.mp4\", \"options\": {\"preset\": \"HD_30\"}}"
rm -f out/demo.mp4
log=out/demo.log
echo "recording http://127.0.0.1:$port/ for ${seconds}s to out/demo.mp4 (log: $log) ..." >&2
"$bin" 2>"$log" &
rec=$!
# The seconds count from the first frame: wait until the recorder says it is recording.
for _ in $(seq 300); do
  grep -q "recording id=" "$log" && break
  kill -0 "$rec" 2>/dev/null || break
  sleep 0.1
done
sleep "$seconds"
kill -TERM "$rec" 2>/dev/null || true
status=0
wait "$rec" || status=$?
if [ "$status" -ne 0 ]; then
  cat "$log" >&2
  echo "the recorder failed (exit $status)" >&2
  exit "$status"
fi
if command -v ffprobe >/dev/null; then
  ffprobe -v error -show_entries stream=codec_name,width,height:format=duration -of compact out/demo.mp4 >&2
fi
echo "done: out/demo.mp4" >&2
