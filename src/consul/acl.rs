//! ACL bootstrap, policies and tokens.
//!
//! A token's `AccessorID` is its public name (safe in status and logs); its `SecretID`
//! is a [`Token`], redacted everywhere it could be printed.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::error::Result;
use super::{Client, ConsulIndex, QueryOptions, QueryResponse, Token, null_default};

/// A reference to a policy (or role) by ID or by name; Consul fills in the other.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclLink {
    #[serde(rename = "ID", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl AclLink {
    pub fn by_name(name: impl Into<String>) -> Self {
        Self { id: String::new(), name: name.into() }
    }

    pub fn by_id(id: impl Into<String>) -> Self {
        Self { id: id.into(), name: String::new() }
    }
}

/// Grants what a service needs to register itself and discover others.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclServiceIdentity {
    pub service_name: String,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclNodeIdentity {
    pub node_name: String,
    pub datacenter: String,
}

/// An ACL policy. `id` is empty until Consul created it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclPolicy {
    #[serde(rename = "ID", skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub name: String,
    pub description: String,
    /// HCL or JSON rules; empty in list answers.
    pub rules: String,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
    #[serde(skip_serializing)]
    pub create_index: ConsulIndex,
    #[serde(skip_serializing)]
    pub modify_index: ConsulIndex,
}

/// An ACL token. For creation, leave `accessor_id` and `secret_id` empty for Consul to
/// generate them, or set them (UUIDs) to make the token's identity known in advance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclToken {
    #[serde(rename = "AccessorID", skip_serializing_if = "String::is_empty")]
    pub accessor_id: String,
    #[serde(rename = "SecretID", skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<Token>,
    pub description: String,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<AclLink>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<AclLink>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub service_identities: Vec<AclServiceIdentity>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub node_identities: Vec<AclNodeIdentity>,
    /// Valid only in this datacenter (not replicated).
    pub local: bool,
    /// Lifetime from creation (Go duration); only on create, Consul cannot change it.
    #[serde(rename = "ExpirationTTL", skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub expiration_ttl: Option<String>,
    /// When Consul deletes the token (RFC 3339), if it expires.
    #[serde(skip_serializing)]
    pub expiration_time: Option<String>,
    #[serde(skip_serializing)]
    pub create_index: ConsulIndex,
    #[serde(skip_serializing)]
    pub modify_index: ConsulIndex,
}

/// `None` for a missing object, however Consul says so (404, or 403 for tokens).
fn absent_as_none<T>(result: Result<QueryResponse<Option<T>>>) -> Result<Option<T>> {
    match result {
        Ok(resp) => Ok(resp.value),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

impl Client {
    /// `PUT /v1/acl/bootstrap`: the first management token. Once per cluster: later
    /// calls fail with [`super::Error::AclAlreadyBootstrapped`]. Never repeated after an
    /// ambiguous failure, which would lose the only copy of the secret.
    pub async fn acl_bootstrap(&self) -> Result<AclToken> {
        let req = self.request(Method::PUT, ["v1", "acl", "bootstrap"]).not_idempotent();
        self.call(&req).await
    }

    /// `PUT /v1/acl/policy`; names are unique, so a repeat would fail: not retried
    /// after an ambiguous failure (read by name to find out).
    pub async fn acl_policy_create(&self, policy: &AclPolicy) -> Result<AclPolicy> {
        let req = self.request(Method::PUT, ["v1", "acl", "policy"]).json_body(policy)?.not_idempotent();
        self.call(&req).await
    }

    /// `GET /v1/acl/policy/:id`; `None` when there is no such policy.
    pub async fn acl_policy_read(&self, id: &str) -> Result<Option<AclPolicy>> {
        let req = self.read(["v1", "acl", "policy", id], &QueryOptions::default());
        absent_as_none(self.query_optional(&req).await)
    }

    /// `GET /v1/acl/policy/name/:name`; `None` when there is no such policy.
    pub async fn acl_policy_read_by_name(&self, name: &str) -> Result<Option<AclPolicy>> {
        let req = self.read(["v1", "acl", "policy", "name", name], &QueryOptions::default());
        absent_as_none(self.query_optional(&req).await)
    }

    /// `PUT /v1/acl/policy/:id` with `policy.id` set.
    pub async fn acl_policy_update(&self, policy: &AclPolicy) -> Result<AclPolicy> {
        let req = self.request(Method::PUT, ["v1", "acl", "policy", &policy.id]).json_body(policy)?;
        self.call(&req).await
    }

    /// `DELETE /v1/acl/policy/:id`.
    pub async fn acl_policy_delete(&self, id: &str) -> Result<()> {
        let req = self.request(Method::DELETE, ["v1", "acl", "policy", id]);
        self.call_unit(&req).await
    }

    /// `GET /v1/acl/policies` (without rules).
    pub async fn acl_policies(&self) -> Result<Vec<AclPolicy>> {
        let req = self.read(["v1", "acl", "policies"], &QueryOptions::default());
        let resp = self.query::<Option<Vec<AclPolicy>>>(&req).await?;
        Ok(resp.value.unwrap_or_default())
    }

    /// `PUT /v1/acl/token`. Not retried after an ambiguous failure unless the caller set
    /// `accessor_id` (then a repeat is refused rather than creating a second token, so
    /// it is still not retried blindly: read the accessor to find out).
    pub async fn acl_token_create(&self, token: &AclToken) -> Result<AclToken> {
        let req = self.request(Method::PUT, ["v1", "acl", "token"]).json_body(token)?.not_idempotent();
        self.call(&req).await
    }

    /// `GET /v1/acl/token/:accessor_id`; `None` when there is no such token.
    pub async fn acl_token_read(&self, accessor_id: &str) -> Result<Option<AclToken>> {
        let req = self.read(["v1", "acl", "token", accessor_id], &QueryOptions::default());
        absent_as_none(self.query_optional(&req).await)
    }

    /// `GET /v1/acl/token/self`: the token this client sends.
    pub async fn acl_token_read_self(&self) -> Result<AclToken> {
        let req = self.read(["v1", "acl", "token", "self"], &QueryOptions::default());
        Ok(self.query(&req).await?.value)
    }

    /// `PUT /v1/acl/token/:accessor_id` with `token.accessor_id` set.
    pub async fn acl_token_update(&self, token: &AclToken) -> Result<AclToken> {
        let req = self.request(Method::PUT, ["v1", "acl", "token", &token.accessor_id]).json_body(token)?;
        self.call(&req).await
    }

    /// `DELETE /v1/acl/token/:accessor_id`.
    pub async fn acl_token_delete(&self, accessor_id: &str) -> Result<()> {
        let req = self.request(Method::DELETE, ["v1", "acl", "token", accessor_id]);
        self.call_unit(&req).await
    }

    /// `GET /v1/acl/tokens`.
    pub async fn acl_tokens(&self) -> Result<Vec<AclToken>> {
        let req = self.read(["v1", "acl", "tokens"], &QueryOptions::default());
        let resp = self.query::<Option<Vec<AclToken>>>(&req).await?;
        Ok(resp.value.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_debug_hides_the_secret_but_serde_sends_it() {
        let token = AclToken {
            accessor_id: "acc-1".into(),
            secret_id: Some(Token::new("sec-1")),
            policies: vec![AclLink::by_name("kv-read")],
            ..Default::default()
        };
        let debug = format!("{token:?}");
        assert!(debug.contains("acc-1") && !debug.contains("sec-1"), "{debug}");
        assert_eq!(
            serde_json::to_value(&token).expect("encode"),
            json!({"AccessorID": "acc-1", "SecretID": "sec-1", "Description": "",
                   "Policies": [{"Name": "kv-read"}], "Local": false})
        );
    }

    #[test]
    fn token_from_consul_decodes() {
        let body = json!({
            "AccessorID": "a", "SecretID": "s", "Description": "bootstrap",
            "Policies": [{"ID": "00000000-0000-0000-0000-000000000001", "Name": "global-management"}],
            "Local": false, "CreateTime": "2024-01-01T00:00:00Z", "Hash": "abc=",
            "CreateIndex": 12, "ModifyIndex": 12
        });
        let token: AclToken = serde_json::from_value(body).expect("decode");
        assert_eq!(token.secret_id.as_ref().map(Token::expose_secret), Some("s"));
        assert_eq!(token.policies[0].name, "global-management");
    }
}
