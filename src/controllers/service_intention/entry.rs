//! ServiceIntention ↔ Consul `service-intentions` config entry, and the ownership and
//! duplicate rules (pure).
//!
//! Ownership: every entry concord writes carries Meta `concord.io/owner: <ns>/<name>`
//! and `concord.io/owner-uid`. An entry stamped by another owner is never changed nor
//! deleted (`OwnedElsewhere`); an unstamped entry (written by hand or imported) for a
//! destination an object declares is adopted. Two objects naming one destination in one
//! cluster: the older (creationTimestamp, then namespace/name) manages it, the other
//! reports `DuplicateDestination` and writes nothing, so neither flaps.
use crate::consul::ConsulIndex;
use crate::consul::{
    IntentionAction as ConsulAction, IntentionHttpHeaderPermission, IntentionHttpPermission,
    IntentionPermission as ConsulPermission, ServiceIntentionsEntry, SourceIntention,
};
use crate::resources::{
    HeaderMatch, HttpMatch, HttpMethod, IntentionAction, IntentionPermission, IntentionSource, ServiceIntentionSpec,
};
use std::collections::BTreeMap;

pub const OWNER_META: &str = "concord.io/owner";
pub const OWNER_UID_META: &str = "concord.io/owner-uid";

/// The object an entry belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

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

/// Who stamped an entry, if anyone.
pub fn owner_of(entry: &ServiceIntentionsEntry) -> Option<&str> {
    entry.meta.get(OWNER_META).map(String::as_str)
}

/// What to do with the destination's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No entry yet: create it (check-and-set index 0).
    Create,
    /// Replace the entry at this ModifyIndex (check-and-set).
    Update {
        index: ConsulIndex,
    },
    InSync {
        index: ConsulIndex,
    },
    /// Another owner stamped it: leave it.
    OwnedElsewhere {
        owner: String,
    },
}

/// Decides from the declared and the current entry (pure). `may_take_over` says whether
/// an entry stamped by another owner may be replaced (that owner defers to this one).
pub fn decide(
    desired: &ServiceIntentionsEntry,
    actual: Option<&ServiceIntentionsEntry>,
    me: &str,
    may_take_over: impl Fn(&str) -> bool,
) -> Decision {
    let Some(actual) = actual else { return Decision::Create };
    match owner_of(actual) {
        Some(owner) if owner != me && !may_take_over(owner) => Decision::OwnedElsewhere { owner: owner.to_string() },
        _ => {
            if matches(desired, actual) {
                Decision::InSync { index: actual.modify_index }
            } else {
                Decision::Update { index: actual.modify_index }
            }
        }
    }
}

/// One object's claim on a destination, for the duplicate rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// `namespace/name`.
    pub id: String,
    /// Seconds since the epoch of creationTimestamp (None sorts first: unknown = oldest).
    pub created: Option<i64>,
    /// Namespace + clusterRef: claims only collide within one cluster.
    pub cluster: String,
    pub destination: String,
}

impl Claim {
    fn age_key(&self) -> (Option<i64>, &str) {
        (self.created, &self.id)
    }
}

/// The claim that wins `mine`'s destination when it is not `mine`: the oldest among the
/// claims on the same destination and cluster.
pub fn winner<'a>(mine: &'a Claim, all: &'a [Claim]) -> Option<&'a Claim> {
    let best = all
        .iter()
        .filter(|c| c.destination == mine.destination && c.cluster == mine.cluster)
        .chain(std::iter::once(mine))
        .min_by(|a, b| a.age_key().cmp(&b.age_key()))?;
    (best.id != mine.id).then_some(best)
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

    #[test]
    fn decisions_follow_ownership() {
        let desired = to_consul(&l7(), &owner());
        let never = |_: &str| false;
        assert_eq!(decide(&desired, None, "team/api", never), Decision::Create);
        let mut actual = desired.clone();
        actual.modify_index = ConsulIndex(7);
        assert_eq!(decide(&desired, Some(&actual), "team/api", never), Decision::InSync { index: ConsulIndex(7) });

        let mut hand = actual.clone();
        hand.sources.truncate(1);
        assert_eq!(decide(&desired, Some(&hand), "team/api", never), Decision::Update { index: ConsulIndex(7) });
        hand.meta.clear();
        assert_eq!(decide(&desired, Some(&hand), "team/api", never), Decision::Update { index: ConsulIndex(7) });

        let mut other = actual.clone();
        other.meta.insert(OWNER_META.into(), "other/x".into());
        assert_eq!(
            decide(&desired, Some(&other), "team/api", never),
            Decision::OwnedElsewhere { owner: "other/x".into() }
        );
        assert!(matches!(decide(&desired, Some(&other), "team/api", |o| o == "other/x"), Decision::Update { .. }));
    }

    #[test]
    fn the_oldest_claim_wins_then_the_name() {
        let claim = |id: &str, created: i64, dest: &str| Claim {
            id: id.into(),
            created: Some(created),
            cluster: "team/".into(),
            destination: dest.into(),
        };
        let first = claim("team/a", 100, "api");
        let second = claim("team/b", 200, "api");
        let tie = claim("team/0", 200, "api");
        let elsewhere = claim("team/c", 50, "database");
        let all = vec![first.clone(), second.clone(), tie.clone(), elsewhere.clone()];
        assert_eq!(winner(&first, &all), None);
        assert_eq!(winner(&second, &all), Some(&first));
        assert_eq!(winner(&elsewhere, &all), None);
        let without_first = vec![second.clone(), tie.clone()];
        assert_eq!(winner(&second, &without_first), Some(&tie));
        assert_eq!(winner(&tie, &without_first), None);
    }
}
