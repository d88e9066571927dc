//! The rendering engine: a compiled Handlebars template plus concord's helpers, rendered
//! against a [`Snapshot`]. Pure: it never does I/O. A helper that asks for data the
//! snapshot does not hold yet records it as missing and yields an empty placeholder; the
//! caller fetches what is missing and renders again (consul-template's two-phase render).
use super::deps::{Data, Dependency, Snapshot};
use base64::Engine as _;
use handlebars::{Context, Handlebars, Helper, HelperDef, JsonValue, RenderContext, RenderError, ScopedJson};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Why a template cannot produce output. Both kinds name the line; neither ever quotes
/// the data the template read (it may be secret).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The text is not a valid Handlebars template.
    #[error("{name}: syntax error{}: {message}", position(*line, *column))]
    Syntax { name: String, line: usize, column: usize, message: String },
    /// Rendering failed (a missing key, a bad helper argument, ...).
    #[error("{name}: {}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Render { name: String, line: Option<usize>, message: String },
}

/// " at line L, column C", or nothing when the parser could not say (line 0).
fn position(line: usize, column: usize) -> String {
    if line == 0 { String::new() } else { format!(" at line {line}, column {column}") }
}

impl TemplateError {
    /// Bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            TemplateError::Syntax { .. } => "template_syntax",
            TemplateError::Render { .. } => "template_render",
        }
    }

    pub fn line(&self) -> Option<usize> {
        match self {
            TemplateError::Syntax { line, .. } => Some(*line).filter(|l| *l > 0),
            TemplateError::Render { line, .. } => *line,
        }
    }
}

/// The result of one render pass over a snapshot.
#[derive(Debug)]
pub struct Pass {
    /// The output; meaningful only when nothing is missing.
    pub result: Result<String, TemplateError>,
    /// Everything the template read, in the order it read it.
    pub deps: Vec<Dependency>,
    /// What it read that the snapshot did not hold.
    pub missing: Vec<Dependency>,
}

impl Pass {
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

#[derive(Default)]
struct State {
    snapshot: Arc<Snapshot>,
    deps: Vec<Dependency>,
    seen: HashSet<Dependency>,
    missing: Vec<Dependency>,
}

impl State {
    /// Records `dep` as read and returns its data, or `None` (recorded as missing).
    fn lookup(&mut self, dep: Dependency) -> Option<Data> {
        let data = self.snapshot.get(&dep).cloned();
        if self.seen.insert(dep.clone()) {
            if data.is_none() {
                self.missing.push(dep.clone());
            }
            self.deps.push(dep);
        }
        data
    }
}

/// A compiled template with its helpers. Rendering takes `&mut self` because the helpers
/// share per-render state; use one engine per task.
pub struct Engine {
    name: String,
    registry: Handlebars<'static>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("name", &self.name).finish_non_exhaustive()
    }
}

const TEMPLATE: &str = "t";

impl Engine {
    /// Compiles `text`; `name` (a file path or object name) prefixes every error.
    pub fn compile(name: &str, text: &str) -> Result<Engine, TemplateError> {
        let mut registry = Handlebars::new();
        // Config files, not HTML: `{{key "x"}}` writes the bytes as they are.
        registry.register_escape_fn(handlebars::no_escape);
        let state = Arc::new(Mutex::new(State::default()));
        for (helper, kind) in [
            ("key", Kind::Key),
            ("keyOrDefault", Kind::KeyOrDefault),
            ("ls", Kind::Ls),
            ("tree", Kind::Tree),
            ("service", Kind::Service),
            ("services", Kind::Services),
        ] {
            registry.register_helper(helper, Box::new(ConsulHelper { kind, state: state.clone() }));
        }
        for (helper, f) in PURE_HELPERS {
            registry.register_helper(helper, Box::new(PureHelper(*f)));
        }
        registry.register_template_string(TEMPLATE, text).map_err(|e| {
            let (line, column) = e.pos().unwrap_or((0, 0));
            // One line: pest's messages can span several.
            let message = e.reason().to_string().split_whitespace().collect::<Vec<_>>().join(" ");
            TemplateError::Syntax { name: name.to_string(), line, column, message }
        })?;
        Ok(Engine { name: name.to_string(), registry, state })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders against `snapshot`, recording what the template read.
    pub fn render(&mut self, snapshot: Arc<Snapshot>) -> Pass {
        if let Ok(mut state) = self.state.lock() {
            *state = State { snapshot, ..State::default() };
        }
        let rendered = self.registry.render(TEMPLATE, &json!({}));
        let (deps, missing) = match self.state.lock() {
            Ok(mut state) => {
                let state = std::mem::take(&mut *state);
                (state.deps, state.missing)
            }
            Err(_) => (Vec::new(), Vec::new()),
        };
        let result = rendered.map_err(|e| TemplateError::Render {
            name: self.name.clone(),
            line: e.line_no,
            message: render_message(&e),
        });
        Pass { result, deps, missing }
    }
}

fn render_message(e: &RenderError) -> String {
    match e.reason() {
        handlebars::RenderErrorReason::MissingVariable(Some(path)) => format!("variable {path:?} not found"),
        handlebars::RenderErrorReason::HelperNotFound(name) => format!("unknown helper {name:?}"),
        reason => reason.to_string(),
    }
}

fn other(message: impl Into<String>) -> RenderError {
    handlebars::RenderErrorReason::Other(message.into()).into()
}

fn param<'a>(h: &'a Helper<'_>, index: usize) -> Option<&'a JsonValue> {
    h.param(index).map(|p| p.value())
}

fn str_param<'a>(h: &'a Helper<'_>, index: usize) -> Result<&'a str, RenderError> {
    match param(h, index) {
        Some(JsonValue::String(s)) => Ok(s),
        Some(other_value) => {
            Err(other(format!("{}: argument {} must be a string, not {}", h.name(), index + 1, kind_of(other_value))))
        }
        None => Err(other(format!("{}: missing argument {}", h.name(), index + 1))),
    }
}

fn kind_of(v: &JsonValue) -> &'static str {
    match v {
        JsonValue::Null => "null (undefined)",
        JsonValue::Bool(_) => "a boolean",
        JsonValue::Number(_) => "a number",
        JsonValue::String(_) => "a string",
        JsonValue::Array(_) => "a list",
        JsonValue::Object(_) => "an object",
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Key,
    KeyOrDefault,
    Ls,
    Tree,
    Service,
    Services,
}

/// The helpers that read Consul data through the snapshot.
struct ConsulHelper {
    kind: Kind,
    state: Arc<Mutex<State>>,
}

impl HelperDef for ConsulHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let mut state = self.state.lock().map_err(|_| other("template state is poisoned"))?;
        let value = match self.kind {
            Kind::Key => {
                let path = str_param(h, 0)?;
                match state.lookup(Dependency::key(path)) {
                    Some(Data::Key(Some(v))) => json!(v),
                    Some(Data::Key(None)) => {
                        return Err(other(format!(
                            "key {path:?} does not exist in Consul KV (use keyOrDefault for an optional key)"
                        )));
                    }
                    _ => json!(""),
                }
            }
            Kind::KeyOrDefault => {
                let path = str_param(h, 0)?;
                let fallback = param(h, 1).cloned().unwrap_or(JsonValue::Null);
                match state.lookup(Dependency::key(path)) {
                    Some(Data::Key(Some(v))) => json!(v),
                    _ => fallback,
                }
            }
            Kind::Ls | Kind::Tree => {
                let dep = Dependency::prefix(str_param(h, 0)?);
                match state.lookup(dep) {
                    Some(Data::Prefix(entries)) => {
                        let direct_only = matches!(self.kind, Kind::Ls);
                        let list: Vec<_> = entries.iter().filter(|e| !direct_only || !e.key.contains('/')).collect();
                        serde_json::to_value(list).map_err(|e| other(e.to_string()))?
                    }
                    _ => json!([]),
                }
            }
            Kind::Service => {
                let name = str_param(h, 0)?.to_string();
                let tag = match h.hash_get("tag").map(|p| p.value()) {
                    None | Some(JsonValue::Null) => None,
                    Some(JsonValue::String(t)) => Some(t.clone()),
                    Some(v) => return Err(other(format!("service: tag must be a string, not {}", kind_of(v)))),
                };
                let passing_only = match h.hash_get("passing").map(|p| p.value()) {
                    None => true,
                    Some(JsonValue::Bool(b)) => *b,
                    Some(v) => {
                        return Err(other(format!("service: passing must be true or false, not {}", kind_of(v))));
                    }
                };
                match state.lookup(Dependency::Service { name, tag, passing_only }) {
                    Some(Data::Service(instances)) => {
                        serde_json::to_value(instances).map_err(|e| other(e.to_string()))?
                    }
                    _ => json!([]),
                }
            }
            Kind::Services => match state.lookup(Dependency::Services) {
                Some(Data::Services(list)) => serde_json::to_value(list).map_err(|e| other(e.to_string()))?,
                _ => json!([]),
            },
        };
        Ok(ScopedJson::Derived(value))
    }
}

type PureFn = fn(&Helper<'_>) -> Result<JsonValue, RenderError>;

/// Helpers that only transform their arguments.
struct PureHelper(PureFn);

impl HelperDef for PureHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        (self.0)(h).map(ScopedJson::Derived)
    }
}

const PURE_HELPERS: &[(&str, PureFn)] = &[
    ("toJSON", to_json),
    ("toJSONPretty", to_json_pretty),
    ("parseJSON", parse_json),
    ("base64Encode", base64_encode),
    ("base64Decode", base64_decode),
    ("join", join),
    ("split", split),
    ("indent", indent),
    ("default", default),
];

fn to_json(h: &Helper<'_>) -> Result<JsonValue, RenderError> {
    let v = param(h, 0).cloned().unwrap_or(JsonValue::Null);
    serde_json::to_string(&v).map(JsonValue::String).map_err(|e| other(format!("toJSON: {e}")))
}

fn to_json_pretty(h: &Helper<'_>) -> Result<JsonValue, RenderError> {
    let v = param(h, 0).cloned().unwrap_or(JsonValue::Null);
    serde_json::to_string_pretty(&v).map(JsonValue::String).map_err(|e| other(format!("toJSONPretty: {e}")))
}

fn parse_json(h: &Helper<'_>) -> Result<JsonValue, RenderError> {
    let text = str_param(h, 0)?;
    if text.is_empty() {
        // What a key not fetched yet looks like during the first pass; also a natural "nothing".
        return Ok(JsonValue::Null);
    }
    // serde_json's message names line and column of the value, never its content.
    serde_json::from_str(text).map_err(|e| other(format!("parseJSON: invalid JSON: {e}")))
}

fn base64_encode(h: &Helper<'_>) -> Result<JsonValue, RenderError> {
    Ok(json!(base64::engine::general_purpose::STANDARD.encode(str_param(h, 0)?)))
}

fn base64_decode(h: &Helper<'_>) -> Result<JsonValue, RenderError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(str_param(h, 0)?.trim())
        .map_err(|e| other(format!("base64Decode: invalid base64: {e}")))?;
    String::from_utf8(bytes).map(JsonValue::String).map_err(|_| other("base64Decode: the decoded bytes are not UTF-8"))
}

/// A value as text the way `{{x}}` would print it: strings bare, the rest as JSON.
fn text_of(v: &JsonValue) -> String {
    match v {
        JsonValue::String(s) => s.clone(),
        JsonValue::Null => String::new(),
        other_value => other_value.to_string(),
    }
}

fn join(h: &Helper<'_>) -> Result<JsonValue, RenderError> {
    let sep = str_param(h, 1)?;
    match param(h, 0) {
        Some(JsonValue::Array(items)) => Ok(json!(items.iter().map(text_of).collect::<Vec<_>>().join(sep))),
        Some(JsonValue::Null) => Ok(json!("")),
        Some(v) => Err(other(format!("join: argument 1 must be a list, not {}", kind_of(v)))),
        None => Err(other("join: missing argument 1")),
    }
}

fn split(h: &Helper<'_>) -> Result<JsonValue, RenderError> {
    let text = str_param(h, 0)?;
    let sep = str_param(h, 1)?;
    if text.is_empty() {
        return Ok(json!([]));
    }
    if sep.is_empty() {
        return Err(other("split: the separator is empty"));
    }
    Ok(json!(text.split(sep).collect::<Vec<_>>()))
}

/// `indent 4 text`: every non-empty line of `text` gets 4 more leading spaces.
fn indent(h: &Helper<'_>) -> Result<JsonValue, RenderError> {
    let width = match param(h, 0) {
        Some(JsonValue::Number(n)) => n.as_u64().filter(|w| *w <= 256).ok_or_else(|| other("indent: width 0..256"))?,
        Some(v) => return Err(other(format!("indent: argument 1 must be a number, not {}", kind_of(v)))),
        None => return Err(other("indent: missing argument 1")),
    };
    let text = text_of(param(h, 1).unwrap_or(&JsonValue::Null));
    let pad = " ".repeat(width as usize);
    let out: Vec<String> =
        text.split('\n').map(|line| if line.is_empty() { String::new() } else { format!("{pad}{line}") }).collect();
    Ok(json!(out.join("\n")))
}

/// `default value fallback`: `value` unless it is undefined, null or empty.
fn default(h: &Helper<'_>) -> Result<JsonValue, RenderError> {
    let value = param(h, 0).cloned().unwrap_or(JsonValue::Null);
    let empty = match &value {
        JsonValue::Null => true,
        JsonValue::String(s) => s.is_empty(),
        JsonValue::Array(a) => a.is_empty(),
        JsonValue::Object(o) => o.is_empty(),
        _ => false,
    };
    if empty {
        param(h, 1).cloned().ok_or_else(|| other("default: missing argument 2 (the fallback)"))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::deps::{KvEntry, ServiceInstance};

    fn snapshot(entries: Vec<(Dependency, Data)>) -> Arc<Snapshot> {
        let mut s = Snapshot::default();
        for (d, v) in entries {
            s.insert(d, v);
        }
        Arc::new(s)
    }

    fn key(k: &str, v: Option<&str>) -> (Dependency, Data) {
        (Dependency::key(k), Data::Key(v.map(str::to_string)))
    }

    fn render(text: &str, snap: Arc<Snapshot>) -> Pass {
        Engine::compile("test.tpl", text).expect("compiles").render(snap)
    }

    fn instance(id: &str, addr: &str, port: u16) -> ServiceInstance {
        ServiceInstance {
            id: id.into(),
            name: "api".into(),
            node: "n1".into(),
            address: addr.into(),
            node_address: "10.0.0.1".into(),
            port,
            tags: vec!["v1".into()],
            meta: [("zone".to_string(), "a".to_string())].into(),
            status: "passing".into(),
        }
    }

    #[test]
    fn first_pass_records_missing_data_and_second_pass_renders() {
        let text = "host={{key \"db/host\"}} port={{keyOrDefault \"db/port\" \"5432\"}}";
        let pass = render(text, Arc::new(Snapshot::default()));
        assert!(!pass.is_complete());
        assert_eq!(pass.missing, vec![Dependency::key("db/host"), Dependency::key("db/port")]);
        let pass = render(text, snapshot(vec![key("db/host", Some("pg")), key("db/port", None)]));
        assert!(pass.is_complete());
        assert_eq!(pass.result.expect("renders"), "host=pg port=5432");
        assert_eq!(pass.deps.len(), 2);
    }

    #[test]
    fn output_is_not_html_escaped() {
        let pass = render("{{key \"x\"}}", snapshot(vec![key("x", Some("<a & 'b'>"))]));
        assert_eq!(pass.result.expect("renders"), "<a & 'b'>");
    }

    #[test]
    fn a_missing_key_names_the_key_and_the_line() {
        let text = "a\nb\nvalue = {{key \"app/missing\"}}\n";
        let err = render(text, snapshot(vec![key("app/missing", None)])).result.expect_err("fails");
        assert_eq!(err.line(), Some(3));
        let msg = err.to_string();
        assert!(msg.contains("app/missing") && msg.contains("line 3") && msg.contains("test.tpl"), "{msg}");
    }

    #[test]
    fn a_missing_key_inside_a_block_names_its_own_line() {
        let text = "{{#each (tree \"c\")}}\n{{this.key}}\n{{key \"nope\"}}\n{{/each}}\n";
        let snap = snapshot(vec![
            (
                Dependency::prefix("c"),
                Data::Prefix(vec![KvEntry { full_key: "c/a".into(), key: "a".into(), value: "1".into() }]),
            ),
            key("nope", None),
        ]);
        let err = render(text, snap).result.expect_err("fails");
        assert_eq!(err.line(), Some(3), "{err}");
    }

    #[test]
    fn a_syntax_error_names_the_line_and_column_in_one_line() {
        let err = Engine::compile("bad.tpl", "ok\n{{#each x}}\n{{/if}}\n").expect_err("does not compile");
        let msg = err.to_string();
        assert!(matches!(err, TemplateError::Syntax { line: 3, .. }), "{msg}");
        assert!(msg.starts_with("bad.tpl: syntax error at line 3"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn ls_lists_direct_children_and_tree_everything() {
        let entries = vec![
            KvEntry { full_key: "c/a".into(), key: "a".into(), value: "1".into() },
            KvEntry { full_key: "c/d/b".into(), key: "d/b".into(), value: "2".into() },
        ];
        let snap = snapshot(vec![(Dependency::prefix("c/"), Data::Prefix(entries))]);
        let text =
            "{{#each (ls \"c\")}}{{this.key}}={{this.value}};{{/each}}|{{#each (tree \"/c\")}}{{this.key}};{{/each}}";
        let pass = render(text, snap);
        assert_eq!(pass.result.expect("renders"), "a=1;|a;d/b;");
        assert_eq!(pass.deps, vec![Dependency::prefix("c")], "one dependency for both");
    }

    #[test]
    fn service_instances_expose_address_port_and_metadata() {
        let dep = Dependency::Service { name: "api".into(), tag: None, passing_only: true };
        let snap = snapshot(vec![(
            dep,
            Data::Service(vec![instance("a1", "10.0.0.5", 8080), instance("a2", "10.0.0.6", 8081)]),
        )]);
        let text = "{{#each (service \"api\")}}server {{this.address}}:{{this.port}} # {{this.id}} {{this.node}} {{join this.tags \",\"}} {{this.meta.zone}} {{this.status}}\n{{/each}}";
        let out = render(text, snap).result.expect("renders");
        assert_eq!(out, "server 10.0.0.5:8080 # a1 n1 v1 a passing\nserver 10.0.0.6:8081 # a2 n1 v1 a passing\n");
    }

    #[test]
    fn service_options_select_the_dependency() {
        let pass = render("{{#each (service \"api\" tag=\"v2\" passing=false)}}x{{/each}}", Arc::default());
        assert_eq!(
            pass.missing,
            vec![Dependency::Service { name: "api".into(), tag: Some("v2".into()), passing_only: false }]
        );
        let err = render("{{service \"api\" passing=\"yes\"}}", Arc::default()).result.expect_err("bad option");
        assert!(err.to_string().contains("passing must be true or false"), "{err}");
    }

    #[test]
    fn pure_helpers() {
        let snap = snapshot(vec![
            key("j", Some(r#"{"port":8080,"hosts":["a","b"]}"#)),
            key("b", Some("aGk=")),
            key("m", Some("a\nb")),
        ]);
        let text = concat!(
            "{{#with (parseJSON (key \"j\"))}}{{port}} {{join hosts \"+\"}}{{/with}}|",
            "{{toJSON (split \"x,y\" \",\")}}|{{base64Decode (key \"b\")}}|{{base64Encode \"hi\"}}|",
            "{{default (keyOrDefault \"nope\" \"\") \"fallback\"}}|{{indent 2 (key \"m\")}}"
        );
        let mut s = (*snap).clone();
        s.insert(Dependency::key("nope"), Data::Key(None));
        let out = render(text, Arc::new(s)).result.expect("renders");
        assert_eq!(out, "8080 a+b|[\"x\",\"y\"]|hi|aGk=|fallback|  a\n  b");
    }

    #[test]
    fn bad_json_is_reported_without_quoting_the_value() {
        let err = render("\n{{parseJSON (key \"j\")}}", snapshot(vec![key("j", Some("{secret-value"))]))
            .result
            .expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.contains("line 2") && msg.contains("parseJSON"), "{msg}");
        assert!(!msg.contains("secret-value"), "{msg}");
    }

    #[test]
    fn one_megabyte_of_output_renders() {
        let entries: Vec<KvEntry> = (0..1024)
            .map(|i| KvEntry { full_key: format!("big/{i:04}"), key: format!("{i:04}"), value: "x".repeat(1000) })
            .collect();
        let snap = snapshot(vec![(Dependency::prefix("big"), Data::Prefix(entries))]);
        let out =
            render("{{#each (tree \"big\")}}{{this.key}}={{this.value}}\n{{/each}}", snap).result.expect("renders");
        assert_eq!(out.len(), 1024 * (4 + 1 + 1000 + 1));
    }
}
