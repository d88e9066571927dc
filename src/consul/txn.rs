//! `/v1/txn`: atomic batches of KV and catalog operations, and batches larger than
//! Consul allows split into several transactions.

use base64::Engine;
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::catalog::{HealthCheck, Node, NodeService};
use super::error::{Error, Result};
use super::kv::KvPair;
use super::{Client, ConsulIndex};

/// Operations per transaction that every Consul server accepts: 64 was the limit
/// (`maxTxnOps` in Consul's `agent/txn_endpoint.go`) for years; 1.22 accepts 128. An
/// external cluster may run either, so concord stays at 64; more is refused with 413.
pub const MAX_TXN_OPS: usize = 64;

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    KvSet {
        key: String,
        value: Bytes,
        flags: u64,
    },
    /// Set only if the key's `ModifyIndex` is `index` (0: only if absent).
    KvCas {
        key: String,
        value: Bytes,
        flags: u64,
        index: ConsulIndex,
    },
    /// Fails the transaction if the key does not exist.
    KvGet {
        key: String,
    },
    KvGetTree {
        prefix: String,
    },
    /// Fails the transaction unless the key's `ModifyIndex` is `index`.
    KvCheckIndex {
        key: String,
        index: ConsulIndex,
    },
    KvCheckNotExists {
        key: String,
    },
    KvDelete {
        key: String,
    },
    KvDeleteTree {
        prefix: String,
    },
    KvDeleteCas {
        key: String,
        index: ConsulIndex,
    },
    NodeSet(Node),
    NodeDelete {
        node: String,
    },
    /// Registers (or replaces) a service instance on an existing node.
    ServiceSet {
        node: String,
        service: NodeService,
    },
    /// Like `ServiceSet`, only if the instance's `ModifyIndex` is `service.modify_index`.
    ServiceCas {
        node: String,
        service: NodeService,
    },
    /// Consul wants the service name as well as the instance ID.
    ServiceDelete {
        node: String,
        service_id: String,
        service_name: String,
    },
    /// Writes a check; `check.node` is required.
    CheckSet(HealthCheck),
    CheckCas(HealthCheck),
    CheckDelete {
        node: String,
        check_id: String,
    },
}

impl TxnOp {
    fn to_wire(&self) -> WireOp<'_> {
        let kv = |verb, key: &str| WireKv { verb, key: key.to_owned(), value: None, flags: 0, index: 0 };
        let encode = |v: &Bytes| Some(base64::engine::general_purpose::STANDARD.encode(v));
        match self {
            TxnOp::KvSet { key, value, flags } => {
                WireOp::Kv(WireKv { value: encode(value), flags: *flags, ..kv("set", key) })
            }
            TxnOp::KvCas { key, value, flags, index } => {
                WireOp::Kv(WireKv { value: encode(value), flags: *flags, index: index.0, ..kv("cas", key) })
            }
            TxnOp::KvGet { key } => WireOp::Kv(kv("get", key)),
            TxnOp::KvGetTree { prefix } => WireOp::Kv(kv("get-tree", prefix)),
            TxnOp::KvCheckIndex { key, index } => WireOp::Kv(WireKv { index: index.0, ..kv("check-index", key) }),
            TxnOp::KvCheckNotExists { key } => WireOp::Kv(kv("check-not-exists", key)),
            TxnOp::KvDelete { key } => WireOp::Kv(kv("delete", key)),
            TxnOp::KvDeleteTree { prefix } => WireOp::Kv(kv("delete-tree", prefix)),
            TxnOp::KvDeleteCas { key, index } => WireOp::Kv(WireKv { index: index.0, ..kv("delete-cas", key) }),
            TxnOp::NodeSet(node) => WireOp::Node { verb: "set", node: WireNode::Full(node) },
            TxnOp::NodeDelete { node } => WireOp::Node { verb: "delete", node: WireNode::Name { node } },
            TxnOp::ServiceSet { node, service } => {
                WireOp::Service { verb: "set", node, service: WireService::Full(service) }
            }
            TxnOp::ServiceCas { node, service } => {
                WireOp::Service { verb: "cas", node, service: WireService::Full(service) }
            }
            TxnOp::ServiceDelete { node, service_id, service_name } => WireOp::Service {
                verb: "delete",
                node,
                service: WireService::Id { id: service_id, service: service_name },
            },
            TxnOp::CheckSet(check) => WireOp::Check { verb: "set", check: WireCheck::Full(check) },
            TxnOp::CheckCas(check) => WireOp::Check { verb: "cas", check: WireCheck::Full(check) },
            TxnOp::CheckDelete { node, check_id } => {
                WireOp::Check { verb: "delete", check: WireCheck::Id { node, check_id } }
            }
        }
    }
}

#[derive(Serialize)]
enum WireOp<'a> {
    #[serde(rename = "KV")]
    Kv(WireKv),
    #[serde(rename_all = "PascalCase")]
    Node { verb: &'static str, node: WireNode<'a> },
    #[serde(rename_all = "PascalCase")]
    Service { verb: &'static str, node: &'a str, service: WireService<'a> },
    #[serde(rename_all = "PascalCase")]
    Check { verb: &'static str, check: WireCheck<'a> },
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WireKv {
    verb: &'static str,
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    flags: u64,
    #[serde(skip_serializing_if = "is_zero")]
    index: u64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireNode<'a> {
    Full(&'a Node),
    #[serde(rename_all = "PascalCase")]
    Name {
        node: &'a str,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireService<'a> {
    Full(&'a NodeService),
    Id {
        #[serde(rename = "ID")]
        id: &'a str,
        #[serde(rename = "Service")]
        service: &'a str,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireCheck<'a> {
    Full(&'a HealthCheck),
    #[serde(rename_all = "PascalCase")]
    Id {
        node: &'a str,
        #[serde(rename = "CheckID")]
        check_id: &'a str,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What one operation returned (deletes return nothing; KV writes return the entry
/// without its value).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub enum TxnOpResult {
    #[serde(rename = "KV")]
    Kv(KvPair),
    Node(Node),
    Service(NodeService),
    Check(HealthCheck),
}

/// Why a transaction was rolled back: the operation at `op_index` failed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnError {
    /// Index into the operations passed in (for chunked transactions: into the whole
    /// list, not the chunk).
    pub op_index: usize,
    pub what: String,
}

/// How a transaction ended. A rollback is an outcome, not an [`Error`]: it is Consul
/// answering the question the transaction asked (did every check hold?).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    Committed(Vec<TxnOpResult>),
    RolledBack {
        errors: Vec<TxnError>,
        /// Operations committed before the failed transaction (always 0 for
        /// [`Client::txn`]; the earlier chunks for [`Client::txn_chunked`]).
        committed_ops: usize,
    },
}

impl TxnOutcome {
    pub fn is_committed(&self) -> bool {
        matches!(self, TxnOutcome::Committed(_))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireResponse {
    #[serde(default)]
    results: Option<Vec<TxnOpResult>>,
    #[serde(default)]
    errors: Option<Vec<TxnError>>,
}

/// Splits `ops` into transactions Consul accepts, in order.
pub fn chunk_ops(ops: &[TxnOp]) -> std::slice::Chunks<'_, TxnOp> {
    ops.chunks(MAX_TXN_OPS)
}

impl Client {
    /// `PUT /v1/txn`: all of `ops` or none of them. At most [`MAX_TXN_OPS`] operations;
    /// use [`Client::txn_chunked`] for more.
    ///
    /// Retried like any idempotent write: KV `set` and catalog `set` repeat to the same
    /// state, and a CAS or check operation applied by a first attempt that looked failed
    /// makes the repeat roll back, so nothing is ever applied twice (the caller then
    /// sees `RolledBack` and re-reads). Do not mix in `delete-tree` followed by `set`
    /// if a blind repeat matters to you; no concord caller does.
    pub async fn txn(&self, ops: &[TxnOp]) -> Result<TxnOutcome> {
        if ops.is_empty() {
            return Ok(TxnOutcome::Committed(Vec::new()));
        }
        if ops.len() > MAX_TXN_OPS {
            return Err(Error::InvalidRequest(format!(
                "a transaction holds at most {MAX_TXN_OPS} operations, got {}",
                ops.len()
            )));
        }
        let wire: Vec<WireOp<'_>> = ops.iter().map(TxnOp::to_wire).collect();
        let req = self.request(Method::PUT, ["v1", "txn"]).json_body(&wire)?;
        let answer = self.execute(&req).await?;
        if answer.status == StatusCode::CONFLICT {
            let body: WireResponse = answer.json(&req)?;
            return Ok(TxnOutcome::RolledBack { errors: body.errors.unwrap_or_default(), committed_ops: 0 });
        }
        let body: WireResponse = answer.success(&req)?.json(&req)?;
        Ok(TxnOutcome::Committed(body.results.unwrap_or_default()))
    }

    /// Applies any number of operations as consecutive transactions of at most
    /// [`MAX_TXN_OPS`], in order, stopping at the first one that rolls back.
    ///
    /// Atomicity holds per chunk only: on `RolledBack`, `committed_ops` operations
    /// (whole earlier chunks) are applied and stay applied; on `Err`, an unknown number
    /// of chunks are. Callers that converge on desired state (every concord writer)
    /// just read again and write what is still missing.
    pub async fn txn_chunked(&self, ops: &[TxnOp]) -> Result<TxnOutcome> {
        let mut results = Vec::with_capacity(ops.len());
        let mut committed_ops = 0;
        for chunk in chunk_ops(ops) {
            match self.txn(chunk).await? {
                TxnOutcome::Committed(mut chunk_results) => {
                    results.append(&mut chunk_results);
                    committed_ops += chunk.len();
                }
                TxnOutcome::RolledBack { errors, .. } => {
                    return Ok(TxnOutcome::RolledBack { errors: offset_errors(errors, committed_ops), committed_ops });
                }
            }
        }
        Ok(TxnOutcome::Committed(results))
    }
}

/// Makes a chunk's `OpIndex`es point into the whole operation list.
fn offset_errors(errors: Vec<TxnError>, offset: usize) -> Vec<TxnError> {
    errors.into_iter().map(|e| TxnError { op_index: e.op_index + offset, what: e.what }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(i: usize) -> TxnOp {
        TxnOp::KvSet { key: format!("k/{i}"), value: Bytes::from(i.to_string()), flags: 0 }
    }

    #[test]
    fn chunks_are_at_most_64_ops_and_keep_order() {
        let ops: Vec<TxnOp> = (0..150).map(set).collect();
        let chunks: Vec<&[TxnOp]> = chunk_ops(&ops).collect();
        assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), [64, 64, 22]);
        assert_eq!(chunks[1][0], set(64));
        assert_eq!(chunk_ops(&ops[..64]).count(), 1);
        assert_eq!(chunk_ops(&ops[..65]).count(), 2);
        assert_eq!(chunk_ops(&[]).count(), 0);
    }

    #[test]
    fn rollback_indexes_point_into_the_whole_list() {
        let errors = vec![TxnError { op_index: 3, what: "failed to set key".into() }];
        assert_eq!(offset_errors(errors, 128)[0].op_index, 131);
    }

    #[test]
    fn kv_ops_serialize_with_base64_values() {
        let ops = [
            TxnOp::KvCas { key: "app/a".into(), value: Bytes::from_static(b"hello"), flags: 7, index: ConsulIndex(0) },
            TxnOp::KvDeleteCas { key: "app/b".into(), index: ConsulIndex(12) },
        ];
        let wire: Vec<_> = ops.iter().map(TxnOp::to_wire).collect();
        assert_eq!(
            serde_json::to_value(&wire).expect("encode"),
            json!([
                {"KV": {"Verb": "cas", "Key": "app/a", "Value": "aGVsbG8=", "Flags": 7}},
                {"KV": {"Verb": "delete-cas", "Key": "app/b", "Index": 12}}
            ])
        );
    }

    #[test]
    fn catalog_ops_serialize_like_consul_expects() {
        let ops = [
            TxnOp::ServiceDelete { node: "k8s-sync".into(), service_id: "web-1".into(), service_name: "web".into() },
            TxnOp::CheckDelete { node: "k8s-sync".into(), check_id: "web-1/ready".into() },
            TxnOp::NodeDelete { node: "old".into() },
        ];
        let wire: Vec<_> = ops.iter().map(TxnOp::to_wire).collect();
        assert_eq!(
            serde_json::to_value(&wire).expect("encode"),
            json!([
                {"Service": {"Verb": "delete", "Node": "k8s-sync", "Service": {"ID": "web-1", "Service": "web"}}},
                {"Check": {"Verb": "delete", "Check": {"Node": "k8s-sync", "CheckID": "web-1/ready"}}},
                {"Node": {"Verb": "delete", "Node": {"Node": "old"}}}
            ])
        );
    }

    #[test]
    fn rolled_back_answer_decodes_errors() {
        let body = r#"{"Results":null,"Errors":[{"OpIndex":1,"What":"failed to lock key \"a\""}]}"#;
        let wire: WireResponse = serde_json::from_str(body).expect("decode");
        assert_eq!(wire.errors.expect("errors")[0].op_index, 1);
        let ok = r#"{"Results":[{"KV":{"Key":"a","Flags":0,"Value":null,"CreateIndex":5,"ModifyIndex":5,"LockIndex":0}}],"Errors":null}"#;
        let wire: WireResponse = serde_json::from_str(ok).expect("decode");
        assert!(matches!(&wire.results.expect("results")[0], TxnOpResult::Kv(p) if p.key == "a"));
    }
}
