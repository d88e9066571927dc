//! `concord kv export PREFIX`: the adoption path. Turns the keys under an existing
//! Consul prefix into a KVConfig manifest that, once applied, declares exactly what is
//! there (applying it adopts the keys: same values, concord's ownership flags added).
//!
//! A value that is a JSON object already in canonical form becomes `json:` (so it reads
//! as YAML and is compared structurally; the CRD types `json` as an object, so arrays
//! and scalars cannot go there); anything else stays a string, so
//! the bytes never change. Values that are not UTF-8 cannot be written as YAML strings and
//! are skipped, each named on stderr by the caller.
use super::desired::{canonical_json, folder};
use crate::resources::{KVConfig, KVConfigSpec, KvEntry};
use bytes::Bytes;

/// The manifest and the keys left out (not UTF-8).
#[derive(Debug)]
pub struct Exported {
    pub object: KVConfig,
    pub skipped: Vec<String>,
}

/// Builds the KVConfig for `pairs` (full keys and values) under `prefix` (pure).
pub fn export(name: &str, namespace: Option<&str>, prefix: &str, pairs: &[(String, Bytes)]) -> Exported {
    let base = folder(prefix);
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (key, value) in pairs {
        let Some(relative) = key.strip_prefix(&base) else {
            // `app` as a prefix lists `apple/x` too; those are not under the folder.
            continue;
        };
        if relative.is_empty() || relative.ends_with('/') {
            continue; // folder markers
        }
        let Ok(text) = std::str::from_utf8(value) else {
            skipped.push(key.clone());
            continue;
        };
        let structured =
            serde_json::from_str::<serde_json::Value>(text).ok().filter(|v| v.is_object() && canonical_json(v) == text);
        let entry = match structured {
            Some(json) => KvEntry { key: relative.to_string(), value: None, json: Some(json) },
            None => KvEntry { key: relative.to_string(), value: Some(text.to_string()), json: None },
        };
        keys.push(entry);
    }
    let mut spec: KVConfigSpec = KVConfigSpec {
        cluster_ref: None,
        service_account_name: None,
        prefix: base,
        keys,
        from_config_map: Vec::new(),
        from_secret: Vec::new(),
        drift_policy: Default::default(),
        prune: false,
        deletion_policy: Default::default(),
    };
    spec.keys.sort_by(|a, b| a.key.cmp(&b.key));
    let mut object = KVConfig::new(name, spec);
    object.metadata.namespace = namespace.map(str::to_string);
    Exported { object, skipped }
}

/// The manifest as YAML (without status).
pub fn to_yaml(object: &KVConfig) -> Result<String, serde_yaml::Error> {
    let mut value = serde_yaml::to_value(object)?;
    if let serde_yaml::Value::Mapping(m) = &mut value {
        m.remove("status");
    }
    serde_yaml::to_string(&value)
}

/// A default object name for a prefix: DNS-1123, e.g. `config/app/` → `config-app`.
pub fn name_for(prefix: &str) -> String {
    let mut name: String =
        prefix.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let name = name.trim_matches('-');
    let name: String = name.chars().take(63).collect();
    let name = name.trim_end_matches('-');
    if name.is_empty() { "kv".to_string() } else { name.to_string() }
}

/// `concord kv ...`: KV tools.
#[derive(clap::Args, Debug)]
pub struct KvArgs {
    #[command(subcommand)]
    pub command: KvCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum KvCommand {
    /// Print a KVConfig manifest declaring the keys under PREFIX as they are in Consul.
    Export {
        /// Key prefix to export, e.g. `config/app/`.
        prefix: String,
        /// Consul HTTP address(es), comma-separated.
        #[arg(long, env = "CONSUL_HTTP_ADDR", default_value = "http://127.0.0.1:8500")]
        address: String,
        /// ACL token (read from the environment only, never a flag: flags show in `ps`).
        #[arg(skip = std::env::var("CONSUL_HTTP_TOKEN").ok().map(crate::consul::Token::new))]
        token: Option<crate::consul::Token>,
        /// Object name (default: derived from the prefix).
        #[arg(long)]
        name: Option<String>,
        /// Object namespace (default: none, i.e. the namespace `kubectl apply` uses).
        #[arg(long)]
        namespace: Option<String>,
    },
}

/// Entry point of `concord kv`.
/// The same rules the KVConfig CRD enforces on `spec.prefix`, so that an export is
/// never a manifest the API server would refuse.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("the prefix must not be empty".to_string());
    }
    if prefix.starts_with('/') {
        return Err(format!("prefix {prefix:?} must not start with /"));
    }
    if prefix.contains("..") {
        return Err(format!("prefix {prefix:?} must not contain .."));
    }
    Ok(())
}

pub fn main(args: KvArgs) -> Result<(), String> {
    let KvCommand::Export { prefix, address, token, name, namespace } = args.command;
    check_prefix(&prefix)?;
    let mut config = crate::consul::ClientConfig::new(crate::cluster::external_addresses(&address));
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        config = config.token(token);
    }
    let consul = crate::consul::Client::new(config).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let pairs = runtime
        .block_on(consul.kv_list(&folder(&prefix), &crate::consul::QueryOptions::default()))
        .map_err(|e| format!("cannot list {prefix}: {e}"))?
        .value;
    let pairs: Vec<(String, Bytes)> = pairs.into_iter().map(|p| (p.key, p.value)).collect();
    let name = name.unwrap_or_else(|| name_for(&prefix));
    let out = export(&name, namespace.as_deref(), &prefix, &pairs);
    for key in &out.skipped {
        eprintln!("concord: skipped {key}: the value is not UTF-8 text");
    }
    print!("{}", to_yaml(&out.object).map_err(|e| format!("cannot write YAML: {e}"))?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_token_is_redacted_in_debug_output() {
        let args = KvArgs {
            command: KvCommand::Export {
                prefix: "app/".into(),
                address: "http://127.0.0.1:8500".into(),
                token: Some(crate::consul::Token::new("b3a9c7e2-secret")),
                name: None,
                namespace: None,
            },
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("b3a9"), "{shown}");
    }
    use crate::controllers::kv_config::desired::{Sources, desired_keys};

    fn pair(k: &str, v: &[u8]) -> (String, Bytes) {
        (k.to_string(), Bytes::copy_from_slice(v))
    }

    #[test]
    fn exported_manifest_declares_exactly_the_bytes_in_consul() {
        let pairs = vec![
            pair("config/app/production", br#"{"a":1,"b":[true]}"#),
            pair("config/app/spaced", br#"{ "a": 1 }"#),
            pair("config/app/log-level", b"info"),
            pair("config/app/list", br#"["a","b"]"#),
            pair("config/app/", b""),
            pair("config/apple/x", b"not under the folder"),
            pair("config/app/bin", &[0xff, 0xfe]),
        ];
        let out = export("app", Some("team"), "config/app", &pairs);
        assert_eq!(out.skipped, vec!["config/app/bin"]);
        let spec = &out.object.spec;
        assert_eq!(spec.prefix, "config/app/");
        assert_eq!(
            spec.keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["list", "log-level", "production", "spaced"]
        );
        assert!(spec.keys[0].value.is_some(), "a JSON array stays a string: `json` holds objects only");
        assert!(spec.keys[2].json.is_some(), "canonical JSON stays structured");
        assert!(spec.keys[3].value.is_some(), "non-canonical JSON stays a string so its bytes stay");
        // Applying the manifest would write the same bytes back.
        let declared = desired_keys(spec, &Sources::default()).expect("valid");
        for (k, v) in &pairs[..4] {
            assert_eq!(&declared[k].0, v, "{k}");
        }
        let yaml = to_yaml(&out.object).expect("yaml");
        assert!(yaml.contains("kind: KVConfig") && yaml.contains("namespace: team"), "{yaml}");
        assert!(!yaml.contains("status"), "{yaml}");
    }

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(name_for("config/app/"), "config-app");
        assert_eq!(name_for("//"), "kv");
        assert_eq!(name_for("Team_A/Cfg"), "team-a-cfg");
    }
}
