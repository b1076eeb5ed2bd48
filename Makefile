# livekit-recorder: `make demo` records the bundled demo page to out/demo.mp4; `make test` runs
# every test. Both install missing system packages first (deploy/install-deps.sh).
CARGO ?= cargo

.PHONY: all deps web build release demo test test-unit test-integration test-web test-packaging lint fmt bench fuzz clean image image-test

all: build

deps:
	bash deploy/install-deps.sh

# The built-in layout templates, embedded into the binary (rebuilt when their sources change).
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/package.json web/package-lock.json web/build.mjs
web/dist/index.html: $(WEB_SOURCES)
	cd web && npm ci --no-audit --no-fund && npm run build

web: web/dist/index.html

build: deps web
	$(CARGO) build --locked --all-targets

release: deps web
	$(CARGO) build --locked --release

demo: deps web
	$(CARGO) build --locked
	bash scripts/demo.sh target/debug/livekit-recorder

# Build everything first: recordings must never run beside a compiler on 2 cores.
test: build lint test-unit test-web test-packaging test-integration

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

test-unit:
	$(CARGO) test --locked --lib --bins

# Recording tests run one at a time: each has its own display, audio server and ports, but two
# encodes at once do not fit on 2 cores.
test-integration:
	$(CARGO) test --locked --no-fail-fast --tests -- --test-threads=1

# Template unit tests (vitest) and browser tests, then both pages (legacy recorder form, egress
# form) in Chromium as the recorder serves them.
test-web: web
	cd web && npm test && npm run test:browser
	bash scripts/smoke-templates.sh target/debug/livekit-recorder

test-packaging:
	bash tests/packaging.sh

# The fuzz targets of src/fuzz.rs (request JSON, config YAML, every protobuf read from Redis) at
# FUZZ_CASES per target; `make test` runs them at 1000 each with the unit tests.
FUZZ_CASES ?= 200000
fuzz:
	FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test --locked --lib fuzz:: -- --test-threads=2

bench: deps web
	bash scripts/bench.sh

fmt:
	$(CARGO) fmt

# The container image from the Dockerfile, with docker or podman (scripts/image.sh says how the
# bases are found); image-test then records a page and serves a reservation in it (tests/image.rs).
image:
	bash scripts/image.sh build

image-test: deps web
	$(CARGO) build --locked --tests
	bash scripts/image.sh test

clean:
	$(CARGO) clean
	rm -rf out web/dist web/node_modules
