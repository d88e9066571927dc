//! What each fuzz target does with its input: the parsers of user input (Service sync
//! annotations, names, durations, snapshot locations, template arguments, KV desired
//! state) and the decoding of Consul's answers, each with the invariants its output must
//! keep. One function per target; the fuzz binaries (`fuzz/fuzz_targets/*.rs`) call
//! them, and `cargo test --test fuzz_corpus` replays every file of `fuzz/corpus/<target>/`
//! through the same function, so the corpus (and every crash found, kept there) runs in
//! the normal test command.
#![allow(dead_code)] // each includer uses all of it; rustc sees one binary at a time

use concord::sync::to_consul::desired;
use concord::sync::{SyncIdentity, ToConsulConfig, names};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::time::Duration;

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// Every target, by its corpus directory name.
pub const TARGETS: [(&str, Target); 7] = [
    ("annotations", annotations),
    ("names", names),
    ("durations", durations),
    ("snapshot_locations", snapshot_locations),
    ("template_args", template_args),
    ("kv_desired", kv_desired),
    ("consul_responses", consul_responses),
];

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The input's lines, at most `n`, each possibly empty.
fn fields(data: &[u8], n: usize) -> Vec<String> {
    let s = text(data);
    let mut out: Vec<String> = s.splitn(n, '\n').map(str::to_string).collect();
    out.resize(n, String::new());
    out
}

/// Lines: port, meta, tags, Service type, LB-IP flag, Service port name → the instances.
/// Invariants: problems and instances never both; no instance with port 0 unless the
/// Service has no port at all; every instance carries the sync's ownership meta.
pub fn annotations(data: &[u8]) {
    let f = fields(data, 6);
    let cfg = ToConsulConfig {
        identity: SyncIdentity::new("fuzz"),
        default_sync: true,
        allow_namespaces: Default::default(),
        deny_namespaces: Default::default(),
        anti_entropy: Duration::from_secs(60),
        actor: concord::context::Actor::Controller,
    };
    let ty = match f[3].trim() {
        "ExternalName" | "e" => "ExternalName",
        "LoadBalancer" | "l" => "LoadBalancer",
        _ => "ClusterIP",
    };
    let service = serde_json::json!({
        "metadata": {"name": "web", "namespace": "ns", "annotations": {
            "concord.io/port": f[0], "concord.io/meta": f[1], "concord.io/tags": f[2],
            "concord.io/use-load-balancer-ip": f[4].trim()}},
        "spec": {"type": ty, "externalName": "db.example.com",
                 "ports": [{"name": f[5], "port": 80}, {"name": "b", "port": 9090}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
    });
    let Ok(service) = serde_json::from_value::<Service>(service) else { return };
    let slice = serde_json::json!({
        "metadata": {"name": "web-1", "namespace": "ns"}, "addressType": "IPv4",
        "ports": [{"name": f[5], "port": 8080}, {"name": "b", "port": 19090}],
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}]
    });
    let Ok(slice) = serde_json::from_value::<EndpointSlice>(slice) else { return };
    let d = desired::service_instances(&cfg, &service, &[&desired::SliceEndpoints::from(slice)], true);
    if !d.problems.is_empty() {
        return;
    }
    for i in &d.instances {
        assert_ne!(i.port, 0, "port 0 registered for {:?}", &f[..3]);
        assert_eq!(i.meta.get(concord::sync::META_SYNC).map(String::as_str), Some("fuzz"));
        assert!(i.tags.iter().all(|t| !t.is_empty() && !t.contains(char::is_whitespace)), "{:?}", i.tags);
    }
}

fn is_dns1035(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= names::MAX_LABEL
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// First line: a prefix; the rest: Consul service names. Invariants: every name given is
/// a DNS-1035 label, the plan gives every name at most once and skips the rest, and
/// label values are valid.
pub fn names(data: &[u8]) {
    let s = text(data);
    let mut lines = s.split('\n');
    let prefix: String = lines.next().unwrap_or_default().chars().take(20).collect();
    let consul: Vec<String> = lines.map(str::to_string).collect();
    for name in &consul {
        if let Some(k8s) = names::dns1035(&prefix, name) {
            assert!(is_dns1035(&k8s), "{prefix:?} + {name:?} → {k8s:?}");
            assert_eq!(names::dns1035(&prefix, name).as_deref(), Some(k8s.as_str()), "not deterministic");
        }
        let v = names::label_value(name);
        assert!(v.len() <= names::MAX_LABEL);
        assert!(v.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)), "{v:?}");
        assert!(
            v.is_empty()
                || (v.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
        );
    }
    let plan = names::plan_names(&prefix, &consul);
    let mut given = std::collections::BTreeSet::new();
    for (c, k) in &plan.names {
        assert!(is_dns1035(k), "{k:?}");
        assert!(given.insert(k.clone()), "{k} given twice");
        assert!(!plan.skipped.contains_key(c));
    }
    for name in &consul {
        assert!(plan.names.contains_key(name) || plan.skipped.contains_key(name), "{name:?} neither named nor skipped");
    }
}

/// A Go duration (as in `spec.wait`, `antiEntropyInterval`, `--lease-duration`).
/// Invariant: parsing never panics, and a parsed duration prints back to the same value.
pub fn durations(data: &[u8]) {
    let s = text(data);
    if let Ok(d) = concord::resources::parse_duration(&s) {
        assert_eq!(d.subsec_nanos() % 1_000_000, 0, "{s:?}: finer than a millisecond");
        let secs = d.as_secs();
        let hours = secs / 3600;
        if hours <= u64::from(u32::MAX) {
            let printed = format!("{hours}h{}m{}s{}ms", secs % 3600 / 60, secs % 60, d.subsec_millis());
            assert_eq!(concord::resources::parse_duration(&printed).ok(), Some(d), "{s:?} → {printed:?}");
        }
    }
}

/// A snapshot location (file and folder) and a checksum sidecar's text. Invariants: an
/// accepted S3 location has a valid bucket and no `.`/`..`/empty key segment; an
/// accepted local path is absolute and has no `..`; what is accepted prints as a
/// location that parses back to itself.
pub fn snapshot_locations(data: &[u8]) {
    use concord::snapshot::location::{Location, parse_sidecar};
    let s = text(data);
    for parsed in [Location::parse_file(&s), Location::parse_dir(&s)] {
        if let Ok(loc) = &parsed {
            assert_eq!(Location::parse_dir(&loc.to_string()).as_ref(), Ok(loc), "{s:?}");
        }
        match parsed {
            Ok(Location::S3 { bucket, key }) => {
                assert!((3..=63).contains(&bucket.len()), "{bucket:?}");
                assert!(!key.split('/').any(|p| p == "." || p == ".."), "{key:?}");
                assert!(!key.contains("//"), "{key:?}");
            }
            Ok(Location::Local { path }) => {
                assert!(path.is_absolute(), "{path:?}");
                assert!(!path.components().any(|c| c == std::path::Component::ParentDir), "{path:?}");
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    if let Some(sum) = parse_sidecar(&s) {
        assert!(!sum.is_empty());
    }
}

/// `concord render` arguments: `--template src:dest[:command]` and `--wait min[:max]`.
/// Invariants: a parsed template has a source and destination; a parsed wait has
/// min <= max.
pub fn template_args(data: &[u8]) {
    let s = text(data);
    if let Ok(t) = concord::render::TemplateArg::parse(&s) {
        assert!(!t.source.as_os_str().is_empty() && !t.destination.as_os_str().is_empty());
    }
    if let Ok(w) = concord::template::quiescence::Wait::parse(&s) {
        assert!(w.min <= w.max, "{s:?}: {w:?}");
    }
}

/// A KVConfig spec as the API server would hand it over (JSON), with no ConfigMap or
/// Secret sources. Invariants: every declared key is valid and under the prefix; any
/// JSON value's canonical form parses back to the same value.
pub fn kv_desired(data: &[u8]) {
    use concord::controllers::kv_config::desired::{Sources, canonical_json, check_key, desired_keys, folder};
    if let Ok(spec) = serde_json::from_slice::<concord::resources::KVConfigSpec>(data)
        && let Ok(keys) = desired_keys(&spec, &Sources::default())
    {
        for key in keys.keys() {
            assert!(check_key(key).is_ok(), "{key:?}");
            assert!(key.starts_with(&folder(&spec.prefix)), "{key:?} outside {:?}", spec.prefix);
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let canonical = canonical_json(&value);
        let back: serde_json::Value = serde_json::from_str(&canonical).expect("canonical JSON parses");
        assert_eq!(canonical_json(&back), canonical);
    }
}

/// A Consul answer body, decoded as each type the client reads. Invariant: decoding
/// never panics, and what decodes as catalog entries rebuilds as sync instances.
pub fn consul_responses(data: &[u8]) {
    use concord::consul::*;
    use std::collections::BTreeMap;
    if let Ok(entries) = serde_json::from_slice::<Vec<ServiceEntry>>(data) {
        for e in &entries {
            let _ = desired::Instance::from_catalog(&e.service, e.checks.first());
        }
        let _ = concord::sync::to_kubernetes::desired::mirrored_instances(&entries);
    }
    let _ = serde_json::from_slice::<Vec<CatalogService>>(data);
    let _ = serde_json::from_slice::<Option<NodeServices>>(data);
    let _ = serde_json::from_slice::<Vec<HealthCheck>>(data);
    let _ = serde_json::from_slice::<Vec<Node>>(data);
    let _ = serde_json::from_slice::<BTreeMap<String, Vec<String>>>(data);
    let _ = serde_json::from_slice::<Vec<KvPair>>(data);
    let _ = serde_json::from_slice::<RaftConfiguration>(data);
    let _ = serde_json::from_slice::<AutopilotState>(data);
    let _ = serde_json::from_slice::<AgentSelf>(data);
    let _ = serde_json::from_slice::<Vec<TxnError>>(data);
}
