#!/usr/bin/env bash
# Builds every image the kind e2e needs, offline: no container registry is reachable from
# this kind of machine, so each image is made from Debian packages, Go modules and this
# checkout, then kept in the local Docker engine (and the binaries under
# ~/.cache/concord-kind), keyed by the versions in scripts/versions.sh. Idempotent: a
# warm run only checks that the images exist (and rebuilds concord's own image when the
# checkout changed).
#
#   scripts/kind-images.sh            build what is missing; print the image names as KEY=VALUE
#   scripts/kind-images.sh --names    print the image names only (nothing is built)
#
# The images:
#   NODE_IMAGE     the kind node: Debian (debootstrap) + systemd + Debian's containerd/runc/CNI
#                  plugins + kind's base files (from the kind module) + kubeadm/kubelet/kubectl,
#                  with the control-plane images kubeadm expects preloaded into containerd
#                  (kube-apiserver, -controller-manager, -scheduler, -proxy, etcd, CoreDNS,
#                  pause), each built from its Go module (pause: compiled from Kubernetes'
#                  C source).
#   CONSUL_IMAGE   hashicorp/consul:<version>: the chart's default tag, so `helm install`
#                  works unchanged; consul built from its module (scripts/testenv.sh) on a
#                  static busybox (sh, wget and grep for the readiness probe), uid 100.
#   CONSUL_IMAGE_NEXT  the same servers under a second tag: the rolling-upgrade target.
#   BUSYBOX_IMAGE  busybox:<tag> of the chart's `helm test` Pod (values.yaml tests.image).
#   HTTP_IMAGE     a small HTTP workload (busybox httpd on :8080, /healthz for readiness).
#   CONCORD_IMAGE  concord built from this checkout (release, glibc) on a distroless-like
#                  root filesystem: the binary, the C libraries it links, CA certificates,
#                  /etc/passwd with uid 65532; runs non-root on a read-only root filesystem.
#                  (The Dockerfile builds the same image where a registry is reachable.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/versions.sh

CACHE=${CONCORD_KIND_DIR:-$HOME/.cache/concord-kind}
TESTENV=${CONCORD_TESTENV_DIR:-$HOME/.cache/concord-testenv}
LOGS=$CACHE/logs
WORK=$CACHE/work
mkdir -p "$CACHE/bin" "$LOGS" "$WORK"
export PATH=/usr/bin:/usr/sbin:$CACHE/bin:$PATH
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -mod=mod -buildvcs=false"
export GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE 2>/dev/null || echo "$HOME/go/pkg/mod")}
export GOCACHE=${GOCACHE:-$(go env GOCACHE 2>/dev/null || echo "$HOME/.cache/go-build")}

R=r$KIND_IMAGES_REV
NODE_IMAGE=concord.local/kind-node:$K8S_VERSION-$R
BASE_IMAGE=concord.local/kind-base:$NODE_SUITE-$R
CONSUL_IMAGE=hashicorp/consul:${CONSUL_VERSION#v}
CONSUL_IMAGE_NEXT=hashicorp/consul:${CONSUL_VERSION#v}-rebuild
BUSYBOX_IMAGE=$(sed -n 's/^[[:space:]]*image:[[:space:]]*\(busybox:[^[:space:]]*\).*/\1/p' charts/concord/values.yaml | head -n 1)
HTTP_IMAGE=concord.local/e2e-http:$R
CONCORD_IMAGE=concord:e2e

names() {
  printf '%s\n' "NODE_IMAGE=$NODE_IMAGE" "CONSUL_IMAGE=$CONSUL_IMAGE" "CONSUL_IMAGE_NEXT=$CONSUL_IMAGE_NEXT" \
    "BUSYBOX_IMAGE=$BUSYBOX_IMAGE" "HTTP_IMAGE=$HTTP_IMAGE" "CONCORD_IMAGE=$CONCORD_IMAGE" \
    "KIND=$CACHE/bin/kind" "KUBECTL=$CACHE/bin/kubectl"
}
if [ "${1:-}" = "--names" ]; then names; exit 0; fi

say() { printf 'kind-images: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
[ -n "$BUSYBOX_IMAGE" ] || die "cannot read the busybox tests.image from charts/concord/values.yaml"
for tool in go gcc docker; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
docker info >/dev/null 2>&1 || die "no Docker engine answers (scripts/docker-host.sh starts one)"

# run_logged NAME CMD...: a build step whose output goes to logs/NAME.log; on failure the
# log's tail and one line naming the step.
run_logged() {
  local name=$1; shift
  if ! "$@" >>"$LOGS/$name.log" 2>&1; then
    tail -n 30 "$LOGS/$name.log" >&2
    die "building $name failed (full log: $LOGS/$name.log)"
  fi
}
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
# from_rootfs DIR TAG [--change ...]: a one-layer image of DIR.
from_rootfs() {
  local dir=$1 tag=$2; shift 2
  tar --numeric-owner -C "$dir" -c . | docker import "$@" - "$tag" >/dev/null
}
# apt_ensure PKG... : Debian packages this script needs on the host.
apt_ensure() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" = 0 ] || die "missing Debian packages ${missing[*]} (install them as root)"
  say "installing Debian's ${missing[*]}"
  : >"$LOGS/apt.log"
  run_logged apt apt-get update -qq
  DEBIAN_FRONTEND=noninteractive run_logged apt apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# --- Go tools: kind and crictl ------------------------------------------------------
go_tool() { # go_tool NAME VERSION PACKAGE
  local name=$1 version=$2 pkg=$3 dest=$CACHE/$1-$2
  if [ ! -x "$dest/$name" ]; then
    say "building $name $version ($pkg)"
    : >"$LOGS/$name.log"
    GOBIN=$dest run_logged "$name" go install -ldflags "-s -w" "$pkg@$version"
  fi
  ln -sfn "$dest/$name" "$CACHE/bin/$name"
}

# --- Kubernetes commands, the same wrapper-module recipe as scripts/testenv.sh -------
K8S_BIN=$CACHE/kubernetes-$K8S_VERSION
K8S_CMDS="kubeadm kubelet kubectl kube-scheduler kube-proxy"
build_kubernetes() {
  local m missing=""
  for m in $K8S_CMDS; do [ -x "$K8S_BIN/$m" ] || missing="$missing $m"; done
  if [ -n "$missing" ]; then
    local started=$SECONDS dir=$WORK/kubernetes-$K8S_VERSION gomod staging minor pkgs=""
    say "building$missing $K8S_VERSION (k8s.io/kubernetes)"
    rm -rf "$dir"; mkdir -p "$dir" "$K8S_BIN"
    : >"$LOGS/kubernetes.log"
    (
      cd "$dir"
      run_logged kubernetes go mod init concord.local/kind/kubernetes
      gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
      [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
      staging="v0.${K8S_VERSION#v1.}"
      for s in $(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$gomod"); do
        go mod edit -replace="$s=$s@$staging"
      done
      for m in $missing; do pkgs="$pkgs k8s.io/kubernetes/cmd/$m@$K8S_VERSION"; done
      # shellcheck disable=SC2086
      run_logged kubernetes go get -tool $pkgs
      minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
      local v=k8s.io/component-base/version
      local ldflags="-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
      for m in $missing; do
        run_logged kubernetes go build -ldflags "$ldflags" -o "$K8S_BIN/$m" "k8s.io/kubernetes/cmd/$m"
      done
    )
    say "kubernetes commands done in $((SECONDS - started))s"
  fi
  ln -sfn "$K8S_BIN/kubectl" "$CACHE/bin/kubectl"
}

build_coredns() {
  local dest=$CACHE/coredns-$COREDNS_VERSION
  [ -x "$dest/coredns" ] && return
  say "building coredns $COREDNS_VERSION (github.com/coredns/coredns)"
  : >"$LOGS/coredns.log"
  GOBIN=$dest run_logged coredns go install -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
}

# pause: Kubernetes' own C source (build/pause/linux/pause.c in the module), static.
build_pause() { # build_pause TAG
  local dest=$CACHE/pause-$1 src
  [ -x "$dest/pause" ] && return
  src=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/build/pause/linux/pause.c
  [ -f "$src" ] || die "no pause.c in k8s.io/kubernetes@$K8S_VERSION"
  mkdir -p "$dest"
  : >"$LOGS/pause.log"
  run_logged pause gcc -Os -Wall -Werror -static -DVERSION="v$1-concord" -o "$dest/pause" "$src"
  strip "$dest/pause"
}

# --- the node's root filesystem and the kind base image ------------------------------
ROOTFS=$CACHE/rootfs-$NODE_SUITE-$R
build_rootfs() {
  [ -f "$ROOTFS/.complete" ] && return
  apt_ensure debootstrap
  local started=$SECONDS tmp=$ROOTFS.tmp kindsrc boot=$CACHE/debootstrap-$NODE_SUITE
  # The packages, once per suite (a recipe change below reuses them).
  if [ ! -f "$boot/.done" ]; then
    say "debootstrap $NODE_SUITE for the kind node (Debian's mirror)"
    rm -rf "$boot"
    : >"$LOGS/debootstrap.log"
    run_logged debootstrap debootstrap --variant=minbase \
      --include=systemd,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,curl,jq,procps,containerd,runc,containernetworking-plugins \
      "$NODE_SUITE" "$boot" "$DEBIAN_MIRROR"
    touch "$boot/.done"
  fi
  rm -rf "$tmp"
  cp -a "$boot" "$tmp"
  rm -f "$tmp/.done"
  # kind's base image files (entrypoint, containerd and kubelet units, sysctls), from the
  # kind module: the same steps as kind's images/base/Dockerfile, on Debian's packages.
  kindsrc=$(go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/images/base/files
  [ -d "$kindsrc" ] || die "no images/base/files in sigs.k8s.io/kind@$KIND_VERSION"
  install -m 0755 "$kindsrc"/usr/local/bin/* "$tmp/usr/local/bin/"
  mkdir -p "$tmp/kind/bin" "$tmp/etc/containerd" "$tmp/etc/default" "$tmp/etc/sysctl.d" \
    "$tmp/etc/systemd/system/kubelet.service.d" "$tmp/etc/kubernetes/manifests" "$tmp/opt/cni"
  install -m 0644 "$kindsrc"/kind/README.txt "$tmp/kind/"
  install -m 0755 "$kindsrc"/kind/bin/* "$tmp/kind/bin/"
  install -m 0644 "$kindsrc"/etc/crictl.yaml "$tmp/etc/"
  install -m 0644 "$kindsrc"/etc/default/* "$tmp/etc/default/"
  install -m 0644 "$kindsrc"/etc/sysctl.d/* "$tmp/etc/sysctl.d/"
  install -m 0644 "$kindsrc"/etc/systemd/system/*.service "$kindsrc"/etc/systemd/system/*.slice "$tmp/etc/systemd/system/"
  install -m 0644 "$kindsrc"/etc/systemd/system/kubelet.service.d/* "$tmp/etc/systemd/system/kubelet.service.d/"
  # This host cannot give pods a negative OOM score (no CAP_SYS_RESOURCE in the node):
  # containerd must not try (kind does the same for rootless nodes). Harmless elsewhere.
  sed 's/^\([[:space:]]*restrict_oom_score_adj\)[[:space:]]*=.*/\1 = true/' \
    "$kindsrc"/etc/containerd/config.toml >"$tmp/etc/containerd/config.toml"
  grep -q 'restrict_oom_score_adj = true' "$tmp/etc/containerd/config.toml" || die "kind's containerd config changed shape"
  # Debian's containerd lives in /usr/bin, its CNI plugins in /usr/lib/cni.
  ln -sfn /usr/bin/containerd "$tmp/usr/local/bin/containerd"
  ln -sfn /usr/lib/cni "$tmp/opt/cni/bin"
  ln -sfn /lib/systemd/systemd "$tmp/sbin/init"
  chroot "$tmp" ctr oci spec \
    | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
    | jq 'del(.process.rlimits)' >"$tmp/etc/containerd/cri-base.json"
  find "$tmp/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  rm -f "$tmp"/lib/systemd/system/multi-user.target.wants/* "$tmp"/etc/systemd/system/*.wants/* \
    "$tmp"/lib/systemd/system/local-fs.target.wants/* "$tmp"/lib/systemd/system/sockets.target.wants/*udev* \
    "$tmp"/lib/systemd/system/sockets.target.wants/*initctl* "$tmp"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>"$tmp/etc/systemd/journald.conf"
  run_logged debootstrap chroot "$tmp" systemctl enable kubelet.service containerd.service undo-mount-hacks.service
  run_logged debootstrap chroot "$tmp" systemctl mask systemd-binfmt.service
  rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/* "$tmp"/usr/share/doc "$tmp"/usr/share/man
  touch "$tmp/.complete"
  rm -rf "$ROOTFS"; mv "$tmp" "$ROOTFS"
  say "node rootfs done in $((SECONDS - started))s"
}

build_base_image() {
  have_image "$BASE_IMAGE" && return
  build_rootfs
  say "importing $BASE_IMAGE"
  from_rootfs "$ROOTFS" "$BASE_IMAGE-import" --change 'ENV container=docker' \
    --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]'
  # `docker import --change STOPSIGNAL` is refused; the classic builder sets it.
  local ctx; ctx=$(mktemp -d)
  printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$BASE_IMAGE-import" >"$ctx/Dockerfile"
  DOCKER_BUILDKIT=0 run_logged base docker build -q -t "$BASE_IMAGE" "$ctx"
  rm -rf "$ctx"
  docker rmi "$BASE_IMAGE-import" >/dev/null
}

# --- control-plane images, then the node image ----------------------------------------
# component_image TAG BINARY [NAME]: BINARY as /usr/local/bin/NAME on an empty rootfs.
component_image() {
  local tag=$1 bin=$2 name=${3:-$(basename "$2")} dir
  dir=$(mktemp -d)
  mkdir -p "$dir/usr/local/bin" "$dir/etc" "$dir/tmp"
  chmod 1777 "$dir/tmp"
  cp "$bin" "$dir/usr/local/bin/$name"
  printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$dir/etc/passwd"
  from_rootfs "$dir" "$tag" --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change "ENTRYPOINT [\"/usr/local/bin/$name\"]"
  rm -rf "$dir"
}

build_node_image() {
  have_image "$NODE_IMAGE" && return
  local started=$SECONDS images m repo tag ctr=concord-kind-build
  build_kubernetes; build_coredns; build_base_image
  for m in kube-apiserver kube-controller-manager; do
    [ -x "$TESTENV/bin/$m" ] || die "$TESTENV/bin/$m is missing (scripts/testenv.sh builds it)"
  done
  [ -x "$TESTENV/bin/etcd" ] || die "$TESTENV/bin/etcd is missing (scripts/testenv.sh builds it)"
  # The images kubeadm of this release expects, by name (registry.k8s.io/NAME:TAG).
  images=$("$K8S_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>>"$LOGS/node.log") \
    || die "kubeadm config images list failed (log: $LOGS/node.log)"
  say "component images for kubeadm: $(echo $images)"
  local tags=()
  for img in $images; do
    repo=${img%:*}; tag=${img##*:}
    case "${repo##*/}" in
      kube-apiserver|kube-controller-manager) component_image "$img" "$TESTENV/bin/${repo##*/}" ;;
      kube-scheduler) component_image "$img" "$K8S_BIN/kube-scheduler" ;;
      kube-proxy)
        # kube-proxy programs iptables: it runs on the node's own Debian rootfs.
        local ctx; ctx=$(mktemp -d); cp "$K8S_BIN/kube-proxy" "$ctx/"
        printf 'FROM %s\nCOPY kube-proxy /usr/local/bin/kube-proxy\nENTRYPOINT ["/usr/local/bin/kube-proxy"]\n' "$BASE_IMAGE" >"$ctx/Dockerfile"
        DOCKER_BUILDKIT=0 run_logged node docker build -q -t "$img" "$ctx"; rm -rf "$ctx" ;;
      etcd) component_image "$img" "$TESTENV/bin/etcd" ;;
      coredns)
        [ "$tag" = "$COREDNS_VERSION" ] || die "kubeadm wants coredns $tag, scripts/versions.sh pins $COREDNS_VERSION"
        component_image "$img" "$CACHE/coredns-$COREDNS_VERSION/coredns" coredns ;;
      pause) build_pause "$tag"; component_image "$img" "$CACHE/pause-$tag/pause" pause ;;
      *) die "kubeadm wants an image this script does not know how to build: $img" ;;
    esac
    tags+=("$img")
  done
  say "assembling $NODE_IMAGE"
  docker rm -f "$ctr" >/dev/null 2>&1 || true
  docker run -d --name "$ctr" --entrypoint=sleep --security-opt seccomp=unconfined "$BASE_IMAGE" infinity >/dev/null
  for m in kubeadm kubelet kubectl; do docker cp "$K8S_BIN/$m" "$ctr:/usr/bin/$m"; done
  docker cp "$CACHE/crictl-$CRICTL_VERSION/crictl" "$ctr:/usr/local/bin/crictl"
  docker exec "$ctr" sh -c "echo $K8S_VERSION > /kind/version"
  docker save "${tags[@]}" | docker exec -i "$ctr" sh -c 'cat > /images.tar'
  docker exec "$ctr" bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &
    for i in $(seq 1 30); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && break; sleep 1; done
    ctr -n k8s.io images import --no-unpack --all-platforms /images.tar >/dev/null
    for img in $(ctr -n k8s.io images ls -q); do ctr -n k8s.io images label "$img" io.cri-containerd.pinned=pinned >/dev/null; done
    ctr -n k8s.io images ls -q; rm /images.tar; pkill containerd; sleep 2' >>"$LOGS/node.log" 2>&1 \
    || { docker rm -f "$ctr" >/dev/null; die "preloading images into the node failed (log: $LOGS/node.log)"; }
  docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' "$ctr" "$NODE_IMAGE" >/dev/null
  docker rm -f "$ctr" >/dev/null
  docker rmi "${tags[@]}" >/dev/null 2>&1 || true
  say "node image done in $((SECONDS - started))s"
}

# --- busybox-based images: Consul servers, helm test, HTTP workload -------------------
busybox_rootfs() { # busybox_rootfs DIR: a static busybox with its applets linked
  apt_ensure busybox-static
  mkdir -p "$1/bin" "$1/etc" "$1/tmp" "$1/usr/bin" "$1/sbin"
  chmod 1777 "$1/tmp"
  cp /bin/busybox "$1/bin/busybox"
  for a in $("$1/bin/busybox" --list); do [ -e "$1/bin/$a" ] || ln -s busybox "$1/bin/$a"; done
}

build_consul_images() {
  have_image "$CONSUL_IMAGE" && have_image "$CONSUL_IMAGE_NEXT" && return
  [ -x "$TESTENV/bin/consul" ] || die "$TESTENV/bin/consul is missing (scripts/testenv.sh builds it)"
  local dir; dir=$(mktemp -d)
  busybox_rootfs "$dir"
  cp "$(readlink -f "$TESTENV/bin/consul")" "$dir/bin/consul"
  # uid/gid 100 "consul", as in the official image (the StatefulSet runs as 100:1000).
  printf 'root:x:0:0:root:/root:/bin/sh\nconsul:x:100:1000:consul:/consul:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nconsul:x:1000:consul\nnogroup:x:65534:\n' >"$dir/etc/group"
  mkdir -p "$dir/consul/data" "$dir/consul/config"
  from_rootfs "$dir" "$CONSUL_IMAGE" --change 'ENV PATH=/bin:/usr/bin:/sbin' --change 'USER 100:1000' \
    --change 'ENTRYPOINT ["/bin/consul"]' --change 'CMD ["agent", "-dev", "-client", "0.0.0.0"]'
  docker tag "$CONSUL_IMAGE" "$CONSUL_IMAGE_NEXT"
  rm -rf "$dir"
}

build_busybox_images() {
  if ! have_image "$BUSYBOX_IMAGE"; then
    local dir; dir=$(mktemp -d)
    busybox_rootfs "$dir"
    printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/:/bin/sh\n' >"$dir/etc/passwd"
    from_rootfs "$dir" "$BUSYBOX_IMAGE" --change 'ENV PATH=/bin:/usr/bin:/sbin' --change 'CMD ["sh"]'
    rm -rf "$dir"
  fi
  if ! have_image "$HTTP_IMAGE"; then
    local dir; dir=$(mktemp -d)
    busybox_rootfs "$dir"
    printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/:/bin/sh\n' >"$dir/etc/passwd"
    # The pod's name and IP go into / at start; readiness is GET /healthz (the tests
    # remove that file to make a pod fail readiness). /www is writable by uid 65532.
    mkdir -p "$dir/www"; chown 65532:65532 "$dir/www"
    cat >"$dir/bin/serve" <<'SERVE'
#!/bin/sh
set -eu
echo "${HOSTNAME:-unknown} ${POD_IP:-}" >/www/index.html
echo ok >/www/healthz
[ -f /config/app.conf ] && cp /config/app.conf /www/app.conf
exec httpd -f -v -p "${PORT:-8080}" -h /www
SERVE
    chmod 755 "$dir/bin/serve"
    from_rootfs "$dir" "$HTTP_IMAGE" --change 'ENV PATH=/bin:/usr/bin:/sbin' --change 'USER 65532:65532' \
      --change 'ENTRYPOINT ["/bin/serve"]'
    rm -rf "$dir"
  fi
}

# --- concord, from this checkout -------------------------------------------------------
build_concord_image() {
  local target=${CARGO_TARGET_DIR:-$HOME/.cache/concord/target} bin hash dir lib
  say "building concord (cargo build --release)"
  : >"$LOGS/concord.log"
  CARGO_TARGET_DIR=$target run_logged concord cargo build --release --locked -p concord --bin concord
  bin=$target/release/concord
  hash=$(sha256sum "$bin" | cut -c1-16)
  if [ "$(docker image inspect -f '{{index .Config.Labels "concord.binary-sha256"}}' "$CONCORD_IMAGE" 2>/dev/null)" = "$hash" ]; then
    return
  fi
  dir=$(mktemp -d)
  mkdir -p "$dir/usr/local/bin" "$dir/etc/ssl/certs" "$dir/tmp" "$dir/home/nonroot"
  chmod 1777 "$dir/tmp"
  cp "$bin" "$dir/usr/local/bin/concord"
  # The dynamic loader and every library the binary links, at their own paths.
  for lib in $(ldd "$bin" | awk '/=>/ {print $3} /^[[:space:]]*\// {print $1}'); do
    mkdir -p "$dir$(dirname "$lib")"; cp -L "$lib" "$dir$lib"
  done
  cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
  printf 'hosts: files dns\n' >"$dir/etc/nsswitch.conf"
  from_rootfs "$dir" "$CONCORD_IMAGE" --change 'USER 65532:65532' --change 'EXPOSE 8080' \
    --change "LABEL concord.binary-sha256=$hash" \
    --change 'ENTRYPOINT ["/usr/local/bin/concord"]' --change 'CMD ["controller"]'
  rm -rf "$dir"
  docker run --rm "$CONCORD_IMAGE" --version >/dev/null || die "the concord image does not start"
}

started=$SECONDS
go_tool kind "$KIND_VERSION" sigs.k8s.io/kind
go_tool crictl "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl
build_node_image
build_consul_images
build_busybox_images
build_concord_image
say "all images ready ($((SECONDS - started))s)"
names
