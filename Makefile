# concord's two commands, and the pieces they are made of.
#   make demo   local control plane + 3-server Consul + the controller, examples applied
#   make test   the whole test suite (what .ci/run runs)
# Build outputs and the test servers live outside the repository, cached per machine.
CACHE ?= $(HOME)/.cache/concord
export CARGO_TARGET_DIR ?= $(CACHE)/target
export CARGO_TERM_COLOR ?= never

.PHONY: test demo testenv lint unit crds e2e-kind image

# The cargo suite, then the kind e2e (real pods; needs Docker, which it installs and
# starts). Both run even when the first fails; the target fails when either did.
test: testenv lint
	@cargo test --workspace --no-fail-fast; cargo=$$?; \
	scripts/e2e-kind.sh; e2e=$$?; \
	[ $$cargo -eq 0 ] && [ $$e2e -eq 0 ]

demo: testenv
	cargo build --bin concord
	cargo build -q -p testenv --bin concord-demo
	$(CARGO_TARGET_DIR)/debug/concord-demo --concord $(CARGO_TARGET_DIR)/debug/concord --examples examples

# Builds (once per machine) etcd, kube-apiserver, kube-controller-manager, consul and helm.
testenv:
	scripts/testenv.sh
	scripts/helm.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --workspace --lib --bins

# Regenerates crds/ and the chart's CRDs from the Rust types.
crds:
	cargo run -q --bin concord -- crds --write crds --write charts/concord/crds

# The container image (Dockerfile: static musl binary on distroless, non-root), for a
# machine with a registry; offline, scripts/kind-images.sh builds concord:e2e instead.
image:
	docker build -t concord:dev .

# kind e2e: Docker (installed and started when missing), images built offline, 3-node
# kind cluster, helm install, checks with real pods, faults, teardown (KEEP=1 keeps the
# cluster). See scripts/e2e-kind.sh; the images alone: scripts/kind-images.sh.
e2e-kind: testenv
	scripts/e2e-kind.sh
