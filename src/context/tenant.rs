//! Acting with the tenant's rights. Reads of a tenant's Secrets and ConfigMaps and writes
//! of objects the tenant can see (ConfigTemplate outputs and rollouts, ACLToken Secrets,
//! KVConfig sources) go through a kube client that impersonates a ServiceAccount of the
//! object's own namespace, so the API server's RBAC decides what concord may do on the
//! tenant's behalf (Flux's multi-tenancy lockdown). Without a ServiceAccount (neither
//! `spec.serviceAccountName` nor `--default-service-account`), concord acts with its own
//! rights, bounded only by the opt-in labels (docs/security.md).
use http::HeaderValue;
use kube::client::Body;
use std::collections::HashMap;
use std::sync::Mutex;

/// The header the API server reads to act as another user.
const IMPERSONATE_USER: &str = "impersonate-user";

/// Whose rights a read or write made on a tenant's behalf uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// concord's own ServiceAccount (no lockdown for this object).
    Controller,
    /// A ServiceAccount of the object's namespace.
    ServiceAccount { namespace: String, name: String },
}

impl Actor {
    /// The ServiceAccount named by the object, else the controller's default one, else
    /// the controller itself. The namespace is always the object's own: an object can
    /// never borrow another namespace's ServiceAccount.
    pub fn of(namespace: &str, from_spec: Option<&str>, default: Option<&str>) -> Actor {
        match from_spec.or(default).filter(|n| !n.is_empty()) {
            Some(name) => Actor::ServiceAccount { namespace: namespace.to_string(), name: name.to_string() },
            None => Actor::Controller,
        }
    }

    /// The user name Kubernetes gives this ServiceAccount, `None` for the controller.
    pub fn user(&self) -> Option<String> {
        match self {
            Actor::Controller => None,
            Actor::ServiceAccount { namespace, name } => Some(format!("system:serviceaccount:{namespace}:{name}")),
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Controller => f.write_str("the controller"),
            Actor::ServiceAccount { namespace, name } => write!(f, "ServiceAccount {namespace}/{name}"),
        }
    }
}

/// Impersonating clients, one per ServiceAccount, built on the controller's client.
#[derive(Default)]
pub struct TenantClients {
    clients: Mutex<HashMap<String, kube::Client>>,
}

impl TenantClients {
    /// The client that acts as `actor`: `base` itself for the controller.
    pub fn client(&self, base: &kube::Client, actor: &Actor) -> kube::Client {
        let Some(user) = actor.user() else { return base.clone() };
        let mut clients = match self.clients.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        clients.entry(user.clone()).or_insert_with(|| impersonating(base, &user)).clone()
    }
}

/// A client that sends every request of `base` as `user`. The API server checks that
/// the controller may impersonate that user (RBAC verb `impersonate` on
/// `serviceaccounts`), then authorizes the request as the ServiceAccount alone, with the
/// ServiceAccount's groups.
pub fn impersonating(base: &kube::Client, user: &str) -> kube::Client {
    // A ServiceAccount user name is ASCII (DNS labels and colons): always a valid header.
    let header = HeaderValue::from_str(user).unwrap_or_else(|_| HeaderValue::from_static("system:anonymous"));
    let inner = base.clone();
    let service = tower::service_fn(move |mut request: http::Request<Body>| {
        let inner = inner.clone();
        // Never pass on an impersonation the caller set: this client is the only source.
        request.headers_mut().remove("impersonate-group");
        request.headers_mut().insert(IMPERSONATE_USER, header.clone());
        async move { inner.send(request).await }
    });
    kube::Client::new(service, base.default_namespace().to_string())
}

/// True when the API server refused the request as not allowed (403).
pub fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_forbidden())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_names_its_service_account_else_the_default_else_the_controller() {
        let sa = |n: &str| Actor::ServiceAccount { namespace: "team-a".into(), name: n.into() };
        assert_eq!(Actor::of("team-a", Some("app"), Some("tenant")), sa("app"));
        assert_eq!(Actor::of("team-a", None, Some("tenant")), sa("tenant"));
        assert_eq!(Actor::of("team-a", None, None), Actor::Controller);
        assert_eq!(Actor::of("team-a", Some(""), None), Actor::Controller);
        assert_eq!(sa("app").user().as_deref(), Some("system:serviceaccount:team-a:app"));
        assert_eq!(Actor::Controller.user(), None);
    }
}
