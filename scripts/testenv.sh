#!/usr/bin/env bash
# Puts pinned etcd, kube-apiserver, kube-controller-manager and consul binaries into a
# cache outside the repository, building them from their Go modules (nothing else ships
# them to this kind of machine). Idempotent: a warm run only checks the binaries.
#
#   scripts/testenv.sh            install what is missing, print the bin directory
#   scripts/testenv.sh --check    exit 1 (one line) when something is missing
#
# Why a wrapper module per binary: `go install mod/cmd@v` refuses modules whose go.mod
# has `replace` directives, and kubernetes and consul both have them (local staging
# folders). A throwaway module that requires the upstream module and replaces each local
# path with the published submodule builds the very same code.
set -euo pipefail

# K8S_VERSION, ETCD_VERSION, CONSUL_VERSION, CONSUL_API_VERSION, MOTO_VERSION
. "$(dirname "$0")/versions.sh"

CACHE=${CONCORD_TESTENV_DIR:-$HOME/.cache/concord-testenv}
BIN=$CACHE/bin
WORK=$CACHE/work
LOGS=$CACHE/logs
mkdir -p "$BIN" "$WORK" "$LOGS"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -mod=mod -buildvcs=false"
export GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE)} GOCACHE=${GOCACHE:-$(go env GOCACHE)}

say() { printf 'testenv: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

command -v go >/dev/null || die "go is not installed; the test binaries are built from Go modules"

# have NAME VERSION: the versioned binary exists and is linked into bin/.
have() { [ -x "$CACHE/$1-$2/$1" ] && [ "$(readlink "$BIN/$1" 2>/dev/null)" = "$CACHE/$1-$2/$1" ]; }
link() { ln -sfn "$CACHE/$1-$2/$1" "$BIN/$1"; }

if [ "${1:-}" = "--check" ]; then
  missing=""
  have etcd "$ETCD_VERSION" || missing="$missing etcd@$ETCD_VERSION"
  have consul "$CONSUL_VERSION" || missing="$missing consul@$CONSUL_VERSION"
  have kube-apiserver "$K8S_VERSION" || missing="$missing kube-apiserver@$K8S_VERSION"
  have kube-controller-manager "$K8S_VERSION" || missing="$missing kube-controller-manager@$K8S_VERSION"
  [ -x "$BIN/moto_server" ] || missing="$missing moto_server@$MOTO_VERSION"
  [ -z "$missing" ] || die "missing in $BIN:$missing (run scripts/testenv.sh)"
  echo "$BIN"; exit 0
fi

# run_logged NAME CMD...: runs a build step, keeps its output in logs/, and on failure
# prints the log's tail and one line naming the step.
run_logged() {
  local name=$1; shift
  if ! "$@" >>"$LOGS/$name.log" 2>&1; then
    tail -n 30 "$LOGS/$name.log" >&2
    die "building $name failed (full log: $LOGS/$name.log)"
  fi
}

build_etcd() {
  have etcd "$ETCD_VERSION" && return
  local started=$SECONDS dir=$WORK/etcd-$ETCD_VERSION
  say "building etcd $ETCD_VERSION (go.etcd.io/etcd/server/v3)"
  rm -rf "$dir"; mkdir -p "$dir" "$CACHE/etcd-$ETCD_VERSION"; cd "$dir"
  : >"$LOGS/etcd.log"
  run_logged etcd go mod init concord.local/testenv/etcd
  run_logged etcd go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  run_logged etcd go build -o "$CACHE/etcd-$ETCD_VERSION/etcd" go.etcd.io/etcd/server/v3
  link etcd "$ETCD_VERSION"
  say "etcd done in $((SECONDS - started))s"
}

build_consul() {
  have consul "$CONSUL_VERSION" && return
  local started=$SECONDS dir=$WORK/consul-$CONSUL_VERSION gomod
  say "building consul $CONSUL_VERSION (github.com/hashicorp/consul)"
  rm -rf "$dir"; mkdir -p "$dir" "$CACHE/consul-$CONSUL_VERSION"; cd "$dir"
  : >"$LOGS/consul.log"
  run_logged consul go mod init concord.local/testenv/consul
  gomod=$(go mod download -json "github.com/hashicorp/consul@$CONSUL_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$gomod" ] || die "could not download github.com/hashicorp/consul@$CONSUL_VERSION"
  # Keep upstream's excludes (go-msgpack 1.1.5/1.1.6 break Raft) and every replace that
  # points at a published module; local-path replaces are dropped so the require lines
  # (published submodules) stand.
  awk '/^exclude \(/{e=1;next} e&&/^\)/{e=0} e{print "exclude " $1 " " $2} /^exclude [^(]/{print}' "$gomod" >>go.mod
  awk '/^replace \(/{r=1;next} r&&/^\)/{r=0} (r||/^replace [^(]/)&&/=>/{sub(/^replace /,""); if ($NF !~ /^\./ && $(NF-1) !~ /^\./) print "replace " $0}' "$gomod" >>go.mod
  run_logged consul go get -tool "github.com/hashicorp/consul@$CONSUL_VERSION"
  run_logged consul go get "github.com/hashicorp/consul/api@$CONSUL_API_VERSION"
  run_logged consul go build -o "$CACHE/consul-$CONSUL_VERSION/consul" github.com/hashicorp/consul
  link consul "$CONSUL_VERSION"
  say "consul done in $((SECONDS - started))s"
}

build_kubernetes() {
  if have kube-apiserver "$K8S_VERSION" && have kube-controller-manager "$K8S_VERSION"; then return; fi
  local started=$SECONDS dir=$WORK/kubernetes-$K8S_VERSION gomod minor staging m
  say "building kube-apiserver and kube-controller-manager $K8S_VERSION (k8s.io/kubernetes)"
  rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
  : >"$LOGS/kubernetes.log"
  run_logged kubernetes go mod init concord.local/testenv/kubernetes
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
  # Each staging module k8s.io/<m> of kubernetes v1.X.Y is published as k8s.io/<m> v0.X.Y.
  staging="v0.${K8S_VERSION#v1.}"
  for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$gomod"); do
    go mod edit -replace="$m=$m@$staging"
  done
  run_logged kubernetes go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local v=k8s.io/component-base/version
  local ldflags="-X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
  for m in kube-apiserver kube-controller-manager; do
    mkdir -p "$CACHE/$m-$K8S_VERSION"
    run_logged kubernetes go build -ldflags "$ldflags" -o "$CACHE/$m-$K8S_VERSION/$m" "k8s.io/kubernetes/cmd/$m"
    link "$m" "$K8S_VERSION"
  done
  say "kubernetes done in $((SECONDS - started))s"
}

install_moto() {
  local venv=$CACHE/moto-$MOTO_VERSION
  if [ -x "$venv/bin/moto_server" ] && [ "$(readlink "$BIN/moto_server" 2>/dev/null)" = "$venv/bin/moto_server" ]; then return; fi
  say "installing moto[server] $MOTO_VERSION (PyPI) for the S3 snapshot tests"
  command -v python3 >/dev/null || die "python3 is not installed; the S3 snapshot tests need it for moto"
  rm -rf "$venv"
  : >"$LOGS/moto.log"
  run_logged moto python3 -m venv "$venv"
  run_logged moto "$venv/bin/pip" install --quiet "moto[server]==$MOTO_VERSION"
  ln -sfn "$venv/bin/moto_server" "$BIN/moto_server"
}

# The fault suite (tests/faults.rs, testenv/src/netns.rs) makes test hosts with `ip netns`
# and partitions them with iptables: Debian's iproute2 and iptables, installed once.
install_net_tools() {
  command -v ip >/dev/null && command -v iptables >/dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's iproute2 and iptables (network-namespace test hosts)"
    : >"$LOGS/apt-net.log"
    run_logged apt-net apt-get update -qq
    DEBIAN_FRONTEND=noninteractive run_logged apt-net apt-get install -y -qq --no-install-recommends iproute2 iptables
  else
    say "ip/iptables missing and cannot install them (not root or no apt-get): the fault suite will fail"
  fi
}

# nginx and haproxy check the configs rendered from templates/ (tests/render_cli.rs runs
# `nginx -t` and `haproxy -c`); Debian's packages, installed once when we may.
install_config_checkers() {
  command -v nginx >/dev/null && command -v haproxy >/dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's nginx-light and haproxy (config checks of the rendered templates)"
    : >"$LOGS/apt.log"
    run_logged apt apt-get update -qq
    DEBIAN_FRONTEND=noninteractive run_logged apt apt-get install -y -qq --no-install-recommends nginx-light haproxy
  else
    say "nginx/haproxy missing and cannot install them (not root or no apt-get): their config checks will be skipped"
  fi
}

build_etcd
build_consul
build_kubernetes
install_moto
install_config_checkers
install_net_tools
echo "$BIN"
