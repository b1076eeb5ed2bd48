# syntax=docker/dockerfile:1
#
# livekit-recorder: Chromium on an X display (Xorg dummy driver, or Xvfb) + PulseAudio, captured with GStreamer, one recording per container.
#
#   docker build -t livekit-recorder .
#   docker run --rm --shm-size=1g -e LIVEKIT_RECORDER_CONFIG="$(cat config.yaml)" livekit-recorder
#
# System packages come from deploy/install-deps.sh, the one list shared with CI and the Makefile.

# The base images are build arguments, so that a local registry or bases bootstrapped with
# mmdebstrap can stand in where the public registry cannot be reached (scripts/image.sh,
# `make image`). WEB_IMAGE needs node and npm, BUILD_IMAGE cargo and a C compiler; both must be
# Debian bookworm based, as RUNTIME_IMAGE is.
ARG WEB_IMAGE=node:20-bookworm-slim
ARG BUILD_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- web: the built-in layout templates (web/), embedded into the binary ----------------------
FROM ${WEB_IMAGE} AS web
# Set to a CA bundle path when the package registries are reached through a TLS-inspecting proxy
# (scripts/image.sh mounts the host's bundle and passes its path).
ARG NODE_EXTRA_CA_CERTS
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# ---- build: compile the release binary --------------------------------------------------------
FROM ${BUILD_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# The crate registry lives where the cache mount below is (the rust images' own CARGO_HOME, set here
# so that a base without it does not unpack every crate's sources into the build's layer).
ENV CARGO_HOME=/usr/local/cargo

# pkg-config and the GStreamer/OpenSSL dev libraries (the `build` profile), in their own layer so a
# source change does not reinstall them.
COPY deploy/install-deps.sh deploy/install-deps.sh
RUN bash deploy/install-deps.sh build \
 && rm -rf /var/lib/apt/lists/*

COPY . .
COPY --from=web /web/dist web/dist
# Cache mounts keep the crate registry and target/ between builds; the binary is copied out of the
# cached target/ so that it lands in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -m 0755 target/release/livekit-recorder /usr/local/bin/livekit-recorder

# ---- runtime ----------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Xorg (dummy driver) and Xvfb, PulseAudio, Chromium, GStreamer plugins, tini and curl (the `runtime` profile).
COPY deploy/install-deps.sh /tmp/deploy/install-deps.sh
RUN bash /tmp/deploy/install-deps.sh runtime \
 && rm -rf /tmp/deploy /var/lib/apt/lists/*

# A non-root user with a writable home (PulseAudio and Chromium keep state there), a writable output
# directory and a writable work directory (recordings are written there before upload).
# /tmp/.X11-unix is made root-owned and sticky so that the X server, running as this user, can put its socket
# there without complaint.
ARG RECORDER_UID=10001
RUN groupadd --system --gid "${RECORDER_UID}" recorder \
 && useradd --system --uid "${RECORDER_UID}" --gid recorder --create-home --home-dir /home/recorder \
      --shell /usr/sbin/nologin recorder \
 && install -d -o recorder -g recorder -m 0750 /out /var/lib/livekit-recorder \
 && install -d -o root -g root -m 1777 /tmp/.X11-unix

COPY --from=build /usr/local/bin/livekit-recorder /usr/local/bin/livekit-recorder

# SERVICE_MODE=1: claim recordings from livekit-server over Redis (the config's `redis:` section).
# The config is a YAML string in LIVEKIT_RECORDER_CONFIG, or a file passed with `--config FILE`.
# HEALTH_PORT only tells the HEALTHCHECK below where to look: keep it equal to the config's
# `health_port` (0 turns the check off, as health_port: 0 turns the server off).
ENV SERVICE_MODE=1 \
    HEALTH_PORT=8080 \
    HOME=/home/recorder

USER ${RECORDER_UID}:${RECORDER_UID}
# The working directory is file_output.local_dir's default: service and egress modes write local
# files under /out only (a request's filepath resolves under it; `..` and paths outside it are
# refused, existing files are never overwritten). Mount a volume there to keep them.
WORKDIR /out

EXPOSE 8080

# The health server answers 200 with the bare status text (starting|available|reserved|recording|
# stopping) on any path.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/bin/sh", "-c", "[ \"${HEALTH_PORT}\" = 0 ] || curl -fsS -o /dev/null \"http://127.0.0.1:${HEALTH_PORT}/healthz\" || exit 1"]

# SIGTERM (docker stop, Kubernetes pod deletion) is the graceful stop: the recording in progress is
# allowed to finish (an End RPC, or the page logging END_RECORDING), its result is published, and the
# recorder then exits 0. Give it the time to do so (docker stop -t, terminationGracePeriodSeconds).
# SIGINT ends the recording now (EOS, file finished, result published); a second SIGINT forces exit.
STOPSIGNAL SIGTERM

# tini is PID 1: it forwards signals to the recorder and reaps the zombies that Chromium's helpers
# and other children leave behind.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/livekit-recorder"]
