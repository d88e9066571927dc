//! Per-environment temporary directories under `$TMPDIR/concord-testenv/<pid>-<n>-<label>`.
//! Dropping one removes it; directories left behind by test processes that died (shared
//! environments are never dropped) are removed by the next process that starts one.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;

static NEXT: AtomicU64 = AtomicU64::new(0);
static SWEEP: Once = Once::new();

/// A temporary directory owned by one environment.
#[derive(Debug)]
pub(crate) struct WorkDir {
    path: PathBuf,
    keep: bool,
}

fn root() -> PathBuf {
    std::env::temp_dir().join("concord-testenv")
}

impl WorkDir {
    /// Creates a fresh, empty directory; `label` only makes it easier to find by eye.
    pub fn create(label: &str) -> Result<WorkDir, Error> {
        let root = root();
        SWEEP.call_once(|| sweep_stale(&root));
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("{}-{n}-{label}", std::process::id()));
        // A previous process with our pid may have left this exact name behind.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(WorkDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory after drop: a failed start's error names a log file in it,
    /// which must still be there to read. The next process's sweep removes it.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Creates (or empties) a subdirectory, e.g. a server's data dir before a retry.
    pub fn fresh_subdir(&self, name: &str) -> Result<PathBuf, Error> {
        let dir = self.path.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        Ok(dir)
    }

    /// Writes a file into the directory.
    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf, Error> {
        let file = self.path.join(name);
        std::fs::write(&file, contents).map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
        Ok(file)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Removes directories whose owning process is gone. A reused pid keeps a stale
/// directory alive a little longer, which is harmless.
fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_dirs_of_dead_pids_are_swept_and_own_dir_removed_on_drop() {
        let root = root();
        // pid 0 never names a live process in /proc.
        let stale = root.join("0-7-stale");
        std::fs::create_dir_all(&stale).expect("mkdir");
        sweep_stale(&root);
        assert!(!stale.exists());

        let dir = WorkDir::create("unit").expect("create");
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists());
    }
}
