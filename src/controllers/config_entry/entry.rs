//! The pure rules every config-entry kind shares: the ownership mark, the decision
//! between create / update / in sync / owned elsewhere, the duplicate rule, how a
//! declared entry is compared with what Consul holds, the key mapping between
//! Kubernetes (camelCase) and Consul (PascalCase) field names, and the reason a Consul
//! refusal gets.
//!
//! Ownership: every entry concord writes carries Meta `concord.io/owner: <ns>/<name>`
//! and `concord.io/owner-uid`. An entry stamped by another owner is never changed nor
//! deleted (`OwnedElsewhere`); an unstamped entry (written by hand or imported) for a
//! name an object declares is adopted. Two objects naming one entry in one cluster: the
//! older (creationTimestamp, then namespace/name) manages it, the other reports a
//! duplicate and writes nothing, so neither flaps.
use crate::consul::ConsulIndex;
use serde_json::{Map, Value};

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

    /// The Meta every entry this owner writes carries.
    pub fn meta(&self) -> Value {
        serde_json::json!({ OWNER_META: self.id(), OWNER_UID_META: self.uid })
    }
}

/// Who stamped an entry (Consul's JSON), if anyone.
pub fn owner_of(entry: &Value) -> Option<&str> {
    entry.get("Meta")?.get(OWNER_META)?.as_str()
}

/// The ModifyIndex of an entry as Consul returned it.
pub fn modify_index(entry: &Value) -> ConsulIndex {
    ConsulIndex(entry.get("ModifyIndex").and_then(Value::as_u64).unwrap_or(0))
}

/// What to do with the entry an object declares.
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

/// Decides from the declared and the current entry (pure). `matches` compares them;
/// `may_take_over` says whether an entry stamped by another owner may be replaced (that
/// owner defers to this one).
pub fn decide(
    desired: &Value,
    actual: Option<&Value>,
    me: &str,
    matches: impl Fn(&Value, &Value) -> bool,
    may_take_over: impl Fn(&str) -> bool,
) -> Decision {
    let Some(actual) = actual else { return Decision::Create };
    match owner_of(actual) {
        Some(owner) if owner != me && !may_take_over(owner) => Decision::OwnedElsewhere { owner: owner.to_string() },
        _ => {
            let index = modify_index(actual);
            if matches(desired, actual) { Decision::InSync { index } } else { Decision::Update { index } }
        }
    }
}

/// One object's claim on an entry name, for the duplicate rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// `namespace/name`.
    pub id: String,
    /// Seconds since the epoch of creationTimestamp (None sorts first: unknown = oldest).
    pub created: Option<i64>,
    /// Namespace + clusterRef: claims only collide within one cluster.
    pub cluster: String,
    /// The Consul entry's name.
    pub entry: String,
}

impl Claim {
    fn age_key(&self) -> (Option<i64>, &str) {
        (self.created, &self.id)
    }
}

/// The claim that wins `mine`'s entry when it is not `mine`: the oldest among the
/// claims on the same entry and cluster.
pub fn winner<'a>(mine: &'a Claim, all: &'a [Claim]) -> Option<&'a Claim> {
    let best = all
        .iter()
        .filter(|c| c.entry == mine.entry && c.cluster == mine.cluster)
        .chain(std::iter::once(mine))
        .min_by(|a, b| a.age_key().cmp(&b.age_key()))?;
    (best.id != mine.id).then_some(best)
}

/// Top-level fields Consul computes or fills in; never part of what is declared.
const COMPUTED: &[&str] = &["createindex", "modifyindex", "hash"];

/// Whether Consul's entry `actual` holds everything `desired` declares and nothing more:
/// field names compare without case (Consul answers PascalCase whatever it was sent),
/// numbers by value, Go durations by length ("1m" = "1m0s" = 60000000000 ns), a field Consul reports
/// but `desired` leaves out only when it is empty (null, "", 0, false, {}, [], or the
/// `default` namespace/partition).
pub fn covers(desired: &Value, actual: &Value) -> bool {
    covers_at(desired, actual, true)
}

fn covers_at(desired: &Value, actual: &Value, top: bool) -> bool {
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => {
            let folded: Vec<(String, &Value)> = a.iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
            let find = |key: &str| folded.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
            let declared: Vec<String> = d.keys().map(|k| k.to_ascii_lowercase()).collect();
            d.iter().all(|(k, dv)| covers_at(dv, find(&k.to_ascii_lowercase()).unwrap_or(&Value::Null), false))
                && folded
                    .iter()
                    .all(|(k, av)| declared.contains(k) || (top && COMPUTED.contains(&k.as_str())) || is_empty(k, av))
        }
        (Value::Array(d), Value::Array(a)) => {
            d.len() == a.len() && d.iter().zip(a).all(|(d, a)| covers_at(d, a, false))
        }
        (Value::Null, a) => is_empty("", a),
        (d, Value::Null) => is_empty("", d),
        (Value::Number(d), Value::Number(a)) => d.as_f64() == a.as_f64(),
        (Value::String(d), Value::String(a)) => d == a || same_duration(d, a),
        // Some durations come back as nanoseconds (passive health check interval).
        (Value::String(d), Value::Number(a)) => {
            matches!((go_duration(d), a.as_f64()), (Some(secs), Some(ns)) if (secs * 1e9 - ns).abs() < 1.0)
        }
        (d, a) => d == a,
    }
}

/// Empty in Consul's sense: what Go's `omitempty` would leave out.
fn is_empty(key: &str, v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => {
            s.is_empty()
                || ((key == "namespace" || key == "partition") && s == "default")
                || go_duration(s).is_some_and(|d| d == 0.0)
        }
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.iter().all(|(k, v)| is_empty(&k.to_ascii_lowercase(), v)),
    }
}

fn same_duration(a: &str, b: &str) -> bool {
    matches!((go_duration(a), go_duration(b)), (Some(x), Some(y)) if (x - y).abs() < 1e-9)
}

/// Seconds of a Go duration string ("1m0s", "1.5s", "250ms", "0s"), or None.
fn go_duration(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(0.0);
    }
    let mut rest = s;
    let mut total = 0.0;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if end == 0 {
            return None;
        }
        let n: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let units = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)];
        let (unit, scale) = units.iter().find(|(u, _)| rest.starts_with(u))?;
        total += n * scale;
        rest = &rest[unit.len()..];
    }
    Some(total)
}

/// Field names Consul spells in capitals, by their camelCase form.
const ACRONYMS: &[(&str, &str)] = &[
    ("http", "HTTP"),
    ("tls", "TLS"),
    ("sni", "SNI"),
    ("tlsMinVersion", "TLSMinVersion"),
    ("tlsMaxVersion", "TLSMaxVersion"),
    ("jsonFormat", "JSONFormat"),
    ("sds", "SDS"),
    ("caFile", "CAFile"),
    ("jsonWebKeySet", "JSONWebKeySet"),
    ("jwks", "JWKS"),
    ("uri", "URI"),
    ("jwksCluster", "JWKSCluster"),
    ("tlsCertificates", "TLSCertificates"),
];

/// Where the keys below a field are the user's (map keys such as subset names, Meta,
/// header names), not field names: they are kept as they are.
#[derive(Clone, Copy, Debug)]
pub struct KeyRules {
    /// Fields (camelCase) whose value is a map with user keys; the values below are
    /// converted again.
    pub user_keys: &'static [&'static str],
    /// Fields (camelCase) whose whole value is opaque (e.g. proxy `config`).
    pub opaque: &'static [&'static str],
}

impl KeyRules {
    pub const NONE: KeyRules = KeyRules { user_keys: &[], opaque: &[] };
}

fn pascal(key: &str) -> String {
    if let Some((_, p)) = ACRONYMS.iter().find(|(c, _)| *c == key) {
        return (*p).to_string();
    }
    let mut chars = key.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn camel(key: &str) -> String {
    if let Some((c, _)) = ACRONYMS.iter().find(|(_, p)| *p == key) {
        return (*c).to_string();
    }
    // "HTTPHeaderModifiers" → "httpHeaderModifiers", "MaxConnections" → "maxConnections".
    let chars: Vec<char> = key.chars().collect();
    let upper = chars.iter().take_while(|c| c.is_ascii_uppercase()).count();
    let lower_to = if upper > 1 && upper < chars.len() { upper - 1 } else { upper.max(1) };
    chars.iter().enumerate().map(|(i, c)| if i < lower_to { c.to_ascii_lowercase() } else { *c }).collect()
}

/// A spec's JSON (camelCase) as Consul's field names (PascalCase).
pub fn to_consul_keys(v: &Value, rules: KeyRules) -> Value {
    map_keys(v, rules, &pascal, false)
}

/// Consul's JSON (PascalCase) as a spec's field names (camelCase), for import.
pub fn from_consul_keys(v: &Value, rules: KeyRules) -> Value {
    map_keys(v, rules, &camel, true)
}

fn map_keys(v: &Value, rules: KeyRules, f: &dyn Fn(&str) -> String, from_consul: bool) -> Value {
    match v {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, val) in o {
                // The rules name camelCase fields.
                let camel_key = if from_consul { camel(k) } else { k.clone() };
                let val = if rules.opaque.contains(&camel_key.as_str()) {
                    val.clone()
                } else if rules.user_keys.contains(&camel_key.as_str()) {
                    match val {
                        Value::Object(m) => Value::Object(
                            m.iter().map(|(uk, uv)| (uk.clone(), map_keys(uv, rules, f, from_consul))).collect(),
                        ),
                        other => other.clone(),
                    }
                } else {
                    map_keys(val, rules, f, from_consul)
                };
                out.insert(f(k), val);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| map_keys(x, rules, f, from_consul)).collect()),
        other => other.clone(),
    }
}

/// The reason a refusal gets, from Consul's own words: `ProtocolMismatch` when the entry
/// needs a protocol the service does not have (L7 routing, splitting, L7 intentions),
/// `UnknownSubset` when it names a resolver subset that does not exist,
/// `GatewayNameTaken` when a gateway of the other kind has the name, `ConsulError`
/// otherwise.
pub fn refusal_reason(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("a \"ingress-gateway\" config entry with that name already exists")
        || m.contains("a \"terminating-gateway\" config entry with that name already exists")
    {
        "GatewayNameTaken"
    } else if m.contains("protocol") {
        "ProtocolMismatch"
    } else if m.contains("subset") {
        "UnknownSubset"
    } else {
        "ConsulError"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_map_both_ways_keeping_user_keys_and_opaque_values() {
        let rules = KeyRules { user_keys: &["subsets", "meta", "set"], opaque: &["config"] };
        let spec = json!({
            "defaultSubset": "v1",
            "subsets": {"v1": {"filter": "v1 in Service.Tags", "onlyPassing": true}},
            "meta": {"team-Owner": "x"},
            "config": {"local_connect_timeout_ms": 5, "Nested": {"a": 1}},
            "routes": [{"match": {"http": {"pathPrefix": "/"}}, "destination": {"requestHeaders": {"set": {"x-Env": "1"}}}}],
            "externalSNI": "a.example",
        });
        let consul = to_consul_keys(&spec, rules);
        assert_eq!(
            consul,
            json!({
                "DefaultSubset": "v1",
                "Subsets": {"v1": {"Filter": "v1 in Service.Tags", "OnlyPassing": true}},
                "Meta": {"team-Owner": "x"},
                "Config": {"local_connect_timeout_ms": 5, "Nested": {"a": 1}},
                "Routes": [{"Match": {"HTTP": {"PathPrefix": "/"}}, "Destination": {"RequestHeaders": {"Set": {"x-Env": "1"}}}}],
                "ExternalSNI": "a.example",
            })
        );
        assert_eq!(from_consul_keys(&consul, rules), spec);
        assert_eq!(camel("HTTPHeaderModifiers"), "httpHeaderModifiers");
        assert_eq!(camel("EnforcingConsecutive5xx"), "enforcingConsecutive5xx");
        assert_eq!(camel("TLS"), "tls");
    }

    #[test]
    fn comparison_ignores_case_computed_fields_empty_defaults_and_duration_spelling() {
        let desired = json!({"Kind": "service-resolver", "Name": "api", "ConnectTimeout": "60s",
            "Subsets": {"v1": {"Filter": "x"}}, "Meta": {"concord.io/owner": "a/b"}});
        let actual = json!({"Kind": "service-resolver", "Name": "api", "ConnectTimeout": "1m0s",
            "Subsets": {"v1": {"Filter": "x", "OnlyPassing": false}}, "Meta": {"concord.io/owner": "a/b"},
            "Namespace": "default", "Partition": "default", "RequestTimeout": "0s",
            "CreateIndex": 5, "ModifyIndex": 9, "Hash": 123});
        assert!(covers(&desired, &actual));
        let mut drifted = actual.clone();
        drifted["Subsets"]["v2"] = json!({"Filter": "y"});
        assert!(!covers(&desired, &drifted), "an extra subset is drift");
        let mut changed = actual.clone();
        changed["ConnectTimeout"] = json!("5s");
        assert!(!covers(&desired, &changed));
        let mut hand_meta = actual.clone();
        hand_meta["Meta"]["note"] = json!("by hand");
        assert!(!covers(&desired, &hand_meta), "a hand-added Meta key is drift");
        assert!(covers(&json!({"Weight": 90.0}), &json!({"Weight": 90})));
        assert!(covers(&json!({"Interval": "10s"}), &json!({"Interval": 10_000_000_000_u64})));
        assert!(!covers(&json!({"Interval": "10s"}), &json!({"Interval": 5_000_000_000_u64})));
        assert!(!covers(&json!({"Splits": [{"Weight": 90}]}), &json!({"Splits": [{"Weight": 90}, {"Weight": 10}]})));
    }

    #[test]
    fn decisions_follow_ownership() {
        let owner = Owner { namespace: "team".into(), name: "api".into(), uid: "u-1".into() };
        let desired = json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http", "Meta": owner.meta()});
        let never = |_: &str| false;
        assert_eq!(decide(&desired, None, "team/api", covers, never), Decision::Create);
        let mut actual = desired.clone();
        actual["ModifyIndex"] = json!(7);
        assert_eq!(
            decide(&desired, Some(&actual), "team/api", covers, never),
            Decision::InSync { index: ConsulIndex(7) }
        );
        let mut hand = actual.clone();
        hand["Protocol"] = json!("tcp");
        assert_eq!(
            decide(&desired, Some(&hand), "team/api", covers, never),
            Decision::Update { index: ConsulIndex(7) }
        );
        hand["Meta"] = json!({});
        assert_eq!(
            decide(&desired, Some(&hand), "team/api", covers, never),
            Decision::Update { index: ConsulIndex(7) }
        );
        let mut other = actual.clone();
        other["Meta"][OWNER_META] = json!("other/x");
        assert_eq!(
            decide(&desired, Some(&other), "team/api", covers, never),
            Decision::OwnedElsewhere { owner: "other/x".into() }
        );
        assert!(matches!(
            decide(&desired, Some(&other), "team/api", covers, |o| o == "other/x"),
            Decision::Update { .. }
        ));
    }

    #[test]
    fn the_oldest_claim_wins_then_the_name() {
        let claim = |id: &str, created: i64, entry: &str| Claim {
            id: id.into(),
            created: Some(created),
            cluster: "team/".into(),
            entry: entry.into(),
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

    #[test]
    fn refusals_get_reasons_of_their_own() {
        assert_eq!(
            refusal_reason(
                r#"discovery chain "api" uses a protocol "tcp" that does not permit advanced routing or splitting behavior"#
            ),
            "ProtocolMismatch"
        );
        assert_eq!(refusal_reason(r#"does not have a subset named "v3""#), "UnknownSubset");
        assert_eq!(refusal_reason("Permission denied"), "ConsulError");
        assert_eq!(
            refusal_reason(
                r#"cannot create a "terminating-gateway" config entry with name "gw", a "ingress-gateway" config entry with that name already exists"#
            ),
            "GatewayNameTaken"
        );
        assert_eq!(
            refusal_reason(
                r#"service "api" has protocol "tcp", which does not match defined listener protocol "http""#
            ),
            "ProtocolMismatch"
        );
    }
}
