# concord's two commands, and the pieces they are made of.
#   make demo   local control plane + 3-server Consul + the controller, examples applied
#   make test   the whole test suite (what .ci/run runs)
# Build outputs and the test servers live outside the repository, cached per machine.
CACHE ?= $(HOME)/.cache/concord
export CARGO_TARGET_DIR ?= $(CACHE)/target
export CARGO_TERM_COLOR ?= never

.PHONY: test demo testenv lint unit crds e2e-kind image fuzz soak

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

# Fuzzes every target of fuzz/ for FUZZ_SECONDS each (nightly and cargo-fuzz:
# `cargo install cargo-fuzz`), seeded with fuzz/corpus/<target>/ (kept small in the
# repository and replayed by `cargo test --test fuzz_corpus`); what it finds goes to
# $(CACHE)/fuzz-corpus/<target>/. A crash stops the run with its input in
# fuzz/artifacts/<target>/: fix it, then add that file to fuzz/corpus/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = annotations names durations snapshot_locations template_args kv_desired consul_responses
fuzz:
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
		mkdir -p $(CACHE)/fuzz-corpus/$$t && \
		CARGO_TARGET_DIR=$(CACHE)/target-fuzz cargo +nightly fuzz run $$t $(CACHE)/fuzz-corpus/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 || exit 1; \
	done

# Soak: SOAK_MINUTES of endpoint churn with a random fault every round (controller cut
# off from Consul, Consul leader or minority partition on network-namespace test hosts,
# API server hung, reset or restarted, full Consul outage), each round checked like
# tests/faults.rs; prints `SOAK ...` figures per fault at the end. Bounded: no round
# starts after the deadline. Needs root (network namespaces, iptables).
SOAK_MINUTES ?= 60
soak: testenv
	SOAK_MINUTES=$(SOAK_MINUTES) cargo test --test faults soak -- --ignored --nocapture
