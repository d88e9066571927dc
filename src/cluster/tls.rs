//! TLS of a managed cluster: the names of its two Secrets, and the pure certificate
//! work (a CA, and server certificates it signs). The DiscoveryCluster controller keeps
//! the Secrets; the cluster cache reads the CA to verify the servers.
//!
//! - `<name>-ca` (`tls.crt`, `tls.key`): the CA, made once, owned by the DiscoveryCluster,
//!   never rotated by concord (replace the Secret to rotate; the servers' certificate is
//!   then reissued).
//! - `<name>-server-tls` (`tls.crt`, `tls.key`, `ca.crt`): the servers' certificate,
//!   mounted into the pods. Reissued when its names change, when it nears its end, or
//!   when the CA changed.
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

/// Keys of both Secrets (the `kubernetes.io/tls` layout plus the CA).
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
pub const CA_KEY: &str = "ca.crt";
/// HTTPS port of the servers (Consul's default).
pub const HTTPS_PORT: i32 = 8501;
/// Annotations on the server Secret: what it was issued for, and until when.
pub const NAMES_ANNOTATION: &str = "concord.io/tls-names";
pub const NOT_AFTER_ANNOTATION: &str = "concord.io/tls-not-after";
/// How long a CA and a server certificate are valid, and when the latter is renewed.
const CA_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 3650);
const SERVER_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 365);
pub const RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(24 * 30);

pub fn ca_secret_name(cluster: &str) -> String {
    format!("{cluster}-ca")
}

pub fn server_secret_name(cluster: &str) -> String {
    format!("{cluster}-server-tls")
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the CA key in Secret {secret} is not a PEM private key")]
    BadCaKey { secret: String },
}

/// A CA as PEM: its certificate and private key.
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

// Never print the key.
impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("key_pem", &"***").finish_non_exhaustive()
    }
}

/// A server certificate as PEM, and its end of validity.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: Timestamp,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("not_after", &self.not_after).field("key_pem", &"***").finish()
    }
}

/// The CA's subject; deterministic, so the CA can sign again from its key alone.
fn ca_params(cluster: &str, namespace: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("concord CA {namespace}/{cluster}"));
    dn.push(DnType::OrganizationName, "concord");
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// `t`'s UTC day as (year, month, day): certificates here are valid from/to midnight.
fn ymd(t: Timestamp) -> (i32, u8, u8) {
    let date = t.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).date();
    (i32::from(date.year()), date.month() as u8, date.day() as u8)
}

/// Sets a validity window (rcgen's default runs until the year 4096).
fn set_validity(params: &mut CertificateParams, from: Timestamp, to: Timestamp) {
    let (y, m, d) = ymd(from);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(to);
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

/// A fresh CA for cluster `namespace/cluster`, valid from yesterday for ten years.
pub fn new_ca(cluster: &str, namespace: &str, now: Timestamp) -> Result<Ca, TlsError> {
    let key = KeyPair::generate()?;
    let mut params = ca_params(cluster, namespace)?;
    set_validity(&mut params, now - SignedDuration::from_hours(24), now + CA_VALIDITY);
    let cert = params.self_signed(&key)?;
    Ok(Ca { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// The names the servers' certificate carries: `server.<dc>.consul` (what Consul's
/// `verify_server_hostname` checks on internal RPC), every pod through the headless
/// Service, the client Service, and the pod's loopback (`localhost`, `127.0.0.1`).
pub fn server_names(cluster: &str, namespace: &str, datacenter: &str) -> Vec<String> {
    let headless = format!("{cluster}-server");
    let client = format!("{cluster}-client");
    let mut names = vec![format!("server.{datacenter}.consul")];
    for service in [&client, &headless] {
        names.push(service.clone());
        names.push(format!("{service}.{namespace}"));
        names.push(format!("{service}.{namespace}.svc"));
        names.push(format!("{service}.{namespace}.svc.cluster.local"));
    }
    names.push(format!("*.{headless}.{namespace}.svc"));
    names.push(format!("*.{headless}.{namespace}.svc.cluster.local"));
    names.push("localhost".to_string());
    names.push("127.0.0.1".to_string());
    names
}

/// A short, stable digest of a name list and CA (the server Secret's annotation): when
/// either changes, the certificate is reissued.
pub fn names_digest(names: &[String], ca_cert_pem: &str) -> String {
    let mut hasher = Sha256::new();
    for name in names {
        hasher.update(name.as_bytes());
        hasher.update(b"\n");
    }
    hasher.update(ca_cert_pem.as_bytes());
    hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A server certificate for `names`, signed by `ca` (the CA of `namespace/cluster`),
/// for both ends of TLS (servers dial each other on internal RPC), valid for a year.
pub fn issue_server_cert(
    ca: &Ca,
    ca_secret: &str,
    cluster: &str,
    namespace: &str,
    names: &[String],
    now: Timestamp,
) -> Result<Issued, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|_| TlsError::BadCaKey { secret: ca_secret.to_string() })?;
    // The issuer is the CA's subject and key; re-signing its (deterministic) params with
    // the same key yields the same issuer name and key identifier as the stored CA.
    let issuer = ca_params(cluster, namespace)?.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let not_after = now + SERVER_VALIDITY;
    set_validity(&mut params, now - SignedDuration::from_hours(24), not_after);
    let cert = params.signed_by(&key, &issuer, &ca_key)?;
    Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), not_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_cover_rpc_pods_services_and_loopback() {
        let names = server_names("consul", "ops", "dc1");
        for want in [
            "server.dc1.consul",
            "consul-client.ops.svc",
            "consul-client.ops.svc.cluster.local",
            "*.consul-server.ops.svc",
            "localhost",
            "127.0.0.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
    }

    #[test]
    fn the_digest_changes_with_the_names_and_the_ca() {
        let names = server_names("consul", "ops", "dc1");
        let other = server_names("consul", "ops", "dc2");
        assert_eq!(names_digest(&names, "a"), names_digest(&names, "a"));
        assert_ne!(names_digest(&names, "a"), names_digest(&other, "a"));
        assert_ne!(names_digest(&names, "a"), names_digest(&names, "b"));
    }

    #[test]
    fn a_ca_issues_server_certificates_and_never_prints_its_key() {
        let now = Timestamp::now();
        let ca = new_ca("consul", "ops", now).expect("CA");
        assert!(ca.cert_pem.contains("BEGIN CERTIFICATE") && ca.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
        let names = server_names("consul", "ops", "dc1");
        let issued = issue_server_cert(&ca, "consul-ca", "consul", "ops", &names, now).expect("issued");
        assert!(issued.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
        assert!(issued.not_after > now + SignedDuration::from_hours(24 * 364));
        let bad = Ca { cert_pem: ca.cert_pem.clone(), key_pem: "not a key".into() };
        assert!(matches!(
            issue_server_cert(&bad, "consul-ca", "consul", "ops", &names, now),
            Err(TlsError::BadCaKey { .. })
        ));
    }
}
