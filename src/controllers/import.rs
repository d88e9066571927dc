//! `concord import [KIND...]`: the adoption path for config entries and prepared
//! queries. Reads every entry of the kinds asked for (default: every kind concord
//! manages, and prepared queries) from a Consul and prints each as a concord object
//! (YAML, one document each) that declares exactly that entry, so it can be committed
//! to Git and applied; the controller then adopts the entry without writing it again.
//!
//! The mapping is the controller's own (`config_entry::importable`,
//! `prepared_query::importable`): the same object names, the same
//! `concord.io/imported` label, and an entry a kind cannot declare exactly is left out
//! (named on stderr). Entries that carry a concord owner mark belong to an object
//! already and are left out unless `--include-owned`.
//!
//! `ACLRole` is imported only when asked for by name (reading roles needs an ACL
//! token): roles without a concord mark, by `acl_role::importable`. Roles carry
//! concord's mark in their description, so an applied object adopts its role only once
//! the role has the mark: `--adopt` (with `--namespace`) writes it, nothing else. The
//! CLI knows no DiscoveryCluster's grants: the controller checks them when the object is
//! applied (`NotGranted`); the DiscoveryCluster's own import checks them before.
//!
//! `ACLAuthMethod` likewise (unmarked `kubernetes` methods whose rules all hold logins to
//! `--namespace`). `ACLBindingRule` (needs `--namespace`): the unmarked rules on the
//! methods that namespace owns (their mark names the ACLAuthMethod) or that this run
//! prints, by `acl_binding_rule::importable`: only rules whose selector already holds
//! logins to the namespace. `--adopt` marks each printed rule for its object, so the
//! object finds it instead of writing a second one.
use super::config_entry::entry::owner_of;
use super::config_entry::{ConfigEntryKind, importable};
use super::{acl_auth_method, acl_binding_rule, acl_object, acl_role, prepared_query};
use crate::consul::{self, QueryOptions};
use crate::resources::{
    ExportedServices, IngressGateway, JWTProvider, Mesh, ProxyDefaults, ServiceDefaults, ServiceIntention,
    ServiceResolver, ServiceRouter, ServiceSplitter, TerminatingGateway,
};
use serde_json::Value;

/// `concord import`: print concord objects for existing Consul entries.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Kinds to import, e.g. `ServiceDefaults PreparedQuery` (default: every config-entry
    /// kind concord manages, and PreparedQuery).
    /// `ACLRole`, `ACLAuthMethod` and `ACLBindingRule` only when named.
    pub kinds: Vec<String>,
    /// Consul HTTP address(es), comma-separated.
    #[arg(long, env = "CONSUL_HTTP_ADDR", default_value = "http://127.0.0.1:8500")]
    pub address: String,
    /// PEM CA certificate that signed the servers' HTTPS certificates (for `https://`
    /// addresses; else the system's roots).
    #[arg(long, env = "CONSUL_CACERT", value_name = "PATH")]
    pub ca_file: Option<std::path::PathBuf>,
    /// ACL token (read from the environment only, never a flag: flags show in `ps`).
    #[arg(skip = std::env::var("CONSUL_HTTP_TOKEN").ok().map(crate::consul::Token::new))]
    pub token: Option<crate::consul::Token>,
    /// Namespace of the objects (default: none, i.e. the namespace `kubectl apply` uses).
    #[arg(long)]
    pub namespace: Option<String>,
    /// `spec.clusterRef` of the objects (default: none, i.e. the namespace's only DiscoveryCluster).
    #[arg(long)]
    pub cluster_ref: Option<String>,
    /// Also print entries another concord object owns (their owner mark stays in Consul;
    /// such an object reports `OwnedElsewhere` until the owner lets go).
    #[arg(long)]
    pub include_owned: bool,
    /// Write concord's mark into the description of each printed ACL role, auth method
    /// and binding rule (needs `--namespace`), so the printed object adopts it once applied.
    #[arg(long)]
    pub adopt: bool,
}

/// What one kind's entries become.
struct Kind {
    /// The concord kind (`ServiceDefaults`).
    name: String,
    /// Consul's kind (`service-defaults`); empty for prepared queries.
    consul: &'static str,
    to_object: fn(&Value, Option<&str>, Option<&str>) -> Option<Value>,
}

fn kind<K: ConfigEntryKind>() -> Kind {
    Kind { name: K::kind(&()).to_string(), consul: K::CONSUL_KIND, to_object: object_of::<K> }
}

fn object_of<K: ConfigEntryKind>(found: &Value, namespace: Option<&str>, cluster: Option<&str>) -> Option<Value> {
    serde_json::to_value(importable::<K>(found, namespace, cluster)?).ok()
}

/// Every config-entry kind concord manages, in a stable order.
fn config_entry_kinds() -> Vec<Kind> {
    vec![
        kind::<ServiceDefaults>(),
        kind::<ServiceResolver>(),
        kind::<ServiceRouter>(),
        kind::<ServiceSplitter>(),
        kind::<ServiceIntention>(),
        kind::<ProxyDefaults>(),
        kind::<Mesh>(),
        kind::<ExportedServices>(),
        kind::<IngressGateway>(),
        kind::<TerminatingGateway>(),
        kind::<JWTProvider>(),
    ]
}

/// What `concord import` is asked for.
struct Selection {
    /// The config-entry kinds.
    kinds: Vec<Kind>,
    queries: bool,
    roles: bool,
    methods: bool,
    rules: bool,
}

/// The kinds asked for (case-insensitive; none: all of them, PreparedQuery included,
/// the ACL kinds only by name).
fn select(asked: &[String]) -> Result<Selection, String> {
    let all = config_entry_kinds();
    if asked.is_empty() {
        return Ok(Selection { kinds: all, queries: true, roles: false, methods: false, rules: false });
    }
    let known = || {
        let mut names: Vec<String> = config_entry_kinds().into_iter().map(|k| k.name).collect();
        names.push(prepared_query::IMPORT_KIND.to_string());
        names.push(acl_role::IMPORT_KIND.to_string());
        names.push(acl_auth_method::IMPORT_KIND.to_string());
        names.push(acl_binding_rule::IMPORT_KIND.to_string());
        names.join(", ")
    };
    let mut chosen: Vec<String> = Vec::new();
    let mut selection = Selection { kinds: Vec::new(), queries: false, roles: false, methods: false, rules: false };
    for a in asked {
        if a.eq_ignore_ascii_case(prepared_query::IMPORT_KIND) {
            selection.queries = true;
        } else if a.eq_ignore_ascii_case(acl_role::IMPORT_KIND) {
            selection.roles = true;
        } else if a.eq_ignore_ascii_case(acl_auth_method::IMPORT_KIND) {
            selection.methods = true;
        } else if a.eq_ignore_ascii_case(acl_binding_rule::IMPORT_KIND) {
            selection.rules = true;
        } else if let Some(k) = all.iter().find(|k| k.name.eq_ignore_ascii_case(a) || k.consul == a) {
            chosen.push(k.name.clone());
        } else {
            return Err(format!("unknown kind {a:?} (kinds: {})", known()));
        }
    }
    selection.kinds = all.into_iter().filter(|k| chosen.contains(&k.name)).collect();
    Ok(selection)
}

/// The ACLAuthMethod object a rule on `method` would name as `authMethodRef` in
/// `namespace` (pure): the object whose mark the method carries, or, for a method
/// this run prints (`printed`), the object printed for it.
fn method_ref(method: &consul::AclAuthMethod, namespace: &str, printed: &[String]) -> Option<String> {
    match acl_object::mark_owner(&method.description) {
        Some((ns, object)) if ns == namespace => Some(object.to_string()),
        Some(_) => None,
        None => printed.contains(&method.name).then(|| method.name.clone()),
    }
}

/// The objects for `entries` of one kind (pure): the printed documents and one note per
/// entry left out.
fn objects_for(
    kind: &Kind,
    entries: &[Value],
    namespace: Option<&str>,
    cluster: Option<&str>,
    include_owned: bool,
) -> (Vec<Value>, Vec<String>) {
    let mut objects = Vec::new();
    let mut notes = Vec::new();
    for found in entries {
        let name = consul::ConfigEntry::name(found).to_string();
        if let Some(owner) = owner_of(found).filter(|_| !include_owned) {
            notes.push(format!("skipped {} {name}: owned by {owner} (--include-owned prints it)", kind.consul));
            continue;
        }
        match (kind.to_object)(found, namespace, cluster) {
            Some(object) => objects.push(object),
            None => notes.push(format!("skipped {} {name}: uses what {} cannot declare", kind.consul, kind.name)),
        }
    }
    (objects, notes)
}

/// One object as a YAML document, without status.
fn document(mut object: Value) -> Result<String, String> {
    if let Some(fields) = object.as_object_mut() {
        fields.remove("status");
    }
    serde_yaml::to_string(&object).map_err(|e| format!("cannot write YAML: {e}"))
}

/// Entry point of `concord import`.
pub fn main(args: ImportArgs) -> Result<(), String> {
    let Selection { kinds, queries, roles, methods, rules } = select(&args.kinds)?;
    if args.adopt && (!(roles || methods || rules) || args.namespace.is_none()) {
        return Err(
            "--adopt needs ACLRole, ACLAuthMethod or ACLBindingRule among the kinds, and --namespace".to_string()
        );
    }
    if rules && args.namespace.is_none() {
        return Err("ACLBindingRule needs --namespace: a rule is imported only when its selector holds logins to that namespace".to_string());
    }
    let mut config = consul::ClientConfig::new(crate::cluster::external_addresses(&args.address))
        // A command line waits for no outage: one attempt per server, then a readable error.
        .retry(consul::RetryPolicy { max_attempts: 2, ..Default::default() });
    if let Some(token) = args.token.clone().filter(|t| !t.is_empty()) {
        config = config.token(token);
    }
    if let Some(path) = &args.ca_file {
        config = config.ca_pem(consul::read_ca_file(path)?);
    }
    let client = consul::Client::new(config).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let (ns, cluster) = (args.namespace.as_deref(), args.cluster_ref.as_deref());
    let mut documents = Vec::new();
    let mut notes = Vec::new();
    for kind in &kinds {
        let entries = runtime
            .block_on(client.config_entries_list::<Value>(kind.consul, &QueryOptions::default()))
            .map_err(|e| {
                format!("cannot list {} entries from {}: {e}{}", kind.consul, args.address, consul::tls_hint(&e))
            })?
            .value;
        let (objects, skipped) = objects_for(kind, &entries, ns, cluster, args.include_owned);
        documents.extend(objects);
        notes.extend(skipped);
    }
    if queries {
        let found = runtime
            .block_on(client.prepared_queries_list(&QueryOptions::default()))
            .map_err(|e| format!("cannot list prepared queries from {}: {e}{}", args.address, consul::tls_hint(&e)))?
            .value;
        for q in &found {
            if let Some(owner) = prepared_query::owner_of(q).filter(|_| !args.include_owned) {
                notes.push(format!("skipped prepared query {}: owned by {owner} (--include-owned prints it)", q.name));
                continue;
            }
            let Some(mut object) = prepared_query::importable(q, ns.unwrap_or_default(), cluster.unwrap_or_default())
            else {
                notes.push(format!("skipped prepared query {}: uses what PreparedQuery cannot declare", q.name));
                continue;
            };
            object.metadata.namespace = args.namespace.clone();
            object.spec.cluster_ref = args.cluster_ref.clone();
            documents.push(serde_json::to_value(object).map_err(|e| format!("cannot write YAML: {e}"))?);
        }
    }
    if roles {
        let found = runtime
            .block_on(client.acl_roles())
            .map_err(|e| format!("cannot list ACL roles from {}: {e}{}", args.address, consul::tls_hint(&e)))?;
        for role in &found {
            if acl_role::marked(&role.description) {
                notes.push(format!("skipped ACL role {}: owned by a concord object", role.name));
                continue;
            }
            let Some(object) = acl_role::importable(role, ns, cluster) else {
                notes.push(format!("skipped ACL role {}: uses what ACLRole cannot declare", role.name));
                continue;
            };
            if args.adopt {
                let adopted = acl_role::adopted(role, ns.unwrap_or_default());
                runtime
                    .block_on(client.acl_role_update(&adopted))
                    .map_err(|e| format!("cannot mark ACL role {}: {e}", role.name))?;
            }
            documents.push(serde_json::to_value(object).map_err(|e| format!("cannot write YAML: {e}"))?);
        }
        notes.push(if args.adopt {
            "ACL roles printed were marked for their objects: apply them; the controller checks the namespace's grants".into()
        } else {
            "ACL roles printed are not adopted until marked (--adopt --namespace NS); the controller checks the namespace's grants".into()
        });
    }
    let mut printed_methods: Vec<String> = Vec::new();
    if methods {
        let stubs = runtime
            .block_on(client.acl_auth_methods())
            .map_err(|e| format!("cannot list ACL auth methods from {}: {e}{}", args.address, consul::tls_hint(&e)))?;
        for stub in &stubs {
            if acl_role::marked(&stub.description) {
                notes.push(format!("skipped ACL auth method {}: owned by a concord object", stub.name));
                continue;
            }
            let read = runtime.block_on(client.acl_auth_method_read(&stub.name));
            let Some(found) = read.map_err(|e| format!("cannot read ACL auth method {}: {e}", stub.name))? else {
                continue;
            };
            let rules = runtime
                .block_on(client.acl_binding_rules(&found.name))
                .map_err(|e| format!("cannot list binding rules of {}: {e}", found.name))?;
            if let Some(why) = acl_auth_method::import_refusal(&found, &rules, ns.unwrap_or_default()) {
                notes.push(format!("skipped: {why}"));
                continue;
            }
            let Some(object) = acl_auth_method::importable(&found, ns, cluster) else {
                notes.push(format!("skipped ACL auth method {}: uses what ACLAuthMethod cannot declare", found.name));
                continue;
            };
            if args.adopt {
                let adopted = acl_auth_method::adopted(&found, ns.unwrap_or_default());
                runtime
                    .block_on(client.acl_auth_method_update(&adopted))
                    .map_err(|e| format!("cannot mark ACL auth method {}: {e}", found.name))?;
            }
            printed_methods.push(found.name.clone());
            documents.push(serde_json::to_value(object).map_err(|e| format!("cannot write YAML: {e}"))?);
        }
        notes.push("an adopted ACL auth method gets concord's API server host, CA and reviewer token: logins through it are reviewed by the cluster concord serves".into());
    }
    if rules {
        let namespace = ns.unwrap_or_default();
        let stubs = runtime
            .block_on(client.acl_auth_methods())
            .map_err(|e| format!("cannot list ACL auth methods from {}: {e}{}", args.address, consul::tls_hint(&e)))?;
        for method in &stubs {
            let Some(reference) = method_ref(method, namespace, &printed_methods) else {
                if !acl_object::marked(&method.description) {
                    notes.push(format!(
                        "skipped the binding rules of ACL auth method {}: the method is not namespace {namespace}'s (import it with ACLAuthMethod)",
                        method.name
                    ));
                }
                continue;
            };
            let found = runtime
                .block_on(client.acl_binding_rules(&method.name))
                .map_err(|e| format!("cannot list binding rules of {}: {e}", method.name))?;
            for rule in &found {
                if acl_object::marked(&rule.description) {
                    notes.push(format!(
                        "skipped ACL binding rule {} on {}: owned by a concord object",
                        rule.id, method.name
                    ));
                    continue;
                }
                if let Some(why) = acl_binding_rule::import_refusal(rule, namespace) {
                    notes.push(format!("skipped: {why}"));
                    continue;
                }
                let Some(object) = acl_binding_rule::importable(rule, &reference, namespace, cluster) else {
                    notes.push(format!(
                        "skipped ACL binding rule {} on {}: uses what ACLBindingRule cannot declare",
                        rule.id, method.name
                    ));
                    continue;
                };
                if args.adopt {
                    let adopted = acl_binding_rule::adopted(rule, &object);
                    runtime
                        .block_on(client.acl_binding_rule_update(&adopted))
                        .map_err(|e| format!("cannot mark ACL binding rule {}: {e}", rule.id))?;
                }
                documents.push(serde_json::to_value(object).map_err(|e| format!("cannot write YAML: {e}"))?);
            }
        }
        notes.push(
            "ACL binding rules printed bind what the controller checks against the namespace's grants when applied"
                .into(),
        );
    }
    for note in &notes {
        eprintln!("concord: {note}");
    }
    let docs: Result<Vec<String>, String> = documents.into_iter().map(document).collect();
    print!("{}", docs?.join("---\n"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_are_chosen_by_either_name_and_unknown_ones_are_refused() {
        let all = select(&[]).expect("all");
        assert_eq!(all.kinds.len(), 11);
        assert!(all.queries);
        assert!(!all.roles && !all.methods && !all.rules, "ACL kinds only when named");
        let acl = select(&["aclrole".into(), "ACLBindingRule".into()]).expect("roles");
        assert!(acl.roles && acl.rules && !acl.methods && !acl.queries && acl.kinds.is_empty());
        let two = select(&["servicedefaults".into(), "jwt-provider".into()]).expect("two");
        let names: Vec<&str> = two.kinds.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["ServiceDefaults", "JWTProvider"]);
        assert!(!two.queries);
        let err = select(&["Gateway".into()]).err().expect("unknown");
        assert!(err.starts_with("unknown kind \"Gateway\" (kinds: ServiceDefaults"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn a_rule_names_the_object_of_its_namespace_that_owns_the_method() {
        let method = |description: &str| consul::AclAuthMethod {
            name: "pods".into(),
            description: description.into(),
            ..Default::default()
        };
        assert_eq!(method_ref(&method("x [concord.io team/team-pods]"), "team", &[]).as_deref(), Some("team-pods"));
        assert_eq!(method_ref(&method("[concord.io other/pods]"), "team", &["pods".into()]), None, "another's");
        assert_eq!(method_ref(&method("by hand"), "team", &[]), None, "not ours, not printed");
        assert_eq!(method_ref(&method("by hand"), "team", &["pods".into()]).as_deref(), Some("pods"));
    }

    #[test]
    fn owned_and_unexpressible_entries_are_left_out_with_a_note() {
        let sd = config_entry_kinds().into_iter().next().expect("ServiceDefaults");
        let entries = vec![
            json!({ "Kind": "service-defaults", "Name": "api", "Protocol": "http", "ModifyIndex": 9 }),
            json!({ "Kind": "service-defaults", "Name": "web", "Protocol": "http",
                "Meta": { "concord.io/owner": "team/web" } }),
            json!({ "Kind": "service-defaults", "Name": "legacy", "Mode": "transparent" }),
        ];
        let (objects, notes) = objects_for(&sd, &entries, Some("team"), Some("consul"), false);
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0]["metadata"]["name"], json!("api"));
        assert_eq!(objects[0]["metadata"]["namespace"], json!("team"));
        assert_eq!(objects[0]["spec"], json!({ "clusterRef": "consul", "protocol": "http" }));
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("owned by team/web"), "{notes:?}");
        assert!(notes[1].contains("legacy"), "{notes:?}");
        let (objects, _) = objects_for(&sd, &entries, None, None, true);
        assert_eq!(objects.len(), 2, "--include-owned prints the owned one too");
        assert!(objects[0]["metadata"].get("namespace").is_none());
        assert!(objects[0]["spec"].get("clusterRef").is_none());
    }
}
