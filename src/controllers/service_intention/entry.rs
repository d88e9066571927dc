//! ServiceIntention ↔ Consul `service-intentions` config entry (pure). The ownership and
//! duplicate rules every kind shares are in [`crate::controllers::config_entry::entry`].
use crate::consul::{
    IntentionAction as ConsulAction, IntentionHttpHeaderPermission, IntentionHttpPermission,
    IntentionPermission as ConsulPermission, ServiceIntentionsEntry, SourceIntention,
};
use crate::resources::{
    HeaderMatch, HttpMatch, HttpMethod, IntentionAction, IntentionPermission, IntentionSource, ServiceIntentionSpec,
};
use std::collections::BTreeMap;

pub use crate::controllers::config_entry::entry::{OWNER_META, OWNER_UID_META, Owner};

fn action_to_consul(a: IntentionAction) -> ConsulAction {
    match a {
        IntentionAction::Allow => ConsulAction::Allow,
        IntentionAction::Deny => ConsulAction::Deny,
    }
}

fn action_from_consul(a: ConsulAction) -> IntentionAction {
    match a {
        ConsulAction::Allow => IntentionAction::Allow,
        ConsulAction::Deny => IntentionAction::Deny,
    }
}

fn method_name(m: HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "GET",
        HttpMethod::Head => "HEAD",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Connect => "CONNECT",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Trace => "TRACE",
        HttpMethod::Patch => "PATCH",
    }
}

fn permission_to_consul(p: &IntentionPermission) -> ConsulPermission {
    let h = &p.http;
    ConsulPermission {
        action: action_to_consul(p.action),
        http: Some(IntentionHttpPermission {
            path_exact: h.path_exact.clone(),
            path_prefix: h.path_prefix.clone(),
            path_regex: h.path_regex.clone(),
            header: h
                .header
                .iter()
                .map(|m| IntentionHttpHeaderPermission {
                    name: m.name.clone(),
                    present: m.present.unwrap_or(false),
                    exact: m.exact.clone(),
                    prefix: m.prefix.clone(),
                    suffix: m.suffix.clone(),
                    regex: m.regex.clone(),
                    invert: m.invert.unwrap_or(false),
                })
                .collect(),
            methods: h.methods.iter().map(|m| method_name(*m).to_string()).collect(),
        }),
    }
}

/// The entry an object declares, stamped with its owner.
pub fn to_consul(spec: &ServiceIntentionSpec, owner: &Owner) -> ServiceIntentionsEntry {
    let sources = spec
        .sources
        .iter()
        .map(|s| SourceIntention {
            name: s.name.clone(),
            action: s.action.map(action_to_consul),
            permissions: s.permissions.iter().flatten().map(permission_to_consul).collect(),
            description: s.description.clone(),
            ..Default::default()
        })
        .collect();
    let mut entry = ServiceIntentionsEntry::new(spec.destination.clone(), sources);
    entry.meta =
        BTreeMap::from([(OWNER_META.to_string(), owner.id()), (OWNER_UID_META.to_string(), owner.uid.clone())]);
    entry
}

/// The spec that declares an existing entry (for `importIntentions`), or `None` when the
/// entry uses something a ServiceIntention cannot say (peers, namespaces, non-HTTP
/// permissions, unknown methods).
pub fn from_consul(entry: &ServiceIntentionsEntry) -> Option<ServiceIntentionSpec> {
    let mut sources = Vec::new();
    for s in &entry.sources {
        if s.peer.as_deref().is_some_and(|p| !p.is_empty())
            || s.namespace.as_deref().is_some_and(|n| !n.is_empty() && n != "default")
        {
            return None;
        }
        let permissions = if s.permissions.is_empty() {
            None
        } else {
            let mut out = Vec::new();
            for p in &s.permissions {
                let h = p.http.as_ref()?;
                let methods = h
                    .methods
                    .iter()
                    .map(|m| serde_json::from_value::<HttpMethod>(serde_json::Value::String(m.to_uppercase())).ok())
                    .collect::<Option<Vec<_>>>()?;
                out.push(IntentionPermission {
                    action: action_from_consul(p.action),
                    http: HttpMatch {
                        path_exact: h.path_exact.clone(),
                        path_prefix: h.path_prefix.clone(),
                        path_regex: h.path_regex.clone(),
                        methods,
                        header: h
                            .header
                            .iter()
                            .map(|m| HeaderMatch {
                                name: m.name.clone(),
                                present: m.present.then_some(true),
                                exact: m.exact.clone(),
                                prefix: m.prefix.clone(),
                                suffix: m.suffix.clone(),
                                regex: m.regex.clone(),
                                invert: m.invert.then_some(true),
                            })
                            .collect(),
                    },
                });
            }
            Some(out)
        };
        sources.push(IntentionSource {
            name: s.name.clone(),
            action: if permissions.is_some() { None } else { s.action.map(action_from_consul) },
            permissions,
            description: s.description.clone().filter(|d| !d.is_empty()),
        });
    }
    Some(ServiceIntentionSpec { cluster_ref: None, destination: entry.name.clone(), sources })
}

/// What identifies a source's rules, without what Consul computes (precedence, type) or
/// reorders (Consul sorts sources by precedence).
fn normalized(entry: &ServiceIntentionsEntry) -> Vec<(String, Option<ConsulAction>, &Vec<ConsulPermission>, String)> {
    let mut out: Vec<_> = entry
        .sources
        .iter()
        .map(|s| (s.name.clone(), s.action, &s.permissions, s.description.clone().unwrap_or_default()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Whether Consul holds what is declared (sources and the ownership Meta).
pub fn matches(desired: &ServiceIntentionsEntry, actual: &ServiceIntentionsEntry) -> bool {
    desired.name == actual.name && desired.meta == actual.meta && normalized(desired) == normalized(actual)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> ServiceIntentionSpec {
        serde_json::from_value(v).expect("spec")
    }

    fn owner() -> Owner {
        Owner { namespace: "team".into(), name: "api".into(), uid: "u-1".into() }
    }

    fn l7() -> ServiceIntentionSpec {
        spec(json!({"destination": "api", "sources": [
            {"name": "web", "permissions": [
                {"action": "allow", "http": {"pathPrefix": "/v1/", "methods": ["GET", "POST"],
                    "header": [{"name": "x-env", "exact": "prod"}, {"name": "x-debug", "present": true, "invert": true}]}},
                {"action": "deny", "http": {"pathRegex": "/admin/.*"}}
            ]},
            {"name": "*", "action": "deny", "description": "default deny"}
        ]}))
    }

    #[test]
    fn entries_carry_the_owner_and_consul_field_names() {
        let e = to_consul(&l7(), &owner());
        let v = serde_json::to_value(&e).expect("encode");
        assert_eq!(v["Meta"], json!({"concord.io/owner": "team/api", "concord.io/owner-uid": "u-1"}));
        assert_eq!(v["Sources"][0]["Permissions"][0]["HTTP"]["Methods"], json!(["GET", "POST"]));
        assert_eq!(
            v["Sources"][0]["Permissions"][0]["HTTP"]["Header"][1],
            json!({"Name": "x-debug", "Present": true, "Invert": true})
        );
        assert_eq!(v["Sources"][1], json!({"Name": "*", "Action": "deny", "Description": "default deny"}));
    }

    #[test]
    fn import_round_trips_what_concord_writes() {
        let s = l7();
        assert_eq!(from_consul(&to_consul(&s, &owner())), Some(s));
    }

    #[test]
    fn comparison_ignores_source_order_precedence_and_type() {
        let desired = to_consul(&l7(), &owner());
        let mut actual = desired.clone();
        actual.sources.reverse();
        for s in &mut actual.sources {
            s.precedence = 9;
            s.r#type = Some("consul".into());
        }
        assert!(matches(&desired, &actual));
        actual.sources[0].action = Some(ConsulAction::Allow);
        assert!(!matches(&desired, &actual));
    }
}
