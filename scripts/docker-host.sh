#!/usr/bin/env bash
# Makes a Docker engine available on this machine for the kind e2e, idempotently:
#   1. installs Debian's docker.io when dockerd is missing (as root, apt-get);
#   2. on hosts whose capability bounding set lacks CAP_SYS_RESOURCE (some VMs: `docker run
#      --privileged` then fails with "runc: unable to apply caps"), registers a small runc
#      wrapper as dockerd's default runtime that drops that one capability from what a
#      container asks for (kind's nodes run privileged);
#   3. starts dockerd when it is not answering.
# On a machine where Docker already works it changes nothing. Exit 1 with one line when
# Docker cannot be made to run here.
#
#   scripts/docker-host.sh           ensure a running engine; prints nothing else on success
#   scripts/docker-host.sh --check   exit 1 (one line) when no engine answers
set -euo pipefail

say() { printf 'docker-host: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# Debian's client matches Debian's daemon (API 1.41); a newer client elsewhere on PATH
# negotiates down, but keep the pair that was tested.
export PATH=/usr/bin:/usr/sbin:$PATH
LOG=${CONCORD_DOCKERD_LOG:-/var/log/concord-dockerd.log}

engine_up() { timeout 20 docker info >/dev/null 2>&1; }

if [ "${1:-}" = "--check" ]; then
  engine_up || die "no Docker engine answers (run scripts/docker-host.sh)"
  exit 0
fi
# needs_wrapper: this host's capability bounding set lacks CAP_SYS_RESOURCE (bit 24).
needs_wrapper() {
  local capbnd; capbnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  [ -n "$capbnd" ] && [ $(( 0x$capbnd >> 24 & 1 )) -eq 0 ]
}
if engine_up; then
  if needs_wrapper && [ "$(docker info --format '{{.DefaultRuntime}}' 2>/dev/null)" != concord-runc ]; then
    die "dockerd runs without the runc wrapper this host needs for privileged containers (no CAP_SYS_RESOURCE); stop dockerd and run scripts/docker-host.sh again"
  fi
  exit 0
fi

[ "$(id -u)" = 0 ] || die "Docker is not running and starting it needs root"

if ! command -v dockerd >/dev/null; then
  command -v apt-get >/dev/null || die "dockerd is missing and there is no apt-get to install Debian's docker.io"
  say "installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends docker.io iptables >/dev/null 2>&1 \
    || die "apt-get install docker.io was refused or failed"
fi

daemon_json=/etc/docker/daemon.json
if needs_wrapper; then
  wrapper=/usr/local/libexec/concord/runc-nosysresource
  mkdir -p "$(dirname "$wrapper")" /etc/docker
  command -v jq >/dev/null || { apt-get install -y -qq jq >/dev/null 2>&1 || die "jq is needed for the runc wrapper and could not be installed"; }
  cat >"$wrapper" <<'WRAP'
#!/bin/sh
# Installed by concord's scripts/docker-host.sh: this host cannot grant CAP_SYS_RESOURCE,
# so it is removed from what a container's process asks for, then the real runc runs.
strip() { # strip FILE: drop CAP_SYS_RESOURCE from every capability set in FILE
  [ -f "$1" ] || return 0
  jq 'if .process then .process.capabilities |= (if . then with_entries(.value |= map(select(. != "CAP_SYS_RESOURCE"))) else . end)
      else (.capabilities |= (if . then with_entries(.value |= map(select(. != "CAP_SYS_RESOURCE"))) else . end)) end' "$1" >"$1.concord" \
    && mv "$1.concord" "$1"
}
bundle=""; process=""; cmd=""; prev=""
for a in "$@"; do
  case "$prev" in --bundle|-b) bundle=$a ;; --process|-p) process=$a ;; esac
  case "$a" in create|run|exec) [ -z "$cmd" ] && cmd=$a ;; --bundle=*) bundle=${a#--bundle=} ;; --process=*) process=${a#--process=} ;; esac
  prev=$a
done
case "$cmd" in
  create|run) strip "${bundle:-.}/config.json" ;;
  exec) [ -n "$process" ] && strip "$process" ;;
esac
exec /usr/sbin/runc "$@"
WRAP
  chmod 755 "$wrapper"
  want="{\"runtimes\":{\"concord-runc\":{\"path\":\"$wrapper\"}},\"default-runtime\":\"concord-runc\"}"
  if [ ! -f "$daemon_json" ] || ! jq -e '."default-runtime" == "concord-runc"' "$daemon_json" >/dev/null 2>&1; then
    if [ -f "$daemon_json" ]; then
      jq --argjson w "$want" '. * $w' "$daemon_json" >"$daemon_json.new" && mv "$daemon_json.new" "$daemon_json"
    else
      printf '%s\n' "$want" >"$daemon_json"
    fi
    say "this host lacks CAP_SYS_RESOURCE: dockerd uses the runc wrapper $wrapper"
  fi
fi

say "starting dockerd (log: $LOG)"
# Detached from this shell and its job control; it outlives the script on purpose.
setsid dockerd >>"$LOG" 2>&1 </dev/null &
for _ in $(seq 1 60); do engine_up && exit 0; sleep 1; done
tail -n 20 "$LOG" >&2 || true
die "dockerd did not answer within 60 s (log: $LOG)"
