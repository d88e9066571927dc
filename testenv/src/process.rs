//! Starts server processes so that none can outlive the test process, and keeps each
//! one's stdout and stderr in a log file. Every child runs under `setpriv --pdeathsig
//! KILL`, and every fork happens on one spawner thread that lives as long as the process.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;

use crate::error::{Error, one_line};

/// Environment variables children keep. Everything else is dropped because etcd reads
/// `ETCD_*` and Consul and Kubernetes read their own variables as configuration, and a
/// developer's shell must not change what a test starts.
const KEPT_ENV: &[&str] = &["PATH", "HOME", "TMPDIR", "LANG", "TZ"];

/// Everything needed to (re)start one server.
#[derive(Clone, Debug)]
pub(crate) struct ServerSpec {
    /// Human name used in errors, e.g. "consul server s1 (http://127.0.0.1:8500)".
    pub what: String,
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub workdir: PathBuf,
}

/// A running server. Dropping it SIGKILLs and reaps the process.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    pub spec: ServerSpec,
}

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<std::io::Result<Child>>,
}

/// The spawner thread's inbox. Kept in a static so the thread never sees its channel
/// close and therefore never exits: PR_SET_PDEATHSIG fires when the *thread* that forked
/// a child exits, and test threads exit long before the shared servers should die.
static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();

fn spawner() -> Result<&'static mpsc::Sender<SpawnRequest>, Error> {
    if let Some(sender) = SPAWNER.get() {
        return Ok(sender);
    }
    let (sender, receiver) = mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("testenv-spawner".into())
        .spawn(move || {
            for mut request in receiver {
                // The requester may have given up; nothing to do then.
                let _ = request.reply.send(request.command.spawn());
            }
        })
        .map_err(|e| Error::io("starting the testenv spawner thread", e))?;
    // Two tests may race here; the loser's sender is dropped, so its thread ends at once
    // without having forked anything.
    Ok(SPAWNER.get_or_init(|| sender))
}

/// Finds `setpriv` (util-linux) on PATH; without it a killed test would leak servers.
fn setpriv() -> Result<PathBuf, Error> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join("setpriv"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::MissingBinary { name: "setpriv (util-linux)".into(), dir: PathBuf::from("$PATH") })
}

impl ServerProcess {
    /// Starts `spec` under `setpriv --pdeathsig KILL`, appending its output to its log.
    pub fn spawn(spec: &ServerSpec) -> Result<ServerProcess, Error> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|e| Error::io(format!("opening {}", spec.log.display()), e))?;
        let log_err = log.try_clone().map_err(|e| Error::io(format!("opening {}", spec.log.display()), e))?;

        let mut command = Command::new(setpriv()?);
        command
            .arg("--pdeathsig")
            .arg("KILL")
            .arg("--")
            .arg(&spec.binary)
            .args(&spec.args)
            .current_dir(&spec.workdir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env_clear();
        for name in KEPT_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }

        let (reply, answer) = mpsc::channel();
        let spawn_failed = |e| Error::io(format!("spawning {}", spec.what), e);
        spawner()?
            .send(SpawnRequest { command, reply })
            .map_err(|_| spawn_failed(std::io::Error::other("spawner thread is gone")))?;
        let child = answer
            .recv()
            .map_err(|_| spawn_failed(std::io::Error::other("spawner thread is gone")))?
            .map_err(spawn_failed)?;
        tracing::debug!(server = %spec.what, pid = child.id(), log = %spec.log.display(), "started");
        Ok(ServerProcess { child, spec: spec.clone() })
    }

    /// The server's pid (setpriv execs the server, so it is the same process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILLs and reaps the process; idempotent.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// The error to report when this server exited during start-up: `PortInUse` when its
    /// log says so (the caller retries with new ports), `NotReady` otherwise.
    pub fn exit_error(&self, status: ExitStatus, after: std::time::Duration) -> Error {
        exit_error(&self.spec, status, after)
    }

    /// A `NotReady` error for this server with its log's last line.
    pub fn not_ready(&self, after: std::time::Duration, reason: &str) -> Error {
        not_ready(&self.spec, after, reason)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn exit_error(spec: &ServerSpec, status: ExitStatus, after: std::time::Duration) -> Error {
    if log_says_address_in_use(&spec.log) {
        Error::PortInUse {
            what: spec.what.clone(),
            attempts: 1,
            last_log_line: last_log_line(&spec.log),
            log: spec.log.clone(),
        }
    } else {
        not_ready(spec, after, &format!("exited with {status}"))
    }
}

pub(crate) fn not_ready(spec: &ServerSpec, after: std::time::Duration, reason: &str) -> Error {
    Error::NotReady {
        what: spec.what.clone(),
        after,
        reason: one_line(reason),
        last_log_line: last_log_line(&spec.log),
        log: spec.log.clone(),
    }
}

/// The end of a log file; servers like kube-apiserver write megabytes, and only the end
/// explains a failed start.
fn log_tail(path: &Path) -> String {
    const TAIL: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last non-empty line of a server's log, flattened for a one-line error.
pub(crate) fn last_log_line(path: &Path) -> String {
    let tail = log_tail(path);
    match tail.lines().rev().find(|line| !line.trim().is_empty()) {
        Some(line) => one_line(line),
        None => "(log is empty)".to_string(),
    }
}

/// Go servers all say "bind: address already in use" when a port is taken.
pub(crate) fn log_says_address_in_use(path: &Path) -> bool {
    log_tail(path).contains("address already in use")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_log_line_skips_blank_lines_and_flattens() {
        let dir = crate::workdir::WorkDir::create("unit-log").expect("workdir");
        let log = dir.path().join("x.log");
        std::fs::write(&log, "first\nerror:\tbind:  address already in use\n\n  \n").expect("write");
        assert_eq!(last_log_line(&log), "error: bind: address already in use");
        assert!(log_says_address_in_use(&log));
        assert_eq!(last_log_line(&dir.path().join("missing.log")), "(log is empty)");
    }
}
