//! The README's first command, end to end: `concord-demo --once` starts the local control
//! plane, Consul and the controller, applies examples/, publishes services on both sides,
//! prints its report and the sync table (every row synced), and exits leaving no server
//! process behind.
use std::path::PathBuf;
use std::process::Command;

#[test]
fn demo_applies_the_examples_reports_and_leaves_nothing_running() {
    let demo = PathBuf::from(env!("CARGO_BIN_EXE_concord-demo"));
    let concord = demo.with_file_name("concord");
    assert!(concord.is_file(), "the concord binary is built next to concord-demo: {}", concord.display());
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let out = Command::new(&demo)
        .arg("--concord")
        .arg(&concord)
        .arg("--examples")
        .arg(&examples)
        .arg("--once")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("concord-demo runs");
    let demo_pid = out.id();
    let out = out.wait_with_output().expect("concord-demo finishes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "concord-demo failed:\n{stderr}\n{stdout}");
    for step in ["kube-apiserver", "three-server Consul", "CRDs", "concord controller", "applying"] {
        assert!(stderr.contains(step), "progress line for {step:?} missing:\n{stderr}");
    }
    let cluster_line = stdout
        .lines()
        .find(|l| l.starts_with("DiscoveryCluster") && l.contains("Available"))
        .unwrap_or_else(|| panic!("no DiscoveryCluster Available line:\n{stdout}"));
    assert!(cluster_line.contains("True") && cluster_line.contains("3 Raft peers"), "{cluster_line}");
    assert!(stdout.contains("Consul catalog services:"), "{stdout}");
    // Every concord object reports success (a failing controller shows here first).
    for line in stdout.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 4 && ["Synced", "Rendered", "Complete", "Available"].contains(&cols[2]) {
            assert_eq!(cols[3], "True", "{line}\n{stdout}");
        }
    }
    // The sync table: every published service arrived on the other side.
    let sync_rows: Vec<&str> = stdout.lines().filter(|l| l.contains(" → ")).collect();
    assert!(sync_rows.iter().any(|l| l.starts_with("Kubernetes → Consul")), "{stdout}");
    assert!(sync_rows.iter().any(|l| l.starts_with("Consul → Kubernetes")), "{stdout}");
    for row in &sync_rows {
        assert!(row.contains(" yes "), "not synced: {row}\n{stdout}");
    }

    // Every server the demo started runs with a data dir named after the demo's pid;
    // none may outlive it.
    let pattern = format!("concord-testenv/{demo_pid}-");
    let left = Command::new("pgrep").args(["-f", &pattern]).output().expect("pgrep");
    let strays = String::from_utf8_lossy(&left.stdout).trim().to_string();
    assert!(strays.is_empty(), "processes left behind by the demo: {strays}");
}
