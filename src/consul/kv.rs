//! The KV store: get, list, keys, put and delete, with check-and-set and flags.

use bytes::Bytes;
use reqwest::Method;
use serde::{Deserialize, Deserializer};

use super::error::{Error, Result};
use super::{Client, ConsulIndex, QueryOptions, QueryResponse};

/// One KV entry as Consul returns it, with the value already base64-decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvPair {
    pub key: String,
    #[serde(default)]
    pub create_index: ConsulIndex,
    /// The index to pass as `cas` to update this exact version.
    #[serde(default)]
    pub modify_index: ConsulIndex,
    #[serde(default)]
    pub lock_index: u64,
    #[serde(default)]
    pub flags: u64,
    /// Empty when Consul sends `null` (an empty value, or a transaction result).
    #[serde(default, deserialize_with = "base64_value")]
    pub value: Bytes,
    #[serde(default)]
    pub session: Option<String>,
}

impl KvPair {
    /// The value as UTF-8 text, when it is.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

pub(crate) fn base64_value<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    use base64::Engine;
    let encoded: Option<String> = Option::deserialize(d)?;
    match encoded {
        None => Ok(Bytes::new()),
        Some(text) => {
            base64::engine::general_purpose::STANDARD.decode(text).map(Bytes::from).map_err(serde::de::Error::custom)
        }
    }
}

/// Options for [`Client::kv_put`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvWriteOptions {
    /// Opaque number stored with the value (concord marks keys it owns with it).
    pub flags: u64,
    /// Write only if the key's `ModifyIndex` is still this; `ConsulIndex(0)` means
    /// "only if the key does not exist yet".
    pub cas: Option<ConsulIndex>,
}

/// A KV key split into URL path segments.
///
/// A leading `/` is dropped, as Consul's own client does. Empty inner segments and `.`
/// or `..` are refused: HTTP path normalisation (here or in Go's router) would silently
/// turn them into a different key.
pub(crate) fn key_segments(key: &str) -> Result<Vec<String>> {
    let key = key.strip_prefix('/').unwrap_or(key);
    let parts: Vec<&str> = key.split('/').collect();
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate() {
        let empty_inside = part.is_empty() && i != last;
        if empty_inside || *part == "." || *part == ".." {
            return Err(Error::InvalidRequest(format!("KV key {key:?} has an empty, \".\" or \"..\" segment")));
        }
    }
    let mut segments = vec!["v1".to_owned(), "kv".to_owned()];
    segments.extend(parts.into_iter().map(str::to_owned));
    Ok(segments)
}

impl Client {
    /// `GET /v1/kv/:key`: the entry, or `None` when the key does not exist (a blocking
    /// query with `opts.index` waits for it to change, appear or disappear).
    pub async fn kv_get(&self, key: &str, opts: &QueryOptions) -> Result<QueryResponse<Option<KvPair>>> {
        let req = self.read(key_segments(key)?, opts);
        let resp = self.query_optional::<Vec<KvPair>>(&req).await?;
        Ok(resp.map(|pairs| pairs.and_then(|p| p.into_iter().next())))
    }

    /// `GET /v1/kv/:prefix?recurse`: every entry under `prefix` (a plain string prefix,
    /// not a folder: `app/a` matches `app/ab`), empty when there is none.
    pub async fn kv_list(&self, prefix: &str, opts: &QueryOptions) -> Result<QueryResponse<Vec<KvPair>>> {
        let req = self.read(key_segments(prefix)?, opts).flag("recurse");
        let resp = self.query_optional::<Vec<KvPair>>(&req).await?;
        Ok(resp.map(Option::unwrap_or_default))
    }

    /// `GET /v1/kv/:prefix?keys`: key names only; with a separator, stops at it
    /// (folders come back once, ending in the separator).
    pub async fn kv_keys(
        &self,
        prefix: &str,
        separator: Option<&str>,
        opts: &QueryOptions,
    ) -> Result<QueryResponse<Vec<String>>> {
        let mut req = self.read(key_segments(prefix)?, opts).flag("keys");
        if let Some(sep) = separator {
            req = req.param("separator", sep);
        }
        let resp = self.query_optional::<Vec<String>>(&req).await?;
        Ok(resp.map(Option::unwrap_or_default))
    }

    /// `PUT /v1/kv/:key`. With `opts.cas`, a lost race is [`Error::CasConflict`].
    pub async fn kv_put(&self, key: &str, value: impl Into<Bytes>, opts: &KvWriteOptions) -> Result<()> {
        let mut req = self.request(Method::PUT, key_segments(key)?).raw_body(value.into());
        if opts.flags != 0 {
            req = req.param("flags", opts.flags);
        }
        if let Some(cas) = opts.cas {
            req = req.param("cas", cas);
        }
        self.call_bool(&req, key, opts.cas).await
    }

    /// `DELETE /v1/kv/:key`; deleting a missing key succeeds. With `cas`, only if the key
    /// is still at that index ([`Error::CasConflict`] otherwise).
    pub async fn kv_delete(&self, key: &str, cas: Option<ConsulIndex>) -> Result<()> {
        let mut req = self.request(Method::DELETE, key_segments(key)?);
        if let Some(cas) = cas {
            req = req.param("cas", cas);
        }
        self.call_bool(&req, key, cas).await
    }

    /// `DELETE /v1/kv/:prefix?recurse`: every key starting with `prefix`.
    pub async fn kv_delete_tree(&self, prefix: &str) -> Result<()> {
        if prefix.trim_matches('/').is_empty() {
            // One typo away from wiping the whole store: make it impossible here.
            return Err(Error::InvalidRequest("refusing to delete the whole KV store (empty prefix)".into()));
        }
        let req = self.request(Method::DELETE, key_segments(prefix)?).flag("recurse");
        self.call_bool(&req, prefix, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_segments_split_on_slash_and_keep_folder_markers() {
        assert_eq!(key_segments("app/config/x").expect("ok"), ["v1", "kv", "app", "config", "x"]);
        assert_eq!(key_segments("/app/").expect("ok"), ["v1", "kv", "app", ""]);
        assert_eq!(key_segments("").expect("ok"), ["v1", "kv", ""]);
    }

    #[test]
    fn key_segments_refuse_keys_http_would_rewrite() {
        for bad in ["a//b", "a/../b", "./a", "a/."] {
            assert!(key_segments(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kv_pair_decodes_base64_and_null_values() {
        let json = r#"[{"Key":"a","CreateIndex":3,"ModifyIndex":9,"LockIndex":0,"Flags":42,"Value":"aGVsbG8=","Session":null},
                       {"Key":"b","CreateIndex":4,"ModifyIndex":4,"LockIndex":0,"Flags":0,"Value":null}]"#;
        let pairs: Vec<KvPair> = serde_json::from_str(json).expect("decode");
        assert_eq!(pairs[0].value, Bytes::from_static(b"hello"));
        assert_eq!(pairs[0].value_str(), Some("hello"));
        assert_eq!(pairs[0].modify_index, ConsulIndex(9));
        assert_eq!(pairs[0].flags, 42);
        assert!(pairs[1].value.is_empty());
    }

    #[test]
    fn kv_pair_rejects_invalid_base64() {
        let json = r#"{"Key":"a","Value":"***"}"#;
        assert!(serde_json::from_str::<KvPair>(json).is_err());
    }
}
