//! A concord built against glibc runs itself again once, with `GLIBC_TUNABLES` bounding
//! its allocator (src/main.rs, `bound_glibc_malloc`), and leaves a `GLIBC_TUNABLES` the
//! operator set alone. Observed on the real binary: its environment after start, read
//! from /proc once it talks to the API server (which here accepts and never answers, so
//! the controller waits for its CRDs).
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const OURS: &str = "glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072";

/// Starts `concord controller` with `tunables` in its environment (or none) and returns
/// its environment once it has connected to the API server (glibc parses
/// `GLIBC_TUNABLES` in place, so its settings show as separate NUL-terminated pieces:
/// returned one per line), and its command line.
fn environment_once_running(tunables: Option<&str>, tag: &str) -> (String, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let (connected, accepted) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            let _ = connected.send(());
        }
    });
    let kubeconfig = std::env::temp_dir().join(format!("concord-glibc-{}-{tag}.yaml", std::process::id()));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"http://{addr}\"}}}}]\n\
             users: [{{name: u, user: {{token: x}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n\
             current-context: c\n"
        ),
    )
    .expect("kubeconfig");
    let mut command = Command::new(env!("CARGO_BIN_EXE_concord"));
    command
        .args(["controller", "--listen", "127.0.0.1:0"])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match tunables {
        Some(t) => command.env("GLIBC_TUNABLES", t),
        None => command.env_remove("GLIBC_TUNABLES"),
    };
    let mut child = command.spawn().expect("concord");
    let reached = accepted.recv_timeout(Duration::from_secs(60));
    let read = |what: &str| std::fs::read(format!("/proc/{}/{what}", child.id())).unwrap_or_default();
    let (environ, cmdline) = (read("environ"), read("cmdline"));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&kubeconfig);
    reached.expect("the controller connected to the API server");
    let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    (environ, cmdline)
}

#[test]
fn the_controller_runs_with_one_malloc_arena_and_fixed_thresholds() {
    let (environ, cmdline) = environment_once_running(None, "default");
    let mut settings = OURS.split(':');
    let first = settings.next().expect("a setting");
    assert!(environ.lines().any(|l| l == format!("GLIBC_TUNABLES={first}")), "{environ}");
    for setting in settings {
        assert!(environ.lines().any(|l| l == setting), "{setting} in {environ}");
    }
    assert!(cmdline.contains("controller --listen 127.0.0.1:0"), "same arguments after the restart: {cmdline}");
}

#[test]
fn tunables_the_operator_set_are_left_alone() {
    let (environ, _) = environment_once_running(Some("glibc.malloc.arena_max=2"), "operator");
    assert!(environ.lines().any(|l| l == "GLIBC_TUNABLES=glibc.malloc.arena_max=2"), "{environ}");
    assert!(!environ.contains("mmap_threshold"), "{environ}");
}
