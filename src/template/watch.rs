//! Keeps one template's data fresh: fetches what a render found missing, then runs one
//! blocking query per recorded dependency (exactly those; watches for data the template
//! stopped reading are dropped) and reports a change once `wait` quiescence allows.
use super::deps::{Data, Dependency, Snapshot};
use super::engine::{Engine, TemplateError};
use super::quiescence::{Quiescence, Wait};
use super::source::{DataSource, Fetched, SourceError};
use crate::consul::ConsulIndex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long one blocking query waits before Consul answers "no change".
pub const BLOCKING_WAIT: Duration = Duration::from_secs(300);
/// Renders that read data chosen by other data (`key (key "x")`) need several fetch rounds;
/// more than this means a template that keeps asking for new data.
const MAX_ROUNDS: usize = 16;

/// A successful render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub output: String,
    pub deps: Vec<Dependency>,
}

/// Why a render did not produce output.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The template is wrong (or the data makes it fail): nothing to retry until a change.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Consul could not be read: retry with backoff.
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{name}: still reading new data after {MAX_ROUNDS} rounds")]
    TooManyRounds { name: String },
}

impl WatchError {
    pub fn category(&self) -> &'static str {
        match self {
            WatchError::Template(e) => e.category(),
            WatchError::Source(e) => e.category(),
            WatchError::TooManyRounds { .. } => "template_render",
        }
    }

    /// Retrying without any change can help (Consul was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, WatchError::Source(_))
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The data of one template and the watches that keep it current.
pub struct Watcher<S: DataSource> {
    source: Arc<S>,
    snapshot: Arc<Snapshot>,
    indexes: HashMap<Dependency, ConsulIndex>,
    watches: HashMap<Dependency, AbortOnDrop>,
    tx: mpsc::UnboundedSender<(Dependency, Fetched)>,
    rx: mpsc::UnboundedReceiver<(Dependency, Fetched)>,
    quiescence: Quiescence,
}

impl<S: DataSource> Watcher<S> {
    pub fn new(source: Arc<S>, wait: Option<Wait>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            source,
            snapshot: Arc::new(Snapshot::default()),
            indexes: HashMap::new(),
            watches: HashMap::new(),
            tx,
            rx,
            quiescence: Quiescence::new(wait),
        }
    }

    /// The dependencies being watched.
    pub fn watched(&self) -> Vec<Dependency> {
        let mut deps: Vec<_> = self.watches.keys().cloned().collect();
        deps.sort();
        deps
    }

    /// Renders `engine`, fetching whatever it reads that is not known yet, then watches
    /// exactly what it read (also after a template error, so fixing the data re-renders).
    pub async fn render(&mut self, engine: &mut Engine) -> Result<Rendered, WatchError> {
        for _ in 0..MAX_ROUNDS {
            let pass = engine.render(self.snapshot.clone());
            if pass.is_complete() {
                self.watch_exactly(&pass.deps);
                return pass.result.map(|output| Rendered { output, deps: pass.deps }).map_err(WatchError::from);
            }
            let fetched =
                futures::future::join_all(pass.missing.iter().map(|dep| self.source.fetch(dep, None, BLOCKING_WAIT)))
                    .await;
            let snapshot = Arc::make_mut(&mut self.snapshot);
            for (dep, result) in pass.missing.into_iter().zip(fetched) {
                let f = result?;
                self.indexes.insert(dep.clone(), f.index);
                snapshot.insert(dep, f.data);
            }
        }
        Err(WatchError::TooManyRounds { name: engine.name().to_string() })
    }

    fn watch_exactly(&mut self, deps: &[Dependency]) {
        self.watches.retain(|d, _| deps.contains(d));
        Arc::make_mut(&mut self.snapshot).retain(deps);
        self.indexes.retain(|d, _| deps.contains(d));
        for dep in deps {
            if self.watches.contains_key(dep) {
                continue;
            }
            let index = self.indexes.get(dep).copied().unwrap_or(ConsulIndex::ZERO);
            let task = tokio::spawn(watch_one(self.source.clone(), dep.clone(), index, self.tx.clone()));
            self.watches.insert(dep.clone(), AbortOnDrop(task));
        }
    }

    /// Waits until a watched dependency's data changed and the quiescence wait is over.
    pub async fn changed(&mut self) {
        loop {
            let deadline = self.quiescence.deadline();
            tokio::select! {
                message = self.rx.recv() => {
                    // The sender lives in `self`, so the channel never closes.
                    let Some((dep, fetched)) = message else { continue };
                    if self.apply(dep, fetched) {
                        self.quiescence.change(Instant::now());
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.quiescence.reset();
                    return;
                }
            }
        }
    }

    /// Stores fresh data from a watch; true when it differs from what the last render saw.
    fn apply(&mut self, dep: Dependency, fetched: Fetched) -> bool {
        if !self.watches.contains_key(&dep) {
            return false; // a late answer for a dependency no longer read
        }
        self.indexes.insert(dep.clone(), fetched.index);
        Arc::make_mut(&mut self.snapshot).insert(dep, fetched.data)
    }

    /// The data last seen for a dependency.
    pub fn data(&self, dep: &Dependency) -> Option<&Data> {
        self.snapshot.get(dep)
    }
}

/// One blocking-query loop: sends every answer whose index moved; the receiver decides
/// whether the data really changed (a missing key's index moves with any KV write).
async fn watch_one<S: DataSource>(
    source: Arc<S>,
    dep: Dependency,
    mut index: ConsulIndex,
    tx: mpsc::UnboundedSender<(Dependency, Fetched)>,
) {
    let mut failures: u32 = 0;
    loop {
        let query_index = if index == ConsulIndex::ZERO { None } else { Some(index) };
        match source.fetch(&dep, query_index, BLOCKING_WAIT).await {
            Ok(fetched) => {
                failures = 0;
                let returned = fetched.index;
                if returned != index && tx.send((dep.clone(), fetched)).is_err() {
                    return;
                }
                index = index.advance(returned);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = crate::context::backoff_delay(failures, rand::random::<f64>()).min(BACKOFF_CAP);
                tracing::warn!(dependency = %dep, error = %e, retry_in = ?delay, "template watch failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Longest pause between failed blocking queries (Consul down).
const BACKOFF_CAP: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::deps::Data;
    use futures::future::BoxFuture;
    use std::sync::Mutex;

    /// KV in memory with a global index, blocking like Consul does.
    struct Memory {
        data: Mutex<HashMap<String, String>>,
        index: tokio::sync::watch::Sender<u64>,
    }

    impl Memory {
        fn new() -> Arc<Self> {
            Arc::new(Self { data: Mutex::new(HashMap::new()), index: tokio::sync::watch::channel(1).0 })
        }
        fn put(&self, k: &str, v: &str) {
            self.data.lock().expect("lock").insert(k.into(), v.into());
            self.index.send_modify(|i| *i += 1);
        }
    }

    impl DataSource for Memory {
        fn fetch<'a>(
            &'a self,
            dep: &'a Dependency,
            index: Option<ConsulIndex>,
            wait: Duration,
        ) -> BoxFuture<'a, Result<Fetched, SourceError>> {
            Box::pin(async move {
                let mut rx = self.index.subscribe();
                if let Some(i) = index {
                    let _ = tokio::time::timeout(wait, rx.wait_for(|now| *now > i.0)).await;
                }
                let now = *rx.borrow();
                let data = match dep {
                    Dependency::Key(k) => Data::Key(self.data.lock().expect("lock").get(k).cloned()),
                    _ => Data::Prefix(vec![]),
                };
                Ok(Fetched { index: ConsulIndex(now), data })
            })
        }
    }

    #[tokio::test]
    async fn renders_after_fetching_and_watches_exactly_what_was_read() {
        let mem = Memory::new();
        mem.put("switch", "b");
        mem.put("a", "A");
        mem.put("b", "B");
        let mut engine = Engine::compile("t", "{{key (key \"switch\")}}").expect("compiles");
        let mut w = Watcher::new(mem.clone(), None);
        let r = w.render(&mut engine).await.expect("renders");
        assert_eq!(r.output, "B");
        assert_eq!(w.watched(), vec![Dependency::key("b"), Dependency::key("switch")]);
        mem.put("switch", "a");
        tokio::time::timeout(Duration::from_secs(5), w.changed()).await.expect("change seen");
        let r = w.render(&mut engine).await.expect("renders");
        assert_eq!(r.output, "A");
        assert_eq!(w.watched(), vec![Dependency::key("a"), Dependency::key("switch")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_under_wait_is_one_change() {
        let mem = Memory::new();
        mem.put("k", "0");
        let wait = Wait { min: Duration::from_secs(2), max: Duration::from_secs(10) };
        let mut engine = Engine::compile("t", "{{key \"k\"}}").expect("compiles");
        let mut w = Watcher::new(mem.clone(), Some(wait));
        w.render(&mut engine).await.expect("renders");
        let writer = {
            let mem = mem.clone();
            tokio::spawn(async move {
                for i in 1..=5 {
                    mem.put("k", &i.to_string());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        let start = Instant::now();
        w.changed().await;
        // Last write at 2s, quiet for min=2s: about 4s after the first, and with all writes seen.
        assert!(start.elapsed() >= Duration::from_secs(4), "{:?}", start.elapsed());
        assert_eq!(w.render(&mut engine).await.expect("renders").output, "5");
        writer.await.expect("writer");
        assert!(tokio::time::timeout(Duration::from_secs(60), w.changed()).await.is_err(), "no second change");
    }
}
