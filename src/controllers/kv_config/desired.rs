//! What a KVConfig declares, as plain data: full key → bytes. Pure: the ConfigMap and
//! Secret contents are passed in, nothing here does I/O.
//!
//! Rules written down here:
//! - full key = prefix (with a `/` added when it does not end in one) + [keyPrefix/] + key;
//! - `value` is stored as is; `json` as canonical JSON (object keys sorted by their UTF-8
//!   bytes, no whitespace), so the same document always gives the same bytes and a
//!   reordered YAML map is not a change;
//! - a key declared twice (inline and from a ConfigMap, or two sources) is refused as a
//!   whole, as is a value over Consul's 512 KiB limit: nothing is written for an object
//!   that cannot be written completely.
use crate::resources::{KVConfigSpec, KvSource};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;

/// Consul's largest KV value (`kv_max_value_size`, 512 KiB by default).
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// A value to store. Its Debug never shows the bytes: values may come from Secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Value(pub Bytes);

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value(<{} bytes>)", self.0.len())
    }
}

/// The data of the ConfigMaps and Secrets a KVConfig names, by object name.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub config_maps: BTreeMap<String, BTreeMap<String, Value>>,
    pub secrets: BTreeMap<String, BTreeMap<String, Value>>,
}

/// Why a KVConfig cannot be written. Messages name keys and sizes, never values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    #[error("{kind} {name} not found")]
    SourceNotFound { kind: &'static str, name: String },
    #[error("key {key} is declared more than once")]
    DuplicateKey { key: String },
    #[error("key {key} is not a valid Consul key: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("key {key} has a value of {size} bytes, over Consul's limit of {MAX_VALUE_BYTES} bytes")]
    ValueTooLarge { key: String, size: usize },
}

impl DesiredError {
    /// Condition reason and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            DesiredError::SourceNotFound { .. } => "SourceNotFound",
            DesiredError::DuplicateKey { .. } => "DuplicateKey",
            DesiredError::InvalidKey { .. } => "InvalidKey",
            DesiredError::ValueTooLarge { .. } => "ValueTooLarge",
        }
    }
}

/// The prefix as a folder: ends in `/` (an empty prefix stays empty).
pub fn folder(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") }
}

/// `prefix` + `relative`, with a `/` between them when needed.
pub fn full_key(prefix: &str, relative: &str) -> String {
    format!("{}{relative}", folder(prefix))
}

/// Refuses keys that HTTP path handling would turn into another key, as the Consul
/// client does (the CRD already refuses a leading `/` and `..`).
pub fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("empty key");
    }
    if key.starts_with('/') {
        return Err("starts with /");
    }
    if key.ends_with('/') {
        return Err("ends with / (a folder, not a key)");
    }
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err("has an empty, \".\" or \"..\" path segment");
    }
    Ok(())
}

/// Canonical JSON: object keys sorted, no whitespace; strings and numbers as serde_json
/// writes them. Independent of serde_json's `preserve_order` feature.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match value {
        J::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&J::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        J::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Every key the object declares, with its value (pure).
pub fn desired_keys(spec: &KVConfigSpec, sources: &Sources) -> Result<BTreeMap<String, Value>, DesiredError> {
    let mut out = BTreeMap::new();
    let mut insert = |key: String, value: Value| -> Result<(), DesiredError> {
        if let Err(reason) = check_key(&key) {
            return Err(DesiredError::InvalidKey { key, reason });
        }
        if value.0.len() > MAX_VALUE_BYTES {
            return Err(DesiredError::ValueTooLarge { key, size: value.0.len() });
        }
        if out.insert(key.clone(), value).is_some() {
            return Err(DesiredError::DuplicateKey { key });
        }
        Ok(())
    };
    for entry in &spec.keys {
        let bytes = match (&entry.value, &entry.json) {
            (_, Some(json)) => Bytes::from(canonical_json(json)),
            (Some(v), None) => Bytes::from(v.clone()),
            (None, None) => Bytes::new(),
        };
        insert(full_key(&spec.prefix, &entry.key), Value(bytes))?;
    }
    let from = |kind: &'static str, list: &[KvSource], data: &BTreeMap<String, BTreeMap<String, Value>>| {
        let mut keys = Vec::new();
        for source in list {
            let Some(entries) = data.get(&source.name) else {
                return Err(DesiredError::SourceNotFound { kind, name: source.name.clone() });
            };
            let base = match source.key_prefix.as_deref() {
                Some(p) if !p.is_empty() => full_key(&spec.prefix, p),
                _ => folder(&spec.prefix),
            };
            for (k, v) in entries {
                keys.push((full_key(&base, k), v.clone()));
            }
        }
        Ok(keys)
    };
    for (key, value) in from("ConfigMap", &spec.from_config_map, &sources.config_maps)? {
        insert(key, value)?;
    }
    for (key, value) in from("Secret", &spec.from_secret, &sources.secrets)? {
        insert(key, value)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::KvEntry;
    use serde_json::json;

    fn spec(prefix: &str, keys: Vec<KvEntry>) -> KVConfigSpec {
        serde_json::from_value(json!({ "prefix": prefix }))
            .map(|mut s: KVConfigSpec| {
                s.keys = keys;
                s
            })
            .expect("spec")
    }

    fn string(key: &str, value: &str) -> KvEntry {
        KvEntry { key: key.into(), value: Some(value.into()), json: None }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_drops_whitespace() {
        let v = json!({"b": {"z": 1, "a": [true, {"y": null, "x": "s\"q"}]}, "a": 1.5});
        assert_eq!(canonical_json(&v), r#"{"a":1.5,"b":{"a":[true,{"x":"s\"q","y":null}],"z":1}}"#);
    }

    #[test]
    fn canonical_json_round_trips_to_an_equal_document() {
        let v = json!({"database": {"host": "db", "pool": {"max": 20, "min": 2}}, "upstreams": ["api", "cache"]});
        let parsed: serde_json::Value = serde_json::from_str(&canonical_json(&v)).expect("valid JSON");
        assert_eq!(parsed, v);
    }

    #[test]
    fn keys_join_the_prefix_as_a_folder() {
        assert_eq!(full_key("config/app/", "production"), "config/app/production");
        assert_eq!(full_key("config/app", "production"), "config/app/production");
        assert_eq!(folder("a"), "a/");
    }

    #[test]
    fn string_and_json_values_become_bytes() {
        let s = spec(
            "config/app/",
            vec![
                string("log-level", "info"),
                KvEntry { key: "production".into(), value: None, json: Some(json!({"b": 1, "a": 2})) },
            ],
        );
        let keys = desired_keys(&s, &Sources::default()).expect("valid");
        assert_eq!(keys["config/app/log-level"].0, Bytes::from_static(b"info"));
        assert_eq!(keys["config/app/production"].0, Bytes::from_static(br#"{"a":2,"b":1}"#));
    }

    #[test]
    fn config_map_and_secret_keys_land_under_their_key_prefix() {
        let mut s = spec("app", vec![]);
        s.from_config_map = vec![KvSource { name: "cm".into(), key_prefix: Some("settings".into()) }];
        s.from_secret = vec![KvSource { name: "sec".into(), key_prefix: None }];
        let mut sources = Sources::default();
        sources.config_maps.insert("cm".into(), [("a".to_string(), Value(Bytes::from_static(b"1")))].into());
        sources.secrets.insert("sec".into(), [("pw".to_string(), Value(Bytes::from_static(b"hunter2")))].into());
        let keys = desired_keys(&s, &sources).expect("valid");
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["app/pw", "app/settings/a"]);
    }

    #[test]
    fn a_missing_source_a_duplicate_or_an_oversized_value_refuses_everything() {
        let mut s = spec("app", vec![string("a", "1")]);
        s.from_config_map = vec![KvSource { name: "nope".into(), key_prefix: None }];
        assert_eq!(desired_keys(&s, &Sources::default()).expect_err("refused").reason(), "SourceNotFound");

        let s = spec("app", vec![string("a", "1"), string("a", "2")]);
        assert_eq!(
            desired_keys(&s, &Sources::default()).expect_err("refused"),
            DesiredError::DuplicateKey { key: "app/a".into() }
        );

        let big = "x".repeat(MAX_VALUE_BYTES + 1);
        let s = spec("app", vec![string("a", "1"), string("big", &big)]);
        let err = desired_keys(&s, &Sources::default()).expect_err("refused");
        assert_eq!(err, DesiredError::ValueTooLarge { key: "app/big".into(), size: MAX_VALUE_BYTES + 1 });
        assert!(!err.to_string().contains("xxx"));

        let exact = "x".repeat(MAX_VALUE_BYTES);
        assert!(desired_keys(&spec("app", vec![string("big", &exact)]), &Sources::default()).is_ok());
    }

    #[test]
    fn keys_http_would_rewrite_are_refused() {
        for bad in ["a//b", "a/./b", "a/", "x/../y"] {
            let s = spec("app", vec![string(bad, "1")]);
            assert_eq!(desired_keys(&s, &Sources::default()).expect_err("refused").reason(), "InvalidKey", "{bad}");
        }
    }

    #[test]
    fn canonical_json_round_trips_long_numbers() {
        // Found by fuzz/kv_desired: without serde_json's float_roundtrip a 60-digit number
        // was written as 1.1999999999999999e+59 and read back as 1.2e+59, so the KV value
        // never matched its desired form.
        for text in [
            "119999999999999999999999999999999999999999999999999999999999",
            "0.30000000000000004",
            "1.7976931348623157e308",
            "5e-324",
            "-2.2250738585072014e-308",
        ] {
            let value: serde_json::Value = serde_json::from_str(text).expect("a JSON number");
            let canonical = canonical_json(&value);
            let back: serde_json::Value = serde_json::from_str(&canonical).expect("canonical JSON parses");
            assert_eq!(canonical_json(&back), canonical, "{text}");
            assert_eq!(back, value, "{text}");
        }
    }

    #[test]
    fn debug_never_shows_values() {
        assert_eq!(format!("{:?}", Value(Bytes::from_static(b"secret"))), "Value(<6 bytes>)");
    }
}
