# livekit-recorder: `make demo` records the bundled demo page to out/demo.mp4; `make test` runs
# every test. Both install missing system packages first (deploy/install-deps.sh).
CARGO ?= cargo

.PHONY: all deps build release demo test test-unit test-integration test-web test-packaging lint fmt web clean

all: build

deps:
	bash deploy/install-deps.sh

build: deps
	$(CARGO) build --locked --all-targets

release: deps
	$(CARGO) build --locked --release

demo: deps
	$(CARGO) build --locked
	bash scripts/demo.sh target/debug/livekit-recorder

# Build everything first: recordings must never run beside a compiler on 2 cores.
test: deps build lint test-unit test-integration test-web test-packaging

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

test-unit:
	$(CARGO) test --locked --lib --bins

# Recording tests run one at a time: each has its own display, audio server and ports, but two
# 720p encodes do not fit on 2 cores.
test-integration:
	$(CARGO) test --locked --tests -- --test-threads=1

web:
	cd web && npm ci --no-audit --no-fund && npm run build

test-web: web
	cd web && npm test && npm run smoke

test-packaging:
	bash tests/packaging.sh

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
	rm -rf out web/dist web/node_modules
