//! The endpoint's files, read and checked: the server certificate chain
//! and its key (they parse and match), the client CA chain (CA
//! certificates, and the server certificate chains to them, since clients
//! verify the server against the same `<ca>`), the optional CRL (at most
//! 20,000 entries, issued by one of those CAs) and the tls-crypt key.
//!
//! This is the one part of the endpoint's validation that does I/O; the
//! manager runs it when an endpoint is created or its files change, and
//! reports failures with the same field paths as the pure rules.
//! Signatures of the CRL are not checked here (only its issuer's name):
//! the runtime that enforces the CRL checks them when it loads it.

use std::path::Path;

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::endpoint::{ClientVpnEndpoint, MAX_CRL_ENTRIES};
use crate::config::{ConfigError, Errors, finish};
use crate::openvpn::tls::{self, TlsSetupError};
use crate::openvpn::tls_crypt::{KeyFileError, StaticKey};

/// What an exported client configuration needs from the files.
#[derive(Debug, Clone)]
pub struct EndpointMaterial {
    /// The client CA chain as PEM text (the `<ca>` of the `.ovpn`).
    pub ca_pem: String,
    /// The tls-crypt key in OpenVPN's file format.
    pub tls_crypt_key: String,
    /// The server certificate's subject common name (`verify-x509-name`).
    pub server_common_name: String,
    /// Entries in the CRL (0 without one).
    pub crl_entries: usize,
}

fn read(errs: &mut Errors<'_>, field: &str, path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            errs.invalid(field, path.display(), format!("cannot be read: {e}"));
            None
        }
    }
}

fn text(errs: &mut Errors<'_>, field: &str, path: &Path) -> Option<String> {
    let b = read(errs, field, path)?;
    match String::from_utf8(b) {
        Ok(s) => Some(s),
        Err(_) => {
            errs.invalid(field, path.display(), "is not PEM text");
            None
        }
    }
}

/// DER of every `CERTIFICATE` block of `pem_text`.
fn cert_ders(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect()
}

/// Reads and checks `ep`'s files.
///
/// # Errors
/// Every problem, each naming the field of the file at fault
/// (`client_vpn_endpoints[<id>].server_private_key_file`), the path and
/// what is wrong. Key material is never echoed.
pub fn check_files(ep: &ClientVpnEndpoint) -> Result<EndpointMaterial, Vec<ConfigError>> {
    let mut out = Vec::new();
    let mut errs = Errors::new(format!("client_vpn_endpoints[{}]", ep.id), &mut out);
    let chain = text(
        &mut errs,
        "server_certificate_file",
        &ep.server_certificate_file,
    );
    let key = text(
        &mut errs,
        "server_private_key_file",
        &ep.server_private_key_file,
    );
    let ca = text(&mut errs, "client_ca_chain_file", &ep.client_ca_chain_file);
    let tc = text(&mut errs, "tls_crypt_key_file", &ep.tls_crypt_key_file);

    let mut server_common_name = String::new();
    let mut ca_subjects: Vec<Vec<u8>> = Vec::new();
    if let Some(ca) = &ca {
        for (i, der) in cert_ders(ca).iter().enumerate() {
            match X509Certificate::from_der(der) {
                Ok((_, c)) if c.is_ca() => ca_subjects.push(c.subject().as_raw().to_vec()),
                Ok((_, c)) => errs.invalid(
                    "client_ca_chain_file",
                    ep.client_ca_chain_file.display(),
                    format!(
                        "certificate {i} ({}) is not a CA certificate (basicConstraints cA)",
                        c.subject()
                    ),
                ),
                Err(e) => errs.invalid(
                    "client_ca_chain_file",
                    ep.client_ca_chain_file.display(),
                    format!("certificate {i} does not parse: {e}"),
                ),
            }
        }
    }
    if let (Some(ca), Some(chain), Some(key)) = (&ca, &chain, &key) {
        match tls::server_config(ca, chain, key) {
            Ok(_) => {}
            Err(e) => {
                let field = match &e {
                    TlsSetupError::Pem { what, .. }
                    | TlsSetupError::Missing(what)
                    | TlsSetupError::Rustls { what, .. } => match *what {
                        "client CA" => "client_ca_chain_file",
                        "server key" => "server_private_key_file",
                        _ if matches!(
                            &e,
                            TlsSetupError::Rustls {
                                source: rustls::Error::InconsistentKeys(_),
                                ..
                            }
                        ) =>
                        {
                            "server_private_key_file"
                        }
                        _ => "server_certificate_file",
                    },
                    _ => "client_ca_chain_file",
                };
                let path = match field {
                    "client_ca_chain_file" => &ep.client_ca_chain_file,
                    "server_private_key_file" => &ep.server_private_key_file,
                    _ => &ep.server_certificate_file,
                };
                errs.invalid(field, path.display(), format!("not usable: {e}"));
            }
        }
    }
    if let Some(chain) = &chain {
        let ders = cert_ders(chain);
        match ders.first().map(|d| X509Certificate::from_der(d)) {
            Some(Ok((_, leaf))) => {
                match leaf
                    .subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok())
                {
                    Some(cn) if !cn.is_empty() && !cn.contains(['\n', '\r', '"']) => {
                        server_common_name = cn.to_owned();
                    }
                    _ => errs.invalid(
                        "server_certificate_file",
                        ep.server_certificate_file.display(),
                        "the server certificate needs a subject common name (clients verify it with verify-x509-name)",
                    ),
                }
                let server_auth = leaf
                    .extended_key_usage()
                    .ok()
                    .flatten()
                    .is_some_and(|e| e.value.server_auth || e.value.any);
                if !server_auth {
                    errs.invalid(
                        "server_certificate_file",
                        ep.server_certificate_file.display(),
                        "the server certificate needs the serverAuth extended key usage (clients check it with remote-cert-tls server)",
                    );
                }
                // The top of the chain must be issued by a CA of the
                // client CA file: clients verify the server with it.
                let top = ders
                    .last()
                    .and_then(|d| X509Certificate::from_der(d).ok())
                    .map(|(_, c)| c.issuer().as_raw().to_vec());
                if ca.is_some()
                    && !ca_subjects.is_empty()
                    && top.is_some_and(|issuer| !ca_subjects.contains(&issuer))
                {
                    errs.conflict(
                        "server_certificate_file",
                        ep.server_certificate_file.display(),
                        "client_ca_chain_file: the server certificate must chain to a CA in it (the exported file's <ca>, which clients verify the server with)",
                    );
                }
            }
            Some(Err(e)) => errs.invalid(
                "server_certificate_file",
                ep.server_certificate_file.display(),
                format!("the certificate does not parse: {e}"),
            ),
            // Reported by server_config above.
            None => {}
        }
    }
    let crl_entries = ep
        .crl_file
        .as_deref()
        .map_or(0, |path| check_crl(&mut errs, path, &ca_subjects));
    let mut tls_crypt_key = String::new();
    if let Some(tc) = &tc {
        match StaticKey::parse(tc) {
            Ok(k) => tls_crypt_key = k.to_file_text(),
            Err(e) => {
                let why = match e {
                    KeyFileError::NotHex(_) => "a character that is not a hex digit".to_owned(),
                    other => other.to_string(),
                };
                errs.invalid(
                    "tls_crypt_key_file",
                    ep.tls_crypt_key_file.display(),
                    format!("not an OpenVPN static key (openvpn --genkey tls-crypt FILE): {why}"),
                );
            }
        }
    }
    finish(out)?;
    Ok(EndpointMaterial {
        ca_pem: ca.unwrap_or_default(),
        tls_crypt_key,
        server_common_name,
        crl_entries,
    })
}

/// Checks the CRL at `path` (PEM `X509 CRL` or DER); returns its entries.
fn check_crl(errs: &mut Errors<'_>, path: &Path, ca_subjects: &[Vec<u8>]) -> usize {
    let Some(bytes) = read(errs, "crl_file", path) else {
        return 0;
    };
    let der = match pem::parse(&bytes) {
        Ok(p) if p.tag() == "X509 CRL" => p.into_contents(),
        Ok(p) => {
            errs.invalid(
                "crl_file",
                path.display(),
                format!("a PEM block {:?}, expected \"X509 CRL\"", p.tag()),
            );
            return 0;
        }
        Err(_) => bytes,
    };
    match CertificateRevocationList::from_der(&der) {
        Ok((_, crl)) => {
            let n = crl.iter_revoked_certificates().count();
            if n > MAX_CRL_ENTRIES {
                errs.out_of_range(
                    "crl_file",
                    format!("{} ({n} entries)", path.display()),
                    format!("at most {MAX_CRL_ENTRIES} entries"),
                );
            }
            if !ca_subjects.is_empty() && !ca_subjects.contains(&crl.issuer().as_raw().to_vec()) {
                errs.conflict(
                    "crl_file",
                    path.display(),
                    format!(
                        "client_ca_chain_file: the CRL's issuer ({}) is not one of its CAs",
                        crl.issuer()
                    ),
                );
            }
            n
        }
        Err(e) => {
            errs.invalid(
                "crl_file",
                path.display(),
                format!("not a certificate revocation list: {e}"),
            );
            0
        }
    }
}
