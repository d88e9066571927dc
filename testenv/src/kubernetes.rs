//! A real Kubernetes control plane on loopback: etcd, kube-apiserver (TLS with our own CA,
//! static admin token, RBAC on) and, when asked, kube-controller-manager. There is no
//! kubelet, so Pods are stored but never run.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::certs;
use crate::error::{Error, one_line};
use crate::ports::free_port;
use crate::process::{ServerProcess, ServerSpec};
use crate::wait::{Probe, http_client, until, with_port_retries};
use crate::workdir::WorkDir;

const ETCD_TIMEOUT: Duration = Duration::from_secs(30);
const APISERVER_TIMEOUT: Duration = Duration::from_secs(60);
const CONTROLLER_MANAGER_TIMEOUT: Duration = Duration::from_secs(60);

/// What to start besides etcd and kube-apiserver. Build it with `..Default::default()`:
/// fields may be added.
#[derive(Clone, Debug, Default)]
pub struct KubeOptions {
    /// Also run kube-controller-manager (StatefulSets, EndpointSlices, garbage
    /// collection, namespace deletion, default ServiceAccounts).
    pub controller_manager: bool,
    /// Where the binaries are; `None` means [`crate::bin_dir`]. Tests use this instead
    /// of the process environment, which all tests in a process share.
    pub bin_dir: Option<PathBuf>,
}

/// A running control plane. Dropping it SIGKILLs its processes and removes its files.
pub struct KubeEnv {
    // Declared in stop order; `Drop` also kills them in this order explicitly.
    controller_manager: Option<ServerProcess>,
    apiserver: ServerProcess,
    etcd: ServerProcess,
    server_url: String,
    ca_pem: String,
    token: String,
    kubeconfig_path: PathBuf,
    kubeconfig_yaml: String,
    next_namespace: AtomicUsize,
    dir: WorkDir,
}

impl std::fmt::Debug for KubeEnv {
    // Hand-written so the admin token never reaches test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeEnv")
            .field("server_url", &self.server_url)
            .field("kubeconfig_path", &self.kubeconfig_path)
            .field("controller_manager", &self.controller_manager.is_some())
            .finish_non_exhaustive()
    }
}

/// Files the servers read, all inside the environment's work dir.
struct Files {
    ca_cert: PathBuf,
    ca_key: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_private_key: PathBuf,
    sa_public_key: PathBuf,
    tokens: PathBuf,
}

impl KubeEnv {
    /// Starts etcd and kube-apiserver (and kube-controller-manager when asked) and returns
    /// once `/readyz` is ok and the `default` namespace exists (and, with the controller
    /// manager, once it has created the `default` ServiceAccount). Each server has a time
    /// bound (etcd 30 s, kube-apiserver 60 s, controller manager 60 s).
    pub async fn start(opts: KubeOptions) -> Result<KubeEnv, Error> {
        let bin_dir = opts.bin_dir.clone().unwrap_or_else(crate::bin_dir);
        // Check every binary first so a missing one fails before anything starts.
        let etcd_bin = crate::binary_in(&bin_dir, "etcd")?;
        let apiserver_bin = crate::binary_in(&bin_dir, "kube-apiserver")?;
        let controller_manager_bin = match opts.controller_manager {
            true => Some(crate::binary_in(&bin_dir, "kube-controller-manager")?),
            false => None,
        };
        let mut dir = WorkDir::create("kube")?;
        match Self::start_in(&dir, &etcd_bin, &apiserver_bin, controller_manager_bin.as_deref()).await {
            Ok(parts) => Ok(parts.with_dir(dir)),
            Err(error) => {
                // The error names a log file in the work dir; leave it there.
                dir.keep();
                Err(error)
            }
        }
    }

    /// Everything but the work dir, which the caller keeps on failure.
    async fn start_in(
        dir: &WorkDir,
        etcd_bin: &Path,
        apiserver_bin: &Path,
        controller_manager_bin: Option<&Path>,
    ) -> Result<PartialEnv, Error> {
        let started = Instant::now();
        let (etcd, etcd_url) =
            with_port_retries(async || start_etcd(dir, etcd_bin, free_port()?, free_port()?).await).await?;
        let etcd_ready = started.elapsed();

        let pki = certs::generate()?;
        let token = random_hex(16);
        let files = Files {
            ca_cert: dir.write("ca.crt", &pki.ca_cert)?,
            ca_key: dir.write("ca.key", &pki.ca_key)?,
            serving_cert: dir.write("apiserver.crt", &pki.serving_cert)?,
            serving_key: dir.write("apiserver.key", &pki.serving_key)?,
            sa_private_key: dir.write("service-account.key", &pki.sa_private_key)?,
            sa_public_key: dir.write("service-account.pub", &pki.sa_public_key)?,
            // token,user,uid,"groups": system:masters is cluster-admin without any binding.
            tokens: dir.write("tokens.csv", &format!("{token},admin,admin,\"system:masters\"\n"))?,
        };
        let (apiserver, server_url) = with_port_retries(async || {
            start_apiserver(dir, apiserver_bin, &etcd_url, &files, &pki.ca_cert, &token).await
        })
        .await?;
        let apiserver_ready = started.elapsed();

        let kubeconfig_yaml = kubeconfig(&server_url, &pki.ca_cert, &token, None);
        let kubeconfig_path = dir.write("admin.kubeconfig", &kubeconfig_yaml)?;
        let controller_manager = match controller_manager_bin {
            Some(binary) => Some(
                start_controller_manager(dir, binary, &kubeconfig_path, &files, &server_url, &pki.ca_cert, &token)
                    .await?,
            ),
            None => None,
        };
        tracing::info!(
            etcd_ms = etcd_ready.as_millis() as u64,
            apiserver_ms = apiserver_ready.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            controller_manager = controller_manager.is_some(),
            server = %server_url,
            dir = %dir.path().display(),
            "kubernetes control plane ready"
        );
        Ok(PartialEnv {
            controller_manager,
            apiserver,
            etcd,
            server_url,
            ca_pem: pki.ca_cert,
            token,
            kubeconfig_path,
            kubeconfig_yaml,
        })
    }

    /// The admin kubeconfig file (in the environment's temp dir).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The admin kubeconfig: our CA, the static admin token (group `system:masters`),
    /// namespace `default`.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml.clone()
    }

    /// A kubeconfig that authenticates as admin but impersonates
    /// `system:serviceaccount:<namespace>:<service_account>`, so RBAC rules written for
    /// that ServiceAccount can be proven without a token for it. Its context namespace is
    /// `namespace`.
    pub fn kubeconfig_for_impersonation(&self, service_account: &str, namespace: &str) -> String {
        let user = format!("system:serviceaccount:{namespace}:{service_account}");
        kubeconfig(&self.server_url, &self.ca_pem, &self.token, Some((&user, namespace)))
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        self.server_url.clone()
    }

    /// A new admin client. New on every call because each `#[tokio::test]` has its own
    /// runtime and a client is bound to the runtime it was made on.
    ///
    /// Panics if the client cannot be built (the environment is broken).
    pub async fn client(&self) -> kube::Client {
        client_from_yaml(&self.kubeconfig_yaml)
            .await
            .unwrap_or_else(|e| panic!("building a kube client for {}: {e}", self.server_url))
    }

    /// A new client that impersonates a ServiceAccount (see
    /// [`KubeEnv::kubeconfig_for_impersonation`]). Panics like [`KubeEnv::client`].
    pub async fn client_impersonating(&self, service_account: &str, namespace: &str) -> kube::Client {
        client_from_yaml(&self.kubeconfig_for_impersonation(service_account, namespace))
            .await
            .unwrap_or_else(|e| panic!("building an impersonating kube client for {}: {e}", self.server_url))
    }

    /// Creates a namespace named `<prefix>-<n>`, unique within this environment, so tests
    /// sharing one API server do not see each other's objects. Returns its name.
    ///
    /// Panics if the namespace cannot be created (e.g. `prefix` is not a DNS label).
    pub async fn create_namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", self.next_namespace.fetch_add(1, Ordering::Relaxed));
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("concord.io/testenv".to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        kube::Api::<Namespace>::all(self.client().await)
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        name
    }

    /// Pids of etcd, kube-apiserver and (if running) kube-controller-manager.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.etcd.pid(), self.apiserver.pid()];
        pids.extend(self.controller_manager.as_ref().map(ServerProcess::pid));
        pids
    }

    /// The environment's temporary directory: certificates, kubeconfig, etcd data and one
    /// log file per server (`etcd.log`, `kube-apiserver.log`, `kube-controller-manager.log`).
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl KubeEnv {
    /// SIGKILLs kube-apiserver and starts it again on the same port with the same etcd,
    /// certificates and flags (an API server crash and restart: open watches break, and
    /// clients must resume them). Returns once it is ready again, with how long it was
    /// down. Only for an environment of the test's own: the shared ones are `&'static`.
    pub async fn restart_apiserver(&mut self) -> Result<std::time::Duration, Error> {
        let started = Instant::now();
        self.apiserver.kill();
        let spec = self.apiserver.spec.clone();
        let mut process = ServerProcess::spawn(&spec)?;
        let client = http_client(Some(&self.ca_pem)).map_err(Error::HttpClient)?;
        let ready = until(APISERVER_TIMEOUT, async |after| {
            if let Some(status) = process.exited() {
                return Probe::Failed(process.exit_error(status, after));
            }
            match apiserver_ready(&client, &self.server_url, &self.token).await {
                Ok(()) => Probe::Ready(()),
                Err(reason) => Probe::Waiting(process.not_ready(after, &reason)),
            }
        })
        .await;
        // Kept even when not ready, so that Drop still kills it.
        self.apiserver = process;
        ready.map(|()| started.elapsed())
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        // Clients of the API server first, etcd last, all before `dir` is removed.
        if let Some(process) = &mut self.controller_manager {
            process.kill();
        }
        self.apiserver.kill();
        self.etcd.kill();
    }
}

/// `KubeEnv` minus its work dir, which `start` adds (or keeps on failure).
struct PartialEnv {
    controller_manager: Option<ServerProcess>,
    apiserver: ServerProcess,
    etcd: ServerProcess,
    server_url: String,
    ca_pem: String,
    token: String,
    kubeconfig_path: PathBuf,
    kubeconfig_yaml: String,
}

impl PartialEnv {
    fn with_dir(self, dir: WorkDir) -> KubeEnv {
        KubeEnv {
            controller_manager: self.controller_manager,
            apiserver: self.apiserver,
            etcd: self.etcd,
            server_url: self.server_url,
            ca_pem: self.ca_pem,
            token: self.token,
            kubeconfig_path: self.kubeconfig_path,
            kubeconfig_yaml: self.kubeconfig_yaml,
            next_namespace: AtomicUsize::new(1),
            dir,
        }
    }
}

async fn start_etcd(
    dir: &WorkDir,
    binary: &Path,
    client_port: u16,
    peer_port: u16,
) -> Result<(ServerProcess, String), Error> {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data_dir = dir.fresh_subdir("etcd-data")?;
    // etcd warns about any data dir more open than 0700.
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod {}", data_dir.display()), e))?;
    let spec = ServerSpec {
        what: format!("etcd ({client_url})"),
        binary: binary.to_path_buf(),
        args: vec![
            "--name=default".into(),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            // Test data is disposable; fsync only costs time.
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ],
        log: dir.path().join("etcd.log"),
        workdir: dir.path().to_path_buf(),
    };
    let mut process = ServerProcess::spawn(&spec)?;
    let client = http_client(None).map_err(Error::HttpClient)?;
    let health = format!("{client_url}/health");
    until(ETCD_TIMEOUT, async |after| {
        if let Some(status) = process.exited() {
            return Probe::Failed(process.exit_error(status, after));
        }
        let reason = match client.get(&health).send().await {
            Ok(response) => match response.text().await {
                Ok(body) if body.contains(r#""health":"true""#) => return Probe::Ready(()),
                Ok(body) => format!("/health says {body}"),
                Err(e) => format!("/health: {e}"),
            },
            Err(e) => format!("/health: {e}"),
        };
        Probe::Waiting(process.not_ready(after, &reason))
    })
    .await?;
    Ok((process, client_url))
}

async fn start_apiserver(
    dir: &WorkDir,
    binary: &Path,
    etcd_url: &str,
    files: &Files,
    ca_pem: &str,
    token: &str,
) -> Result<(ServerProcess, String), Error> {
    let port = free_port()?;
    let server_url = format!("https://127.0.0.1:{port}");
    let path = |p: &Path| p.display().to_string();
    let spec = ServerSpec {
        what: format!("kube-apiserver ({server_url})"),
        binary: binary.to_path_buf(),
        args: vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--cert-dir={}", dir.fresh_subdir("apiserver-certs")?.display()),
            format!("--tls-cert-file={}", path(&files.serving_cert)),
            format!("--tls-private-key-file={}", path(&files.serving_key)),
            format!("--client-ca-file={}", path(&files.ca_cert)),
            // A file of tokens keeps the secret out of argv and thus out of logged flags.
            format!("--token-auth-file={}", path(&files.tokens)),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", path(&files.sa_public_key)),
            format!("--service-account-signing-key-file={}", path(&files.sa_private_key)),
            // Only configuration: nothing routes to these addresses.
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            // Without a token controller the ServiceAccount admission would reject Pods.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ],
        log: dir.path().join("kube-apiserver.log"),
        workdir: dir.path().to_path_buf(),
    };
    let mut process = ServerProcess::spawn(&spec)?;
    let client = http_client(Some(ca_pem)).map_err(Error::HttpClient)?;
    until(APISERVER_TIMEOUT, async |after| {
        if let Some(status) = process.exited() {
            return Probe::Failed(process.exit_error(status, after));
        }
        match apiserver_ready(&client, &server_url, token).await {
            Ok(()) => Probe::Ready(()),
            Err(reason) => Probe::Waiting(process.not_ready(after, &reason)),
        }
    })
    .await?;
    Ok((process, server_url))
}

/// Ready means `/readyz` is ok and the `default` namespace (created by a post-start
/// controller a moment after `/readyz`) exists, since most tests use it first.
async fn apiserver_ready(client: &reqwest::Client, server_url: &str, token: &str) -> Result<(), String> {
    let response = client
        .get(format!("{server_url}/readyz"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("/readyz: {e}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() || body.trim() != "ok" {
        // The body lists every check; only the failing ones ("[-]...") explain anything.
        let failing: Vec<&str> = body.lines().filter(|l| l.starts_with("[-]")).collect();
        return Err(format!("/readyz: HTTP {status} {}", one_line(&failing.join(" "))));
    }
    get_ok(client, &format!("{server_url}/api/v1/namespaces/default"), token).await
}

async fn get_ok(client: &reqwest::Client, url: &str, token: &str) -> Result<(), String> {
    let response = client.get(url).bearer_auth(token).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    match response.status() {
        status if status.is_success() => Ok(()),
        status => Err(format!("GET {url}: HTTP {status}")),
    }
}

async fn start_controller_manager(
    dir: &WorkDir,
    binary: &Path,
    kubeconfig: &Path,
    files: &Files,
    server_url: &str,
    ca_pem: &str,
    token: &str,
) -> Result<ServerProcess, Error> {
    let path = |p: &Path| p.display().to_string();
    let spec = ServerSpec {
        what: "kube-controller-manager".into(),
        binary: binary.to_path_buf(),
        args: vec![
            format!("--kubeconfig={}", path(kubeconfig)),
            "--leader-elect=false".into(),
            // No serving port: nothing scrapes it, and one port fewer to collide.
            "--secure-port=0".into(),
            "--controllers=*".into(),
            format!("--service-account-private-key-file={}", path(&files.sa_private_key)),
            format!("--root-ca-file={}", path(&files.ca_cert)),
            format!("--cluster-signing-cert-file={}", path(&files.ca_cert)),
            format!("--cluster-signing-key-file={}", path(&files.ca_key)),
            // Controllers act as admin rather than minting a token per controller.
            "--use-service-account-credentials=false".into(),
            "--cluster-name=concord-testenv".into(),
            // Its default is under /usr/libexec, which it would create on the host.
            format!("--flex-volume-plugin-dir={}", dir.fresh_subdir("flexvolume")?.display()),
            "--profiling=false".into(),
        ],
        log: dir.path().join("kube-controller-manager.log"),
        workdir: dir.path().to_path_buf(),
    };
    let mut process = ServerProcess::spawn(&spec)?;
    let client = http_client(Some(ca_pem)).map_err(Error::HttpClient)?;
    // The ServiceAccount controller creates `default` in every namespace: once it exists
    // in `default`, the controllers are running.
    let url = format!("{server_url}/api/v1/namespaces/default/serviceaccounts/default");
    until(CONTROLLER_MANAGER_TIMEOUT, async |after| {
        if let Some(status) = process.exited() {
            return Probe::Failed(process.exit_error(status, after));
        }
        match get_ok(&client, &url, token).await {
            Ok(()) => Probe::Ready(()),
            Err(_) => Probe::Waiting(process.not_ready(after, "no ServiceAccount default/default yet")),
        }
    })
    .await?;
    Ok(process)
}

/// An admin kubeconfig, optionally impersonating `(user, namespace)`. Every value is
/// base64, hex, a URL or a DNS label, so plain formatting yields valid YAML.
fn kubeconfig(server_url: &str, ca_pem: &str, token: &str, impersonate: Option<(&str, &str)>) -> String {
    let ca = BASE64.encode(ca_pem);
    let (user, act_as, namespace) = match impersonate {
        Some((user, namespace)) => ("impersonator", format!("\n    as: \"{user}\""), namespace),
        None => ("admin", String::new(), "default"),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: concord-testenv
  cluster:
    server: {server_url}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    token: {token}{act_as}
contexts:
- name: concord-testenv
  context:
    cluster: concord-testenv
    user: {user}
    namespace: {namespace}
current-context: concord-testenv
"
    )
}

async fn client_from_yaml(yaml: &str) -> Result<kube::Client, String> {
    let kubeconfig = Kubeconfig::from_yaml(yaml).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impersonation_kubeconfig_parses_and_acts_as_the_service_account() {
        let yaml = kubeconfig("https://127.0.0.1:6443", "PEM", "t0k3n", Some(("system:serviceaccount:ns:sa", "ns")));
        let parsed = Kubeconfig::from_yaml(&yaml).expect("valid kubeconfig");
        let user = parsed.auth_infos[0].auth_info.as_ref().expect("user");
        assert_eq!(user.impersonate.as_deref(), Some("system:serviceaccount:ns:sa"));
        assert_eq!(parsed.contexts[0].context.as_ref().and_then(|c| c.namespace.as_deref()), Some("ns"));
    }

    #[tokio::test]
    async fn etcd_on_a_taken_port_is_port_in_use_with_its_log_line() {
        let Ok(binary) = crate::binary("etcd") else {
            eprintln!("skipped: no etcd binary (run scripts/testenv.sh)");
            return;
        };
        let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let dir = WorkDir::create("unit-etcd").expect("workdir");
        let error = start_etcd(&dir, &binary, port, free_port().expect("port")).await.expect_err("port is taken");
        let message = error.to_string();
        assert!(matches!(error, Error::PortInUse { .. }), "{message}");
        assert!(message.starts_with("etcd (http://127.0.0.1:"), "{message}");
        assert!(message.contains("address already in use"), "{message}");
        assert!(!message.contains('\n'));
    }
}
