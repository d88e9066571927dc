#!/usr/bin/env bash
# End to end on kind, for machines with a Docker engine (`make e2e-kind`):
#   build the image → create the 3-node kind cluster (kind-config.yaml) → load the image
#   → helm install (CRDs, 2 controller replicas, the default 3-server DiscoveryCluster)
#   → wait for a Consul leader and a ready controller → helm test → apply examples/
#   → check: Kubernetes → Consul sync, Consul → Kubernetes sync, intentions, KV,
#     a ConfigTemplate (output + rollout), an ACL token, a snapshot, leader failover
#   → tear the cluster down (also on failure; KEEP=1 keeps it for debugging).
#
# Needs docker, kind and kubectl on PATH; helm from PATH or scripts/helm.sh.
# It cannot run where there is no Docker engine (the development machines and CI of this
# repository): it then stops at once with one line saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-concord-e2e}
NS=${NS:-concord}
IMAGE=${IMAGE:-concord:e2e}
TIMEOUT=${TIMEOUT:-600s}

say() { printf 'e2e-kind: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

docker info >/dev/null 2>&1 || { say "no Docker engine (docker info failed): the kind e2e needs Docker; nothing was run"; exit 1; }
for tool in kind kubectl; do command -v "$tool" >/dev/null || die "$tool is not on PATH"; done
HELM=$(command -v helm || scripts/helm.sh)

kc() { kubectl --context "kind-$CLUSTER" "$@"; }
kn() { kc -n "$NS" "$@"; }
# consul CLI inside server 0, as the ACL bootstrap token (management).
consul_cli() { kn exec consul-server-0 -c consul -- env CONSUL_HTTP_TOKEN="$BOOTSTRAP_TOKEN" consul "$@"; }
# until DESCRIPTION SECONDS CMD...: retry CMD every 2 s until it succeeds.
until_ok() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what (not true after ${secs}s)"
    sleep 2
  done
  say "ok: $what"
}

teardown() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    say "dumping state for debugging"
    kn get all,discoveryclusters,kvconfigs,serviceintentions,configtemplates,acltokens,consulsnapshots -o wide >&2 || true
    kn logs deployment/concord --all-containers --tail=100 >&2 || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then say "KEEP=1: cluster $CLUSTER kept (kind delete cluster --name $CLUSTER)"; exit "$rc"; fi
  kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  exit "$rc"
}

say "building $IMAGE"
docker build -t "$IMAGE" .
say "creating kind cluster $CLUSTER (kind-config.yaml)"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 180s
trap teardown EXIT
kind load docker-image "$IMAGE" --name "$CLUSTER"

say "helm install"
"$HELM" --kube-context "kind-$CLUSTER" install concord charts/concord --namespace "$NS" --create-namespace \
  --set image.repository="${IMAGE%%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set discoveryCluster.storage.size=1Gi --wait --timeout "$TIMEOUT"

kn rollout status deployment/concord --timeout "$TIMEOUT"
kn wait discoverycluster/consul --for=condition=Available --timeout "$TIMEOUT"
until_ok "Consul has a Raft leader" 300 sh -c "kubectl --context kind-$CLUSTER -n $NS exec consul-server-0 -c consul -- consul operator raft list-peers -stale | grep -q leader"
until_ok "a controller replica holds the Lease" 120 sh -c "kubectl --context kind-$CLUSTER -n $NS get lease concord-controller -o jsonpath='{.spec.holderIdentity}' | grep -q ."
"$HELM" --kube-context "kind-$CLUSTER" test concord --namespace "$NS" --logs

BOOTSTRAP_TOKEN=$(kn get secret consul-acl-bootstrap -o jsonpath='{.data.token}' | base64 -d)
[ -n "$BOOTSTRAP_TOKEN" ] || die "no ACL bootstrap token in Secret consul-acl-bootstrap"

# A NodePort in front of the servers, for the host port mappings in kind-config.yaml.
kn apply -f - <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: consul-ui}
spec:
  type: NodePort
  selector: {app.kubernetes.io/name: consul, app.kubernetes.io/instance: consul, app.kubernetes.io/component: server}
  ports:
    - {name: http, port: 8500, nodePort: 30850, protocol: TCP}
    - {name: dns-udp, port: 8600, nodePort: 30860, protocol: UDP}
    - {name: dns-tcp, port: 8600, nodePort: 30860, protocol: TCP}
EOF

# L7 intentions (examples/serviceintention-api.yaml) need the destination's protocol to
# be http: an operator declares that once in Consul.
kn exec -i consul-server-0 -c consul -- env CONSUL_HTTP_TOKEN="$BOOTSTRAP_TOKEN" consul config write - <<'EOF'
Kind = "service-defaults"
Name = "api"
Protocol = "http"
EOF

say "applying examples/ (the managed DiscoveryCluster from the chart stands in for examples/discoverycluster.yaml)"
for f in examples/*.yaml; do
  [ "$(basename "$f")" = discoverycluster.yaml ] && continue
  kn apply -f "$f"
done

# Workloads: api (synced to Consul, the ConfigTemplate's upstream) and nginx (rolled).
kn apply -f - <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - {name: api, image: registry.k8s.io/pause:3.10, ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata:
  name: api
  annotations: {concord.io/sync: "true", concord.io/tags: "v1"}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx}
spec:
  replicas: 1
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      containers:
        - {name: nginx, image: registry.k8s.io/pause:3.10}
EOF
kn rollout status deployment/api --timeout "$TIMEOUT"

say "checking Kubernetes → Consul"
until_ok "api has 2 passing instances in Consul" 120 sh -c \
  "test \"\$(kubectl --context kind-$CLUSTER -n $NS exec consul-server-0 -c consul -- \
   wget -qO- --header 'X-Consul-Token: $BOOTSTRAP_TOKEN' 'http://127.0.0.1:8500/v1/health/service/api?passing' | grep -o '\"ServiceID\"' | wc -l)\" = 2"

say "checking Consul → Kubernetes"
consul_cli services register -name=legacy-db -address=10.99.0.10 -port=5432 >/dev/null
until_ok "legacy-db appears as a Kubernetes Service" 120 kn get service legacy-db
until_ok "its EndpointSlice has the Consul address" 60 sh -c \
  "kubectl --context kind-$CLUSTER -n $NS get endpointslices -l kubernetes.io/service-name=legacy-db -o jsonpath='{.items[*].endpoints[*].addresses[*]}' | grep -q 10.99.0.10"

say "checking intentions"
until_ok "service-intentions for api (web: L7 permissions)" 60 sh -c \
  "kubectl --context kind-$CLUSTER -n $NS exec consul-server-0 -c consul -- env CONSUL_HTTP_TOKEN=$BOOTSTRAP_TOKEN consul config read -kind service-intentions -name api | grep -q PathPrefix"
until_ok "web → database denied" 60 sh -c \
  "kubectl --context kind-$CLUSTER -n $NS exec consul-server-0 -c consul -- env CONSUL_HTTP_TOKEN=$BOOTSTRAP_TOKEN consul intention check web database; test \$? -eq 2"

say "checking KV"
until_ok "config/app/log-level = info" 60 sh -c \
  "test \"\$(kubectl --context kind-$CLUSTER -n $NS exec consul-server-0 -c consul -- env CONSUL_HTTP_TOKEN=$BOOTSTRAP_TOKEN consul kv get config/app/log-level)\" = info"

say "checking the ConfigTemplate"
until_ok "nginx-upstreams lists the api endpoints" 120 sh -c \
  "kubectl --context kind-$CLUSTER -n $NS get configmap nginx-upstreams -o jsonpath='{.data.upstreams\.conf}' | grep -q 'server '"
until_ok "the nginx Deployment was rolled (hash annotation)" 120 sh -c \
  "kubectl --context kind-$CLUSTER -n $NS get deployment nginx -o jsonpath='{.spec.template.metadata.annotations}' | grep -q concord.io/config-hash-nginx-upstreams"

say "checking the ACL token"
until_ok "Secret api-consul-token holds a token" 120 sh -c \
  "kubectl --context kind-$CLUSTER -n $NS get secret api-consul-token -o jsonpath='{.data.token}' | grep -q ."
API_TOKEN=$(kn get secret api-consul-token -o jsonpath='{.data.token}' | base64 -d)
kn exec consul-server-0 -c consul -- env CONSUL_HTTP_TOKEN="$API_TOKEN" consul acl token read -self | grep -q "Policies" \
  || die "the api token is not accepted by Consul"
say "ok: the api token is a live Consul token"

say "checking the snapshot"
kn wait consulsnapshot/before-upgrade --for=condition=Complete --timeout 300s
size=$(kn get consulsnapshot before-upgrade -o jsonpath='{.status.size}')
[ "${size:-0}" -gt 0 ] || die "the snapshot has no size"
say "ok: snapshot saved ($size bytes, sha256 $(kn get consulsnapshot before-upgrade -o jsonpath='{.status.sha256}'))"

say "checking leader failover"
leader=$(kn get lease concord-controller -o jsonpath='{.spec.holderIdentity}')
kn delete pod "${leader%_*}" --grace-period=0 --force >/dev/null
until_ok "another replica took the Lease" 60 sh -c \
  "h=\$(kubectl --context kind-$CLUSTER -n $NS get lease concord-controller -o jsonpath='{.spec.holderIdentity}'); [ -n \"\$h\" ] && [ \"\$h\" != '$leader' ]"
kn scale deployment/api --replicas=3
until_ok "the new leader syncs (api has 3 instances)" 120 sh -c \
  "test \"\$(kubectl --context kind-$CLUSTER -n $NS exec consul-server-0 -c consul -- \
   wget -qO- --header 'X-Consul-Token: $BOOTSTRAP_TOKEN' 'http://127.0.0.1:8500/v1/health/service/api?passing' | grep -o '\"ServiceID\"' | wc -l)\" = 3"

say "all checks passed"
