//! What a namespace may do in its cluster's Consul through concord: the grants the
//! DiscoveryCluster owner declares in `spec.tenancy` (pure; the controllers ask before
//! they write and refuse with a condition).
//!
//! Decisions:
//! - A cluster serves only its own namespace (`clusterRef` names a DiscoveryCluster in
//!   the object's namespace), so the grants are those of that one namespace. Another
//!   namespace that wants this Consul gets its own external DiscoveryCluster, with a
//!   token the Consul operator gives it; Consul's ACLs then bound it.
//! - Each list of `spec.tenancy`, once set, is the whole grant of its kind; an unset
//!   list keeps what concord always allowed for that kind, so existing clusters and
//!   examples keep working and an owner restricts one kind at a time.
//! - Management-equivalent ACLs are refused whatever the lists say, unless
//!   `policies` names `global-management` exactly: the policy `global-management`, and
//!   any policy whose rules grant `acl = "write"` (it can mint any token).
//! - Workload login: an auth method is cluster-wide in Consul and accepts any
//!   ServiceAccount of the cluster, so the boundary is the binding rules. Every rule
//!   concord writes holds `serviceaccount.namespace=="<ns>"` ([`namespaced_selector`]);
//!   a templated bind name lets the ServiceAccount pick the identity, so it needs every
//!   name granted. Node identities are new, so an unset `nodeIdentities` grants none.
use crate::resources::{DiscoveryCluster, TenancySpec};

/// Consul's built-in management policy.
pub const GLOBAL_MANAGEMENT: &str = "global-management";

/// The grants of one namespace in one cluster (`spec.tenancy`, or all unset).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grants(TenancySpec);

/// `name` matches `pattern`: equal, or a prefix when the pattern ends in `*`.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether HCL or JSON policy rules grant `acl = "write"` (management-equivalent in
/// Consul). Ignores whitespace and case; errs on the side of "yes" (an `acl = "write"`
/// inside a comment counts too).
pub fn rules_grant_acl_write(rules: &str) -> bool {
    let compact: String = rules.chars().filter(|c| !c.is_whitespace()).collect();
    let compact = compact.to_ascii_lowercase();
    ["acl=\"write\"", "\"acl\":\"write\"", "\"acl\"=\"write\"", "acl:\"write\""].iter().any(|p| compact.contains(p))
}

impl Grants {
    /// The grants of `cluster`'s namespace.
    pub fn of(cluster: &DiscoveryCluster) -> Self {
        Grants(cluster.spec.tenancy.clone().unwrap_or_default())
    }

    /// Grants as declared (tests, tools).
    pub fn declared(tenancy: TenancySpec) -> Self {
        Grants(tenancy)
    }

    /// The declared lists (the derived Consul policy is built from them).
    pub fn declared_spec(&self) -> &TenancySpec {
        &self.0
    }

    /// May a KVConfig write, or a template read, under `prefix` (a key or key prefix)?
    pub fn kv(&self, prefix: &str) -> Result<(), String> {
        check(&self.0.kv_prefixes, |g| prefix.starts_with(g), || format!("KV {prefix:?}"), "kvPrefixes")
    }

    /// Whether management-equivalent ACLs are granted (`global-management` listed).
    pub fn management(&self) -> bool {
        self.0.policies.iter().flatten().any(|p| p == GLOBAL_MANAGEMENT)
    }

    /// May an ACLToken carry, or an ACLPolicy create, the policy `name`? `acl_write`:
    /// its rules grant `acl = "write"` (read from Consul, or the ACLPolicy's own).
    pub fn policy(&self, name: &str, acl_write: bool) -> Result<(), String> {
        if (name == GLOBAL_MANAGEMENT || acl_write) && !self.management() {
            return Err(format!(
                "policy {name} is management-equivalent; the DiscoveryCluster grants that only when spec.tenancy.policies lists {GLOBAL_MANAGEMENT}"
            ));
        }
        check(&self.0.policies, |g| matches(g, name), || format!("policy {name}"), "policies")
    }

    /// May an ACLToken carry the service identity `service`?
    pub fn service_identity(&self, service: &str) -> Result<(), String> {
        check(
            &self.0.service_identities,
            |g| matches(g, service),
            || format!("service identity {service}"),
            "serviceIdentities",
        )
    }

    /// May an ACLRole carry, or an ACLBindingRule bind, the node identity `node`? Unlike
    /// the other lists, an unset `nodeIdentities` grants none.
    pub fn node_identity(&self, node: &str) -> Result<(), String> {
        let grant = Some(self.0.node_identities.clone().unwrap_or_default());
        check(&grant, |g| matches(g, node), || format!("node identity {node}"), "nodeIdentities")
    }

    /// May an ACLBindingRule bind a templated name (`${serviceaccount.name}`) of
    /// `bind_type` `service` or `node`? Only when every name is granted: the list is
    /// unset (services only) or holds `*`, since the ServiceAccount (and its
    /// `consul.hashicorp.com/service-name` annotation) picks the name at login.
    pub fn templated_bind_name(&self, node: bool) -> Result<(), String> {
        let (list, field) = if node {
            (self.0.node_identities.as_ref(), "nodeIdentities")
        } else {
            (self.0.service_identities.as_ref(), "serviceIdentities")
        };
        match list {
            None if !node => Ok(()),
            Some(l) if l.iter().any(|g| g == "*") => Ok(()),
            _ => Err(format!(
                "a templated bind name lets the ServiceAccount choose the name; the DiscoveryCluster allows that only when spec.tenancy.{field} lists *"
            )),
        }
    }

    /// May a ServiceIntention write the intentions of `destination`?
    pub fn intention_destination(&self, destination: &str) -> Result<(), String> {
        check(
            &self.0.intention_destinations,
            |g| matches(g, destination),
            || format!("intention destination {destination}"),
            "intentionDestinations",
        )
    }

    /// Extra locations (prefixes of the location string) a Restore may read.
    pub fn restore_from(&self, location: &str) -> bool {
        self.0.restore_from.iter().any(|p| !p.is_empty() && location.starts_with(p.as_str()))
    }
}

/// The selector concord writes for an ACLBindingRule of `namespace`: the user's selector
/// (if any) ANDed with `serviceaccount.namespace=="<namespace>"`, so a login from another
/// namespace never matches. `Err` for a selector that could step out of its parentheses
/// (a `)` closing more than it opened, an unterminated string) and so widen the match.
pub fn namespaced_selector(namespace: &str, selector: Option<&str>) -> Result<String, String> {
    let own = format!("serviceaccount.namespace==\"{namespace}\"");
    let Some(user) = selector.map(str::trim).filter(|s| !s.is_empty()) else { return Ok(own) };
    let mut depth: i32 = 0;
    let mut chars = user.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '`' => loop {
                match chars.next() {
                    None => return Err(format!("selector {user:?} has an unterminated string")),
                    Some('\\') if c == '"' => {
                        chars.next();
                    }
                    Some(d) if d == c => break,
                    Some(_) => {}
                }
            },
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("selector {user:?} closes a parenthesis it did not open"));
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("selector {user:?} leaves a parenthesis open"));
    }
    Ok(format!("{own} and ({user})"))
}

/// An unset list allows everything; a set one only what matches.
fn check(
    grant: &Option<Vec<String>>,
    allows: impl Fn(&str) -> bool,
    what: impl Fn() -> String,
    field: &str,
) -> Result<(), String> {
    match grant {
        None => Ok(()),
        Some(list) if list.iter().any(|g| allows(g)) => Ok(()),
        Some(list) => Err(format!(
            "{} is not granted to this namespace by the DiscoveryCluster (spec.tenancy.{field}: {})",
            what(),
            self::list(list)
        )),
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "none".to_string() } else { items.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(f: impl FnOnce(&mut TenancySpec)) -> Grants {
        let mut t = TenancySpec::default();
        f(&mut t);
        Grants::declared(t)
    }

    fn v(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn default_allows_everything_but_management() {
        let g = Grants::default();
        assert!(g.kv("anything/at/all").is_ok());
        assert!(g.policy("team-read", false).is_ok());
        assert!(g.service_identity("web").is_ok());
        assert!(g.intention_destination("db").is_ok());
        assert!(g.policy(GLOBAL_MANAGEMENT, false).is_err());
        assert!(g.policy("concord-controller-consul", true).is_err());
    }

    #[test]
    fn declared_grants_only_what_they_list() {
        let g = declared(|t| {
            t.kv_prefixes = v(&["team-a/"]);
            t.policies = v(&["team-a-*"]);
            t.service_identities = v(&["web"]);
            t.intention_destinations = v(&["web", "api-*"]);
        });
        assert!(g.kv("team-a/config/").is_ok());
        assert!(g.kv("team-b/").is_err());
        assert!(g.kv("team-a").is_err(), "a prefix that only begins like a grant is outside it");
        assert!(g.policy("team-a-read", false).is_ok());
        assert!(g.policy("team-b-read", false).is_err());
        assert!(g.policy("team-a-admin", true).is_err(), "acl write needs the management grant");
        assert!(g.service_identity("web").is_ok());
        assert!(g.service_identity("db").is_err());
        assert!(g.intention_destination("api-v2").is_ok());
        assert!(g.intention_destination("db").is_err());
        let empty = declared(|t| {
            t.kv_prefixes = v(&[]);
            t.policies = v(&[]);
        });
        assert!(empty.kv("").is_err(), "an empty list grants nothing");
        assert!(empty.policy("x", false).is_err());
        assert!(empty.service_identity("web").is_ok(), "an unset list keeps the default");
    }

    #[test]
    fn no_pattern_grants_management() {
        let g = declared(|t| t.policies = v(&["*"]));
        assert!(g.policy("anything", false).is_ok());
        assert!(g.policy(GLOBAL_MANAGEMENT, false).is_err());
        let m = declared(|t| t.policies = v(&[GLOBAL_MANAGEMENT]));
        assert!(m.policy(GLOBAL_MANAGEMENT, false).is_ok());
        assert!(m.policy("team-admin", true).is_err(), "management does not lift the name grant");
    }

    #[test]
    fn node_identities_need_an_explicit_grant_and_templates_need_a_star() {
        assert!(Grants::default().node_identity("n1").is_err(), "unset grants no node");
        let g = declared(|t| t.node_identities = v(&["edge-*"]));
        assert!(g.node_identity("edge-1").is_ok());
        assert!(g.node_identity("core-1").is_err());
        assert!(g.templated_bind_name(true).is_err());
        assert!(declared(|t| t.node_identities = v(&["*"])).templated_bind_name(true).is_ok());
        assert!(Grants::default().templated_bind_name(false).is_ok(), "unset services: every name is granted");
        assert!(declared(|t| t.service_identities = v(&["web-*"])).templated_bind_name(false).is_err());
        assert!(declared(|t| t.service_identities = v(&["*"])).templated_bind_name(false).is_ok());
    }

    #[test]
    fn a_binding_rule_selector_is_held_to_its_namespace() {
        assert_eq!(namespaced_selector("team", None).as_deref(), Ok("serviceaccount.namespace==\"team\""));
        assert_eq!(
            namespaced_selector("team", Some("serviceaccount.name==web")).as_deref(),
            Ok("serviceaccount.namespace==\"team\" and (serviceaccount.name==web)")
        );
        // Widening attempts: stepping out of the parentheses to OR in anything.
        assert!(namespaced_selector("team", Some("serviceaccount.name==web) or (serviceaccount.name!=x")).is_err());
        assert!(namespaced_selector("team", Some(")(")).is_err());
        assert!(namespaced_selector("team", Some("(a")).is_err());
        assert!(namespaced_selector("team", Some("serviceaccount.name==\"web")).is_err());
        // Parentheses inside strings do not count.
        assert!(namespaced_selector("team", Some("serviceaccount.name==\")x\"")).is_ok());
        assert!(namespaced_selector("team", Some("serviceaccount.name==\"a\\\") or (b\"")).is_ok());
    }

    #[test]
    fn restores_from_other_locations_only_when_listed() {
        assert!(!Grants::default().restore_from("s3://b/x.snap"));
        let g = declared(|t| t.restore_from = vec!["s3://b/legacy/".into(), String::new()]);
        assert!(g.restore_from("s3://b/legacy/x.snap"));
        assert!(!g.restore_from("s3://b/other/x.snap"), "an empty prefix grants nothing");
    }

    #[test]
    fn acl_write_is_found_in_hcl_and_json_and_reads_are_not() {
        assert!(rules_grant_acl_write("acl = \"write\""));
        assert!(rules_grant_acl_write("  acl=\"write\"\nkey_prefix \"\" {}"));
        assert!(rules_grant_acl_write("{\"acl\": \"write\"}"));
        assert!(rules_grant_acl_write("ACL = \"WRITE\""));
        assert!(!rules_grant_acl_write("acl = \"read\""));
        assert!(rules_grant_acl_write("# acl = \"write\"\nacl = \"read\""), "errs on the side of yes");
        assert!(!rules_grant_acl_write("key_prefix \"acl\" { policy = \"write\" }"));
    }
}
