#!/usr/bin/env bash
# The built-in templates as the recorder serves them: each layout of the legacy recorder page
# (`{base}/#/{layout}?url=&token=`) and of the egress page (`.../egress.html?layout=&token=&url=`,
# the address form livekit egress uses) loads in Chromium and shows its errors
# (web/tests/smoke.mjs against `livekit-recorder serve-templates`).
set -euo pipefail
bin="${1:-target/debug/livekit-recorder}"
cd "$(dirname "$0")/.."
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve-templates --listen "127.0.0.1:$port" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
# Same paths as templates::base_url() and templates::egress_base_url().
cd web && npm run --silent smoke -- "http://127.0.0.1:$port/#" "http://127.0.0.1:$port/egress.html"
