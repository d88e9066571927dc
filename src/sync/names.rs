//! Name mapping between the two registries: Consul service names are free-form, while a
//! Kubernetes Service name must be a DNS-1035 label (`[a-z]([-a-z0-9]*[a-z0-9])?`, at
//! most 63 characters). Sanitizing is lossy, so [`plan_names`] decides who gets a name
//! when two Consul services map to the same one.
use std::collections::{BTreeMap, BTreeSet};

/// The longest DNS-1035 label.
pub const MAX_LABEL: usize = 63;

/// `prefix` + `name` as a DNS-1035 label: lower case, runs of other characters become one
/// dash, a leading digit gets an `s-` prefix, and a name too long is cut and suffixed
/// with a short hash of the original so two long names stay distinct. The hash is
/// 32-bit FNV-1a ([`super::fnv1a`]), the same in every process, platform and Rust
/// release: a name never changes under a running sync (Rust's `DefaultHasher`, used
/// before, promises no such thing; the sync moves Services named with it to the new
/// name, the new one applied before the old one is deleted). `None` when nothing usable
/// is left (e.g. a name of only punctuation).
pub fn dns1035(prefix: &str, name: &str) -> Option<String> {
    let mut out = String::with_capacity(prefix.len() + name.len());
    let mut dash = false;
    for c in prefix.chars().chain(name.chars()) {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
            dash = false;
        } else if !dash && !out.is_empty() {
            out.push('-');
            dash = true;
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        return None;
    }
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "s-");
    }
    if out.len() > MAX_LABEL {
        let suffix = format!("-{:08x}", super::fnv1a(format!("{prefix}\0{name}").as_bytes()));
        out.truncate(MAX_LABEL - suffix.len());
        while out.ends_with('-') {
            out.pop();
        }
        out.push_str(&suffix);
    }
    Some(out)
}

/// A label value (`[A-Za-z0-9._-]`, at most 63, alphanumeric at both ends) from any text.
pub fn label_value(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' { c } else { '-' })
        .collect();
    out.truncate(MAX_LABEL);
    out.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// The outcome of mapping a set of Consul names to Kubernetes names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NamePlan {
    /// Consul name → Kubernetes Service name.
    pub names: BTreeMap<String, String>,
    /// Consul names left out, with why (bad name, or another Consul name sanitizes to the same).
    pub skipped: BTreeMap<String, String>,
}

/// Maps Consul names to Service names. When several sanitize to the same name, the one
/// that is already DNS-1035 wins, else the smallest; the others are skipped, so the
/// outcome does not depend on the order services appear in.
pub fn plan_names<'a>(prefix: &str, consul_names: impl IntoIterator<Item = &'a String>) -> NamePlan {
    let mut by_k8s: BTreeMap<String, BTreeSet<&String>> = BTreeMap::new();
    let mut plan = NamePlan::default();
    for name in consul_names {
        match dns1035(prefix, name) {
            Some(k8s) => {
                by_k8s.entry(k8s).or_default().insert(name);
            }
            None => {
                plan.skipped.insert(name.clone(), "name has no characters usable in a Service name".into());
            }
        }
    }
    for (k8s, claimants) in by_k8s {
        let winner =
            claimants.iter().find(|c| format!("{prefix}{c}") == k8s).or_else(|| claimants.iter().next()).copied();
        for c in &claimants {
            if Some(*c) == winner {
                plan.names.insert((*c).clone(), k8s.clone());
            } else {
                plan.skipped.insert(
                    (*c).clone(),
                    format!(
                        "Service name {k8s} is taken by Consul service {}",
                        winner.map(|w| w.as_str()).unwrap_or("")
                    ),
                );
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns1035(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= MAX_LABEL
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    }

    #[test]
    fn sanitizes_to_dns1035() {
        assert_eq!(dns1035("", "web").as_deref(), Some("web"));
        assert_eq!(dns1035("", "Web_API.v2").as_deref(), Some("web-api-v2"));
        assert_eq!(dns1035("consul-", "redis").as_deref(), Some("consul-redis"));
        assert_eq!(dns1035("", "9lives").as_deref(), Some("s-9lives"));
        assert_eq!(dns1035("", "--a--b--").as_deref(), Some("a-b"));
        assert_eq!(dns1035("", "___"), None);
        for name in ["x".repeat(200), format!("{}_", "A".repeat(70)), "1-2-3".into(), "ñandú".into()] {
            let s = dns1035("p-", &name).expect("usable");
            assert!(is_dns1035(&s), "{s}");
        }
    }

    #[test]
    fn long_names_stay_distinct() {
        let a = dns1035("", &format!("{}a", "x".repeat(80))).expect("a");
        let b = dns1035("", &format!("{}b", "x".repeat(80))).expect("b");
        assert_ne!(a, b);
        assert_eq!(a.len(), MAX_LABEL);
    }

    #[test]
    fn the_long_name_hash_never_changes() {
        // FNV-1a of "mirror-\0" + 70 × "a", computed independently: a mirrored
        // Service's name is the same in every release.
        let name = dns1035("mirror-", &"a".repeat(70)).expect("usable");
        assert_eq!(name, format!("mirror-{}-aa2cf47d", "a".repeat(MAX_LABEL - "mirror-".len() - 9)));
    }

    #[test]
    fn clashing_consul_names_keep_the_exact_one() {
        let names: Vec<String> = vec!["web_api".into(), "web-api".into(), "Web.API".into(), "db".into(), "!!".into()];
        let plan = plan_names("", &names);
        assert_eq!(plan.names.get("web-api").map(String::as_str), Some("web-api"));
        assert_eq!(plan.names.get("db").map(String::as_str), Some("db"));
        assert!(plan.skipped.contains_key("web_api"));
        assert!(plan.skipped.contains_key("Web.API"));
        assert!(plan.skipped.contains_key("!!"));
        assert_eq!(plan.names.len(), 2);
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("ns/name"), "ns-name");
        assert_eq!(label_value("-a-"), "a");
        assert_eq!(label_value(&"a".repeat(100)).len(), 63);
    }
}
