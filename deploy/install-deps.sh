#!/usr/bin/env bash
# The one list of system packages livekit-recorder needs, shared by CI (.ci/run), the Makefile and
# the Dockerfile. Idempotent: installs only what is missing, runs `apt-get update` at most once.
#
#   deploy/install-deps.sh            # everything: runtime + build + test servers (CI, developers)
#   deploy/install-deps.sh runtime    # only what the recorder needs at run time (container image)
#   deploy/install-deps.sh build      # runtime + what compiling the crate needs
#   deploy/install-deps.sh image      # what `make image` needs where no docker engine runs: podman
#                                     # (with runc) and mmdebstrap for bootstrapped base images
set -euo pipefail

profile="${1:-all}"

# What a recording runs: X server, audio server, browser, GStreamer with the plugins the pipeline uses.
RUNTIME=(
  ca-certificates
  # The display: Xorg with the dummy video driver runs a mode at the recording's frame rate
  # (src/display.rs); Xvfb is the fallback.
  xserver-xorg-core
  xserver-xorg-video-dummy
  xvfb
  pulseaudio
  pulseaudio-utils
  chromium
  fonts-dejavu-core
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
  gstreamer1.0-x
  gstreamer1.0-pulseaudio
  gstreamer1.0-tools
  # The container image: tini is PID 1 (forwards signals, reaps zombies); curl is its HEALTHCHECK.
  tini
  curl
)
# What compiling the crate needs on top (gstreamer-sys links against these through pkg-config).
BUILD=(
  pkg-config
  libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-dev
  libssl-dev
)
# What the tests and benchmarks start on loopback or use to check files.
TEST=(
  redis-server
  ffmpeg
  nginx
  libnginx-mod-rtmp
  procps
  psmisc
  # xrandr: tests/display.rs reads the display's mode and refresh rate.
  x11-xserver-utils
  # openssl: the certificate of the https Azurite (tests/azure_entra.rs).
  openssl
)

# Building and running the container image without a docker engine (scripts/image.sh).
IMAGE=(
  podman
  buildah
  runc
  uidmap
  mmdebstrap
)

case "$profile" in
  runtime) want=("${RUNTIME[@]}") ;;
  build) want=("${RUNTIME[@]}" "${BUILD[@]}") ;;
  all) want=("${RUNTIME[@]}" "${BUILD[@]}" "${TEST[@]}") ;;
  image) want=("${IMAGE[@]}") ;;
  *) echo "usage: $0 [runtime|build|all|image]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # nginx is only a test server here: never leave the distribution's default site running.
  if [ "$profile" = all ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
else
  echo "install-deps: system packages present" >&2
fi

# The S3 (moto) and Azure (Azurite) test servers are pinned versions that the tests install
# themselves under target/tools (tests/common/storage.rs); the web templates build with the
# machine's node and npm (web/package-lock.json).
