#!/usr/bin/env bash
# Puts a pinned helm v3 into the test cache (next to etcd, kube-apiserver and consul),
# built from its Go module: nothing else ships helm to this kind of machine. The chart
# tests (tests/chart.rs) run it for `helm lint` and `helm template`. Idempotent: a warm
# run only checks the binary.
#
#   scripts/helm.sh            install helm if missing, print its path
#   scripts/helm.sh --check    exit 1 (one line) when it is missing
#
# helm's go.mod has no replace directives, so `go install module/cmd@version` works.
# The ldflags are the ones helm's own Makefile sets for a release build: the version
# `helm version` prints, and the default Kubernetes version of `helm template` / `lint`
# (major+1.minor of the client-go helm is built with, as upstream computes it).
set -euo pipefail

# HELM_VERSION
. "$(dirname "$0")/versions.sh"

CACHE=${CONCORD_TESTENV_DIR:-$HOME/.cache/concord-testenv}
BIN=$CACHE/bin
LOGS=$CACHE/logs
DEST=$CACHE/helm-$HELM_VERSION
mkdir -p "$BIN" "$LOGS"

say() { printf 'helm: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

have() { [ -x "$DEST/helm" ] && [ "$(readlink "$BIN/helm" 2>/dev/null)" = "$DEST/helm" ]; }

if [ "${1:-}" = "--check" ]; then
  have || die "missing $BIN/helm ($HELM_VERSION; run scripts/helm.sh)"
  echo "$BIN/helm"; exit 0
fi
if have; then echo "$BIN/helm"; exit 0; fi

command -v go >/dev/null || die "go is not installed; helm is built from its Go module"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -mod=mod -buildvcs=false"
export GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE)} GOCACHE=${GOCACHE:-$(go env GOCACHE)}

started=$SECONDS
say "building helm $HELM_VERSION (helm.sh/helm/v3/cmd/helm)"
: >"$LOGS/helm.log"
gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" 2>>"$LOGS/helm.log" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -f "$gomod" ] || die "could not download helm.sh/helm/v3@$HELM_VERSION (log: $LOGS/helm.log)"
# client-go v0.X.Y  ->  Kubernetes 1.X
k8s_minor=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod")
[ -n "$k8s_minor" ] || die "cannot read the client-go version from $gomod"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
mkdir -p "$DEST"
if ! GOBIN=$DEST go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >>"$LOGS/helm.log" 2>&1; then
  tail -n 30 "$LOGS/helm.log" >&2
  die "building helm failed (full log: $LOGS/helm.log)"
fi
ln -sfn "$DEST/helm" "$BIN/helm"
say "helm done in $((SECONDS - started))s"
echo "$BIN/helm"
