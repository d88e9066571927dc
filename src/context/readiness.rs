//! What `/readyz` answers: ready only when every registered component (CRDs established,
//! each controller's watch primed) says so.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Shared readiness flags, one per component.
#[derive(Clone, Default, Debug)]
pub struct Readiness {
    components: Arc<Mutex<BTreeMap<String, bool>>>,
}

impl Readiness {
    /// Registers a component as not ready yet (ready ones stay ready).
    pub fn register(&self, component: &str) {
        if let Ok(mut c) = self.components.lock() {
            c.entry(component.to_string()).or_insert(false);
        }
    }

    /// Marks a component ready or not.
    pub fn set(&self, component: &str, ready: bool) {
        if let Ok(mut c) = self.components.lock() {
            c.insert(component.to_string(), ready);
        }
    }

    /// Components that are not ready; empty means ready. Nothing registered means not ready.
    pub fn pending(&self) -> Vec<String> {
        match self.components.lock() {
            Ok(c) if c.is_empty() => vec!["startup".to_string()],
            Ok(c) => c.iter().filter(|(_, ready)| !**ready).map(|(k, _)| k.clone()).collect(),
            Err(_) => vec!["poisoned".to_string()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let r = Readiness::default();
        assert_eq!(r.pending(), vec!["startup"]);
        r.register("crds");
        r.register("kvconfig");
        assert_eq!(r.pending(), vec!["crds", "kvconfig"]);
        r.set("crds", true);
        assert_eq!(r.pending(), vec!["kvconfig"]);
        r.set("kvconfig", true);
        r.register("kvconfig");
        assert!(r.pending().is_empty());
    }
}
