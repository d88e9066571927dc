//! The `concord` binary: one process, several jobs (see `concord --help`).
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "concord", version, about = "Operates HashiCorp Consul on Kubernetes and keeps the two in sync")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every CustomResourceDefinition as YAML (or write one file per CRD).
    Crds {
        /// Write `<name>.yaml` files into this directory instead of printing (repeatable).
        #[arg(long, value_name = "DIR")]
        write: Vec<PathBuf>,
    },
    /// Run all controllers against the cluster from the kubeconfig (or in-cluster config).
    Controller(Box<concord::context::ControllerArgs>),
    /// Render templates from Consul into files and run a command after each change (sidecar / VM).
    Render(Box<concord::render::RenderArgs>),
    /// Consul KV tools: `concord kv export PREFIX` prints a KVConfig for an existing prefix.
    Kv(concord::controllers::kv_config::export::KvArgs),
    /// Print concord objects (YAML) for the config entries and prepared queries a Consul
    /// holds: `concord import [KIND...] --namespace NS > adopted.yaml`.
    Import(Box<concord::controllers::import::ImportArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only the controller: `concord render` runs the operator's commands, which would
    // inherit the setting.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if matches!(cli.command, Command::Controller(_)) {
        bound_glibc_malloc();
    }
    let result = match cli.command {
        Command::Crds { write } => crds(&write),
        Command::Controller(args) => concord::runtime::main(*args, concord::controllers::all()),
        Command::Render(args) => concord::render::main(*args),
        Command::Kv(args) => concord::controllers::kv_config::export::main(args),
        Command::Import(args) => concord::controllers::import::main(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("concord: {message}");
            ExitCode::FAILURE
        }
    }
}

fn crds(dirs: &[PathBuf]) -> Result<(), String> {
    if dirs.is_empty() {
        let yaml = concord::crdgen::all_yaml().map_err(|e| format!("cannot serialize CRDs: {e}"))?;
        print!("{yaml}");
        return Ok(());
    }
    for dir in dirs {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for crd in concord::crdgen::all() {
            let path = dir.join(concord::crdgen::file_name(&crd));
            let yaml = concord::crdgen::to_yaml(&crd).map_err(|e| format!("cannot serialize CRDs: {e}"))?;
            std::fs::write(&path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// glibc's allocator settings for the controller: one arena, and fixed thresholds for giving
/// memory back. By default glibc gives each thread that allocates an arena of its own and
/// keeps there what that thread freed, and it raises its thresholds each time a large
/// block is freed. The controller's worker threads take turns with the same data (a
/// watch event decoded on one is freed on another), so freed memory piled up per arena:
/// in the catalog benchmark (10,000 instances) the anonymous memory after the Kubernetes
/// → Consul phases was 35.8-38.6 MiB with glibc's defaults and 28.0 MiB with these
/// settings (BENCHMARKS.md, "Controller memory"). Blocks of 128 KiB and more (response bodies, lists) get their own mapping and
/// go back to the system when freed. glibc reads these settings only when a process
/// starts, and `mallopt` is out of reach here (no unsafe code), so the process runs itself
/// again once with `GLIBC_TUNABLES` set (`exec`: the same PID). The Dockerfile's image
/// links musl, which has no arenas, and does not get here; the kind e2e's image is a
/// glibc build of this checkout and does. A `GLIBC_TUNABLES` already set (by the operator, or by this) is
/// left alone; when the new program cannot be started, the process goes on as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_glibc_malloc() {
    use std::os::unix::process::CommandExt;
    const TUNABLES: &str =
        "glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072";
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(name) = args.next() {
        command.arg0(name);
    }
    // Returns only when the program could not be started.
    let _ = command.args(args).env("GLIBC_TUNABLES", TUNABLES).exec();
}
