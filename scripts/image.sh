#!/usr/bin/env bash
# Builds the container image from the Dockerfile with docker or podman, whichever is installed
# (docker first when its engine answers), and optionally tests it.
#
#   scripts/image.sh build      # make image
#   scripts/image.sh test       # make image-test: build, then tests/image.rs against the image
#   scripts/image.sh bases      # only bootstrap the local base images (IMAGE_BASES=local)
#
# Settings (environment):
#   IMAGE          the tag to build (default localhost/livekit-recorder:dev)
#   IMAGE_BASES    registry: the Dockerfile's public base images (node, rust, debian);
#                  local: Debian bases bootstrapped here with mmdebstrap and imported, for machines
#                  that cannot reach a public registry (the build base carries this machine's Rust
#                  toolchain). Default: registry with docker, local with podman.
#   ENGINE         docker or podman, to choose.
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-build}"
IMAGE="${IMAGE:-localhost/livekit-recorder:dev}"
RELEASE="${DEBIAN_RELEASE:-bookworm}"
BASE_PREFIX="localhost/livekit-recorder-base"

if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then
    ENGINE=podman
  else
    echo "image: neither a docker engine nor podman is available (deploy/install-deps.sh image installs podman)" >&2
    exit 1
  fi
fi
if [ -z "${IMAGE_BASES:-}" ]; then
  if [ "$ENGINE" = docker ]; then IMAGE_BASES=registry; else IMAGE_BASES=local; fi
fi

# podman on these machines: runc (crun is not installed), explicit limits, the host's network for
# the build's package downloads (Debian, crates.io, npm).
ENGINE_ARGS=()
FORMAT=()
if [ "$ENGINE" = podman ]; then
  ENGINE_ARGS=(--runtime runc)
  # The docker image format: OCI has no SHELL nor HEALTHCHECK.
  FORMAT=(--format docker)
fi
# Open files up to this shell's hard limit (a container cannot raise it); processes 4096 (runc
# refuses higher values here).
nofile=$(ulimit -Hn)
if [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; then nofile=65536; fi
LIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)

have_image() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

# A Debian base from mmdebstrap, imported as `name`; `extra` packages and a customize hook on top,
# then environment variables (KEY=VALUE, one argument each: one `ENV` change holding two
# assignments would make the first variable's value run on into the second).
bootstrap() {
  local name="$1" include="$2" hook="${3:-true}"
  shift 3 || shift $#
  if have_image "$name"; then
    echo "image: base $name present" >&2
    return
  fi
  echo "image: bootstrapping $name with mmdebstrap" >&2
  local tar
  tar="$(mktemp -d)/rootfs.tar"
  mmdebstrap --quiet --variant=minbase --include="$include" \
    --customize-hook="$hook" \
    "$RELEASE" "$tar" \
    "deb http://deb.debian.org/debian $RELEASE main" \
    "deb http://deb.debian.org/debian $RELEASE-updates main" \
    "deb http://deb.debian.org/debian-security $RELEASE-security main"
  local changes=(--change 'CMD ["/bin/bash"]')
  local var
  for var in "$@"; do changes+=(--change "ENV $var"); done
  "$ENGINE" import "${changes[@]}" "$tar" "$name" >/dev/null 2>&1
  rm -rf "$(dirname "$tar")"
}

build_args=()
if [ "$IMAGE_BASES" = local ]; then
  command -v mmdebstrap >/dev/null || bash deploy/install-deps.sh image
  sysroot="$(rustc --print sysroot)"
  runtime_base="$BASE_PREFIX/debian:$RELEASE-slim"
  build_base="$BASE_PREFIX/build:$RELEASE"
  bootstrap "$runtime_base" "ca-certificates"
  # The build base: a C toolchain for the linker and -sys crates, and this machine's Rust
  # toolchain (a rustup toolchain directory is self-contained), Node.js and npm (the web
  # templates; Debian's own Node.js is too old for them).
  node_dir="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")"
  bootstrap "$build_base" "ca-certificates,gcc,libc6-dev,libstdc++6" \
    "mkdir -p \"\$1/usr/local/rust\" \"\$1/usr/local/lib/node_modules\" \
     && cp -a '$sysroot/.' \"\$1/usr/local/rust/\" \
     && cp -a '$(readlink -f "$(command -v node)")' \"\$1/usr/local/bin/node\" \
     && cp -a '$(readlink -f "$node_dir")' \"\$1/usr/local/lib/node_modules/npm\" \
     && ln -s ../lib/node_modules/npm/bin/npm-cli.js \"\$1/usr/local/bin/npm\"" \
    "PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "CARGO_HOME=/usr/local/cargo"
  build_args=(--build-arg "WEB_IMAGE=$build_base" --build-arg "BUILD_IMAGE=$build_base"
    --build-arg "RUNTIME_IMAGE=$runtime_base")
fi

if [ "$what" = bases ]; then
  exit 0
fi

# A host that reaches the registries through a TLS-inspecting proxy trusts it through its CA
# bundle (SSL_CERT_FILE): the build's RUN steps get the same bundle (podman mounts it; docker
# build cannot mount, so there the bases must trust the proxy themselves).
if [ "$ENGINE" = podman ] && [ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ]; then
  build_args+=(--volume "$SSL_CERT_FILE:/etc/ssl/certs/ca-certificates.crt:ro"
    --build-arg NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt)
fi

start=$(date +%s)
echo "image: building $IMAGE with $ENGINE (bases: $IMAGE_BASES)" >&2
"$ENGINE" "${ENGINE_ARGS[@]}" build "${FORMAT[@]}" --network host "${LIMITS[@]}" "${build_args[@]}" \
  -t "$IMAGE" -f Dockerfile .
echo "image: built $IMAGE in $(( $(date +%s) - start )) s" >&2

if [ "$what" = test ]; then
  start=$(date +%s)
  LIVEKIT_RECORDER_IMAGE="$IMAGE" LIVEKIT_RECORDER_ENGINE="$ENGINE" \
    LIVEKIT_RECORDER_ENGINE_ARGS="${ENGINE_ARGS[*]} ${LIMITS[*]}" \
    cargo test --locked --test image -- --ignored --test-threads=1
  echo "image: tested $IMAGE in $(( $(date +%s) - start )) s" >&2
fi
