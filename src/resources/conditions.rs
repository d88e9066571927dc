//! Standard status conditions (type, status, reason, message, lastTransitionTime,
//! observedGeneration) and the pure rule for updating them: the transition time moves
//! only when the status itself changes, so a resync never looks like a flap.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Condition type names shared by the controllers.
pub mod types {
    pub const READY: &str = "Ready";
    pub const SYNCED: &str = "Synced";
    pub const AVAILABLE: &str = "Available";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    pub const DRIFTED: &str = "Drifted";
    pub const RENDERED: &str = "Rendered";
    pub const COMPLETE: &str = "Complete";
}

/// The desired value of one condition, before times are filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl ConditionUpdate {
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self { type_, status, reason, message: message.into() }
    }
}

/// Returns `existing` with `update` applied: replaced in place when the type exists,
/// appended otherwise. `lastTransitionTime` is kept when the status did not change.
pub fn set_condition(
    existing: &[Condition],
    update: ConditionUpdate,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let status = if update.status { "True" } else { "False" }.to_string();
    let mut out: Vec<Condition> = existing.to_vec();
    let previous = out.iter().position(|c| c.type_ == update.type_);
    let last_transition_time = match previous.map(|i| &out[i]) {
        Some(prev) if prev.status == status => prev.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: update.type_.to_string(),
        status,
        reason: update.reason.to_string(),
        message: update.message,
        last_transition_time,
        observed_generation,
    };
    match previous {
        Some(i) => out[i] = condition,
        None => out.push(condition),
    }
    out
}

/// The condition of a type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of this type is present with status "True".
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid time")
    }

    #[test]
    fn adds_a_missing_condition_with_generation() {
        let out = set_condition(&[], ConditionUpdate::new("Synced", true, "Synced", "ok"), Some(3), at(100));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, "True");
        assert_eq!(out[0].observed_generation, Some(3));
        assert_eq!(out[0].last_transition_time.0.as_second(), 100);
    }

    #[test]
    fn keeps_transition_time_when_status_is_unchanged() {
        let first = set_condition(&[], ConditionUpdate::new("Synced", true, "Synced", "a"), Some(1), at(100));
        let second = set_condition(&first, ConditionUpdate::new("Synced", true, "Synced", "b"), Some(2), at(200));
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].last_transition_time.0.as_second(), 100);
        assert_eq!(second[0].message, "b");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn moves_transition_time_when_status_flips_and_keeps_others() {
        let first = set_condition(&[], ConditionUpdate::new("Synced", true, "Synced", ""), None, at(100));
        let first = set_condition(&first, ConditionUpdate::new("Ready", true, "Ok", ""), None, at(100));
        let second = set_condition(&first, ConditionUpdate::new("Synced", false, "ConsulError", "x"), None, at(300));
        assert_eq!(second.len(), 2);
        let synced = find_condition(&second, "Synced").expect("present");
        assert_eq!(synced.last_transition_time.0.as_second(), 300);
        assert_eq!(synced.reason, "ConsulError");
        assert!(is_condition_true(&second, "Ready"));
        assert!(!is_condition_true(&second, "Synced"));
    }
}
