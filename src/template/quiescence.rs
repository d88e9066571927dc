//! consul-template's `wait`: after a dependency changes, render once nothing has changed
//! for `min`, but no later than `max` after the first change, so a burst of writes
//! yields one render. Pure: the caller passes the clock in.
use crate::resources::{WaitSpec, parse_duration};
use std::time::Duration;
use tokio::time::Instant;

/// Minimum and maximum quiescence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub min: Duration,
    pub max: Duration,
}

impl Wait {
    /// `min` alone means `max = 4 × min`, as in consul-template.
    pub fn new(min: Duration, max: Option<Duration>) -> Result<Wait, String> {
        let max = max.unwrap_or(min * 4);
        if max < min {
            return Err(format!("wait max ({max:?}) is shorter than min ({min:?})"));
        }
        Ok(Wait { min, max })
    }

    /// `"2s:10s"` or `"2s"` (the `--wait` flag).
    pub fn parse(text: &str) -> Result<Wait, String> {
        let (min, max) = match text.split_once(':') {
            Some((min, max)) => (min, Some(max)),
            None => (text, None),
        };
        let min = parse_duration(min.trim()).map_err(|e| e.to_string())?;
        let max = max.map(|m| parse_duration(m.trim())).transpose().map_err(|e| e.to_string())?;
        Wait::new(min, max)
    }

    pub fn from_spec(spec: &WaitSpec) -> Result<Wait, String> {
        let min = parse_duration(&spec.min).map_err(|e| e.to_string())?;
        let max = spec.max.as_deref().map(parse_duration).transpose().map_err(|e| e.to_string())?;
        Wait::new(min, max)
    }
}

/// Pending changes and when to render for them.
#[derive(Clone, Debug, Default)]
pub struct Quiescence {
    wait: Option<Wait>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Quiescence {
    pub fn new(wait: Option<Wait>) -> Self {
        Self { wait, first: None, last: None }
    }

    /// A dependency changed at `now`.
    pub fn change(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    pub fn is_pending(&self) -> bool {
        self.first.is_some()
    }

    /// When to render for the pending changes; `None` when nothing changed.
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some(match self.wait {
            None => last,
            Some(w) => (last + w.min).min(first + w.max),
        })
    }

    /// The render happened: forget the pending changes.
    pub fn reset(&mut self) {
        self.first = None;
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(min: u64, max: u64) -> Option<Wait> {
        Some(Wait { min: Duration::from_secs(min), max: Duration::from_secs(max) })
    }

    #[test]
    fn parses_min_max_and_min_alone() {
        assert_eq!(Wait::parse("2s:10s"), Ok(Wait { min: Duration::from_secs(2), max: Duration::from_secs(10) }));
        assert_eq!(Wait::parse("500ms"), Ok(Wait { min: Duration::from_millis(500), max: Duration::from_secs(2) }));
        assert!(Wait::parse("10s:2s").is_err());
        assert!(Wait::parse("soon").is_err());
    }

    #[test]
    fn without_wait_renders_at_once() {
        let t0 = Instant::now();
        let mut q = Quiescence::new(None);
        assert_eq!(q.deadline(), None);
        q.change(t0);
        assert_eq!(q.deadline(), Some(t0));
    }

    #[test]
    fn each_change_pushes_the_render_by_min_until_max() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut q = Quiescence::new(wait(2, 5));
        q.change(t0);
        assert_eq!(q.deadline(), Some(t0 + s(2)));
        q.change(t0 + s(1));
        assert_eq!(q.deadline(), Some(t0 + s(3)));
        q.change(t0 + s(4));
        // min would say t0+6; max caps it at t0+5.
        assert_eq!(q.deadline(), Some(t0 + s(5)));
        q.reset();
        assert!(!q.is_pending());
        q.change(t0 + s(10));
        assert_eq!(q.deadline(), Some(t0 + s(12)));
    }
}
