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

/// An ACL role: policies and identities a token (or a login) can take by name. `id` is
/// empty until Consul created it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclRole {
    #[serde(rename = "ID", skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<AclLink>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub service_identities: Vec<AclServiceIdentity>,
    #[serde(deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub node_identities: Vec<AclNodeIdentity>,
    #[serde(skip_serializing)]
    pub create_index: ConsulIndex,
    #[serde(skip_serializing)]
    pub modify_index: ConsulIndex,
}

/// The `Config` of a `kubernetes` auth method. The reviewer JWT is a [`Token`]: redacted
/// wherever it could be printed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KubernetesAuthConfig {
    #[serde(rename = "Host")]
    pub host: String,
    #[serde(rename = "CACert")]
    pub ca_cert: String,
    #[serde(rename = "ServiceAccountJWT", skip_serializing_if = "Option::is_none")]
    pub service_account_jwt: Option<Token>,
}

/// An ACL auth method (Consul names it; it has no ID). Only the `kubernetes` type is
/// modelled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclAuthMethod {
    pub name: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    pub description: String,
    /// Lifetime of the tokens a login makes (Go duration; Consul answers e.g. `1h0m0s`).
    #[serde(rename = "MaxTokenTTL", skip_serializing_if = "Option::is_none")]
    pub max_token_ttl: Option<String>,
    /// `local` (default) or `global`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token_locality: String,
    pub config: KubernetesAuthConfig,
    #[serde(skip_serializing)]
    pub create_index: ConsulIndex,
    #[serde(skip_serializing)]
    pub modify_index: ConsulIndex,
}

/// A binding rule: what a login through `auth_method` whose identity matches `selector`
/// gets (`bind_type` `service`, `node` or `role`, named `bind_name`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AclBindingRule {
    #[serde(rename = "ID", skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub description: String,
    pub auth_method: String,
    pub selector: String,
    pub bind_type: String,
    pub bind_name: String,
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

    /// `GET /v1/acl/roles`.
    pub async fn acl_roles(&self) -> Result<Vec<AclRole>> {
        let req = self.read(["v1", "acl", "roles"], &QueryOptions::default());
        let resp = self.query::<Option<Vec<AclRole>>>(&req).await?;
        Ok(resp.value.unwrap_or_default())
    }

    /// `PUT /v1/acl/role`; names are unique, so not retried after an ambiguous failure.
    pub async fn acl_role_create(&self, role: &AclRole) -> Result<AclRole> {
        let req = self.request(Method::PUT, ["v1", "acl", "role"]).json_body(role)?.not_idempotent();
        self.call(&req).await
    }

    /// `GET /v1/acl/role/:id`; `None` when there is no such role.
    pub async fn acl_role_read(&self, id: &str) -> Result<Option<AclRole>> {
        let req = self.read(["v1", "acl", "role", id], &QueryOptions::default());
        absent_as_none(self.query_optional(&req).await)
    }

    /// `GET /v1/acl/role/name/:name`; `None` when there is no such role.
    pub async fn acl_role_read_by_name(&self, name: &str) -> Result<Option<AclRole>> {
        let req = self.read(["v1", "acl", "role", "name", name], &QueryOptions::default());
        absent_as_none(self.query_optional(&req).await)
    }

    /// `PUT /v1/acl/role/:id` with `role.id` set.
    pub async fn acl_role_update(&self, role: &AclRole) -> Result<AclRole> {
        let req = self.request(Method::PUT, ["v1", "acl", "role", &role.id]).json_body(role)?;
        self.call(&req).await
    }

    /// `DELETE /v1/acl/role/:id`.
    pub async fn acl_role_delete(&self, id: &str) -> Result<()> {
        let req = self.request(Method::DELETE, ["v1", "acl", "role", id]);
        self.call_unit(&req).await
    }

    /// `GET /v1/acl/auth-methods` (stubs: no `Config`; read each for it).
    pub async fn acl_auth_methods(&self) -> Result<Vec<AclAuthMethod>> {
        let req = self.read(["v1", "acl", "auth-methods"], &QueryOptions::default());
        let resp = self.query::<Option<Vec<AclAuthMethod>>>(&req).await?;
        Ok(resp.value.unwrap_or_default())
    }

    /// `PUT /v1/acl/auth-method`; names are unique, so not retried after an ambiguous failure.
    pub async fn acl_auth_method_create(&self, method: &AclAuthMethod) -> Result<AclAuthMethod> {
        let req = self.request(Method::PUT, ["v1", "acl", "auth-method"]).json_body(method)?.not_idempotent();
        self.call(&req).await
    }

    /// `GET /v1/acl/auth-method/:name`; `None` when there is no such method.
    pub async fn acl_auth_method_read(&self, name: &str) -> Result<Option<AclAuthMethod>> {
        let req = self.read(["v1", "acl", "auth-method", name], &QueryOptions::default());
        absent_as_none(self.query_optional(&req).await)
    }

    /// `PUT /v1/acl/auth-method/:name`.
    pub async fn acl_auth_method_update(&self, method: &AclAuthMethod) -> Result<AclAuthMethod> {
        let req = self.request(Method::PUT, ["v1", "acl", "auth-method", &method.name]).json_body(method)?;
        self.call(&req).await
    }

    /// `DELETE /v1/acl/auth-method/:name` (Consul deletes its binding rules and the
    /// tokens it made with it).
    pub async fn acl_auth_method_delete(&self, name: &str) -> Result<()> {
        let req = self.request(Method::DELETE, ["v1", "acl", "auth-method", name]);
        self.call_unit(&req).await
    }

    /// `PUT /v1/acl/binding-rule`: Consul picks the ID, so not retried after an
    /// ambiguous failure (list the method's rules to find out).
    pub async fn acl_binding_rule_create(&self, rule: &AclBindingRule) -> Result<AclBindingRule> {
        let req = self.request(Method::PUT, ["v1", "acl", "binding-rule"]).json_body(rule)?.not_idempotent();
        self.call(&req).await
    }

    /// `GET /v1/acl/binding-rule/:id`; `None` when there is no such rule.
    pub async fn acl_binding_rule_read(&self, id: &str) -> Result<Option<AclBindingRule>> {
        let req = self.read(["v1", "acl", "binding-rule", id], &QueryOptions::default());
        absent_as_none(self.query_optional(&req).await)
    }

    /// `PUT /v1/acl/binding-rule/:id` with `rule.id` set.
    pub async fn acl_binding_rule_update(&self, rule: &AclBindingRule) -> Result<AclBindingRule> {
        let req = self.request(Method::PUT, ["v1", "acl", "binding-rule", &rule.id]).json_body(rule)?;
        self.call(&req).await
    }

    /// `DELETE /v1/acl/binding-rule/:id`.
    pub async fn acl_binding_rule_delete(&self, id: &str) -> Result<()> {
        let req = self.request(Method::DELETE, ["v1", "acl", "binding-rule", id]);
        self.call_unit(&req).await
    }

    /// `GET /v1/acl/binding-rules?authmethod=:name`.
    pub async fn acl_binding_rules(&self, auth_method: &str) -> Result<Vec<AclBindingRule>> {
        let req = self.read(["v1", "acl", "binding-rules"], &QueryOptions::default()).param("authmethod", auth_method);
        let resp = self.query::<Option<Vec<AclBindingRule>>>(&req).await?;
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
    fn auth_method_debug_hides_the_reviewer_jwt_and_serde_sends_it() {
        let method = AclAuthMethod {
            name: "k8s".into(),
            kind: "kubernetes".into(),
            config: KubernetesAuthConfig {
                host: "https://127.0.0.1:6443".into(),
                ca_cert: "pem".into(),
                service_account_jwt: Some(Token::new("eyJ-reviewer")),
            },
            max_token_ttl: Some("1h".into()),
            ..Default::default()
        };
        assert!(!format!("{method:?}").contains("eyJ-reviewer"));
        let body = serde_json::to_value(&method).expect("encode");
        assert_eq!(body["Config"]["ServiceAccountJWT"], "eyJ-reviewer");
        assert_eq!(body["Type"], "kubernetes");
        assert_eq!(body["MaxTokenTTL"], "1h");
        let back: AclAuthMethod = serde_json::from_value(json!({
            "Name": "k8s", "Type": "kubernetes", "Description": "d", "MaxTokenTTL": "1h0m0s",
            "Config": { "Host": "h", "CACert": "c" }, "CreateIndex": 3, "ModifyIndex": 4
        }))
        .expect("decode");
        assert_eq!(back.config.service_account_jwt, None);
        assert_eq!(back.max_token_ttl.as_deref(), Some("1h0m0s"));
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
