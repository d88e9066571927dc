//! Which namespaces the sync may publish, decided by Kubernetes: with a ServiceAccount
//! (`spec.sync.serviceAccountName`, or the controller's default), a namespace's Services
//! are published only while that ServiceAccount may list Services and EndpointSlices
//! there. The check is a real request made as the ServiceAccount (a one-item list through
//! the impersonating client), so the API server's RBAC answers, not a copy of its rules.
//! A namespace is checked when its first Service appears and again on every anti-entropy
//! pass (RBAC may change either way); until it has passed, it is not published.
use crate::context::Actor;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Marks this direction's lines in `status.sync.forbidden`.
pub const FORBIDDEN_PREFIX: &str = "toConsul ";

/// What a check found for one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// The API server's refusal.
    Forbidden(String),
}

/// The verdicts of one sync's ServiceAccount.
pub struct NamespaceGate {
    client: kube::Client,
    actor: Actor,
    verdicts: BTreeMap<String, Verdict>,
}

/// What changed in a refresh: namespaces whose verdict changed, and the newly forbidden
/// ones with their line for the status.
#[derive(Debug, Default)]
pub struct Refreshed {
    pub changed: Vec<String>,
    pub newly_forbidden: Vec<String>,
}

impl NamespaceGate {
    /// `None` for the controller's own rights: no check, every namespace passes.
    pub fn new(client: kube::Client, actor: &Actor) -> Option<Self> {
        match actor {
            Actor::Controller => None,
            Actor::ServiceAccount { .. } => Some(Self { client, actor: actor.clone(), verdicts: BTreeMap::new() }),
        }
    }

    /// Whether some of `namespaces` have no verdict yet.
    pub fn needs_check<'a>(&self, mut namespaces: impl Iterator<Item = &'a String>) -> bool {
        namespaces.any(|ns| !self.verdicts.contains_key(ns))
    }

    /// Checks `namespaces` (all of them when `all`, else those without a verdict) and
    /// forgets namespaces no longer asked about. A check that fails for another reason
    /// than a refusal (API server unreachable) keeps the earlier verdict.
    pub async fn refresh(&mut self, namespaces: &BTreeSet<String>, all: bool) -> Refreshed {
        let mut out = Refreshed::default();
        self.verdicts.retain(|ns, _| namespaces.contains(ns));
        for ns in namespaces {
            if !all && self.verdicts.contains_key(ns) {
                continue;
            }
            let Some(verdict) = self.check(ns).await else { continue };
            let before = self.verdicts.insert(ns.clone(), verdict.clone());
            if before.as_ref() != Some(&verdict) {
                out.changed.push(ns.clone());
                if let Verdict::Forbidden(_) = verdict {
                    out.newly_forbidden.push(self.line(ns, &verdict).unwrap_or_default());
                }
            }
        }
        out
    }

    async fn check(&self, ns: &str) -> Option<Verdict> {
        let lp = ListParams::default().limit(1);
        let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        for result in [services.list_metadata(&lp).await.map(|_| ()), slices.list_metadata(&lp).await.map(|_| ())] {
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(e)) if e.code == 403 => return Some(Verdict::Forbidden(e.message)),
                Err(e) => {
                    tracing::warn!(namespace = ns, error = %e, "cannot check the sync's rights in a namespace; keeping the last verdict");
                    return None;
                }
            }
        }
        Some(Verdict::Allowed)
    }

    /// The namespaces that passed their last check.
    pub fn allowed(&self) -> HashSet<String> {
        self.verdicts.iter().filter(|(_, v)| **v == Verdict::Allowed).map(|(ns, _)| ns.clone()).collect()
    }

    fn line(&self, ns: &str, verdict: &Verdict) -> Option<String> {
        match verdict {
            Verdict::Allowed => None,
            Verdict::Forbidden(why) => Some(format!(
                "{FORBIDDEN_PREFIX}{ns}: {} may not list Services and EndpointSlices; not published: {why}",
                self.actor
            )),
        }
    }

    /// This direction's lines of `status.sync.forbidden`.
    pub fn lines(&self) -> Vec<String> {
        self.verdicts.iter().filter_map(|(ns, v)| self.line(ns, v)).collect()
    }
}
