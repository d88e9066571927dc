# Every pinned version of what concord's scripts build or install, in one place.
# Sourced by scripts/testenv.sh, scripts/helm.sh and scripts/kind-images.sh; each value
# can be overridden from the environment. Caches are keyed by these versions.

# Test servers (scripts/testenv.sh) — also the Kubernetes release of the kind e2e.
K8S_VERSION=${K8S_VERSION:-v1.33.13}
ETCD_VERSION=${ETCD_VERSION:-v3.5.33}
CONSUL_VERSION=${CONSUL_VERSION:-v1.22.7}
# consul v1.22.7 builds its own in-tree api package, newer than the v1.33.7 its go.mod
# requires; api v1.34.1 (published a week before v1.22.7) has the fields it uses.
CONSUL_API_VERSION=${CONSUL_API_VERSION:-v1.34.1}
# A local S3-compatible server for the snapshot tests (PyPI moto[server], in its own venv).
MOTO_VERSION=${MOTO_VERSION:-5.2.1}
HELM_VERSION=${HELM_VERSION:-v3.22.0}

# kind e2e (scripts/kind-images.sh). kind v0.29.0 fits Kubernetes 1.33 on cgroup v1 and
# Docker 20.10; crictl v1.33.0 is refused by the module proxy, v1.34.0 works.
KIND_VERSION=${KIND_VERSION:-v0.29.0}
CRICTL_VERSION=${CRICTL_VERSION:-v1.34.0}
# The CoreDNS release kubeadm of K8S_VERSION deploys (checked against
# `kubeadm config images list` when the images are built).
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.0}
# Debian release of the kind node's root filesystem (debootstrap from Debian's mirror).
NODE_SUITE=${NODE_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Revision of the image recipes in scripts/kind-images.sh: bump it when a recipe changes,
# so every machine's cached images are rebuilt.
KIND_IMAGES_REV=${KIND_IMAGES_REV:-1}
