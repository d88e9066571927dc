//! ConfigTemplate controller. Each object gets a render task (template engine + Consul
//! watcher, see [`crate::template`]) that re-renders when what the template read changes
//! and then triggers a reconcile. The reconcile is the only writer: it takes the latest
//! render, writes the output ConfigMap/Secret key when its bytes differ, stamps the output
//! hash on the pod template of each rollout workload, and reports `Rendered` in status. A
//! render error keeps the last good output and sets `Rendered=False` with the message.
//!
//! Writes use one field manager per ConfigTemplate (`concord-ctpl-<name>`): server-side
//! apply removes what a manager stopped applying, so two templates sharing the one
//! `concord` manager and one ConfigMap (or one Deployment) would erase each other's keys.
//! For the same reason each template has its own rollout annotation
//! ([`rollout_annotation`]).
use super::{apply_status, object_key, report_ready_when_primed, requeue_after_failure, watched_api};
use crate::context::Context;
use crate::context::tenant::is_forbidden;
use crate::resources::{
    ConditionUpdate, ConfigTemplate, ConfigTemplateStatus, KeyRef, WorkloadKind, WorkloadRef, find_condition,
    set_condition, types,
};
use crate::template::{self, ConsulSource, Dependency, Engine, Wait, WatchError, Watcher};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const CONTROLLER: &str = "configtemplate";
/// Re-check outputs and workloads this often even without a change (drift on a Secret
/// output, which is not watched).
const RESYNC: Duration = Duration::from_secs(300);
/// How often render tasks of deleted objects are stopped.
const SWEEP: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot read template ConfigMap {name}: {source}")]
    TemplateSource {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write output {kind} {name}: {source}")]
    Output {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot annotate {kind} {name}: {source}")]
    Rollout {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write status: {0}")]
    Status(#[source] kube::Error),
    #[error("Consul unavailable: {0}")]
    Consul(String),
}

impl Error {
    fn category(&self) -> &'static str {
        match self {
            Error::Cluster(e) => e.category(),
            Error::TemplateSource { .. } | Error::Output { .. } | Error::Rollout { .. } | Error::Status(_) => "kube",
            Error::Consul(_) => "consul",
        }
    }

    /// The reason of the `Rendered=False` condition and of the Warning Event.
    fn reason(&self) -> &'static str {
        match self {
            Error::TemplateSource { source, .. } | Error::Output { source, .. } | Error::Rollout { source, .. }
                if is_forbidden(source) =>
            {
                "Forbidden"
            }
            Error::Cluster(_) => "ClusterUnavailable",
            Error::TemplateSource { .. } => "TemplateSourceUnreadable",
            Error::Output { .. } => "OutputWriteFailed",
            Error::Rollout { .. } => "RolloutFailed",
            Error::Status(_) => "StatusWriteFailed",
            Error::Consul(_) => "ConsulUnavailable",
        }
    }

    /// Whether reconcile reported this failure on the object itself (condition + Event)
    /// before returning it.
    fn reported(&self) -> bool {
        matches!(self, Error::Consul(_))
    }
}

/// The annotation a template stamps on a workload's pod template: `concord.io/config-hash-<name>`
/// (names too long for an annotation key are shortened with a hash suffix).
pub fn rollout_annotation(template_name: &str) -> String {
    const PREFIX: &str = "config-hash-";
    const MAX_NAME: usize = 63;
    let mut name = format!("{PREFIX}{template_name}");
    if name.len() > MAX_NAME {
        let digest = Sha256::digest(template_name.as_bytes());
        let suffix: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        name = format!("{}-{suffix}", &name[..MAX_NAME - 9].trim_end_matches(['-', '.']));
    }
    format!("concord.io/{name}")
}

fn field_manager(template_name: &str) -> String {
    let mut m = format!("concord-ctpl-{template_name}");
    m.truncate(128);
    m
}

/// What the render task last produced.
#[derive(Clone, Debug)]
struct Latest {
    result: Result<String, RenderFailure>,
    deps: Vec<Dependency>,
}

#[derive(Clone, Debug)]
struct RenderFailure {
    message: String,
    transient: bool,
    /// A read was refused (not granted by `spec.tenancy`, or by Consul's ACLs).
    denied: bool,
}

struct Entry {
    fingerprint: String,
    latest: Arc<Mutex<Option<Latest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The controller's state: the shared context plus one render task per object.
struct State {
    ctx: Arc<Context>,
    entries: Mutex<HashMap<String, Entry>>,
    trigger: futures::channel::mpsc::UnboundedSender<ObjectRef<ConfigTemplate>>,
}

/// Status after a render (pure).
pub fn rendered_status(
    previous: &ConfigTemplateStatus,
    generation: Option<i64>,
    outcome: Result<(&str, usize, &str), (&'static str, &str)>,
    deps: &[Dependency],
    now: k8s_openapi::jiff::Timestamp,
) -> ConfigTemplateStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    status.dependencies = Some(template::deps::to_status(deps));
    let condition = match outcome {
        Ok((hash, bytes, target)) => {
            status.output_hash = Some(hash.to_string());
            ConditionUpdate::new(types::RENDERED, true, "Rendered", format!("{bytes} bytes in {target}"))
        }
        Err((reason, message)) => ConditionUpdate::new(types::RENDERED, false, reason, message),
    };
    status.conditions = set_condition(&status.conditions, condition, generation, now);
    status
}

/// The client for the template's reads and writes of Kubernetes objects: it acts as the
/// template's ServiceAccount when there is one (see `context::tenant`).
fn tenant_client(ctx: &Context, ct: &ConfigTemplate) -> kube::Client {
    let ns = ct.namespace().unwrap_or_default();
    ctx.client_as(&ctx.actor(&ns, ct.spec.service_account_name.as_deref()))
}

async fn template_text(ctx: &Context, ns: &str, ct: &ConfigTemplate) -> Result<Result<String, String>, Error> {
    if let Some(inline) = &ct.spec.template.inline {
        return Ok(Ok(inline.clone()));
    }
    let Some(r) = &ct.spec.template.config_map_ref else {
        return Ok(Err("spec.template has neither inline nor configMapRef".into()));
    };
    let api: Api<ConfigMap> = Api::namespaced(tenant_client(ctx, ct), ns);
    let cm = api.get_opt(&r.name).await.map_err(|source| Error::TemplateSource { name: r.name.clone(), source })?;
    Ok(match cm.and_then(|cm| cm.data).and_then(|mut d| d.remove(&r.key)) {
        Some(text) => Ok(text),
        None => Err(format!("ConfigMap {} has no key {}", r.name, r.key)),
    })
}

/// `previous` with `Rendered=False` for a failed reconcile; the rest (the last output's
/// hash, what it read) stays as it was.
pub fn failed_status(
    previous: &ConfigTemplateStatus,
    generation: Option<i64>,
    reason: &'static str,
    message: &str,
    now: k8s_openapi::jiff::Timestamp,
) -> ConfigTemplateStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    let condition = ConditionUpdate::new(types::RENDERED, false, reason, message);
    status.conditions = set_condition(&status.conditions, condition, generation, now);
    status
}

/// Every failure reaches `error_policy` reported: a `Rendered=False` condition saying why
/// and a Warning Event (once per new reason and message).
async fn reconcile(ct: Arc<ConfigTemplate>, state: Arc<State>) -> Result<Action, Error> {
    let result = reconcile_inner(ct.clone(), &state).await;
    if let Err(error) = &result
        && !error.reported()
    {
        let ctx = &state.ctx;
        let (reason, message) = (error.reason(), error.to_string());
        let previous = ct.status.clone().unwrap_or_default();
        let same = find_condition(&previous.conditions, types::RENDERED)
            .is_some_and(|c| c.status == "False" && c.reason == reason && c.message == message);
        let status =
            failed_status(&previous, ct.meta().generation, reason, &message, k8s_openapi::jiff::Timestamp::now());
        if let Err(e) = apply_status(ctx, ct.as_ref(), &status).await {
            tracing::warn!(template = %ct.name_any(), error = %e, "cannot report the failure in status");
        }
        if !same {
            ctx.event(&ct.object_ref(&()), true, reason, "Reconcile", message).await;
        }
    }
    result
}

async fn reconcile_inner(ct: Arc<ConfigTemplate>, state: &Arc<State>) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let ns = ct.namespace().unwrap_or_default();
    let key = object_key(ct.as_ref());
    let generation = ct.meta().generation;
    let previous = ct.status.clone().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();

    // Read inputs: the template text, the wait, the cluster.
    let text = match template_text(ctx, &ns, &ct).await? {
        Ok(text) => text,
        Err(message) => return fail_permanently(state, &ct, &key, "TemplateSourceMissing", message).await,
    };
    let wait = match ct.spec.wait.as_ref().map(Wait::from_spec).transpose() {
        Ok(w) => w,
        Err(message) => return fail_permanently(state, &ct, &key, "InvalidWait", message).await,
    };
    let cluster = ctx.clusters.resolve_tenant(&ctx.client, &ns, ct.spec.cluster_ref.as_deref()).await?;
    let fingerprint =
        format!("{}|{:?}|{:?}|{:?}|{}", cluster.name, cluster.consul.addresses(), cluster.grants, wait, text);

    // Make sure the render task runs for exactly this spec; take its latest result.
    let lookup: Result<Option<Latest>, String> = {
        let mut entries = state.entries.lock().map_err(|_| Error::Consul("render state poisoned".into()))?;
        match entries.get(&key) {
            Some(e) if e.fingerprint == fingerprint => Ok(e.latest.lock().ok().and_then(|l| l.clone())),
            _ => {
                entries.remove(&key);
                match Engine::compile(&format!("{ns}/{}", ct.name_any()), &text) {
                    Err(e) => Err(e.to_string()),
                    Ok(engine) => {
                        let latest = Arc::new(Mutex::new(None));
                        let watcher = Watcher::new(
                            Arc::new(ConsulSource::with_grants(cluster.consul.clone(), cluster.grants.clone())),
                            wait,
                        );
                        let task = tokio::spawn(render_loop(
                            engine,
                            watcher,
                            latest.clone(),
                            ObjectRef::from_obj(ct.as_ref()),
                            state.trigger.clone(),
                        ));
                        entries.insert(key.clone(), Entry { fingerprint, latest, task });
                        Ok(None)
                    }
                }
            }
        }
    };
    let latest = match lookup {
        Ok(latest) => latest,
        Err(message) => return fail_permanently(state, &ct, &key, "TemplateInvalid", message).await,
    };
    let Some(latest) = latest else {
        return Ok(Action::await_change()); // the render task triggers a reconcile when done
    };

    let rendered = match latest.result {
        Ok(output) => output,
        Err(failure) => {
            let reason = match (failure.denied, failure.transient) {
                (true, _) => "PermissionDenied",
                (false, true) => "ConsulUnavailable",
                (false, false) => "RenderFailed",
            };
            let was = find_condition(&previous.conditions, types::RENDERED).map(|c| c.message.clone());
            let mut status = rendered_status(&previous, generation, Err((reason, &failure.message)), &latest.deps, now);
            // The hash of the output kept in place, read from it: the cached object's status
            // may not show the last successful render's hash yet.
            if let Current::Writable(Some(bytes)) = current_output(ctx, &ct, &ns).await? {
                status.output_hash = Some(template::output_hash(&bytes));
            }
            apply_status(ctx, ct.as_ref(), &status).await.map_err(Error::Status)?;
            if was.as_deref() != Some(failure.message.as_str()) {
                ctx.event(&ct.object_ref(&()), true, reason, "Render", failure.message.clone()).await;
            }
            if failure.transient {
                return Err(Error::Consul(failure.message));
            }
            return Ok(Action::requeue(RESYNC));
        }
    };

    // Apply: output bytes, then rollout annotations, then status.
    let hash = template::output_hash(rendered.as_bytes());
    let manager = field_manager(&ct.name_any());
    let current = match current_output(ctx, &ct, &ns).await? {
        Current::NotOwned(message) => {
            let was = find_condition(&previous.conditions, types::RENDERED).map(|c| c.message.clone());
            let status = rendered_status(&previous, generation, Err(("OutputNotOwned", &message)), &latest.deps, now);
            apply_status(ctx, ct.as_ref(), &status).await.map_err(Error::Status)?;
            if was.as_deref() != Some(message.as_str()) {
                ctx.event(&ct.object_ref(&()), true, "OutputNotOwned", "Render", message).await;
            }
            return Ok(Action::requeue(RESYNC));
        }
        Current::Writable(bytes) => Some(bytes),
        Current::Absent => None,
    };
    let (target, wrote) =
        write_output(ctx, &ct, &ns, &manager, &rendered, current.as_ref().map(Option::as_deref)).await?;
    let mut missing_workloads = Vec::new();
    for w in &ct.spec.rollout {
        if !annotate_workload(&tenant_client(ctx, &ct), &ns, &manager, w, &rollout_annotation(&ct.name_any()), &hash)
            .await?
        {
            missing_workloads.push(format!("{:?} {}", w.kind, w.name));
        }
    }
    let status = rendered_status(&previous, generation, Ok((&hash, rendered.len(), &target)), &latest.deps, now);
    apply_status(ctx, ct.as_ref(), &status).await.map_err(Error::Status)?;
    if wrote {
        ctx.event(&ct.object_ref(&()), false, "OutputWritten", "Render", format!("wrote {target} ({hash})")).await;
    }
    if !missing_workloads.is_empty() {
        let note = format!("rollout workloads not found: {}", missing_workloads.join(", "));
        ctx.event(&ct.object_ref(&()), true, "RolloutTargetMissing", "Rollout", note).await;
    }
    ctx.reset_backoff(&format!("{CONTROLLER}:{key}"));
    Ok(Action::requeue(RESYNC))
}

/// A problem only a spec change can fix: stop the render task, report, wait for a change.
async fn fail_permanently(
    state: &State,
    ct: &ConfigTemplate,
    key: &str,
    reason: &'static str,
    message: String,
) -> Result<Action, Error> {
    if let Ok(mut entries) = state.entries.lock() {
        entries.remove(key);
    }
    let previous = ct.status.clone().unwrap_or_default();
    let already = find_condition(&previous.conditions, types::RENDERED).is_some_and(|c| c.message == message);
    let now = k8s_openapi::jiff::Timestamp::now();
    let deps: Vec<Dependency> = Vec::new();
    let status = rendered_status(&previous, ct.meta().generation, Err((reason, &message)), &deps, now);
    apply_status(&state.ctx, ct, &status).await.map_err(Error::Status)?;
    if !already {
        state.ctx.event(&ct.object_ref(&()), true, reason, "Render", message).await;
    }
    Ok(Action::await_change())
}

/// Renders, publishes the result, triggers a reconcile, waits for a dependency change.
async fn render_loop(
    mut engine: Engine,
    mut watcher: Watcher<ConsulSource>,
    latest: Arc<Mutex<Option<Latest>>>,
    obj: ObjectRef<ConfigTemplate>,
    trigger: futures::channel::mpsc::UnboundedSender<ObjectRef<ConfigTemplate>>,
) {
    let mut failures: u32 = 0;
    loop {
        let result = watcher.render(&mut engine).await;
        let transient = result.as_ref().err().is_some_and(WatchError::is_transient);
        let deps = match &result {
            Ok(r) => r.deps.clone(),
            Err(_) => watcher.watched(),
        };
        let result = result.map(|r| r.output).map_err(|e| RenderFailure {
            message: e.to_string(),
            transient: e.is_transient(),
            denied: e.category() == "permission_denied",
        });
        if let Ok(mut slot) = latest.lock() {
            *slot = Some(Latest { result, deps });
        }
        if trigger.unbounded_send(obj.clone()).is_err() {
            return; // the controller stopped
        }
        if transient {
            failures = failures.saturating_add(1);
            let delay = crate::context::backoff_delay(failures, rand::random::<f64>()).min(Duration::from_secs(30));
            tokio::time::sleep(delay).await;
            continue;
        }
        failures = 0;
        watcher.changed().await;
    }
}

/// Label that lets ConfigTemplates write into an existing ConfigMap or Secret they did
/// not create (set by whoever may edit that object).
pub const OUTPUT_LABEL: &str = "concord.io/template-output";

/// Whether a ConfigTemplate may write into an existing output object: one that a
/// ConfigTemplate made (an owner reference to one), or labelled [`OUTPUT_LABEL`]`=true`.
/// Anything else (the ACL bootstrap Secret, an app's own ConfigMap) is not taken over.
pub fn output_writable(meta: &kube::api::ObjectMeta) -> bool {
    let made_by_a_template = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == ConfigTemplate::kind(&()) && o.api_version == ConfigTemplate::api_version(&()));
    let labelled = meta.labels.as_ref().and_then(|l| l.get(OUTPUT_LABEL)).is_some_and(|v| v == "true");
    made_by_a_template || labelled
}

/// The output object as it is now.
enum Current {
    /// Does not exist: the template may create it.
    Absent,
    /// Exists and the template may write it; the output key's bytes, if any.
    Writable(Option<Vec<u8>>),
    /// Exists and belongs to something else: never written, never read further.
    NotOwned(String),
}

/// The output object now: absent, writable (with the output key's bytes, the last good
/// output), or not the template's to write.
async fn current_output(ctx: &Context, ct: &ConfigTemplate, ns: &str) -> Result<Current, Error> {
    if let Some(KeyRef { name, key }) = &ct.spec.output.config_map {
        let api: Api<ConfigMap> = Api::namespaced(tenant_client(ctx, ct), ns);
        let current = api.get_opt(name).await.map_err(|source| Error::Output {
            kind: "ConfigMap",
            name: name.clone(),
            source,
        })?;
        return Ok(match current {
            None => Current::Absent,
            Some(c) if !output_writable(&c.metadata) => Current::NotOwned(not_owned("ConfigMap", name)),
            Some(c) => Current::Writable(c.data.and_then(|mut d| d.remove(key)).map(String::into_bytes)),
        });
    }
    if let Some(KeyRef { name, key }) = &ct.spec.output.secret {
        let api: Api<Secret> = Api::namespaced(tenant_client(ctx, ct), ns);
        // Metadata first: a Secret that is not the template's is never read.
        let meta = api.get_metadata_opt(name).await.map_err(|source| Error::Output {
            kind: "Secret",
            name: name.clone(),
            source,
        })?;
        match meta {
            None => return Ok(Current::Absent),
            Some(m) if !output_writable(&m.metadata) => return Ok(Current::NotOwned(not_owned("Secret", name))),
            Some(_) => {}
        }
        let current =
            api.get_opt(name).await.map_err(|source| Error::Output { kind: "Secret", name: name.clone(), source })?;
        return Ok(match current {
            None => Current::Absent,
            Some(c) => Current::Writable(c.data.and_then(|mut d| d.remove(key)).map(|v| v.0)),
        });
    }
    Ok(Current::Absent)
}

fn not_owned(kind: &str, name: &str) -> String {
    format!(
        "{kind} {name} exists and was not made by a ConfigTemplate; not overwritten (whoever may edit it can label it {OUTPUT_LABEL}=true)"
    )
}

/// Creates an absent output object, empty but owner-referenced, with a plain create: if
/// someone else created it since [`current_output`] looked, the create fails (409) and
/// the next reconcile finds an object that is not the template's. Server-side apply
/// alone would take such an object over.
async fn create_shell<K>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    owner: Option<&OwnerReference>,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug + Default,
{
    let mut shell = K::default();
    shell.meta_mut().name = Some(name.to_string());
    shell.meta_mut().owner_references = owner.map(|o| vec![o.clone()]);
    let params = PostParams { field_manager: Some(manager.to_string()), ..Default::default() };
    api.create(&params, &shell).await.map(|_| ())
}

/// Writes the output key when its bytes differ; returns a description and whether it
/// wrote. `current` is what [`current_output`] found: `None` when the object is absent
/// (it is created first), else the output key's bytes (never `NotOwned`).
async fn write_output(
    ctx: &Context,
    ct: &ConfigTemplate,
    ns: &str,
    manager: &str,
    output: &str,
    current: Option<Option<&[u8]>>,
) -> Result<(String, bool), Error> {
    let owner = ct.controller_owner_ref(&()).map(|mut o| {
        // Several templates may share one output object; only one owner may be the controller.
        o.controller = None;
        o
    });
    let params = PatchParams::apply(manager).force();
    if let Some(KeyRef { name, key }) = &ct.spec.output.config_map {
        let target = format!("ConfigMap {name} key {key}");
        let api: Api<ConfigMap> = Api::namespaced(tenant_client(ctx, ct), ns);
        let err = |source| Error::Output { kind: "ConfigMap", name: name.clone(), source };
        match current {
            Some(bytes) if bytes == Some(output.as_bytes()) => return Ok((target, false)),
            Some(_) => {}
            None => create_shell(&api, name, manager, owner.as_ref()).await.map_err(err)?,
        }
        let patch = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": name, "namespace": ns, "ownerReferences": owner.into_iter().collect::<Vec<_>>() },
            "data": { key: output },
        });
        api.patch(name, &params, &Patch::Apply(patch)).await.map_err(err)?;
        return Ok((target, true));
    }
    if let Some(KeyRef { name, key }) = &ct.spec.output.secret {
        let target = format!("Secret {name} key {key}");
        let api: Api<Secret> = Api::namespaced(tenant_client(ctx, ct), ns);
        let err = |source| Error::Output { kind: "Secret", name: name.clone(), source };
        match current {
            Some(bytes) if bytes == Some(output.as_bytes()) => return Ok((target, false)),
            Some(_) => {}
            None => create_shell(&api, name, manager, owner.as_ref()).await.map_err(err)?,
        }
        let data: BTreeMap<String, ByteString> = [(key.clone(), ByteString(output.as_bytes().to_vec()))].into();
        let patch = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": name, "namespace": ns, "ownerReferences": owner.into_iter().collect::<Vec<_>>() },
            "type": "Opaque",
            "data": data,
        });
        api.patch(name, &params, &Patch::Apply(patch)).await.map_err(err)?;
        return Ok((target, true));
    }
    Ok(("nowhere (spec.output is empty)".to_string(), false))
}

/// Stamps `hash` on a workload's pod template unless it is already there; false when the
/// workload does not exist (never created by this apply).
async fn annotate_workload(
    client: &kube::Client,
    ns: &str,
    manager: &str,
    w: &WorkloadRef,
    annotation: &str,
    hash: &str,
) -> Result<bool, Error> {
    match w.kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            let current = api.get_opt(&w.name).await;
            let current =
                current.map_err(|source| Error::Rollout { kind: "Deployment", name: w.name.clone(), source })?;
            let Some(d) = current else { return Ok(false) };
            let have = d.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations);
            stamp(&api, "apps/v1", "Deployment", &w.name, manager, annotation, hash, have).await?;
        }
        WorkloadKind::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            let current = api.get_opt(&w.name).await;
            let current =
                current.map_err(|source| Error::Rollout { kind: "StatefulSet", name: w.name.clone(), source })?;
            let Some(s) = current else { return Ok(false) };
            let have = s.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations);
            stamp(&api, "apps/v1", "StatefulSet", &w.name, manager, annotation, hash, have).await?;
        }
    }
    Ok(true)
}

#[allow(clippy::too_many_arguments)] // one call site per kind; a struct would only rename them
async fn stamp<K>(
    api: &Api<K>,
    api_version: &str,
    kind: &'static str,
    name: &str,
    manager: &str,
    annotation: &str,
    hash: &str,
    have: Option<BTreeMap<String, String>>,
) -> Result<(), Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if have.as_ref().and_then(|a| a.get(annotation)).map(String::as_str) == Some(hash) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": { "name": name },
        "spec": { "template": { "metadata": { "annotations": { annotation: hash } } } },
    });
    api.patch(name, &PatchParams::apply(manager).force(), &Patch::Apply(patch))
        .await
        .map_err(|source| Error::Rollout { kind, name: name.to_string(), source })?;
    Ok(())
}

fn error_policy(ct: Arc<ConfigTemplate>, error: &Error, state: Arc<State>) -> Action {
    tracing::warn!(template = %ct.name_any(), error = %error, "reconcile failed");
    requeue_after_failure(&state.ctx, CONTROLLER, ct.as_ref(), error.category())
}

/// Templates that read their text from, or write their output to, this ConfigMap.
fn templates_using(store: &Store<ConfigTemplate>, cm: &ConfigMap) -> Vec<ObjectRef<ConfigTemplate>> {
    let (ns, name) = (cm.namespace(), cm.name_any());
    store
        .state()
        .iter()
        .filter(|ct| ct.namespace() == ns)
        .filter(|ct| {
            ct.spec.template.config_map_ref.as_ref().is_some_and(|r| r.name == name)
                || ct.spec.output.config_map.as_ref().is_some_and(|r| r.name == name)
        })
        .map(|ct| ObjectRef::from_obj(ct.as_ref()))
        .collect()
}

/// Runs the controller until `stop` resolves.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let (trigger, triggered) = futures::channel::mpsc::unbounded();
    let controller = Controller::new(watched_api::<ConfigTemplate>(&ctx), watcher::Config::default());
    let store = controller.store();
    report_ready_when_primed(&ctx, CONTROLLER, store.clone());
    let state = Arc::new(State { ctx: ctx.clone(), entries: Mutex::new(HashMap::new()), trigger });
    let sweeper = tokio::spawn(sweep(state.clone(), store.clone()));
    let mapper_store = store.clone();
    controller
        .watches(watched_api::<ConfigMap>(&ctx), watcher::Config::default(), move |cm| {
            templates_using(&mapper_store, &cm)
        })
        .reconcile_on(triggered)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, state.clone())
        .for_each(|_| futures::future::ready(()))
        .await;
    sweeper.abort();
    if let Ok(mut entries) = state.entries.lock() {
        entries.clear();
    }
}

/// Stops the render tasks of deleted objects (the controller never reconciles those).
async fn sweep(state: Arc<State>, store: Store<ConfigTemplate>) {
    let mut tick = tokio::time::interval(SWEEP);
    loop {
        tick.tick().await;
        let live: std::collections::HashSet<String> = store.state().iter().map(|c| object_key(c.as_ref())).collect();
        if let Ok(mut entries) = state.entries.lock() {
            entries.retain(|k, _| live.contains(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::is_condition_true;

    fn now() -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(1_000).expect("time")
    }

    #[test]
    fn the_nginx_example_renders_upstream_servers() {
        use crate::template::deps::{Data, ServiceInstance, Snapshot};
        let yaml = include_str!("../../examples/configtemplate-nginx.yaml");
        let ct: ConfigTemplate = serde_yaml::from_str(yaml).expect("example parses");
        let text = ct.spec.template.inline.expect("inline template");
        let mut engine = Engine::compile("example", &text).expect("example compiles");
        let mut snapshot = Snapshot::default();
        let instance = ServiceInstance {
            id: "api-1".into(),
            name: "api".into(),
            node: "n".into(),
            address: "10.0.0.7".into(),
            node_address: "10.0.0.1".into(),
            port: 8080,
            tags: vec![],
            meta: Default::default(),
            status: "passing".into(),
        };
        snapshot.insert(
            Dependency::Service { name: "api".into(), tag: None, passing_only: true },
            Data::Service(vec![instance]),
        );
        let out = engine.render(Arc::new(snapshot)).result.expect("renders");
        assert!(out.contains("server 10.0.0.7:8080;"), "{out}");
        assert!(Wait::from_spec(ct.spec.wait.as_ref().expect("wait")).is_ok());
    }

    #[test]
    fn rollout_annotation_keys_are_valid_and_distinct() {
        assert_eq!(rollout_annotation("nginx"), "concord.io/config-hash-nginx");
        let long = "a".repeat(200);
        let key = rollout_annotation(&long);
        let name = key.strip_prefix("concord.io/").expect("prefixed");
        assert!(name.len() <= 63, "{name}");
        assert_ne!(rollout_annotation(&format!("{long}b")), key);
    }

    #[test]
    fn a_render_error_keeps_the_last_hash_and_says_why() {
        let deps = vec![Dependency::key("app/x")];
        let ok = rendered_status(&Default::default(), Some(1), Ok(("sha256:aa", 3, "ConfigMap c key k")), &deps, now());
        assert!(is_condition_true(&ok.conditions, types::RENDERED));
        let failed =
            rendered_status(&ok, Some(2), Err(("RenderFailed", "t: line 3: key \"app/x\" missing")), &deps, now());
        assert_eq!(failed.output_hash.as_deref(), Some("sha256:aa"));
        let c = find_condition(&failed.conditions, types::RENDERED).expect("set");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "RenderFailed"));
        assert!(c.message.contains("line 3"));
        assert_eq!(failed.dependencies.expect("deps").keys, ["app/x"]);
        assert_eq!(failed.observed_generation, Some(2));
    }
}
