//! The control channel's TLS server: rustls (aws-lc-rs provider) with TLS 1.2
//! and 1.3, a server certificate, and mandatory client certificates that
//! chain to the endpoint's client CA (rustls-webpki path validation:
//! signatures, validity, basic constraints, `clientAuth` extended key
//! usage). rustls is the one TLS stack in the workspace; aws-lc-rs is
//! already the IKE crypto backend.
//!
//! Revocation: an optional CRL ([`Crl`], PEM or DER, signed by the client
//! CA, up to [`MAX_CRL_ENTRIES`]) is checked by rustls-webpki for the
//! client's own certificate at every handshake (renegotiations included);
//! a certificate whose issuer has no CRL is refused, as OpenVPN's
//! `crl-verify` does. Reloading builds a new configuration: sessions keep
//! theirs, and [`super::server::Server::reload_tls`] disconnects those the
//! new list revokes.

use std::collections::HashSet;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs1KeyDer,
    PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::server::{ServerConfig, WebPkiClientVerifier};

/// Why the TLS server cannot be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// PEM that does not decode.
    #[error("{what}: bad PEM: {source}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The decoder's complaint.
        source: pem::PemError,
    },
    /// A PEM input without the block it must hold.
    #[error("{0}: no usable PEM block")]
    Missing(&'static str),
    /// rustls refused the CA, certificate or key.
    #[error("{what}: {source}")]
    Rustls {
        /// Which step.
        what: &'static str,
        /// rustls' error.
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built.
    #[error("client CA: {0}")]
    Verifier(String),
    /// The CRL does not parse or is too long.
    #[error("CRL: {0}")]
    Crl(String),
}

/// Most revoked certificates in one CRL (the endpoint's limit).
pub const MAX_CRL_ENTRIES: usize = 20_000;

/// A certificate revocation list: its DER for rustls and the revoked
/// (issuer, serial) pairs for checking connected clients.
#[derive(Clone)]
pub struct Crl {
    der: CertificateRevocationListDer<'static>,
    issuer: Vec<u8>,
    serials: HashSet<Vec<u8>>,
}

impl std::fmt::Debug for Crl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crl")
            .field("entries", &self.serials.len())
            .finish_non_exhaustive()
    }
}

impl Crl {
    /// Parses a CRL, PEM (`X509 CRL`) or DER.
    ///
    /// # Errors
    /// [`TlsSetupError::Crl`]: not a CRL, or more than [`MAX_CRL_ENTRIES`].
    pub fn parse(bytes: &[u8]) -> Result<Self, TlsSetupError> {
        let der = if bytes.starts_with(b"-----") {
            let text = std::str::from_utf8(bytes).map_err(|e| TlsSetupError::Crl(e.to_string()))?;
            blocks("CRL", text)?
                .into_iter()
                .find(|p| p.tag() == "X509 CRL")
                .ok_or(TlsSetupError::Missing("CRL"))?
                .into_contents()
        } else {
            bytes.to_vec()
        };
        let (rest, crl) =
            x509_parser::parse_x509_crl(&der).map_err(|e| TlsSetupError::Crl(e.to_string()))?;
        if !rest.is_empty() {
            return Err(TlsSetupError::Crl("trailing bytes".into()));
        }
        let mut serials = HashSet::new();
        for r in crl.iter_revoked_certificates() {
            if serials.len() == MAX_CRL_ENTRIES {
                return Err(TlsSetupError::Crl(format!(
                    "more than {MAX_CRL_ENTRIES} revoked certificates"
                )));
            }
            serials.insert(r.raw_serial().to_vec());
        }
        let issuer = crl.issuer().as_raw().to_vec();
        Ok(Self {
            der: CertificateRevocationListDer::from(der),
            issuer,
            serials,
        })
    }

    /// Revoked certificates listed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.serials.len()
    }

    /// Whether none are.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.serials.is_empty()
    }

    /// Whether the DER certificate `cert` is on the list (same issuer
    /// name, same serial).
    #[must_use]
    pub fn revokes(&self, cert: &[u8]) -> bool {
        x509_parser::parse_x509_certificate(cert).is_ok_and(|(_, c)| {
            c.issuer().as_raw() == self.issuer.as_slice() && self.serials.contains(c.raw_serial())
        })
    }
}

fn blocks(what: &'static str, pem_text: &str) -> Result<Vec<pem::Pem>, TlsSetupError> {
    pem::parse_many(pem_text).map_err(|source| TlsSetupError::Pem { what, source })
}

fn certs(
    what: &'static str,
    pem_text: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let v: Vec<_> = blocks(what, pem_text)?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if v.is_empty() {
        return Err(TlsSetupError::Missing(what));
    }
    Ok(v)
}

fn key(pem_text: &str) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    for p in blocks("server key", pem_text)? {
        let tag = p.tag().to_owned();
        let der = p.into_contents();
        match tag.as_str() {
            "PRIVATE KEY" => return Ok(PrivatePkcs8KeyDer::from(der).into()),
            "EC PRIVATE KEY" => return Ok(PrivateSec1KeyDer::from(der).into()),
            "RSA PRIVATE KEY" => return Ok(PrivatePkcs1KeyDer::from(der).into()),
            _ => {}
        }
    }
    Err(TlsSetupError::Missing("server key"))
}

/// Builds the server configuration: `client_ca_pem` holds the CA
/// certificate(s) client certificates must chain to, `chain_pem` the
/// server certificate (and intermediates), `key_pem` its key (PKCS#8,
/// SEC1 or PKCS#1).
///
/// # Errors
/// [`TlsSetupError`] naming the input at fault.
pub fn server_config(
    client_ca_pem: &str,
    chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    server_config_with_crl(client_ca_pem, chain_pem, key_pem, None)
}

/// [`server_config`] that also refuses client certificates `crl` revokes.
///
/// # Errors
/// [`TlsSetupError`] naming the input at fault (a CRL not signed by the
/// client CA included).
pub fn server_config_with_crl(
    client_ca_pem: &str,
    chain_pem: &str,
    key_pem: &str,
    crl: Option<&Crl>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for c in certs("client CA", client_ca_pem)? {
        roots.add(c).map_err(|source| TlsSetupError::Rustls {
            what: "client CA",
            source,
        })?;
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(crl) = crl {
        builder = builder
            .with_crls([crl.der.clone()])
            .only_check_end_entity_revocation();
    }
    let verifier = builder
        .build()
        .map_err(|e| TlsSetupError::Verifier(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsSetupError::Rustls {
            what: "protocol versions",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs("server certificate", chain_pem)?, key(key_pem)?)
        .map_err(|source| TlsSetupError::Rustls {
            what: "server certificate",
            source,
        })?;
    // OpenVPN never resumes sessions: no tickets, no cache.
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(cfg))
}

/// The subject common name of a DER certificate, for logs and events.
#[must_use]
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
