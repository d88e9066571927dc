//! ServiceIntention: the Consul `service-intentions` entry of one destination, on the
//! generic config-entry controller ([`crate::controllers::config_entry`]), which gives it
//! check-and-set writes, the owner mark, drift correction, duplicate and refusal reasons,
//! import and the finalizer. This module is the mapping only ([`entry`] is pure).
//!
//! Import: `spec.sync.importIntentions: true` on a DiscoveryCluster (or
//! `importConfigEntries: [ServiceIntention]`) makes an object `imported-<destination>`
//! for each entry nothing manages.
pub mod entry;

use super::config_entry::ConfigEntryKind;
use crate::cluster::Grants;
use crate::consul::{SERVICE_INTENTIONS, ServiceIntentionsEntry};
use crate::resources::{ConfigEntryStatus, DiscoveryCluster, ServiceIntention};
use serde_json::Value;

pub use super::config_entry::IMPORTED_LABEL;
pub const FINALIZER: &str = "concord.io/serviceintention";

impl ConfigEntryKind for ServiceIntention {
    const CONSUL_KIND: &'static str = SERVICE_INTENTIONS;
    const CONTROLLER: &'static str = "serviceintention";
    const FINALIZER: &'static str = FINALIZER;
    /// L7 permissions need protocol http from service-defaults or proxy-defaults.
    const DEPENDS_ON: &'static [&'static str] = &["service-defaults", "proxy-defaults"];
    const DUPLICATE_REASON: &'static str = "DuplicateDestination";

    fn cluster_ref(&self) -> Option<&str> {
        self.spec.cluster_ref.as_deref()
    }

    fn entry_name(&self) -> String {
        self.spec.destination.clone()
    }

    fn entry_body(&self) -> Value {
        let unowned = entry::Owner { namespace: String::new(), name: String::new(), uid: String::new() };
        let mut body = serde_json::to_value(entry::to_consul(&self.spec, &unowned)).unwrap_or(Value::Null);
        if let Some(fields) = body.as_object_mut() {
            fields.remove("Meta");
        }
        body
    }

    fn config_status(&self) -> Option<&ConfigEntryStatus> {
        self.status.as_ref()
    }

    fn granted(&self, grants: &Grants) -> Result<(), String> {
        grants.intention_destination(&self.spec.destination)
    }

    fn synced_message(&self) -> String {
        format!("{} sources written to Consul", self.spec.sources.len())
    }

    /// Sources compare as a set (Consul sorts them by precedence and adds computed
    /// fields), Meta exactly.
    fn matches(desired: &Value, actual: &Value) -> bool {
        match (decode(desired), decode(actual)) {
            (Some(d), Some(a)) => entry::matches(&d, &a),
            _ => false,
        }
    }

    fn import(found: &Value) -> Option<(String, Value)> {
        let spec = entry::from_consul(&decode(found)?)?;
        Some((imported_name(&spec.destination), serde_json::to_value(spec).ok()?))
    }

    fn wants_import(dc: &DiscoveryCluster) -> bool {
        dc.spec.sync.as_ref().is_some_and(|s| {
            s.import_intentions.unwrap_or(false) || s.import_config_entries.iter().any(|k| k == "ServiceIntention")
        })
    }
}

fn decode(v: &Value) -> Option<ServiceIntentionsEntry> {
    serde_json::from_value(v.clone()).ok()
}

/// `imported-<destination>` as a DNS-1123 name (`*` → `all`).
pub fn imported_name(destination: &str) -> String {
    let base = if destination == "*" { "all".to_string() } else { destination.to_ascii_lowercase() };
    let mut name: String = format!("imported-{base}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .collect();
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::config_entry::entry::Owner;
    use serde_json::json;

    #[test]
    fn imported_names_are_dns_labels() {
        assert_eq!(imported_name("api"), "imported-api");
        assert_eq!(imported_name("*"), "imported-all");
        assert_eq!(imported_name("Web_Front"), "imported-web-front");
    }

    fn object(spec: Value) -> ServiceIntention {
        ServiceIntention::new("api", serde_json::from_value(spec).expect("spec"))
    }

    #[test]
    fn desired_entry_is_the_typed_entry_with_the_owner_mark() {
        let si = object(json!({"destination": "api", "sources": [{"name": "web", "action": "allow"}]}));
        let owner = Owner { namespace: "team".into(), name: "api".into(), uid: "u-1".into() };
        let desired = si.desired_entry(&owner);
        let typed = serde_json::to_value(entry::to_consul(&si.spec, &owner)).expect("encode");
        assert_eq!(desired, typed);
        let mut actual = typed.clone();
        actual["Sources"][0]["Precedence"] = json!(9);
        actual["ModifyIndex"] = json!(4);
        assert!(ServiceIntention::matches(&desired, &actual));
        actual["Sources"][0]["Action"] = json!("deny");
        assert!(!ServiceIntention::matches(&desired, &actual));
    }

    #[test]
    fn import_names_the_object_after_the_destination() {
        let found = json!({"Kind": "service-intentions", "Name": "*",
            "Sources": [{"Name": "web", "Action": "deny", "Precedence": 1, "Type": "consul"}], "ModifyIndex": 3});
        let (name, spec) = ServiceIntention::import(&found).expect("importable");
        assert_eq!(name, "imported-all");
        assert_eq!(spec, json!({"destination": "*", "sources": [{"name": "web", "action": "deny"}]}));
    }
}
