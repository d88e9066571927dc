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
