#!/usr/bin/env bash
# Builds the comparison tools the benchmarks run side by side with concord, from their
# Go modules, into ~/.cache/concord-testenv/bench/ (cached; not part of the test command).
#   consul-template v0.42.1 (needs Go >= 1.26.4)
set -euo pipefail
BENCH_DIR="${CONCORD_BENCH_DIR:-$HOME/.cache/concord-testenv/bench}"
CONSUL_TEMPLATE_VERSION="v0.42.1"
mkdir -p "$BENCH_DIR"
if [[ -x "$BENCH_DIR/consul-template-$CONSUL_TEMPLATE_VERSION" ]]; then
  echo "consul-template $CONSUL_TEMPLATE_VERSION: cached in $BENCH_DIR"
  exit 0
fi
command -v go >/dev/null || { echo "bench-tools: go is required (>= 1.26.4)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-trimpath go install "github.com/hashicorp/consul-template@$CONSUL_TEMPLATE_VERSION"
mv "$tmp/consul-template" "$BENCH_DIR/consul-template-$CONSUL_TEMPLATE_VERSION"
ln -sf "consul-template-$CONSUL_TEMPLATE_VERSION" "$BENCH_DIR/consul-template"
"$BENCH_DIR/consul-template" -version
