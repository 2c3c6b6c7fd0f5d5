# The two commands of the README:
#   make up    installs what is missing, builds, and runs `hearth up`
#   make test  runs every check and test, as CI does
.PHONY: up test build web openapi setup bench

ARGS ?=

setup:
	scripts/setup.sh

# The web console: npm ci, then a type check against docs/openapi.json and a Vite build
# into web/dist, which the manager embeds (build it before cargo builds hearth).
web: setup
	cd web && npm ci --no-audit --no-fund && npm run build

build: setup web
	cargo build --release --locked -p hearth
	cargo build --release --locked --target x86_64-unknown-linux-musl -p hearth-guest

up: build
	./target/release/hearth up $(ARGS)

test:
	scripts/test.sh

# The benchmarks of PRODUCT.md (real guests; prints ratios; not part of `make test`).
bench: setup
	cargo build --release --locked --target x86_64-unknown-linux-musl -p hearth-guest
	cargo run --release --locked -p hearth-bench

# Regenerates the committed OpenAPI document after an API change.
openapi:
	cargo run -q -p hearth -- openapi > docs/openapi.json
