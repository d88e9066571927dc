//! What the Consul catalog should hold for one Kubernetes Service (pure): its selection,
//! its Consul name, tags and meta, and one instance per endpoint address and port.
//!
//! Decisions:
//! - Port: `concord.io/port` (a port name, or a number matching the endpoint port or the
//!   Service port) picks one; without it the Service's first port is registered (one
//!   instance per address, so DNS SRV answers stay one per endpoint; a second port is a
//!   second Service with the same `concord.io/service-name` and another port).
//! - Health: an endpoint that is ready (or whose `ready` is unset, which Kubernetes
//!   defines as ready) is `passing`; anything else (not ready, terminating, serving or
//!   not) is `critical`, so DNS and `?passing` stop returning it at once.
//! - ExternalName Services register one instance with the external name as address;
//!   `concord.io/use-load-balancer-ip: "true"` registers the LoadBalancer ingress
//!   addresses (with the Service port) instead of the endpoints.
//! - Services concord itself created from Consul ([`SYNC_IDENTITY_LABEL`]) are never
//!   selected: that is the loop breaker of this direction.
//! - Bad input never becomes an outage: a `concord.io/port` that matches no port, a
//!   `concord.io/meta` that is not a JSON object, a tag with white space or a control
//!   character in `concord.io/tags` make [`Desired::problems`] non-empty, and then the
//!   sync does not follow this result (it keeps the Service's last good registration,
//!   see [`VALIDATED_ANNOTATIONS`]). A port is never registered as 0 because an
//!   annotation was out of range.
use crate::consul::{CheckStatus, HealthCheck, NodeService, Weights};
use crate::sync::*;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A Service's key: (namespace, name).
pub type ServiceKey = (String, String);

/// One Consul service instance with its one health check, as this sync writes it. Tags
/// and meta are the same for every instance of a Service, and shared (the sync holds
/// every instance it wrote: at 10,000 instances a copy of the meta each was 8 MiB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub tags: Arc<Vec<String>>,
    pub address: String,
    pub port: u16,
    pub meta: Arc<BTreeMap<String, String>>,
    pub status: CheckStatus,
    /// The check's output: one of this module's constants for what the sync computes
    /// (no copy per instance), Consul's text for what is read back.
    pub output: Cow<'static, str>,
}

impl Instance {
    /// The check of an instance: `<service id>/ready`.
    pub fn check_id(&self) -> String {
        check_id(&self.id)
    }

    /// The (namespace, Service) this instance came from, from its meta.
    pub fn key(&self) -> ServiceKey {
        let get = |k: &str| self.meta.get(k).cloned().unwrap_or_default();
        (get(META_K8S_NAMESPACE), get(META_K8S_SERVICE))
    }

    pub fn node_service(&self) -> NodeService {
        NodeService {
            id: self.id.clone(),
            service: self.name.clone(),
            tags: self.tags.to_vec(),
            address: self.address.clone(),
            port: self.port,
            meta: BTreeMap::clone(&self.meta),
            weights: Weights::default(),
            ..Default::default()
        }
    }

    pub fn health_check(&self, node: &str) -> HealthCheck {
        HealthCheck {
            node: node.to_string(),
            check_id: self.check_id(),
            name: CHECK_NAME.to_string(),
            status: self.status,
            output: self.output.to_string(),
            service_id: self.id.clone(),
            ..Default::default()
        }
    }

    /// Whether the instance is registered with a check of its own. A ready endpoint is
    /// not: Consul counts an instance without checks as passing, so the check would only
    /// repeat that, and it doubled what each instance cost Consul (a second operation per
    /// instance, and on every write to a node Consul's event publisher re-reads every
    /// check on that node: see BENCHMARKS.md, "Catalog sync"). Anything else (not ready,
    /// terminating) carries its critical check, written in the same transaction as the
    /// service, so no reader ever sees such an instance as passing.
    pub fn needs_check(&self) -> bool {
        !(self.status == CheckStatus::Passing && self.output == READY_OUTPUT)
    }

    /// Rebuilds an instance from what the catalog holds (service + its check, if any).
    /// No check reads back as ready (see [`Self::needs_check`]).
    pub fn from_catalog(service: &NodeService, check: Option<&HealthCheck>) -> Self {
        Self {
            id: service.id.clone(),
            name: service.service.clone(),
            tags: Arc::new(service.tags.clone()),
            address: service.address.clone(),
            port: service.port,
            meta: Arc::new(service.meta.clone()),
            status: check.map(|c| c.status).unwrap_or(CheckStatus::Passing),
            output: check.map(|c| Cow::Owned(c.output.clone())).unwrap_or(Cow::Borrowed(READY_OUTPUT)),
        }
    }
}

pub const CHECK_NAME: &str = "Kubernetes readiness";
/// The output of a ready endpoint's status: registered without a check.
pub const READY_OUTPUT: &str = "endpoint ready";
const NOT_READY_OUTPUT: &str = "endpoint not ready";
const TERMINATING_OUTPUT: &str = "endpoint terminating";

/// What the sync reads of an EndpointSlice, and all the index keeps of one: its ports and,
/// per endpoint, the addresses and two conditions. k8s-openapi's `Endpoint` is ~340 bytes
/// however few of its fields are set (at 10,000 endpoints the slices were the largest part
/// of the controller's heap); an [`EndpointState`] is 24, plus its addresses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SliceEndpoints {
    pub ports: Box<[EndpointPort]>,
    pub endpoints: Box<[EndpointState]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointState {
    pub addresses: Box<[String]>,
    /// `conditions.ready`, unset counted as ready (as Kubernetes defines it).
    pub ready: bool,
    pub terminating: bool,
}

impl From<EndpointSlice> for SliceEndpoints {
    fn from(slice: EndpointSlice) -> Self {
        let endpoints = slice.endpoints.into_iter().map(|ep| {
            let cond = ep.conditions.unwrap_or_default();
            EndpointState {
                addresses: ep.addresses.into_boxed_slice(),
                ready: cond.ready.unwrap_or(true),
                terminating: cond.terminating == Some(true),
            }
        });
        Self { ports: slice.ports.unwrap_or_default().into_boxed_slice(), endpoints: endpoints.collect() }
    }
}

pub fn check_id(service_id: &str) -> String {
    format!("{service_id}/ready")
}

/// The annotations whose values [`service_instances`] validates: when one is bad, the
/// sync keeps registering the Service as these last were when all were good.
pub const VALIDATED_ANNOTATIONS: [&str; 3] = [ANNOTATION_PORT, ANNOTATION_META, ANNOTATION_TAGS];

/// The result for one Service: its instances and what was wrong with its annotations.
/// When `problems` is not empty the instances are not to be written: the Service keeps
/// its last good registration and the problems are reported on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub instances: Vec<Instance>,
    pub problems: Vec<String>,
}

/// Whether `svc` is synced: namespace allowed and active, not created by concord from
/// Consul, annotation `concord.io/sync` or the default.
pub fn is_selected(cfg: &ToConsulConfig, svc: &Service, namespace_active: bool) -> bool {
    let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    if !namespace_active || !cfg.namespace_allowed(ns) || svc.metadata.deletion_timestamp.is_some() {
        return false;
    }
    if svc.metadata.labels.as_ref().is_some_and(|l| l.contains_key(SYNC_IDENTITY_LABEL)) {
        return false;
    }
    match annotation(svc, ANNOTATION_SYNC).map(str::trim) {
        Some("true") => true,
        Some("false") => false,
        _ => cfg.default_sync,
    }
}

fn annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a str> {
    svc.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The instances `svc` should have in Consul, given its EndpointSlices.
pub fn service_instances(
    cfg: &ToConsulConfig,
    svc: &Service,
    slices: &[&SliceEndpoints],
    namespace_active: bool,
) -> Desired {
    let mut out = Desired::default();
    if !is_selected(cfg, svc, namespace_active) {
        return out;
    }
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let svc_name = svc.metadata.name.clone().unwrap_or_default();
    let consul_name = annotation(svc, ANNOTATION_SERVICE_NAME)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(&svc_name)
        .to_string();
    let tags: Vec<String> = annotation(svc, ANNOTATION_TAGS)
        .map(|t| t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    if let Some(bad) = tags.iter().find(|t| t.chars().any(|c| c.is_whitespace() || c.is_control())) {
        out.problems.push(format!(
            "{ANNOTATION_TAGS}: tag {bad:?} has white space or a control character (tags are comma-separated)"
        ));
    }
    let mut meta = BTreeMap::new();
    if let Some(raw) = annotation(svc, ANNOTATION_META) {
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw) {
            Ok(map) => {
                for (k, v) in map {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    meta.insert(k, v);
                }
            }
            Err(e) => out.problems.push(format!("{ANNOTATION_META} is not a JSON object: {e}")),
        }
    }
    meta.insert(META_EXTERNAL_SOURCE.into(), EXTERNAL_SOURCE_KUBERNETES.into());
    meta.insert(META_K8S_NAMESPACE.into(), ns.clone());
    meta.insert(META_K8S_SERVICE.into(), svc_name.clone());
    meta.insert(META_SYNC.into(), cfg.identity.as_str().to_string());
    let (tags, meta) = (Arc::new(tags), Arc::new(meta));

    let spec = svc.spec.clone().unwrap_or_default();
    let port_choice = annotation(svc, ANNOTATION_PORT).map(str::trim).filter(|s| !s.is_empty());
    let service_ports = spec.ports.clone().unwrap_or_default();
    let mk = |address: &str, port: u16, status: CheckStatus, output: &'static str| Instance {
        id: format!("{ns}-{svc_name}-{address}-{port}"),
        name: consul_name.clone(),
        tags: tags.clone(),
        address: address.to_string(),
        port,
        meta: meta.clone(),
        status,
        output: Cow::Borrowed(output),
    };
    let mut by_id: BTreeMap<String, Instance> = BTreeMap::new();
    let mut add = |i: Instance| {
        // The same address may sit in two slices during a handover: ready wins.
        match by_id.get(&i.id) {
            Some(existing) if existing.status == CheckStatus::Passing => {}
            _ => {
                by_id.insert(i.id.clone(), i);
            }
        }
    };

    // The Service-level port (not the endpoint port) for ExternalName and LoadBalancer:
    // the annotation's (a Service port's name or number, or else a port number of its
    // own, 1-65535), else the first Service port, else none (0). A chosen port that is
    // none of these is a problem, never port 0.
    let service_port = || -> Result<u16, String> {
        let Some(choice) = port_choice else {
            return Ok(service_ports.first().and_then(|p| u16::try_from(p.port).ok()).unwrap_or(0));
        };
        let named = service_ports
            .iter()
            .find(|p| p.name.as_deref() == Some(choice) || choice.parse::<i32>().ok() == Some(p.port))
            .and_then(|p| u16::try_from(p.port).ok());
        named.or_else(|| choice.parse::<u16>().ok()).filter(|p| *p > 0).ok_or_else(|| {
            format!("{ANNOTATION_PORT}={choice} is neither a port of the Service nor a port number (1-65535)")
        })
    };

    if spec.type_.as_deref() == Some("ExternalName") {
        match (spec.external_name.as_deref().filter(|s| !s.is_empty()), service_port()) {
            (Some(host), Ok(port)) => add(mk(host, port, CheckStatus::Passing, "ExternalName Service")),
            (None, _) => out.problems.push("ExternalName Service without spec.externalName".into()),
            (_, Err(problem)) => out.problems.push(problem),
        }
    } else if annotation(svc, ANNOTATION_USE_LB_IP).map(str::trim) == Some("true") {
        let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.clone());
        match service_port() {
            Ok(port) => {
                for ing in ingress.unwrap_or_default() {
                    if let Some(addr) = ing.ip.as_deref().or(ing.hostname.as_deref()).filter(|a| !a.is_empty()) {
                        add(mk(addr, port, CheckStatus::Passing, "LoadBalancer ingress"));
                    }
                }
            }
            Err(problem) => out.problems.push(problem),
        }
    } else {
        // Which endpoint port: by annotation, else the Service's first port by name.
        let wanted_name: Option<String> = match port_choice {
            Some(choice) => match choice.parse::<i32>() {
                Ok(n) => service_ports.iter().find(|p| p.port == n).map(|p| p.name.clone().unwrap_or_default()),
                Err(_) => Some(choice.to_string()),
            },
            None => service_ports.first().map(|p| p.name.clone().unwrap_or_default()),
        };
        let pick = |ports: &[EndpointPort]| -> Option<u16> {
            let found = match (port_choice, &wanted_name) {
                (Some(choice), name) => {
                    ports.iter().find(|p| choice.parse::<i32>().ok().is_some_and(|n| p.port == Some(n))).or_else(|| {
                        name.as_ref().and_then(|n| ports.iter().find(|p| p.name.as_deref().unwrap_or("") == n))
                    })
                }
                (None, Some(name)) => {
                    ports.iter().find(|p| p.name.as_deref().unwrap_or("") == name).or_else(|| ports.first())
                }
                (None, None) => ports.first(),
            };
            found.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok())
        };
        let mut unmatched = false;
        for slice in slices {
            let Some(port) = pick(&slice.ports) else {
                unmatched |= !slice.endpoints.is_empty();
                continue;
            };
            for ep in &slice.endpoints {
                let (status, output) = if ep.ready {
                    (CheckStatus::Passing, READY_OUTPUT)
                } else if ep.terminating {
                    (CheckStatus::Critical, TERMINATING_OUTPUT)
                } else {
                    (CheckStatus::Critical, NOT_READY_OUTPUT)
                };
                for addr in &ep.addresses {
                    add(mk(addr, port, status, output));
                }
            }
        }
        if unmatched && let Some(choice) = port_choice {
            out.problems.push(format!("{ANNOTATION_PORT}={choice} matches no port of the Service's EndpointSlices"));
        }
    }
    out.instances = by_id.into_values().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn cfg() -> ToConsulConfig {
        ToConsulConfig {
            identity: SyncIdentity::new("ops-consul"),
            default_sync: false,
            allow_namespaces: Default::default(),
            deny_namespaces: ["kube-system".to_string()].into(),
            anti_entropy: DEFAULT_ANTI_ENTROPY,
            actor: crate::context::Actor::Controller,
        }
    }

    pub(crate) fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    pub(crate) fn slice(v: serde_json::Value) -> SliceEndpoints {
        serde_json::from_value::<EndpointSlice>(v).expect("slice").into()
    }

    fn api_v1() -> Service {
        svc(json!({
            "metadata": {"name": "api-v1", "namespace": "shop", "annotations": {
                "concord.io/sync": "true", "concord.io/service-name": "api",
                "concord.io/tags": "v1, production,", "concord.io/meta": "{\"team\":\"pay\",\"weight\":3}"}},
            "spec": {"ports": [{"name": "http", "port": 80}]}
        }))
    }

    fn api_v1_slice(ready: bool) -> SliceEndpoints {
        slice(json!({
            "metadata": {"name": "api-v1-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "api-v1"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 3001}],
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": ready}}]
        }))
    }

    #[test]
    fn one_instance_per_endpoint_with_name_tags_meta_and_ownership() {
        let d = service_instances(&cfg(), &api_v1(), &[&api_v1_slice(true)], true);
        assert!(d.problems.is_empty());
        assert_eq!(d.instances.len(), 1);
        let i = &d.instances[0];
        assert_eq!(i.id, "shop-api-v1-10.0.0.1-3001");
        assert_eq!(i.name, "api");
        assert_eq!(*i.tags, ["v1", "production"]);
        assert_eq!(i.port, 3001);
        assert_eq!(i.status, CheckStatus::Passing);
        assert_eq!(i.meta["team"], "pay");
        assert_eq!(i.meta["weight"], "3");
        assert_eq!(i.meta[META_EXTERNAL_SOURCE], "kubernetes");
        assert_eq!(i.meta[META_SYNC], "ops-consul");
        assert_eq!(i.key(), ("shop".to_string(), "api-v1".to_string()));
    }

    #[test]
    fn not_ready_and_terminating_endpoints_are_critical() {
        let d = service_instances(&cfg(), &api_v1(), &[&api_v1_slice(false)], true);
        assert_eq!(d.instances[0].status, CheckStatus::Critical);
        let term = slice(json!({
            "metadata": {"name": "x", "namespace": "shop"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 3001}],
            "endpoints": [{"addresses": ["10.0.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                          {"addresses": ["10.0.0.3"]}]
        }));
        let d = service_instances(&cfg(), &api_v1(), &[&term], true);
        assert_eq!(d.instances[0].status, CheckStatus::Critical);
        assert_eq!(d.instances[0].output, "endpoint terminating");
        assert_eq!(d.instances[1].status, CheckStatus::Passing, "unset ready means ready");
    }

    #[test]
    fn selection_follows_annotation_default_namespace_and_loop_label() {
        let mut c = cfg();
        let plain = svc(json!({"metadata": {"name": "a", "namespace": "shop"}}));
        assert!(!is_selected(&c, &plain, true));
        c.default_sync = true;
        assert!(is_selected(&c, &plain, true));
        assert!(!is_selected(&c, &plain, false), "namespace being deleted");
        let off =
            svc(json!({"metadata": {"name": "a", "namespace": "shop", "annotations": {"concord.io/sync": "false"}}}));
        assert!(!is_selected(&c, &off, true));
        let denied = svc(json!({"metadata": {"name": "a", "namespace": "kube-system"}}));
        assert!(!is_selected(&c, &denied, true));
        let mirrored = svc(json!({"metadata": {"name": "a", "namespace": "shop",
            "labels": {"concord.io/sync-identity": "ops-consul"}, "annotations": {"concord.io/sync": "true"}}}));
        assert!(!is_selected(&c, &mirrored, true), "never register back what came from Consul");
    }

    #[test]
    fn port_by_annotation_name_or_number_else_first() {
        let multi = |ann: Option<&str>| {
            let mut s = svc(json!({
                "metadata": {"name": "m", "namespace": "shop", "annotations": {"concord.io/sync": "true"}},
                "spec": {"ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 9090}]}
            }));
            if let Some(a) = ann {
                s.metadata.annotations.as_mut().expect("set").insert(ANNOTATION_PORT.into(), a.into());
            }
            s
        };
        let sl = slice(json!({
            "metadata": {"name": "m-1", "namespace": "shop"}, "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": 19090}, {"name": "http", "port": 18080}],
            "endpoints": [{"addresses": ["10.0.0.9"]}]
        }));
        let port = |ann| service_instances(&cfg(), &multi(ann), &[&sl], true).instances[0].port;
        assert_eq!(port(None), 18080, "the Service's first port, matched by name");
        assert_eq!(port(Some("grpc")), 19090);
        assert_eq!(port(Some("9090")), 19090, "a Service port number maps to its endpoint port");
        assert_eq!(port(Some("18080")), 18080, "an endpoint port number");
        let bad = service_instances(&cfg(), &multi(Some("nope")), &[&sl], true);
        assert!(bad.instances.is_empty());
        assert_eq!(bad.problems.len(), 1);
    }

    #[test]
    fn selectorless_service_without_ports_uses_the_slice_port_and_merges_slices() {
        let s =
            svc(json!({"metadata": {"name": "db", "namespace": "shop", "annotations": {"concord.io/sync": "true"}}}));
        let a = slice(json!({"metadata": {"name": "db-a", "namespace": "shop"}, "addressType": "IPv4",
            "ports": [{"port": 5432}], "endpoints": [{"addresses": ["10.0.1.1"]}]}));
        let b = slice(json!({"metadata": {"name": "db-b", "namespace": "shop"}, "addressType": "IPv4",
            "ports": [{"port": 5432}], "endpoints": [{"addresses": ["10.0.1.2"]}, {"addresses": ["10.0.1.1"], "conditions": {"ready": false}}]}));
        let d = service_instances(&cfg(), &s, &[&a, &b], true);
        assert_eq!(d.instances.len(), 2);
        assert!(d.instances.iter().all(|i| i.port == 5432 && i.status == CheckStatus::Passing));
    }

    #[test]
    fn external_name_and_load_balancer() {
        let ext =
            svc(json!({"metadata": {"name": "ext", "namespace": "shop", "annotations": {"concord.io/sync": "true"}},
            "spec": {"type": "ExternalName", "externalName": "db.example.com", "ports": [{"port": 5432}]}}));
        let d = service_instances(&cfg(), &ext, &[], true);
        assert_eq!((d.instances[0].address.as_str(), d.instances[0].port), ("db.example.com", 5432));
        let lb = svc(json!({"metadata": {"name": "lb", "namespace": "shop", "annotations": {
                "concord.io/sync": "true", "concord.io/use-load-balancer-ip": "true"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 443, "targetPort": 8443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"hostname": "lb.example.com"}]}}}));
        let d = service_instances(&cfg(), &lb, &[&api_v1_slice(true)], true);
        let got: Vec<_> = d.instances.iter().map(|i| (i.address.as_str(), i.port)).collect();
        assert_eq!(got, [("203.0.113.7", 443), ("lb.example.com", 443)]);
    }

    #[test]
    fn bad_meta_tags_or_port_are_problems() {
        for (key, value) in [
            (ANNOTATION_META, "[1,2]"),
            (ANNOTATION_META, "{\"team\": "),
            (ANNOTATION_TAGS, "v1, production env"),
            (ANNOTATION_TAGS, "v1,\u{7}"),
            (ANNOTATION_PORT, "htp"),
            (ANNOTATION_PORT, "70000"),
        ] {
            let mut s = api_v1();
            s.metadata.annotations.as_mut().expect("set").insert(key.into(), value.into());
            let d = service_instances(&cfg(), &s, &[&api_v1_slice(true)], true);
            assert_eq!(d.problems.len(), 1, "{key}={value}: {:?}", d.problems);
            assert!(d.problems[0].contains(key), "{:?}", d.problems);
        }
        // Tags with spaces around the commas are fine.
        let d = service_instances(&cfg(), &api_v1(), &[&api_v1_slice(true)], true);
        assert!(d.problems.is_empty());
    }

    #[test]
    fn an_out_of_range_port_on_external_name_or_load_balancer_is_a_problem_never_port_0() {
        let with_port = |ty: &str, port: Option<&str>| {
            let mut s = svc(json!({"metadata": {"name": "x", "namespace": "shop", "annotations": {
                    "concord.io/sync": "true", "concord.io/use-load-balancer-ip": "true"}},
                "spec": {"type": ty, "externalName": "db.example.com", "ports": [{"name": "pg", "port": 5432}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}));
            if let Some(p) = port {
                s.metadata.annotations.as_mut().expect("set").insert(ANNOTATION_PORT.into(), p.into());
            }
            service_instances(&cfg(), &s, &[], true)
        };
        for ty in ["ExternalName", "LoadBalancer"] {
            for bad in ["70000", "0", "-1", "pgx"] {
                let d = with_port(ty, Some(bad));
                assert!(d.instances.is_empty(), "{ty} {bad}: {:?}", d.instances);
                assert_eq!(d.problems.len(), 1, "{ty} {bad}");
            }
            let port = |p| with_port(ty, p).instances.iter().map(|i| i.port).collect::<Vec<_>>();
            assert_eq!(port(None), [5432], "{ty}");
            assert_eq!(port(Some("pg")), [5432], "{ty}");
            assert_eq!(port(Some("6432")), [6432], "{ty}: a port number of its own");
        }
    }

    #[test]
    fn catalog_round_trip_is_equal() {
        let d = service_instances(&cfg(), &api_v1(), &[&api_v1_slice(true)], true);
        let i = &d.instances[0];
        let back = Instance::from_catalog(&i.node_service(), Some(&i.health_check("n")));
        assert_eq!(&back, i);
        // Ready: registered without a check, and read back as such.
        assert!(!i.needs_check());
        assert_eq!(&Instance::from_catalog(&i.node_service(), None), i);
        // Not ready: a missing check is a gap (Consul would count it as passing).
        let d = service_instances(&cfg(), &api_v1(), &[&api_v1_slice(false)], true);
        let i = &d.instances[0];
        assert!(i.needs_check());
        assert_eq!(&Instance::from_catalog(&i.node_service(), Some(&i.health_check("n"))), i);
        assert_ne!(&Instance::from_catalog(&i.node_service(), None), i);
    }
}
