//! The leak sweep: everything the in-process controller logs (captured from the moment a
//! test calls [`capture_logs`], at debug level, as JSON with every field), every Event and
//! every concord object's status in a namespace are searched for the secrets the test
//! knows: the ones it passes in (management tokens) and every token-like or key-like
//! value of every Secret in the namespace (ACL tokens concord minted or bootstrapped,
//! gossip keys, Secrets a tenant made), accessor IDs aside. Nothing is ever printed but where a secret was
//! found and what kind of secret it was.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line of this test process (all tests in it share the buffer).
/// Call before starting a controller.
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let filter = tracing_subscriber::EnvFilter::new("info,concord=debug");
        let _ =
            tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(move || Sink(sink.clone())).try_init();
        buffer
    });
}

/// Everything captured since [`capture_logs`], as JSON lines.
pub fn captured_logs() -> String {
    LOGS.get().and_then(|b| b.lock().ok().map(|l| String::from_utf8_lossy(&l).into_owned())).unwrap_or_default()
}

/// A secret to look for, and what it is (printed instead of the value).
pub struct Known {
    pub what: String,
    pub value: String,
}

/// Token-like (UUID) or key-like (base64 of 16+ bytes) values: what would be a leak.
fn looks_secret(value: &str) -> bool {
    let uuid = value.len() == 36
        && value
            .chars()
            .enumerate()
            .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() });
    let key = value.len() >= 24
        && value.ends_with('=')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
    uuid || key
}

/// The secrets of namespace `ns`: every token- or key-like value of its Secrets (and of
/// any `{"encrypt": ...}` or `token` field inside a JSON value), plus `extra`.
pub async fn known_secrets(kube: &kube::Client, ns: &str, extra: &[Known]) -> Vec<Known> {
    let mut known: Vec<Known> = extra.iter().map(|k| Known { what: k.what.clone(), value: k.value.clone() }).collect();
    let secrets = Api::<Secret>::namespaced(kube.clone(), ns).list(&ListParams::default()).await.expect("Secrets");
    for secret in secrets.items {
        let name = secret.metadata.name.clone().unwrap_or_default();
        for (key, value) in secret.data.unwrap_or_default() {
            // An ACL token's accessor ID names it (status shows it on purpose); only its
            // secret ID grants anything.
            if key == "accessorId" {
                continue;
            }
            let text = String::from_utf8_lossy(&value.0).trim().to_string();
            let mut candidates = vec![text.clone()];
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(&text) {
                candidates.extend(map.values().filter_map(|v| v.as_str().map(str::to_string)));
            }
            for value in candidates.into_iter().filter(|v| looks_secret(v)) {
                known.push(Known { what: format!("Secret {name} key {key}"), value });
            }
        }
    }
    known
}

/// Where each known secret shows up: logs, Events of `ns`, statuses of concord objects
/// in `ns`. Empty when nothing leaked.
pub async fn leaks(kube: &kube::Client, ns: &str, known: &[Known]) -> Vec<String> {
    let mut haystacks = vec![("the controller's logs".to_string(), captured_logs())];
    let events = Api::<Event>::namespaced(kube.clone(), ns).list(&ListParams::default()).await.expect("Events");
    haystacks.push((format!("Events of {ns}"), serde_json::to_string(&events.items).unwrap_or_default()));
    for crd in concord::crdgen::all() {
        let version = &crd.spec.versions[0].name;
        let resource = ApiResource {
            group: crd.spec.group.clone(),
            version: version.clone(),
            api_version: format!("{}/{version}", crd.spec.group),
            kind: crd.spec.names.kind.clone(),
            plural: crd.spec.names.plural.clone(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), ns, &resource);
        let Ok(list) = api.list(&ListParams::default()).await else { continue };
        for obj in list.items {
            let status = obj.data.get("status").map(|s| s.to_string()).unwrap_or_default();
            let name = obj.metadata.name.unwrap_or_default();
            haystacks.push((format!("status of {} {ns}/{name}", crd.spec.names.kind), status));
        }
    }
    let mut found = Vec::new();
    for k in known {
        for (place, text) in &haystacks {
            if text.contains(&k.value) {
                found.push(format!("{} is in {place}", k.what));
            }
        }
    }
    found
}

/// Fails the test (naming where, never the value) if any secret of `ns` (or `extra`) is in
/// the logs captured so far, the Events of `ns`, or a status there. Returns how many
/// secrets it looked for, so a test can also check the sweep had something to find.
pub async fn assert_no_leaks(kube: &kube::Client, ns: &str, extra: &[Known]) -> usize {
    let known = known_secrets(kube, ns, extra).await;
    let found = leaks(kube, ns, &known).await;
    assert!(found.is_empty(), "secrets leaked: {found:?}");
    known.len()
}
