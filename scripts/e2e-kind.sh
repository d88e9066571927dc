#!/usr/bin/env bash
# End to end on a real kind cluster (`make e2e-kind`; `make test` runs it too):
#   Docker engine (scripts/docker-host.sh) → images built offline (scripts/kind-images.sh)
#   → 3-node kind cluster (kind-config.yaml) with pod routes, local PersistentVolumes and a
#   CoreDNS that answers only cluster names and forwards `consul.` to Consul's DNS
#   → `helm install` with the chart's defaults (image overrides only) into a namespace that
#   enforces Pod Security "restricted" → checks with real pods → faults, each followed by
#   the invariants (no KV key, intention or instance lost; sync resumes) → teardown.
#
# On failure: the failed check, every concord object's conditions, the controller's and
# the Consul servers' logs, then the cluster is deleted (KEEP=1 keeps it).
# Where Docker cannot run, one line says so and the script exits 1.
#
#   CLUSTER (concord-e2e)  NS (concord)  KEEP=1  TIMEOUT (seconds per wait, 240)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/versions.sh

CLUSTER=${CLUSTER:-concord-e2e}
NS=${NS:-concord}
TIMEOUT=${TIMEOUT:-240}
WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/concord-e2e.XXXXXX")
KUBECONFIG_FILE=$WORKDIR/kubeconfig
STARTED=$SECONDS
CHECKS=0

say() { printf 'e2e-kind: %s\n' "$*" >&2; }
now() { printf '%4ds' $((SECONDS - STARTED)); }
FAILED_CHECK=""
die() { FAILED_CHECK=$*; say "FAILED: $*"; exit 1; }
ok() { CHECKS=$((CHECKS + 1)); say "$(now) ok: $*"; }

# --- host, tools, images -------------------------------------------------------------
scripts/docker-host.sh || { say "FAILED: no Docker engine can run on this machine; the kind e2e did not run"; exit 1; }
export PATH=/usr/bin:/usr/sbin:$PATH
scripts/testenv.sh >/dev/null
HELM=$(scripts/helm.sh)
command -v jq >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null 2>&1 || { say "FAILED: jq is missing and could not be installed"; exit 1; }; }
command -v curl >/dev/null || { say "FAILED: curl is missing"; exit 1; }
names=$(scripts/kind-images.sh) || { say "FAILED: building the e2e images (see above)"; exit 1; }
eval "$(printf '%s\n' "$names" | grep -E '^[A-Z_]+=')"
say "$(now) images ready"

kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
kn() { kc -n "$NS" "$@"; }
helm_() { "$HELM" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# until_ok DESCRIPTION SECONDS CMD...: retry CMD every second until it succeeds.
# A check that needed more than 20 s says so, with what its last failed try printed.
until_ok() {
  local what=$1 secs=$2; shift 2
  local start=$SECONDS deadline=$((SECONDS + secs)) last=""
  until last=$("$@" 2>&1); do
    [ "$SECONDS" -lt "$deadline" ] || die "$what (not true after ${secs}s; last try: ${last:0:300})"
    sleep 1
  done
  if [ $((SECONDS - start)) -gt 20 ]; then ok "$what (took $((SECONDS - start))s)"; else ok "$what"; fi
}

dump_state() {
  say "---- concord objects and their conditions"
  kn get "discoveryclusters,kvconfigs,configtemplates,aclpolicies,acltokens,aclroles,aclauthmethods,aclbindingrules,ingressgateways,terminatinggateways,jwtproviders,preparedqueries,consulsnapshots,${CONFIG_ENTRY_KINDS:-serviceintentions}" -o json 2>/dev/null \
    | jq -r '.items[] | "\(.kind)/\(.metadata.name): " + ([.status.conditions[]? | "\(.type)=\(.status) \(.reason): \(.message)"] | join("; "))' >&2 || true
  say "---- pods"
  kc get pods -A -o wide >&2 || true
  say "---- nodes"
  kc get nodes -o wide >&2 || true
  say "---- events (warnings)"
  kn get events --field-selector type=Warning 2>/dev/null | tail -n 30 >&2 || true
  for pod in $(kn get pods -l app.kubernetes.io/name=concord -o name 2>/dev/null); do
    say "---- logs $pod"; kn logs "$pod" --tail=80 >&2 || true
  done
  for pod in $(kn get pods -l app.kubernetes.io/component=server -o name 2>/dev/null); do
    say "---- logs $pod"; kn logs "$pod" --tail=40 >&2 || true
  done
}

teardown() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    [ -n "$FAILED_CHECK" ] || say "FAILED: a command exited $rc (see above)"
    dump_state
  fi
  for n in $("$KIND" get nodes --name "$CLUSTER" 2>/dev/null); do docker start "$n" >/dev/null 2>&1 || true; done
  if [ "${KEEP:-0}" = 1 ]; then
    say "KEEP=1: cluster $CLUSTER kept (kubeconfig $KUBECONFIG_FILE; remove with: $KIND delete cluster --name $CLUSTER)"
  else
    "$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    rm -rf "$WORKDIR"
  fi
  if [ "$rc" -eq 0 ]; then
    say "$(now) all checks passed"
    echo "e2e-kind: $CHECKS passed, 0 failed"
  else
    echo "e2e-kind: $CHECKS passed, 1 failed"
  fi
  exit "$rc"
}

# --- the cluster -----------------------------------------------------------------------
say "$(now) creating kind cluster $CLUSTER ($NODE_IMAGE)"
"$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
trap teardown EXIT
"$KIND" create cluster --name "$CLUSTER" --config kind-config.yaml --image "$NODE_IMAGE" \
  --kubeconfig "$KUBECONFIG_FILE" --wait 0s
NODES=$("$KIND" get nodes --name "$CLUSTER" | sort)
WORKERS=$(echo "$NODES" | grep worker)

# What kindnetd does: each node's CNI config takes the node's pod CIDR (ptp + host-local),
# and every node routes the other nodes' pod CIDRs to them. Run again after a node restarts.
pod_network() {
  local n m cidr ip
  declare -A CIDR IP
  for n in $NODES; do
    for _ in $(seq 1 60); do
      cidr=$(kc get node "$n" -o jsonpath='{.spec.podCIDR}' 2>/dev/null || true)
      [ -n "$cidr" ] && break; sleep 1
    done
    [ -n "$cidr" ] || die "node $n has no pod CIDR"
    CIDR[$n]=$cidr
    IP[$n]=$(docker inspect -f '{{(index .NetworkSettings.Networks "kind").IPAddress}}' "$n")
  done
  for n in $NODES; do
    docker exec -i "$n" sh -c 'mkdir -p /etc/cni/net.d && cat > /etc/cni/net.d/10-concord-ptp.conflist' <<EOF
{"cniVersion": "0.3.1", "name": "concord-ptp", "plugins": [
  {"type": "ptp", "ipMasq": false, "mtu": 1500,
   "ipam": {"type": "host-local", "dataDir": "/run/cni-ipam-state", "routes": [{"dst": "0.0.0.0/0"}],
            "ranges": [[{"subnet": "${CIDR[$n]}"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
    for m in $NODES; do
      [ "$n" = "$m" ] || docker exec "$n" ip route replace "${CIDR[$m]}" via "${IP[$m]}"
    done
  done
}
pod_network
until_ok "all $(echo "$NODES" | wc -l) nodes Ready" "$TIMEOUT" sh -c \
  "! '$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' get nodes --no-headers | grep -v ' Ready '"

# DNS stays on this machine: CoreDNS answers cluster names only (no forward to the node's
# resolver), and later forwards `consul.` to Consul's DNS Service.
corefile() { # corefile [CONSUL_DNS_IP]
  cat <<EOF
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    cache 30
    loop
    reload
    loadbalance
}
EOF
  if [ -n "${1:-}" ]; then
    printf 'consul:53 {\n    errors\n    cache 5\n    forward . %s:8600\n}\n' "$1"
  fi
}
set_corefile() {
  corefile "${1:-}" >"$WORKDIR/Corefile"
  kc -n kube-system create configmap coredns --from-file=Corefile="$WORKDIR/Corefile" --dry-run=client -o yaml | kc apply -f - >/dev/null
  kc -n kube-system rollout restart deployment/coredns >/dev/null
  kc -n kube-system rollout status deployment/coredns --timeout "${TIMEOUT}s" >/dev/null
}
set_corefile
ok "CoreDNS answers cluster names only"

# Storage: local PersistentVolumes on every node (the default StorageClass), so a Consul
# server's data stays on its node across restarts. kind's default class (in-tree
# host-path) creates root-owned directories that the non-root servers cannot write.
kc delete storageclass standard --ignore-not-found >/dev/null
{
  cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
  for n in $NODES; do
    for i in 1 2 3 4; do
      docker exec "$n" mkdir -p -m 0777 "/var/local-pv/pv$i"
      cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: $n-pv$i}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: {path: /var/local-pv/pv$i}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$n]}]
EOF
    done
  done
} | kc apply -f - >/dev/null
ok "local PersistentVolumes on every node (default StorageClass)"

say "$(now) loading images into the nodes"
"$KIND" load docker-image --name "$CLUSTER" "$CONCORD_IMAGE" "$CONSUL_IMAGE" "$CONSUL_IMAGE_NEXT" "$BUSYBOX_IMAGE" "$HTTP_IMAGE" >/dev/null

# --- helm install, as a user does -------------------------------------------------------
kc create namespace "$NS" >/dev/null
kc label namespace "$NS" pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest >/dev/null
say "$(now) helm install (namespace $NS enforces Pod Security restricted)"
helm_ install concord charts/concord --namespace "$NS" \
  --set image.repository="${CONCORD_IMAGE%%:*}" --set image.tag="${CONCORD_IMAGE##*:}" --set image.pullPolicy=Never \
  --wait --timeout "${TIMEOUT}s" >/dev/null
ok "helm install: controller Deployment ready"

server_pods_ready() { # server_pods_ready N: exactly N server pods, all Ready
  local want=$1 got
  got=$(kn get pods -l app.kubernetes.io/component=server -o json \
    | jq '[.items[] | select(.metadata.deletionTimestamp == null) | select(any(.status.conditions[]?; .type == "Ready" and .status == "True"))] | length')
  [ "$got" = "$want" ]
}
until_ok "3 Consul server pods Ready" "$TIMEOUT" server_pods_ready 3
until_ok "DiscoveryCluster consul Available" "$TIMEOUT" sh -c \
  "'$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' -n $NS get discoverycluster consul -o jsonpath='{.status.conditions[?(@.type==\"Available\")].status}' | grep -qx True"
until_ok "a controller replica holds the Lease" 120 sh -c \
  "'$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' -n $NS get lease concord-controller -o jsonpath='{.spec.holderIdentity}' | grep -q ."
helm_ test concord --namespace "$NS" --logs >"$WORKDIR/helm-test.log" 2>&1 || { cat "$WORKDIR/helm-test.log" >&2; die "helm test"; }
ok "helm test passed"

# Consul from the host: a NodePort in front of the servers' HTTPS port (TLS is on by
# default; kind-config.yaml maps the NodePort to 127.0.0.1:8500), with the bootstrap
# (management) token. Every curl verifies the servers against the CA concord generated
# (Secret consul-ca; the server certificate names 127.0.0.1): CURL_CA_BUNDLE is exported
# so the `sh -c` checks below verify too.
kn apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: consul-ui}
spec:
  type: NodePort
  selector: {app.kubernetes.io/name: consul, app.kubernetes.io/instance: consul, app.kubernetes.io/component: server}
  ports:
    - {name: https, port: 8501, targetPort: 8501, nodePort: 30850, protocol: TCP}
    - {name: dns-udp, port: 8600, targetPort: 8600, nodePort: 30860, protocol: UDP}
    - {name: dns-tcp, port: 8600, targetPort: 8600, nodePort: 30860, protocol: TCP}
EOF
BOOTSTRAP_TOKEN=$(kn get secret consul-acl-bootstrap -o jsonpath='{.data.token}' | base64 -d)
[ -n "$BOOTSTRAP_TOKEN" ] || die "no ACL bootstrap token in Secret consul-acl-bootstrap"
CONSUL_CA="$WORKDIR/consul-ca.crt"
kn get secret consul-ca -o jsonpath='{.data.tls\.crt}' | base64 -d >"$CONSUL_CA"
grep -q 'BEGIN CERTIFICATE' "$CONSUL_CA" || die "no CA certificate in Secret consul-ca"
export CURL_CA_BUNDLE="$CONSUL_CA"
CONSUL=https://127.0.0.1:8500
capi() { curl -sSf --max-time 10 --cacert "$CONSUL_CA" -H "X-Consul-Token: $BOOTSTRAP_TOKEN" "$CONSUL$1"; }
capi_put() { curl -sSf --max-time 10 --cacert "$CONSUL_CA" -X PUT -H "X-Consul-Token: $BOOTSTRAP_TOKEN" --data-binary @- "$CONSUL$1" >/dev/null; }
until_ok "Consul's API answers on the host over HTTPS through the NodePort" 120 capi /v1/status/leader
# Only the cluster's CA vouches for the servers: without it curl refuses them, and plain
# HTTP gets no answer on that port.
if env -u CURL_CA_BUNDLE curl -sS --max-time 10 -o /dev/null "$CONSUL/v1/status/leader" 2>/dev/null; then
  die "curl trusted the Consul servers without the cluster's CA"
fi
if curl -sSf --max-time 10 -o /dev/null "http://127.0.0.1:8500/v1/status/leader" 2>/dev/null; then
  die "Consul answered plain HTTP on its API port"
fi
ok "Consul serves HTTPS verified by the cluster's CA (Secret consul-ca); unverified and plain HTTP refused"

raft_ok() { # raft_ok N: a leader and N voters
  capi /v1/operator/raft/configuration | jq -e --argjson n "$1" \
    '([.Servers[] | select(.Voter)] | length) == $n and ([.Servers[] | select(.Leader)] | length) == 1' >/dev/null
}
until_ok "Raft: one leader, 3 voters" 120 raft_ok 3
[ "$(kn get discoverycluster consul -o jsonpath='{.status.peers}' | jq length)" = 3 ] || die "DiscoveryCluster status lists 3 peers"
ok "DiscoveryCluster status: leader $(kn get discoverycluster consul -o jsonpath='{.status.leader}'), 3 peers"

# --- workloads ---------------------------------------------------------------------------
RESTRICTED='securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}'
CONTAINER_SC='securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: false, capabilities: {drop: [ALL]}}'
web_manifest() { # web_manifest REPLICAS
  cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: $1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      $RESTRICTED
      containers:
        - name: web
          image: $HTTP_IMAGE
          imagePullPolicy: Never
          $CONTAINER_SC
          ports: [{containerPort: 8080}]
          env: [{name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
          readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1, failureThreshold: 1}
          volumeMounts: [{name: config, mountPath: /config}]
      volumes: [{name: config, configMap: {name: web-config, optional: true}}]
EOF
}
web_service() {
  cat <<'EOF'
apiVersion: v1
kind: Service
metadata:
  name: web
  annotations: {concord.io/sync: "true", concord.io/tags: "e2e"}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
EOF
}
web_manifest 2 | kn apply -f - >/dev/null
web_service | kn apply -f - >/dev/null
# A pod to look from: DNS and HTTP inside the cluster.
kn apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: toolbox}
spec:
  $RESTRICTED
  containers:
    - {name: toolbox, image: $BUSYBOX_IMAGE, imagePullPolicy: Never, command: [sleep, "86400"], $CONTAINER_SC}
EOF
kn rollout status deployment/web --timeout "${TIMEOUT}s" >/dev/null
kn wait pod/toolbox --for=condition=Ready --timeout "${TIMEOUT}s" >/dev/null

instances() { # instances NAME [passing]: how many instances Consul has
  local q=""; [ "${2:-}" = passing ] && q="?passing"
  capi "/v1/health/service/$1$q" | jq length
}
instances_are() { [ "$(instances "$1" "${3:-}")" = "$2" ]; }
ready_pod_ips() { kn get pods -l app=web -o json | jq -r '[.items[] | select(.metadata.deletionTimestamp == null) | select(any(.status.conditions[]?; .type == "Ready" and .status == "True")) | .status.podIP] | sort | join(" ")'; }
consul_ips() { capi "/v1/health/service/$1?passing" | jq -r '[.[].Service.Address] | sort | join(" ")'; }
passing_match_ready_pods() { [ "$(consul_ips web)" = "$(ready_pod_ips)" ] && [ -n "$(ready_pod_ips)" ]; }

say "$(now) Kubernetes → Consul with real pods"
until_ok "web: 2 passing instances at the pods' IPs" 120 passing_match_ready_pods
kn scale deployment/web --replicas=3 >/dev/null
until_ok "scale up: 3 passing instances" 120 sh -c "[ \"\$(curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' '$CONSUL/v1/health/service/web?passing' | jq length)\" = 3 ]"
kn scale deployment/web --replicas=1 >/dev/null
until_ok "scale down: 1 instance left (deregistered, not just critical)" 120 instances_are web 1
kn scale deployment/web --replicas=2 >/dev/null
until_ok "back to 2 passing instances" 120 instances_are web 2 passing
sick=$(kn get pods -l app=web -o jsonpath='{.items[0].metadata.name}')
kn exec "$sick" -- rm /www/healthz
until_ok "a pod failing readiness turns critical (2 instances, 1 passing)" 60 sh -c \
  "[ \"\$(curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' '$CONSUL/v1/health/service/web' | jq length)\" = 2 ] && \
   [ \"\$(curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' '$CONSUL/v1/health/service/web?passing' | jq length)\" = 1 ]"
kn exec "$sick" -- sh -c 'echo ok > /www/healthz'
until_ok "ready again: 2 passing" 60 instances_are web 2 passing
kn delete service web >/dev/null
until_ok "Service deleted: its instances leave Consul" 60 instances_are web 0
web_service | kn apply -f - >/dev/null
until_ok "Service back: 2 passing instances" 60 passing_match_ready_pods

say "$(now) Consul → Kubernetes, and DNS inside the cluster"
# A "VM": a pod that no Service selects, registered in Consul on a node of its own.
kn apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: legacy-vm, labels: {role: vm}}
spec:
  $RESTRICTED
  containers:
    - {name: http, image: $HTTP_IMAGE, imagePullPolicy: Never, $CONTAINER_SC, ports: [{containerPort: 8080}]}
EOF
kn wait pod/legacy-vm --for=condition=Ready --timeout "${TIMEOUT}s" >/dev/null
VM_IP=$(kn get pod legacy-vm -o jsonpath='{.status.podIP}')
capi_put /v1/catalog/register <<EOF
{"Node": "vm-1", "Address": "$VM_IP", "NodeMeta": {"external-node": "true"},
 "Service": {"ID": "legacy-web-1", "Service": "legacy-web", "Address": "$VM_IP", "Port": 8080},
 "Check": {"CheckID": "legacy-web-alive", "Name": "alive", "Status": "passing", "ServiceID": "legacy-web-1"}}
EOF
until_ok "legacy-web (Consul) appears as a Kubernetes Service" 120 kn get service legacy-web
until_ok "its EndpointSlice holds the VM's address" 60 sh -c \
  "'$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' -n $NS get endpointslices -l kubernetes.io/service-name=legacy-web -o jsonpath='{.items[*].endpoints[*].addresses[*]}' | grep -qw '$VM_IP'"
until_ok "a pod reaches legacy-web by its cluster DNS name" 120 sh -c \
  "'$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' -n $NS exec toolbox -- timeout 5 wget -q -O - http://legacy-web.$NS.svc.cluster.local:8080/ | grep -q legacy-vm"
CONSUL_DNS_IP=$(kn get service consul-client -o jsonpath='{.spec.clusterIP}')
[ -n "$CONSUL_DNS_IP" ] || die "no consul-client Service"
set_corefile "$CONSUL_DNS_IP"
web_resolves() {
  local want got
  want=$(ready_pod_ips)
  got=$(kn exec toolbox -- nslookup web.service.consul. 2>/dev/null | awk '/^Name:/ {n = 1} n && /^Address/ {print $NF}' | sort | xargs)
  [ -n "$want" ] && [ "$got" = "$want" ]
}
until_ok "web.service.consul resolves to the ready pods' IPs inside a pod (CoreDNS → Consul DNS)" 120 web_resolves

say "$(now) KV, templates, intentions, ACL tokens, snapshots"
# Every example but the external DiscoveryCluster (the chart made a managed one) and the
# snapshot (saved below, in this namespace's folder). The config entries among them
# (service-defaults with protocol http, resolver subsets, splitter, router, ...) depend on
# each other; concord retries a refused entry when the one it needs lands.
for f in examples/*.yaml; do
  case "$(basename "$f")" in discoverycluster.yaml|consulsnapshot-save.yaml) continue ;; esac
  kn apply -f "$f" >/dev/null
done
CONFIG_ENTRY_KINDS=servicedefaults,serviceresolvers,servicerouters,servicesplitters,proxydefaults,meshes,exportedservices,serviceintentions
entries_synced() {
  kn get "$CONFIG_ENTRY_KINDS" -o json | jq -e '(.items | length) > 0 and
    ([.items[] | [.status.conditions[]? | select(.type == "Synced" and .status == "True")] | length == 1] | all)' >/dev/null
}
until_ok "every config entry example ($(kn get "$CONFIG_ENTRY_KINDS" -o name | wc -l) objects) Synced" 120 entries_synced
until_ok "api's discovery chain splits 90/10 between subsets v1 and v2 (examples/canary-split.yaml)" 60 sh -c \
  "curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' $CONSUL/v1/discovery-chain/api | jq -e '[.Chain.Nodes[] | select(.Type == \"splitter\") | .Splits[].Weight] | sort == [10, 90]'"
synced_all() { # synced_all KINDS MIN: at least MIN objects of KINDS, each Synced=True
  kn get "$1" -o json | jq -e --argjson min "$2" '(.items | length) >= $min and
    ([.items[] | [.status.conditions[]? | select(.type == "Synced" and .status == "True")] | length == 1] | all)' >/dev/null
}
until_ok "the gateway, JWT provider and ACL login examples Synced (ingress, terminating, jwt, auth method, 2 binding rules, role)" 120 \
  synced_all ingressgateways,terminatinggateways,jwtproviders,aclauthmethods,aclbindingrules,aclroles 7
# Workload login (examples/aclauthmethod-pod-login.yaml): a pod of ServiceAccount web
# logs in with its projected token; the Consul servers review it with this cluster's
# TokenReview (the reviewer token concord wrote into the method) and give back a token
# bound to the service identity web only. Its secret is never printed.
kn create serviceaccount web >/dev/null 2>&1 || true
kn apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: login-web}
spec:
  $RESTRICTED
  serviceAccountName: web
  containers:
    - {name: login, image: $BUSYBOX_IMAGE, imagePullPolicy: Never, command: [sleep, "86400"], $CONTAINER_SC}
EOF
kn wait pod/login-web --for=condition=Ready --timeout "${TIMEOUT}s" >/dev/null
pod_login() {
  local jwt login identities secret
  jwt=$(kn exec login-web -- cat /var/run/secrets/kubernetes.io/serviceaccount/token) || return 1
  login=$(jq -n --arg jwt "$jwt" '{AuthMethod: "pods", BearerToken: $jwt}' |
    curl -sSf --max-time 10 --cacert "$CONSUL_CA" -X POST --data-binary @- "$CONSUL/v1/acl/login") || { echo "login refused"; return 1; }
  identities=$(echo "$login" | jq -c '[.ServiceIdentities[]?.ServiceName] + [.Policies[]?.Name] + [.Roles[]?.Name]')
  secret=$(echo "$login" | jq -r .SecretID)
  curl -sSf --max-time 10 --cacert "$CONSUL_CA" -X POST -H "X-Consul-Token: $secret" "$CONSUL/v1/acl/logout" >/dev/null || true
  echo "$identities"
  [ "$identities" = '["web"]' ]
}
until_ok "a pod of ServiceAccount web logs in to Consul with its own token and gets the service identity web only" 90 pod_login
kv_is() { [ "$(capi "/v1/kv/$1?raw")" = "$2" ]; }
until_ok "KVConfig app-config: config/app/log-level = info in Consul" 60 kv_is config/app/log-level info
kv_greeting() { # the KVConfig the web pods' config is rendered from
  kn apply -f - >/dev/null <<EOF
apiVersion: concord.io/v1alpha1
kind: KVConfig
metadata: {name: web}
spec:
  prefix: config/web/
  keys: [{key: greeting, value: "$1"}]
EOF
}
kv_greeting hello
kn apply -f - >/dev/null <<'EOF'
apiVersion: concord.io/v1alpha1
kind: ConfigTemplate
metadata: {name: web-config}
spec:
  template:
    inline: |
      greeting={{key "config/web/greeting"}}
  output:
    configMap: {name: web-config, key: app.conf}
  wait: {min: 1s, max: 5s}
  rollout:
    - {kind: Deployment, name: web}
EOF
served_conf_is() { kn exec toolbox -- timeout 5 wget -q -O - "http://web.$NS.svc.cluster.local/app.conf" 2>/dev/null | grep -qx "greeting=$1"; }
until_ok "ConfigTemplate renders KV into ConfigMap web-config" 60 sh -c \
  "'$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' -n $NS get configmap web-config -o jsonpath='{.data.app\\.conf}' | grep -qx greeting=hello"
kn rollout status deployment/web --timeout "${TIMEOUT}s" >/dev/null
until_ok "web pods serve the rendered config" 120 served_conf_is hello
before=$(kn get pods -l app=web -o jsonpath='{.items[*].metadata.name}')
kv_greeting bonjour
until_ok "a KV change rolls the Deployment: new pods serve the new content" "$TIMEOUT" served_conf_is bonjour
kn rollout status deployment/web --timeout "${TIMEOUT}s" >/dev/null
for p in $before; do kn get pod "$p" >/dev/null 2>&1 && [ -z "$(kn get pod "$p" -o jsonpath='{.metadata.deletionTimestamp}')" ] && die "pod $p of the old ReplicaSet still runs after the rollout"; done
ok "the old pods are gone"
until_ok "ServiceIntention api in Consul (L7 permissions)" 60 sh -c \
  "curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' $CONSUL/v1/config/service-intentions/api | jq -e '.Sources[] | select(.Name == \"web\") | .Permissions[0].HTTP.PathPrefix == \"/v1/\"'"
until_ok "ServiceIntention database in Consul" 60 sh -c \
  "curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' $CONSUL/v1/config/service-intentions/database | jq -e '.Sources[] | select(.Name == \"web\") | .Action == \"deny\"'"
until_ok "ACLToken api: its Secret holds a token" 60 sh -c \
  "'$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' -n $NS get secret api-consul-token -o jsonpath='{.data.token}' | grep -q ."
API_TOKEN=$(kn get secret api-consul-token -o jsonpath='{.data.token}' | base64 -d)
curl -sSf --max-time 10 -H "X-Consul-Token: $API_TOKEN" "$CONSUL/v1/acl/token/self" | jq -e '.Policies[] | select(.Name == "api")' >/dev/null \
  || die "the token from Secret api-consul-token does not authenticate to Consul"
curl -sSf --max-time 10 -H "X-Consul-Token: $API_TOKEN" "$CONSUL/v1/kv/config/app/log-level?raw" | grep -qx info \
  || die "the api token cannot read what its policy grants"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PUT -H "X-Consul-Token: $API_TOKEN" --data x "$CONSUL/v1/kv/config/app/log-level")
[ "$code" = 403 ] || die "the api token may write KV its policy does not grant (HTTP $code)"
ok "the ACLToken's Secret authenticates to Consul with exactly its policy (read ok, write 403)"

snapshot() { # snapshot NAME ACTION LOCATION
  kn apply -f - >/dev/null <<EOF
apiVersion: concord.io/v1alpha1
kind: ConsulSnapshot
metadata: {name: $1}
spec: {action: $2, location: "$3"}
EOF
  kn wait "consulsnapshot/$1" --for=condition=Complete --timeout "${TIMEOUT}s" >/dev/null || die "ConsulSnapshot $1 ($2) did not complete"
}
# Snapshot files are scoped: <root>/<namespace>/<folder>/<file> (docs/security.md).
SNAP=file:///var/lib/concord/snapshots/$NS/e2e/e2e.snap
snapshot e2e-save Save "$SNAP"
size=$(kn get consulsnapshot e2e-save -o jsonpath='{.status.size}')
[ "${size:-0}" -gt 0 ] || die "the snapshot has no size"
ok "ConsulSnapshot saved ($size bytes)"
# A key written after the save is gone after the restore; what concord declares comes back.
printf 'after-save' | capi_put /v1/kv/e2e/after-save
snapshot e2e-restore Restore "$SNAP"
[ -z "$(capi /v1/kv/e2e/after-save?raw || true)" ] || die "the restore did not bring back the saved state"
ok "ConsulSnapshot restored (a key written after the save is gone)"

# --- invariants after every fault -----------------------------------------------------------
ROUND=0
invariants() { # invariants WHAT: nothing lost, and the sync still follows changes
  ROUND=$((ROUND + 1))
  local tag="round-$ROUND"
  until_ok "[$1] KV keys intact (config/app/log-level, config/web/greeting)" "$TIMEOUT" sh -c \
    "[ \"\$(curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' '$CONSUL/v1/kv/config/app/log-level?raw')\" = info ] && \
     [ \"\$(curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' '$CONSUL/v1/kv/config/web/greeting?raw')\" = bonjour ]"
  until_ok "[$1] intentions intact (api, database)" "$TIMEOUT" sh -c \
    "curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' $CONSUL/v1/config/service-intentions/api >/dev/null && \
     curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' $CONSUL/v1/config/service-intentions/database >/dev/null"
  until_ok "[$1] web instances = the ready pods" "$TIMEOUT" passing_match_ready_pods
  kn annotate service web --overwrite "concord.io/tags=e2e,$tag" >/dev/null
  until_ok "[$1] sync resumes (a new tag reaches every instance)" "$TIMEOUT" sh -c \
    "curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' '$CONSUL/v1/health/service/web?tag=$tag' | jq -e 'length >= 1' >/dev/null && \
     [ \"\$(curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' '$CONSUL/v1/health/service/web?tag=$tag' | jq length)\" = \"\$(curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' '$CONSUL/v1/health/service/web' | jq length)\" ]"
}
invariants "after the restore"

leader_pod() { # the server pod whose IP is Consul's leader
  local ip; ip=$(capi /v1/status/leader | tr -d '"' | cut -d: -f1)
  [ -n "$ip" ] && kn get pods -l app.kubernetes.io/component=server -o json | jq -r --arg ip "$ip" '.items[] | select(.status.podIP == $ip) | .metadata.name'
}

say "$(now) fault: delete the Consul leader pod"
lp=$(leader_pod); [ -n "$lp" ] || die "no Consul leader pod found"
kn delete pod "$lp" --wait=false >/dev/null
until_ok "3 Consul server pods Ready again" "$TIMEOUT" server_pods_ready 3
until_ok "Raft: one leader, 3 voters" "$TIMEOUT" raft_ok 3
invariants "Consul leader pod deleted"

say "$(now) fault: scale the DiscoveryCluster 3 → 5 → 3"
helm_ upgrade concord charts/concord --namespace "$NS" --reuse-values --set discoveryCluster.replicas=5 >/dev/null
until_ok "5 Consul server pods Ready" "$TIMEOUT" server_pods_ready 5
until_ok "Raft: one leader, 5 voters" "$TIMEOUT" raft_ok 5
until_ok "DiscoveryCluster status lists 5 peers" 120 sh -c \
  "[ \"\$('$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' -n $NS get discoverycluster consul -o jsonpath='{.status.peers}' | jq length)\" = 5 ]"
helm_ upgrade concord charts/concord --namespace "$NS" --reuse-values --set discoveryCluster.replicas=3 >/dev/null
until_ok "Raft: one leader, 3 voters (departing servers removed from Raft)" "$TIMEOUT" raft_ok 3
until_ok "3 Consul server pods" "$TIMEOUT" server_pods_ready 3
invariants "scaled 3 → 5 → 3"

say "$(now) fault: rolling upgrade to $CONSUL_IMAGE_NEXT"
helm_ upgrade concord charts/concord --namespace "$NS" --reuse-values --set discoveryCluster.image="$CONSUL_IMAGE_NEXT" >/dev/null
deadline=$((SECONDS + TIMEOUT * 2)); leaderless=0; min_ready=3
while :; do
  ready=$(kn get pods -l app.kubernetes.io/component=server -o json \
    | jq '[.items[] | select(any(.status.conditions[]?; .type == "Ready" and .status == "True"))] | length')
  [ "$ready" -lt "$min_ready" ] && min_ready=$ready
  [ "$ready" -ge 2 ] || die "rolling upgrade: only $ready server pods Ready (quorum lost)"
  [ -n "$(capi /v1/status/leader | tr -d '"')" ] || leaderless=$((leaderless + 1))
  upgraded=$(kn get pods -l app.kubernetes.io/component=server -o json \
    | jq --arg img "$CONSUL_IMAGE_NEXT" '[.items[] | select(.spec.containers[0].image == $img) | select(any(.status.conditions[]?; .type == "Ready" and .status == "True"))] | length')
  [ "$upgraded" = 3 ] && break
  [ "$SECONDS" -lt "$deadline" ] || die "rolling upgrade did not finish in $((TIMEOUT * 2))s ($upgraded of 3 upgraded)"
  sleep 1
done
ok "rolling upgrade: 3 servers on $CONSUL_IMAGE_NEXT, never fewer than $min_ready Ready (quorum kept), $leaderless one-second polls without a leader"
until_ok "Raft: one leader, 3 voters after the upgrade" "$TIMEOUT" raft_ok 3
invariants "rolling upgrade"

say "$(now) fault: delete the concord leader pod"
holder=$(kn get lease concord-controller -o jsonpath='{.spec.holderIdentity}')
lease_s=$(kn get lease concord-controller -o jsonpath='{.spec.leaseDurationSeconds}')
killed=$SECONDS
kn delete pod "${holder%_*}" --grace-period=0 --force >/dev/null 2>&1
new_holder() { local h; h=$(kn get lease concord-controller -o jsonpath='{.spec.holderIdentity}'); [ -n "$h" ] && [ "$h" != "$holder" ]; }
until_ok "a standby took the Lease" 120 new_holder
took=$((SECONDS - killed))
[ "$took" -le $((lease_s * 2)) ] || die "the standby took ${took}s to take over (Lease duration ${lease_s}s)"
ok "takeover after ${took}s (Lease duration ${lease_s}s)"
invariants "concord leader pod deleted"

say "$(now) fault: stop a kind worker node"
victim=$(echo "$WORKERS" | tail -n 1)
victim_web=$(kn get pods -l app=web -o json | jq -r --arg n "$victim" '[.items[] | select(.spec.nodeName == $n) | .status.podIP] | join(" ")')
if [ -z "$victim_web" ]; then
  # Make sure the stopped node runs web pods: one more replica, pinned by a spread.
  kn scale deployment/web --replicas=3 >/dev/null
  kn rollout status deployment/web --timeout "${TIMEOUT}s" >/dev/null
  victim_web=$(kn get pods -l app=web -o json | jq -r --arg n "$victim" '[.items[] | select(.spec.nodeName == $n) | .status.podIP] | join(" ")')
fi
stopped=$SECONDS
docker stop "$victim" >/dev/null
until_ok "$victim NotReady" "$TIMEOUT" sh -c \
  "'$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' get node $victim --no-headers | grep -q NotReady"
if [ -n "$victim_web" ]; then
  gone() { local p; p=$(consul_ips web); for ip in $victim_web; do case " $p " in *" $ip "*) return 1 ;; esac; done; }
  until_ok "the stopped node's web instances leave ?passing ($victim_web)" "$TIMEOUT" gone
fi
until_ok "quorum kept: Consul still has a leader" 60 sh -c \
  "curl -sSf -H 'X-Consul-Token: $BOOTSTRAP_TOKEN' $CONSUL/v1/status/leader | grep -q ':'"
printf 'during-outage' | capi_put /v1/kv/e2e/during-outage
ok "Consul takes writes with a node down ($((SECONDS - stopped))s after the stop)"
docker start "$victim" >/dev/null
pod_network
until_ok "$victim Ready again" "$TIMEOUT" sh -c \
  "'$KUBECTL' --kubeconfig '$KUBECONFIG_FILE' get node $victim --no-headers | grep -q ' Ready '"
until_ok "3 Consul server pods Ready after the node returns" "$TIMEOUT" server_pods_ready 3
until_ok "Raft: one leader, 3 voters after the node returns" "$TIMEOUT" raft_ok 3
invariants "worker node stopped and started"
