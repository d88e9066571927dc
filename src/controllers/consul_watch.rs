//! Blocking-query watches on Consul that trigger reconciles: how the KVConfig and
//! ServiceIntention controllers notice out-of-band edits within a second instead of
//! polling. A [`WatchSet`] owns the running watch tasks by key; a task stops when its
//! object goes ([`WatchSet::stop`]), when its inputs change (replaced by
//! [`WatchSet::ensure`]), and when the controller stops ([`WatchSet::stop_all`], or drop).
use crate::consul::{self, ConsulIndex};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long one blocking query waits at most; Consul answers earlier on a change.
pub const BLOCKING_WAIT: Duration = Duration::from_secs(300);

/// Running watch tasks, by key (e.g. `namespace/name` of the object they serve).
#[derive(Default)]
pub struct WatchSet {
    tasks: Mutex<HashMap<String, (String, JoinHandle<()>)>>,
}

impl WatchSet {
    /// Starts the watch for `key` unless one with the same `fingerprint` (what it
    /// watches: prefix, cluster) runs already; a watch with another fingerprint is
    /// stopped and replaced.
    pub fn ensure<F>(&self, key: &str, fingerprint: &str, start: impl FnOnce() -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Ok(mut tasks) = self.tasks.lock() else { return };
        if let Some((fp, task)) = tasks.get(key)
            && fp == fingerprint
            && !task.is_finished()
        {
            return;
        }
        if let Some((_, old)) = tasks.insert(key.to_string(), (fingerprint.to_string(), tokio::spawn(start()))) {
            old.abort();
        }
    }

    /// Stops the watch for `key`, if any.
    pub fn stop(&self, key: &str) {
        if let Ok(mut tasks) = self.tasks.lock()
            && let Some((_, task)) = tasks.remove(key)
        {
            task.abort();
        }
    }

    pub fn stop_all(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for (_, (_, task)) in tasks.drain() {
                task.abort();
            }
        }
    }

    /// Keys with a running watch.
    pub fn keys(&self) -> Vec<String> {
        self.tasks.lock().map(|t| t.keys().cloned().collect()).unwrap_or_default()
    }
}

impl Drop for WatchSet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Runs `query` as a blocking-query loop (it gets the index to block on and returns the
/// index Consul answered) and calls `changed` each time the index moves after the first
/// answer. Errors back off from 1 s to 30 s. Runs until its task is aborted.
pub async fn watch_index<Q, Fut>(what: &'static str, mut query: Q, mut changed: impl FnMut())
where
    Q: FnMut(ConsulIndex) -> Fut,
    Fut: Future<Output = Result<ConsulIndex, consul::Error>>,
{
    let mut index = ConsulIndex::ZERO;
    let mut primed = false;
    let mut failures: u32 = 0;
    loop {
        match query(index).await {
            Ok(returned) => {
                if primed && returned != index {
                    changed();
                }
                primed = true;
                failures = 0;
                index = index.advance(returned);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = Duration::from_secs(1u64 << failures.min(5).saturating_sub(1)).min(Duration::from_secs(30));
                tracing::debug!(watch = what, error = %e, ?delay, "blocking query failed; retrying");
                // A change during the outage is caught by the first answer after it.
                primed = primed && index != ConsulIndex::ZERO;
                tokio::time::sleep(delay).await;
            }
        }
    }
}
