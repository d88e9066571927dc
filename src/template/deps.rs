//! What a render read: the dependencies a template recorded, and the data fetched for
//! them (a [`Snapshot`]). Plain data, so rendering stays a pure function of it.
use crate::resources::TemplateDependencies;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One piece of Consul data a template read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dependency {
    /// One KV key (`key`, `keyOrDefault`).
    Key(String),
    /// Every key under a folder (`ls`, `tree`); always ends in `/` unless it is the root.
    Prefix(String),
    /// The instances of one service (`service`), optionally with a tag, passing only or all.
    Service { name: String, tag: Option<String>, passing_only: bool },
    /// The catalog's service names and tags (`services`).
    Services,
}

impl Dependency {
    /// A folder prefix: `config/app`, `/config/app/` and `config/app/` all mean `config/app/`.
    pub fn prefix(path: &str) -> Dependency {
        let trimmed = path.trim_matches('/');
        if trimmed.is_empty() { Dependency::Prefix(String::new()) } else { Dependency::Prefix(format!("{trimmed}/")) }
    }

    /// A key, without a leading `/` (as Consul's own clients treat it).
    pub fn key(path: &str) -> Dependency {
        Dependency::Key(path.trim_start_matches('/').to_string())
    }
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dependency::Key(k) => write!(f, "key {k:?}"),
            Dependency::Prefix(p) => write!(f, "prefix {p:?}"),
            Dependency::Service { name, tag, passing_only } => {
                write!(f, "service {name:?}")?;
                if let Some(tag) = tag {
                    write!(f, " tag={tag:?}")?;
                }
                if !passing_only {
                    write!(f, " passing=false")?;
                }
                Ok(())
            }
            Dependency::Services => write!(f, "services"),
        }
    }
}

/// One KV entry as templates see it: `key` relative to the prefix asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KvEntry {
    /// The full key in Consul.
    #[serde(skip)]
    pub full_key: String,
    pub key: String,
    pub value: String,
}

/// One service instance as templates see it (`{{this.address}}:{{this.port}}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceInstance {
    pub id: String,
    pub name: String,
    pub node: String,
    /// The address to dial: the service's own, else its node's.
    pub address: String,
    pub node_address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    /// Aggregated check status: passing, warning, critical or maintenance.
    pub status: String,
}

/// One catalog service name with the union of its tags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceSummary {
    pub name: String,
    pub tags: Vec<String>,
}

/// The data fetched for one dependency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// `None`: the key does not exist.
    Key(Option<String>),
    /// Every entry under the prefix, sorted by key, folder markers left out.
    Prefix(Vec<KvEntry>),
    /// Sorted by node, then id.
    Service(Vec<ServiceInstance>),
    Services(Vec<ServiceSummary>),
}

/// The data a render may read, by dependency.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    data: HashMap<Dependency, Data>,
}

impl Snapshot {
    pub fn get(&self, dep: &Dependency) -> Option<&Data> {
        self.data.get(dep)
    }

    /// Stores `data`; returns whether it differs from what was there.
    pub fn insert(&mut self, dep: Dependency, data: Data) -> bool {
        match self.data.get(&dep) {
            Some(existing) if *existing == data => false,
            _ => {
                self.data.insert(dep, data);
                true
            }
        }
    }

    /// Forgets everything not in `keep` (data a template stopped reading).
    pub fn retain(&mut self, keep: &[Dependency]) {
        self.data.retain(|d, _| keep.contains(d));
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The status form of a dependency list: sorted, de-duplicated names per kind.
pub fn to_status(deps: &[Dependency]) -> TemplateDependencies {
    let mut out = TemplateDependencies::default();
    for dep in deps {
        match dep {
            Dependency::Key(k) => out.keys.push(k.clone()),
            Dependency::Prefix(p) => out.prefixes.push(p.clone()),
            Dependency::Service { name, tag, .. } => out.services.push(match tag {
                Some(t) => format!("{t}.{name}"),
                None => name.clone(),
            }),
            Dependency::Services => out.services.push("*".to_string()),
        }
    }
    for list in [&mut out.keys, &mut out.prefixes, &mut out.services] {
        list.sort();
        list.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised_to_folders() {
        assert_eq!(Dependency::prefix("config/app"), Dependency::Prefix("config/app/".into()));
        assert_eq!(Dependency::prefix("/config/app/"), Dependency::Prefix("config/app/".into()));
        assert_eq!(Dependency::prefix("/"), Dependency::Prefix(String::new()));
        assert_eq!(Dependency::key("/a/b"), Dependency::Key("a/b".into()));
    }

    #[test]
    fn snapshot_insert_reports_only_real_changes() {
        let mut s = Snapshot::default();
        assert!(s.insert(Dependency::key("a"), Data::Key(Some("1".into()))));
        assert!(!s.insert(Dependency::key("a"), Data::Key(Some("1".into()))));
        assert!(s.insert(Dependency::key("a"), Data::Key(None)));
        s.retain(&[]);
        assert!(s.is_empty());
    }

    #[test]
    fn status_lists_are_sorted_and_unique() {
        let deps = vec![
            Dependency::key("b"),
            Dependency::key("a"),
            Dependency::key("a"),
            Dependency::prefix("config/app"),
            Dependency::Service { name: "api".into(), tag: Some("v2".into()), passing_only: true },
            Dependency::Services,
        ];
        let s = to_status(&deps);
        assert_eq!(s.keys, ["a", "b"]);
        assert_eq!(s.prefixes, ["config/app/"]);
        assert_eq!(s.services, ["*", "v2.api"]);
    }
}
