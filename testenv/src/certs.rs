//! TLS material for kube-apiserver, generated fresh per environment: a CA, a serving
//! certificate for 127.0.0.1/localhost signed by it, and the service-account key pair.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

use crate::error::Error;

/// PEM-encoded keys and certificates. Keys are PKCS#8 ECDSA P-256, which Go's TLS stack
/// and Kubernetes' key loaders accept.
pub(crate) struct Pki {
    pub ca_cert: String,
    pub ca_key: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub sa_private_key: String,
    pub sa_public_key: String,
}

pub(crate) fn generate() -> Result<Pki, Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "concord-testenv-ca");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = ca_params.self_signed(&ca_key)?;

    let serving_key = KeyPair::generate()?;
    // The in-cluster names too, so a client built from in-cluster config also verifies.
    let mut params = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "10.96.0.1".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ])?;
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving = params.signed_by(&serving_key, &ca, &ca_key)?;

    let sa_key = KeyPair::generate()?;
    Ok(Pki {
        ca_cert: ca.pem(),
        ca_key: ca_key.serialize_pem(),
        serving_cert: serving.pem(),
        serving_key: serving_key.serialize_pem(),
        sa_private_key: sa_key.serialize_pem(),
        sa_public_key: sa_key.public_key_pem(),
    })
}

/// TLS material of a loopback Consul cluster: a CA and one server certificate shared by
/// every server (they all live on 127.0.0.1), valid for `server.<datacenter>.consul`
/// (what `verify_server_hostname` checks on internal RPC), `localhost` and `127.0.0.1`,
/// for both ends of TLS (servers dial each other).
pub(crate) struct ConsulPki {
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
}

pub(crate) fn generate_consul(datacenter: &str) -> Result<ConsulPki, Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "concord-testenv-consul-ca");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = ca_params.self_signed(&ca_key)?;

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        format!("server.{datacenter}.consul"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ])?;
    params.distinguished_name.push(DnType::CommonName, format!("server.{datacenter}.consul"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let server = params.signed_by(&server_key, &ca, &ca_key)?;
    Ok(ConsulPki { ca_cert: ca.pem(), server_cert: server.pem(), server_key: server_key.serialize_pem() })
}
