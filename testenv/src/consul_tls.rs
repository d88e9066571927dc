//! TLS for the loopback Consul cluster ([`crate::ConsulOptions::tls`]): the servers serve
//! HTTPS (and no plain HTTP) on the API port and verify each other on internal RPC
//! (`verify_incoming`, `verify_outgoing`, `verify_server_hostname`), with a CA made
//! fresh for the cluster. Kept apart from `consul.rs`, which only calls in here.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::error::Error;
use crate::workdir::WorkDir;

/// Where the PEM files of one cluster are, and the CA's text (for clients).
#[derive(Clone, Debug)]
pub(crate) struct TlsFiles {
    pub ca_pem: String,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// Generates the cluster's CA and server certificate into `dir`.
pub(crate) fn write_files(dir: &WorkDir, datacenter: &str) -> Result<TlsFiles, Error> {
    let pki = crate::certs::generate_consul(datacenter)?;
    Ok(TlsFiles {
        ca_file: dir.write("consul-ca.crt", &pki.ca_cert)?,
        cert_file: dir.write("consul-server.crt", &pki.server_cert)?,
        key_file: dir.write("consul-server.key", &pki.server_key)?,
        ca_pem: pki.ca_cert,
    })
}

/// Turns a plain-HTTP server config into one that serves HTTPS on `api_port` (the port
/// the harness picked for HTTP) with verified internal RPC.
pub(crate) fn apply(config: &mut Value, files: &TlsFiles, api_port: u16) {
    config["ports"]["http"] = json!(-1);
    config["ports"]["https"] = json!(api_port);
    config["tls"] = json!({
        "defaults": {
            "ca_file": files.ca_file,
            "cert_file": files.cert_file,
            "key_file": files.key_file,
            "verify_incoming": false,
            "verify_outgoing": true,
        },
        "internal_rpc": {
            "verify_incoming": true,
            "verify_server_hostname": true,
        },
    });
}
