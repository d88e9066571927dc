//! `concord render`: the template engine as a sidecar or on a VM, consul-template's main
//! job. Renders each `--template src:dest[:command]` from Consul, writes `dest`
//! atomically when its bytes change (temp file in the same directory, then rename; the
//! existing file's permissions are kept), runs `command` through `sh -c` after each
//! change, and re-renders when a dependency changes. `--once` renders and exits.
//!
//! A template that does not compile stops the process with one line naming the file and
//! line. In watch mode a render error (say, a key not there yet) is logged and the last
//! good file stays, as in the controller; with `--once` it is fatal.
use crate::consul::{self, ClientConfig, Token};
use crate::template::{ConsulSource, Engine, Wait, WatchError, Watcher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Flags of `concord render`.
#[derive(clap::Args, Debug, Clone)]
pub struct RenderArgs {
    /// `src:dest[:command]`: render file `src` into `dest`, then run `command` with `sh -c`
    /// when the output changed (repeatable). Paths cannot contain `:`.
    #[arg(long = "template", value_name = "SRC:DEST[:COMMAND]", required = true, value_parser = TemplateArg::parse)]
    pub templates: Vec<TemplateArg>,
    /// Render once and exit (non-zero if any template fails).
    #[arg(long)]
    pub once: bool,
    /// Quiescence `min[:max]` (e.g. `2s:10s`; max defaults to 4 × min).
    #[arg(long, value_name = "MIN[:MAX]", value_parser = Wait::parse)]
    pub wait: Option<Wait>,
    /// Consul HTTP address (several, comma-separated, for failover).
    #[arg(long, env = "CONSUL_HTTP_ADDR", default_value = "http://127.0.0.1:8500")]
    pub consul_addr: String,
    /// PEM CA certificate that signed the servers' HTTPS certificates (for `https://`
    /// addresses; else the system's roots).
    #[arg(long, env = "CONSUL_CACERT", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Read the ACL token from this file (else from the CONSUL_HTTP_TOKEN variable).
    #[arg(long, env = "CONSUL_HTTP_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// How long a command may run before it is killed.
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    pub command_timeout: Duration,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    crate::resources::parse_duration(text).map_err(|e| e.to_string())
}

/// One `--template` flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateArg {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub command: Option<String>,
}

impl TemplateArg {
    /// `src:dest` or `src:dest:command` (the command may contain `:`).
    pub fn parse(text: &str) -> Result<TemplateArg, String> {
        let mut parts = text.splitn(3, ':');
        let source = parts.next().unwrap_or_default();
        let destination = parts.next().unwrap_or_default();
        if source.is_empty() || destination.is_empty() {
            return Err(format!("{text:?} is not src:dest[:command]"));
        }
        let command = parts.next().map(str::trim).filter(|c| !c.is_empty()).map(str::to_string);
        Ok(TemplateArg { source: source.into(), destination: destination.into(), command })
    }
}

/// Why `concord render` stopped with an error; each is one line.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read template {path}: {source}")]
    ReadTemplate {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read token file {path}: {source}")]
    TokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
    #[error(transparent)]
    Watch(Box<WatchError>),
    #[error("cannot build a Consul client: {0}")]
    Consul(#[source] consul::Error),
    #[error("{0}")]
    CaFile(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Entry point of `concord render`.
pub fn main(args: RenderArgs) -> Result<(), String> {
    crate::context::telemetry::init(crate::context::telemetry::LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| RenderError::Runtime(e).to_string())?;
    runtime.block_on(run(args, crate::runtime::shutdown_signal())).map_err(|e| e.to_string())
}

/// Renders until `stop` resolves (or once, with `--once`).
pub async fn run(args: RenderArgs, stop: impl Future<Output = ()>) -> Result<(), RenderError> {
    let mut engines = Vec::new();
    for t in &args.templates {
        let name = t.source.display().to_string();
        let text = std::fs::read_to_string(&t.source)
            .map_err(|source| RenderError::ReadTemplate { path: name.clone(), source })?;
        engines.push((Engine::compile(&name, &text)?, t.clone()));
    }
    let mut config = ClientConfig::new(crate::cluster::external_addresses(&args.consul_addr));
    if let Some(token) = read_token(args.token_file.as_deref())? {
        config = config.token(token);
    }
    if let Some(path) = &args.ca_file {
        config = config.ca_pem(consul::read_ca_file(path).map_err(RenderError::CaFile)?);
    }
    let source = Arc::new(ConsulSource::new(consul::Client::new(config).map_err(RenderError::Consul)?));
    let jobs = futures::future::try_join_all(
        engines.into_iter().map(|(engine, t)| run_one(source.clone(), engine, t, args.clone())),
    );
    tokio::select! {
        result = jobs => result.map(|_| ()),
        _ = stop => {
            tracing::info!("stopping");
            Ok(())
        }
    }
}

fn read_token(file: Option<&Path>) -> Result<Option<Token>, RenderError> {
    let secret = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| RenderError::TokenFile { path: path.display().to_string(), source })?,
        None => std::env::var("CONSUL_HTTP_TOKEN").unwrap_or_default(),
    };
    let secret = secret.trim();
    Ok(if secret.is_empty() { None } else { Some(Token::new(secret)) })
}

async fn run_one(
    source: Arc<ConsulSource>,
    mut engine: Engine,
    t: TemplateArg,
    args: RenderArgs,
) -> Result<(), RenderError> {
    let mut watcher = Watcher::new(source, args.wait);
    let mut failures: u32 = 0;
    loop {
        match watcher.render(&mut engine).await {
            Ok(rendered) => {
                failures = 0;
                let dest = t.destination.clone();
                let output = rendered.output;
                let changed = tokio::task::spawn_blocking(move || write_if_changed(&dest, output.as_bytes()))
                    .await
                    .map_err(|e| RenderError::Write { path: t.destination.display().to_string(), source: e.into() })?
                    .map_err(|source| RenderError::Write { path: t.destination.display().to_string(), source })?;
                if changed {
                    tracing::info!(template = %t.source.display(), destination = %t.destination.display(), "rendered");
                    if let Some(command) = &t.command {
                        run_command(command, args.command_timeout).await;
                    }
                }
            }
            Err(e) if args.once => return Err(RenderError::Watch(Box::new(e))),
            Err(e) if e.is_transient() => {
                failures = failures.saturating_add(1);
                let delay = crate::context::backoff_delay(failures, rand::random::<f64>()).min(Duration::from_secs(30));
                tracing::warn!(error = %e, retry_in = ?delay, "cannot render; keeping the last good file");
                tokio::time::sleep(delay).await;
                continue;
            }
            Err(e) => tracing::error!(error = %e, "cannot render; keeping the last good file"),
        }
        if args.once {
            return Ok(());
        }
        watcher.changed().await;
    }
}

/// Runs `command` with `sh -c`; a failure is logged, never fatal (the next change retries).
async fn run_command(command: &str, timeout: Duration) {
    let child = tokio::process::Command::new("sh").arg("-c").arg(command).kill_on_drop(true).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(command, error = %e, "cannot start command");
            return;
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => tracing::error!(command, %status, "command failed"),
        Ok(Err(e)) => tracing::error!(command, error = %e, "command failed"),
        Err(_) => {
            let _ = child.kill().await;
            tracing::error!(command, ?timeout, "command timed out and was killed");
        }
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `dest` unless it already holds exactly them: a temp file in the
/// same directory (so the rename is atomic), fsync, the old file's permissions, rename.
/// Returns whether the file changed.
pub fn write_if_changed(dest: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    if std::fs::read(dest).is_ok_and(|existing| existing == bytes) {
        return Ok(false);
    }
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let file_name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(".{file_name}.concord-{}-{n}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if let Ok(meta) = std::fs::metadata(dest) {
            std::fs::set_permissions(&temp, meta.permissions())?;
        }
        std::fs::rename(&temp, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn template_flag_splits_on_the_first_two_colons() {
        let t = TemplateArg::parse("in.tpl:/etc/out.conf:nginx -s reload && echo a:b").expect("parses");
        assert_eq!(t.source, PathBuf::from("in.tpl"));
        assert_eq!(t.destination, PathBuf::from("/etc/out.conf"));
        assert_eq!(t.command.as_deref(), Some("nginx -s reload && echo a:b"));
        assert_eq!(TemplateArg::parse("a:b").expect("parses").command, None);
        assert!(TemplateArg::parse("only-source").is_err());
        assert!(TemplateArg::parse(":b").is_err());
    }

    #[test]
    fn writes_only_on_change_and_keeps_permissions() {
        let dir = std::env::temp_dir().join(format!("concord-render-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dest = dir.join("sub/out.conf");
        assert!(write_if_changed(&dest, b"one").expect("write"));
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(!write_if_changed(&dest, b"one").expect("write"));
        assert!(write_if_changed(&dest, b"two").expect("write"));
        assert_eq!(std::fs::read(&dest).expect("read"), b"two");
        let mode = std::fs::metadata(&dest).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("sub")).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
