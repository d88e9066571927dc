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
