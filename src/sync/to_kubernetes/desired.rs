//! What Kubernetes should hold for one Consul service (pure): a selector-less headless
//! Service and EndpointSlices of its passing instances.
//!
//! Decisions:
//! - Only instances that did not come from Kubernetes (`external-source` other than
//!   `kubernetes`) are mirrored: the loop breaker of this direction. A Consul service
//!   whose every instance came from Kubernetes is not mirrored at all.
//! - The Service is headless (`clusterIP: None`): its DNS name answers with the passing
//!   instances' addresses, like Consul DNS does, and no virtual IP is needed. Its ports
//!   are the instances' ports (healthy or not, so a health flip never changes the spec).
//! - One EndpointSlice per address type and port (a slice has one port list for all its
//!   endpoints), at most 1000 endpoints each; only passing instances are in them.
use crate::consul::{CheckStatus, ServiceEntry};
use crate::sync::*;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Most endpoints Kubernetes allows in one EndpointSlice.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 1000;

/// One Consul instance as this direction needs it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MirrorInstance {
    pub address: String,
    pub port: u16,
    pub passing: bool,
}

/// The instances of a Consul service that should be mirrored (not from Kubernetes).
pub fn mirrored_instances(entries: &[ServiceEntry]) -> Vec<MirrorInstance> {
    let mut out: Vec<MirrorInstance> = entries
        .iter()
        .filter(|e| e.service.meta.get(META_EXTERNAL_SOURCE).map(String::as_str) != Some(EXTERNAL_SOURCE_KUBERNETES))
        .map(|e| MirrorInstance {
            address: e.address().to_string(),
            port: e.service.port,
            passing: e.aggregated_status() == CheckStatus::Passing,
        })
        .filter(|i| !i.address.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a Consul service name is mirrored at all.
pub fn is_candidate(cfg: &ToKubernetesConfig, consul_name: &str) -> bool {
    !cfg.deny_services.contains(consul_name)
}

/// Whether a Service (or slice) was created by this sync.
pub fn owned_by(identity: &SyncIdentity, labels: Option<&BTreeMap<String, String>>) -> bool {
    labels.and_then(|l| l.get(SYNC_IDENTITY_LABEL)).map(String::as_str) == Some(identity.as_str())
}

/// Labels every mirrored object carries.
pub fn labels(identity: &SyncIdentity) -> BTreeMap<String, String> {
    [
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (SYNC_IDENTITY_LABEL.to_string(), identity.as_str().to_string()),
    ]
    .into()
}

/// The Service and its EndpointSlices.
#[derive(Clone, Debug, PartialEq)]
pub struct Objects {
    pub service: Service,
    pub slices: Vec<EndpointSlice>,
}

fn port_name(port: u16) -> String {
    format!("tcp-{port}")
}

fn address_type(address: &str) -> Option<&'static str> {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => Some("IPv4"),
        Ok(IpAddr::V6(_)) => Some("IPv6"),
        Err(_) if is_fqdn(address) => Some("FQDN"),
        Err(_) => None,
    }
}

/// A DNS-1123 subdomain, what an FQDN EndpointSlice accepts.
fn is_fqdn(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The objects mirroring `consul_name` as `k8s_name` in the target namespace.
pub fn objects(cfg: &ToKubernetesConfig, consul_name: &str, k8s_name: &str, instances: &[MirrorInstance]) -> Objects {
    let ns = cfg.target_namespace.clone();
    let ports: BTreeSet<u16> = instances.iter().map(|i| i.port).filter(|p| *p > 0).collect();
    let service = Service {
        metadata: ObjectMeta {
            name: Some(k8s_name.to_string()),
            namespace: Some(ns.clone()),
            labels: Some(labels(&cfg.identity)),
            annotations: Some([(ANNOTATION_CONSUL_SERVICE.to_string(), consul_name.to_string())].into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            ports: Some(
                ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(port_name(*p)),
                        port: i32::from(*p),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    };
    let mut groups: BTreeMap<(&'static str, u16), Vec<&MirrorInstance>> = BTreeMap::new();
    for i in instances.iter().filter(|i| i.passing && i.port > 0) {
        if let Some(t) = address_type(&i.address) {
            groups.entry((t, i.port)).or_default().push(i);
        }
    }
    let mut slices = Vec::new();
    for ((addr_type, port), members) in groups {
        for (n, chunk) in members.chunks(MAX_ENDPOINTS_PER_SLICE).enumerate() {
            let suffix = if n == 0 { String::new() } else { format!("-{n}") };
            let mut slice_labels = labels(&cfg.identity);
            slice_labels.insert("kubernetes.io/service-name".into(), k8s_name.to_string());
            slice_labels.insert(LABEL_SLICE_MANAGED_BY.into(), SLICE_MANAGED_BY.into());
            slices.push(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{k8s_name}-{}-{port}{suffix}", addr_type.to_ascii_lowercase())),
                    namespace: Some(ns.clone()),
                    labels: Some(slice_labels),
                    annotations: Some([(ANNOTATION_CONSUL_SERVICE.to_string(), consul_name.to_string())].into()),
                    ..Default::default()
                },
                address_type: addr_type.to_string(),
                endpoints: chunk
                    .iter()
                    .map(|i| Endpoint {
                        addresses: vec![i.address.clone()],
                        conditions: Some(EndpointConditions {
                            ready: Some(true),
                            serving: Some(true),
                            terminating: Some(false),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ports: Some(vec![EndpointPort {
                    name: Some(port_name(port)),
                    port: Some(i32::from(port)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
            });
        }
    }
    Objects { service, slices }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> ToKubernetesConfig {
        ToKubernetesConfig {
            identity: SyncIdentity::new("ops-consul"),
            target_namespace: "mirror".into(),
            prefix: String::new(),
            deny_services: ["consul".to_string()].into(),
            anti_entropy: DEFAULT_ANTI_ENTROPY,
            actor: crate::context::Actor::Controller,
        }
    }

    fn entry(addr: &str, port: u16, status: &str, source: Option<&str>) -> ServiceEntry {
        let meta = match source {
            Some(s) => json!({"external-source": s}),
            None => json!({}),
        };
        serde_json::from_value(json!({
            "Node": {"Node": "vm1", "Address": "192.168.0.1"},
            "Service": {"ID": format!("x-{addr}"), "Service": "billing", "Address": addr, "Port": port, "Meta": meta,
                        "Weights": {"Passing": 1, "Warning": 1}},
            "Checks": [{"CheckID": "c", "Name": "c", "Status": status}]
        }))
        .expect("entry")
    }

    #[test]
    fn only_instances_not_from_kubernetes_are_mirrored() {
        let entries = [
            entry("10.1.0.1", 8080, "passing", None),
            entry("10.1.0.2", 8080, "critical", Some("vm")),
            entry("10.9.9.9", 8080, "passing", Some("kubernetes")),
        ];
        let got = mirrored_instances(&entries);
        assert_eq!(got.len(), 2);
        assert!(got[0].passing && !got[1].passing);
        assert!(!is_candidate(&cfg(), "consul"));
        assert!(is_candidate(&cfg(), "billing"));
    }

    #[test]
    fn service_and_slice_hold_the_passing_instances() {
        let inst = |a: &str, passing| MirrorInstance { address: a.into(), port: 8080, passing };
        let o = objects(
            &cfg(),
            "billing",
            "billing",
            &[inst("10.1.0.1", true), inst("10.1.0.2", false), inst("10.1.0.3", true)],
        );
        assert!(owned_by(&cfg().identity, o.service.metadata.labels.as_ref()));
        assert_eq!(o.service.metadata.namespace.as_deref(), Some("mirror"));
        let spec = o.service.spec.as_ref().expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert!(spec.selector.is_none());
        assert_eq!(spec.ports.as_ref().expect("ports")[0].port, 8080);
        assert_eq!(o.slices.len(), 1);
        let s = &o.slices[0];
        assert_eq!(s.metadata.name.as_deref(), Some("billing-ipv4-8080"));
        assert_eq!(s.metadata.labels.as_ref().expect("labels")["kubernetes.io/service-name"], "billing");
        let addrs: Vec<_> = s.endpoints.iter().map(|e| e.addresses[0].as_str()).collect();
        assert_eq!(addrs, ["10.1.0.1", "10.1.0.3"]);
    }

    #[test]
    fn slices_split_by_address_type_port_and_size() {
        let mut many: Vec<MirrorInstance> = (0..1500)
            .map(|n| MirrorInstance { address: format!("10.2.{}.{}", n / 250, n % 250), port: 80, passing: true })
            .collect();
        many.push(MirrorInstance { address: "fd00::1".into(), port: 80, passing: true });
        many.push(MirrorInstance { address: "db.example.com".into(), port: 5432, passing: true });
        many.push(MirrorInstance { address: "not a host!".into(), port: 80, passing: true });
        let o = objects(&cfg(), "big", "big", &many);
        let slices: Vec<(String, usize)> =
            o.slices.iter().map(|s| (s.metadata.name.clone().expect("name"), s.endpoints.len())).collect();
        assert_eq!(
            slices,
            [
                ("big-fqdn-5432".to_string(), 1),
                ("big-ipv4-80".to_string(), 1000),
                ("big-ipv4-80-1".to_string(), 500),
                ("big-ipv6-80".to_string(), 1)
            ]
        );
    }
}
