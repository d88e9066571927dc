//! The module floors (src/lib.rs): a module never imports from a floor above it. Read
//! from the source, so a new upward import fails here instead of growing an import circle.
use std::path::Path;

/// Floors from the bottom; modules on one floor may use each other.
const FLOORS: &[&[&str]] = &[
    &["resources", "consul"],
    &["cluster", "snapshot", "crdgen"],
    &["context"],
    &["sync", "template"],
    &["controllers"],
    &["runtime", "render"],
];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::<module>` paths named in a source text.
fn crate_imports(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        found.push(name);
    }
    found
}

#[test]
fn no_module_imports_from_a_floor_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative.components().next().expect("component").as_os_str().to_string_lossy();
        let module = top.trim_end_matches(".rs");
        let Some(own) = floor_of(module) else { continue };
        let text = std::fs::read_to_string(file).expect("read");
        for import in crate_imports(&text) {
            if let Some(theirs) = floor_of(&import)
                && theirs > own
            {
                violations.push(format!("{} imports crate::{import}", relative.display()));
            }
        }
    }
    assert!(violations.is_empty(), "upward imports:\n{}", violations.join("\n"));
}

#[test]
fn the_checker_sees_an_upward_import() {
    assert_eq!(crate_imports("use crate::runtime::Context; x crate::cluster::f()"), vec!["runtime", "cluster"]);
    assert!(floor_of("runtime") > floor_of("sync"));
}

#[test]
fn every_top_level_module_has_a_floor() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).expect("lib.rs");
    for line in lib.lines() {
        if let Some(name) = line.strip_prefix("pub mod ").and_then(|l| l.strip_suffix(';')) {
            assert!(floor_of(name).is_some(), "module {name} has no floor in tests/layering.rs");
        }
    }
}

/// The files whose code may hold a cluster's ACL-admin token (`acl = "write"`): the code
/// that manages ACLs and snapshots. Everything else gets the controller's sync token
/// (`ClusterCache::resolve`/`client_for`) or a tenant's derived token (`resolve_tenant`).
/// A new ACL controller adds its file here, in the same change that switches its calls
/// to `resolve_acl_admin`.
const ACL_ADMIN_CALLERS: &[&str] = &[
    "cluster.rs",                      // defines them
    "cluster/tenant_token.rs",         // derives tenants' tokens
    "controllers/acl_bootstrap.rs",    // makes the tokens
    "controllers/acl_auth_method.rs",  // ACLAuthMethod
    "controllers/acl_binding_rule.rs", // ACLBindingRule
    "controllers/acl_object.rs",       // the import pass of ACLRole, ACLAuthMethod, ACLBindingRule
    "controllers/acl_policy.rs",       // ACLPolicy
    "controllers/acl_role.rs",         // ACLRole
    "controllers/acl_token.rs",        // ACLToken
    "controllers/snapshot.rs",         // /v1/snapshot needs acl write
];

/// The files that may name the ACL-admin token's Secret: where it is named, read and made.
const ACL_ADMIN_SECRET_NAMERS: &[&str] = &["cluster/token_secret.rs", "cluster.rs", "controllers/acl_bootstrap.rs"];

fn files_mentioning(needles: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            needles.iter().any(|n| text.contains(n))
        })
        .map(|f| f.strip_prefix(&src).expect("under src").to_string_lossy().replace('\\', "/"))
        .collect();
    found.sort();
    found
}

#[test]
fn only_the_acl_and_snapshot_code_can_reach_the_acl_admin_token() {
    let callers = files_mentioning(&["resolve_acl_admin", "acl_admin_for"]);
    let strays: Vec<_> = callers.iter().filter(|f| !ACL_ADMIN_CALLERS.contains(&f.as_str())).collect();
    assert!(strays.is_empty(), "these files reach the ACL-admin token but manage no ACLs: {strays:?}");
    // The list is not stale: each listed file does use it (a moved call fails here).
    for listed in ACL_ADMIN_CALLERS {
        assert!(callers.iter().any(|c| c == listed), "{listed} no longer reaches the ACL-admin token; unlist it");
    }
    let namers = files_mentioning(&["acl_admin_secret_name"]);
    let strays: Vec<_> = namers.iter().filter(|f| !ACL_ADMIN_SECRET_NAMERS.contains(&f.as_str())).collect();
    assert!(strays.is_empty(), "these files name the ACL-admin token's Secret: {strays:?}");
}
