//! TLS between the manager and its agents: the cluster CA, the certificates it issues, and
//! the names they are checked against.
//!
//! - The cluster CA is made once per database by the manager. Every manager sharing the
//!   database signs with it, so any of them can reach any agent.
//! - An agent makes its own key and sends a certificate signing request when it registers.
//!   The manager ignores what the request asks for and issues a certificate for one name,
//!   [`agent_server_name`] of the host id it has authenticated. The manager checks that
//!   name when it calls the agent, so one agent's certificate cannot stand in for another
//!   host's, whatever address either claims.
//! - A manager that serves TLS uses a certificate from the same CA. An agent pins the CA
//!   with the fingerprint the join token carries, before it sends the token anywhere.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

/// How long an agent's or a manager's certificate is valid. Both are issued again at every
/// start (and an agent's at every registration), so this only bounds a stolen one.
const LEAF_VALIDITY_DAYS: i64 = 365;
/// How long the cluster CA is valid.
const CA_VALIDITY_DAYS: i64 = 20 * 365;
/// The biggest certificate signing request the manager reads.
pub const MAX_CSR_BYTES: usize = 16 << 10;

/// A TLS error in terms an operator can act on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

fn err(what: &str) -> impl FnOnce(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError(format!("{what}: {e}"))
}

/// The name an agent's certificate is issued for, and the one the manager checks when it
/// calls that agent.
pub fn agent_server_name(host_id: &str) -> String {
    format!("{}.agents.hearth", host_id.to_ascii_lowercase())
}

/// The SHA-256 of a PEM certificate's DER, in lowercase hex: what a join token pins.
pub fn fingerprint(cert_pem: &str) -> Result<String, TlsError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| TlsError(format!("not a PEM certificate: {e}")))?;
    Ok(hex::encode(Sha256::digest(der.as_ref())))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // A day of slack for hosts whose clocks run a little behind.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

fn named(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Hearth");
    dn.push(DnType::CommonName, cn);
    dn
}

/// A new cluster CA: its certificate and its private key, both PEM.
pub fn new_ca() -> Result<(String, String), TlsError> {
    let key = KeyPair::generate().map_err(err("generating the CA key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = named("Hearth cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params
        .self_signed(&key)
        .map_err(err("signing the CA certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The cluster CA, ready to sign.
pub struct ClusterCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl ClusterCa {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(err("reading the CA key"))?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(err("reading the CA certificate"))?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs an agent's request for the one name its host may have. The request proves the
    /// agent holds the key; everything else in it is ignored.
    pub fn sign_agent(&self, csr_pem: &str, host_id: &str) -> Result<String, TlsError> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(TlsError(format!(
                "the certificate signing request is over {MAX_CSR_BYTES} bytes"
            )));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(err("the certificate signing request is not valid"))?;
        let name = agent_server_name(host_id);
        let mut params = leaf(
            &name,
            vec![SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(err("the host id does not make a DNS name"))?,
            )],
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(err("signing the agent's certificate"))?;
        Ok(cert.pem())
    }

    /// A certificate and key (PEM) for a manager serving TLS under `names`: DNS names or IP
    /// addresses.
    pub fn manager_cert(&self, names: &[String]) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate().map_err(err("generating the manager's key"))?;
        let mut sans = Vec::new();
        for n in names {
            sans.push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) if is_dns_name(n) => SanType::DnsName(
                    n.clone()
                        .try_into()
                        .map_err(|e| TlsError(format!("{n:?} is not a DNS name: {e}")))?,
                ),
                Err(_) => {
                    return Err(TlsError(format!(
                        "{n:?} is neither an IP address nor a DNS name"
                    )))
                }
            });
        }
        let mut params = leaf("Hearth manager", sans);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(err("signing the manager's certificate"))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Letters, digits and dashes in dot-separated labels of 1–63 characters.
fn is_dns_name(n: &str) -> bool {
    n.len() <= 253
        && n.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn leaf(cn: &str, sans: Vec<SanType>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = named(cn);
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_VALIDITY_DAYS);
    params
}

/// An agent's TLS key, made at each start and kept in memory only.
pub struct AgentKey(KeyPair);

impl AgentKey {
    pub fn generate() -> Result<AgentKey, TlsError> {
        KeyPair::generate()
            .map(AgentKey)
            .map_err(err("generating the agent's key"))
    }

    /// A certificate signing request for this key.
    pub fn csr_pem(&self, host_id: &str) -> Result<String, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = named(&agent_server_name(host_id));
        params
            .serialize_request(&self.0)
            .and_then(|csr| csr.pem())
            .map_err(err("making the certificate signing request"))
    }

    pub fn key_pem(&self) -> String {
        self.0.serialize_pem()
    }
}

/// The client side of a TLS channel to an agent or a manager: trusting only the cluster CA,
/// and checking `server_name` (or, without one, the URL's host).
pub fn client_config(ca_pem: &str, server_name: Option<&str>) -> tonic::transport::ClientTlsConfig {
    let cfg = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem));
    match server_name {
        Some(n) => cfg.domain_name(n),
        None => cfg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_gets_a_certificate_for_its_own_name_only() {
        let (ca_cert, ca_key) = new_ca().unwrap();
        let ca = ClusterCa::from_pem(&ca_cert, &ca_key).unwrap();
        let key = AgentKey::generate().unwrap();
        let csr = key.csr_pem("0192-ABC").unwrap();
        let cert = ca.sign_agent(&csr, "0192-ABC").unwrap();
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let sans: Vec<String> = parsed
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(sans, vec!["DNSName(0192-abc.agents.hearth)".to_string()]);
        // Issued by the CA, and checked against it.
        let ca_der = CertificateDer::from_pem_slice(ca_cert.as_bytes()).unwrap();
        let (_, ca_parsed) = x509_parser::parse_x509_certificate(ca_der.as_ref()).unwrap();
        parsed
            .verify_signature(Some(ca_parsed.public_key()))
            .unwrap();
        assert_eq!(fingerprint(&ca_cert).unwrap().len(), 64);
    }

    #[test]
    fn a_broken_or_forged_request_is_refused() {
        let (ca_cert, ca_key) = new_ca().unwrap();
        let ca = ClusterCa::from_pem(&ca_cert, &ca_key).unwrap();
        assert!(ca.sign_agent("not a csr", "h").is_err());
        assert!(ca.sign_agent(&"x".repeat(MAX_CSR_BYTES + 1), "h").is_err());
        // A request whose signature does not match its key (one byte of it flipped).
        let csr = AgentKey::generate().unwrap().csr_pem("h").unwrap();
        let der =
            rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap();
        let mut bytes = der.as_ref().to_vec();
        let n = bytes.len();
        bytes[n - 3] ^= 1;
        assert!(CertificateSigningRequestParams::from_der(&bytes.into()).is_err());
        assert!(fingerprint("junk").is_err());
    }

    #[test]
    fn a_manager_certificate_names_its_addresses() {
        let (ca_cert, ca_key) = new_ca().unwrap();
        let ca = ClusterCa::from_pem(&ca_cert, &ca_key).unwrap();
        let (cert, key) = ca
            .manager_cert(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        assert!(cert.contains("BEGIN CERTIFICATE") && key.contains("PRIVATE KEY"));
        assert!(ca.manager_cert(&["bad name!".into()]).is_err());
    }
}
