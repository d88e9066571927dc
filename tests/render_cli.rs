//! `concord render` as a user runs it: the real binary against the real 3-server Consul,
//! writing real files and running real commands. Also renders every example in
//! `templates/` against Consul, compares with its golden file, and (where Debian's nginx
//! or haproxy is installed) runs the server's own config check on the output.
mod support;

use concord::consul::{
    CatalogRegistration, CheckStatus, Client, ClientConfig, HealthCheck, KvWriteOptions, NodeService,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::eventually;

const WAIT: Duration = Duration::from_secs(20);

async fn consul() -> (Client, String) {
    let cluster = testenv::shared_consul().await;
    let client = Client::new(ClientConfig::new(cluster.http_addrs())).expect("consul client");
    (client, cluster.http_addrs().join(","))
}

async fn put(c: &Client, key: &str, value: &str) {
    c.kv_put(key, value.to_string(), &KvWriteOptions::default()).await.expect("kv put");
}

fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("concord-render-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

fn concord(addr: &str, args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_concord"));
    cmd.arg("render").args(args).env("CONSUL_HTTP_ADDR", addr).env_remove("CONSUL_HTTP_TOKEN");
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// A `concord render` in watch mode; SIGKILLed if the test fails before it stops it.
struct Renderer(Child);

impl Renderer {
    fn start(addr: &str, args: &[String]) -> Renderer {
        let child = concord(addr, args).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("spawn");
        Renderer(child)
    }

    /// SIGTERM, then the exit status (bounded wait).
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        eventually("concord render to exit after SIGTERM", Duration::from_secs(10), || {
            let status = self.0.try_wait().expect("wait");
            async move { status }
        })
        .await
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

async fn file_is(path: &Path, expected: &str) {
    let what = format!("{} to read {expected:?}", path.display());
    eventually(&what, WAIT, || async { (read(path).as_deref() == Some(expected)).then_some(()) }).await;
}

fn lines(path: &Path) -> usize {
    read(path).map(|s| s.lines().count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_change_reaches_the_file_and_runs_the_command_and_sigterm_stops_cleanly() {
    let (c, addr) = consul().await;
    let dir = workdir("kv");
    let prefix = format!("render-cli/{}/kv", std::process::id());
    put(&c, &format!("{prefix}/greeting"), "hello").await;
    let src = dir.join("in.tpl");
    std::fs::write(&src, format!("greeting={{{{key \"{prefix}/greeting\"}}}}\n")).expect("write template");
    let dest = dir.join("out/app.conf");
    std::fs::create_dir_all(dest.parent().expect("dir")).expect("mkdir");
    std::fs::write(&dest, "old").expect("seed");
    std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let log = dir.join("commands.log");
    let flag = format!("{}:{}:echo ran >> {}", src.display(), dest.display(), log.display());
    let renderer = Renderer::start(&addr, &["--template".into(), flag]);

    file_is(&dest, "greeting=hello\n").await;
    eventually("the command after the first render", WAIT, || async { (lines(&log) == 1).then_some(()) }).await;
    put(&c, &format!("{prefix}/greeting"), "bonjour").await;
    file_is(&dest, "greeting=bonjour\n").await;
    eventually("the command after the change", WAIT, || async { (lines(&log) == 2).then_some(()) }).await;
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dest).expect("stat").permissions());
    assert_eq!(mode & 0o777, 0o600, "the file keeps its permissions across atomic replaces");
    let leftovers = std::fs::read_dir(dest.parent().expect("dir")).expect("ls").count();
    assert_eq!(leftovers, 1, "no temp files left next to the output");

    let status = renderer.terminate().await;
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_under_wait_yields_exactly_one_render() {
    let (c, addr) = consul().await;
    let dir = workdir("wait");
    let prefix = format!("render-cli/{}/wait", std::process::id());
    put(&c, &format!("{prefix}/n"), "0").await;
    put(&c, &format!("{prefix}/sentinel"), "a").await;
    let src = dir.join("in.tpl");
    std::fs::write(&src, format!("{{{{key \"{prefix}/n\"}}}} {{{{key \"{prefix}/sentinel\"}}}}")).expect("write");
    let dest = dir.join("out.txt");
    let log = dir.join("renders.log");
    let flag = format!(
        "{}:{}:cat {} >> {}; echo >> {}",
        src.display(),
        dest.display(),
        dest.display(),
        log.display(),
        log.display()
    );
    let _renderer = Renderer::start(&addr, &["--wait".into(), "700ms:5s".into(), "--template".into(), flag]);
    file_is(&dest, "0 a").await;
    eventually("first render logged", WAIT, || async { (lines(&log) == 1).then_some(()) }).await;

    // Five writes well inside `min` of each other: one render, with the last value.
    for i in 1..=5 {
        put(&c, &format!("{prefix}/n"), &i.to_string()).await;
    }
    file_is(&dest, "5 a").await;
    // A later, separate change renders again; had the burst rendered more than once, the
    // log would now hold more than three renders.
    put(&c, &format!("{prefix}/sentinel"), "b").await;
    file_is(&dest, "5 b").await;
    eventually("three renders logged", WAIT, || async { (lines(&log) >= 3).then_some(()) }).await;
    assert_eq!(read(&log).expect("log"), "0 a\n5 a\n5 b\n", "exactly one render for the burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_and_a_syntax_error_exit_non_zero_with_one_line_naming_the_line() {
    let (_c, addr) = consul().await;
    let dir = workdir("errors");
    let missing = format!("render-cli/{}/errors/absent", std::process::id());
    let src = dir.join("missing.tpl");
    std::fs::write(&src, format!("line one\nline two\nvalue={{{{key \"{missing}\"}}}}\n")).expect("write");
    let dest = dir.join("out");
    let out = concord(&addr, &["--once".into(), "--template".into(), format!("{}:{}", src.display(), dest.display())])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&missing) && stderr.contains("line 3"), "{stderr}");
    assert!(!dest.exists(), "nothing written");

    let src = dir.join("syntax.tpl");
    std::fs::write(&src, "ok\n{{#each (service \"api\")}}\n{{/if}}\n").expect("write");
    let out =
        concord(&addr, &["--template".into(), format!("{}:{}", src.display(), dest.display())]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad template stops even the watch mode");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("syntax.tpl") && stderr.contains("line 3"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_megabyte_output_renders() {
    let (c, addr) = consul().await;
    let dir = workdir("big");
    let prefix = format!("render-cli/{}/big", std::process::id());
    // Consul caps one value at 512 KiB: four values of 256 KiB.
    let chunk = "x".repeat(256 * 1024);
    for i in 0..4 {
        put(&c, &format!("{prefix}/{i}"), &chunk).await;
    }
    let src = dir.join("big.tpl");
    std::fs::write(&src, format!("{{{{#each (tree \"{prefix}\")}}}}{{{{this.value}}}}\n{{{{/each}}}}")).expect("write");
    let dest = dir.join("big.out");
    let out = concord(&addr, &["--once".into(), "--template".into(), format!("{}:{}", src.display(), dest.display())])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::metadata(&dest).expect("written").len(), 4 * (256 * 1024 + 1));
}

fn instance(
    node: &str,
    node_addr: &str,
    service: &str,
    id: &str,
    addr: &str,
    status: CheckStatus,
) -> CatalogRegistration {
    instance_with_meta(node, node_addr, service, id, addr, status, &[])
}

fn instance_with_meta(
    node: &str,
    node_addr: &str,
    service: &str,
    id: &str,
    addr: &str,
    status: CheckStatus,
    meta: &[(&str, &str)],
) -> CatalogRegistration {
    CatalogRegistration {
        node: node.into(),
        address: node_addr.into(),
        service: Some(NodeService {
            id: id.into(),
            service: service.into(),
            address: addr.into(),
            port: 8080,
            meta: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }),
        checks: vec![HealthCheck {
            check_id: format!("{id}-health"),
            name: "http".into(),
            status,
            service_id: id.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_going_critical_drops_out_of_the_rendered_upstream() {
    let (c, addr) = consul().await;
    let dir = workdir("critical");
    let service = format!("upstream-{}", std::process::id());
    let node = format!("render-cli-{}", std::process::id());
    for (id, ip) in [("a", "10.9.0.1"), ("b", "10.9.0.2")] {
        c.catalog_register(&instance(&node, "10.9.0.100", &service, id, ip, CheckStatus::Passing))
            .await
            .expect("register");
    }
    let src = dir.join("upstream.tpl");
    std::fs::write(
        &src,
        format!("{{{{#each (service \"{service}\")}}}}server {{{{this.address}}}}:{{{{this.port}}}};\n{{{{/each}}}}"),
    )
    .expect("write");
    let dest = dir.join("upstream.conf");
    let _renderer = Renderer::start(&addr, &["--template".into(), format!("{}:{}", src.display(), dest.display())]);
    file_is(&dest, "server 10.9.0.1:8080;\nserver 10.9.0.2:8080;\n").await;
    c.catalog_register(&instance(&node, "10.9.0.100", &service, "a", "10.9.0.1", CheckStatus::Critical))
        .await
        .expect("critical");
    file_is(&dest, "server 10.9.0.2:8080;\n").await;
    c.catalog_register(&instance(&node, "10.9.0.100", &service, "a", "10.9.0.1", CheckStatus::Passing))
        .await
        .expect("passing again");
    file_is(&dest, "server 10.9.0.1:8080;\nserver 10.9.0.2:8080;\n").await;
}

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
}

/// Renders `templates/<name>` once against the shared Consul; returns the output path.
fn render_example(addr: &str, dir: &Path, name: &str) -> PathBuf {
    let dest = dir.join(name.trim_end_matches(".hbs"));
    let flag = format!("{}:{}", templates_dir().join(name).display(), dest.display());
    let out = concord(addr, &["--once".into(), "--template".into(), flag]).output().expect("run");
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    dest
}

fn assert_golden(rendered: &Path, name: &str) {
    let golden = templates_dir().join(format!("{}.golden", name.trim_end_matches(".hbs")));
    let got = std::fs::read_to_string(rendered).expect("rendered");
    if std::env::var_os("CONCORD_BLESS").is_some() {
        std::fs::write(&golden, &got).expect("bless");
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
    assert_eq!(got, want, "{name} differs from {} (CONCORD_BLESS=1 rewrites it)", golden.display());
}

/// Runs a server's config check when it is installed; says so when it is not.
fn config_check(tool: &str, args: &[&str]) {
    let installed = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().expect("sh");
    if !installed.status.success() {
        println!("SKIPPED: {tool} is not installed, its config check on the rendered output did not run");
        return;
    }
    let out = Command::new(tool).args(args).output().expect("run check");
    assert!(
        out.status.success(),
        "{tool} {args:?} refused the rendered config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `templates/` examples read fixed names (`service "api"`, `config/app`), so this is
/// the one test in this binary that writes those names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_examples_render_their_golden_output_and_pass_the_servers_own_checks() {
    let (c, addr) = consul().await;
    let dir = workdir("examples");
    let _ = c.kv_delete_tree("config/app/").await;
    for (k, v) in [("config/app/port", "8080"), ("config/app/log_level", "info"), ("config/app/db/host", "db.internal")]
    {
        put(&c, k, v).await;
    }
    let regs = [
        instance_with_meta("web-1", "10.1.0.1", "api", "api-1", "10.1.0.11", CheckStatus::Passing, &[("weight", "50")]),
        instance("web-1", "10.1.0.1", "api", "api-2", "10.1.0.12", CheckStatus::Passing),
        instance("web-2", "10.1.0.2", "api", "api-3", "10.1.0.13", CheckStatus::Critical),
    ];
    for r in &regs {
        c.catalog_register(r).await.expect("register");
    }

    let nginx = render_example(&addr, &dir, "nginx-upstream.conf.hbs");
    assert_golden(&nginx, "nginx-upstream.conf.hbs");
    let haproxy = render_example(&addr, &dir, "haproxy-backend.cfg.hbs");
    assert_golden(&haproxy, "haproxy-backend.cfg.hbs");
    let app = render_example(&addr, &dir, "app-config.ini.hbs");
    assert_golden(&app, "app-config.ini.hbs");

    let nginx_main = dir.join("nginx.conf");
    std::fs::write(
        &nginx_main,
        format!(
            "pid {dir}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n  access_log off;\n  include {up};\n  \
             server {{ listen 127.0.0.1:18080; location / {{ proxy_pass http://api; }} }}\n}}\n",
            dir = dir.display(),
            up = nginx.display()
        ),
    )
    .expect("nginx.conf");
    config_check(
        "nginx",
        &["-t", "-q", "-p", &dir.display().to_string(), "-e", "stderr", "-c", &nginx_main.display().to_string()],
    );
    let defaults = dir.join("defaults.cfg");
    std::fs::write(&defaults, "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\nfrontend web\n    bind 127.0.0.1:18081\n    default_backend api\n")
        .expect("defaults");
    config_check("haproxy", &["-c", "-q", "-f", &defaults.display().to_string(), "-f", &haproxy.display().to_string()]);
}
