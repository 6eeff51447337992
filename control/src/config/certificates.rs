//! Certificate authentication settings (spec § 5.2, § 8, § 25.2): the
//! appliance's own tunnel endpoint certificate and, per customer gateway
//! private certificate, the CA chain it is issued under.
//!
//! ```toml
//! [certificates]
//! # Our tunnel endpoint certificate: end entity first, then its
//! # intermediates (PEM), and its private key (PEM or DER; RSA ≥ 2048 or
//! # ECDSA P-256/P-384/P-521).
//! endpoint_certificate_file = "/etc/vpn/certs/endpoint-chain.pem"
//! endpoint_private_key_file = "/etc/vpn/private/endpoint.key"
//!
//! # What a customer gateway's `certificate` names: the CA chain its
//! # private certificate is issued under. Any certificate under that chain
//! # is accepted (seamless rotation).
//! [[certificates.authorities]]
//! certificate = "arn:aws:acm:eu-west-1:111122223333:certificate/abc"
//! ca_chain_file = "/etc/vpn/ca/branch1-chain.pem"
//! ```
//!
//! A tunnel authenticates with certificates when its customer gateway
//! names a `certificate`; otherwise with its pre-shared key.
//! [`CertificatesConfig::validate_into`] checks the references without
//! touching files; [`CertificatesConfig::cert_auth`] reads the files when
//! a tunnel is set up and says which file failed and why.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::Errors;
use super::gateway::{CustomerGateway, check_name};
use crate::ike::cert::{CertAuth, CertError, LocalCredentials, TrustAnchors, WallClock};

/// The `[certificates]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatesConfig {
    /// Our tunnel endpoint certificate chain (PEM, end entity first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_certificate_file: Option<PathBuf>,
    /// Its private key (PEM or DER). Never echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_private_key_file: Option<PathBuf>,
    /// CA chains, by the private certificate name customer gateways use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorities: Vec<CertificateAuthority>,
}

/// The CA chain a customer gateway's private certificate is issued under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateAuthority {
    /// The name or ARN a customer gateway's `certificate` field holds.
    pub certificate: String,
    /// PEM bundle (or one DER certificate) of the CA certificates to
    /// accept the gateway's chain under: the subordinate CA, its root, or
    /// both.
    pub ca_chain_file: PathBuf,
}

/// Why a tunnel's certificate authentication could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertConfigError {
    /// `[certificates]` has no endpoint certificate or key.
    #[error(
        "certificates.endpoint_certificate_file and endpoint_private_key_file are needed for certificate authentication"
    )]
    NoEndpointCertificate,
    /// No authority entry for the gateway's certificate name.
    #[error("no certificates.authorities entry for certificate {0:?}")]
    UnknownCertificate(String),
    /// A file that does not load.
    #[error("{field}: {source}")]
    Load {
        /// The configuration field naming the file.
        field: &'static str,
        /// What went wrong with it.
        source: CertError,
    },
}

impl CertificatesConfig {
    /// Whether the section is empty (not written back then).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Checks the section and the gateways' references to it, without
    /// reading files.
    pub(crate) fn validate_into(&self, cgws: &[CustomerGateway], errs: &mut Errors<'_>) {
        let mut c = errs.nested("certificates");
        match (
            &self.endpoint_certificate_file,
            &self.endpoint_private_key_file,
        ) {
            (Some(_), None) => c.missing(
                "endpoint_private_key_file",
                "the endpoint certificate needs its private key",
            ),
            (None, Some(_)) => c.missing(
                "endpoint_certificate_file",
                "a private key needs its certificate",
            ),
            _ => {}
        }
        for (i, a) in self.authorities.iter().enumerate() {
            let p = format!("authorities[{i}]");
            check_name(&mut c, &format!("{p}.certificate"), Some(&a.certificate));
            if a.ca_chain_file.as_os_str().is_empty() {
                c.missing(
                    &format!("{p}.ca_chain_file"),
                    "a PEM file of CA certificates",
                );
            }
            if let Some(j) = self.authorities[..i]
                .iter()
                .position(|b| b.certificate == a.certificate)
            {
                c.duplicate(
                    &format!("{p}.certificate"),
                    &a.certificate,
                    format!("certificates.authorities[{j}].certificate"),
                );
            }
        }
        for g in cgws {
            let Some(name) = &g.certificate else {
                continue;
            };
            let field = format!("customer_gateways[{}].certificate", g.id);
            if !self.authorities.iter().any(|a| &a.certificate == name) {
                errs.unknown_reference(
                    &field,
                    name,
                    "a certificates.authorities[].certificate (the CA chain it is issued under)",
                );
            }
            if self.endpoint_certificate_file.is_none() {
                errs.missing(
                    "certificates.endpoint_certificate_file",
                    format!(
                        "{field} asks for certificate authentication, which needs the appliance's endpoint certificate"
                    ),
                );
            }
        }
    }

    /// Loads the certificate authentication of a tunnel whose customer
    /// gateway names `certificate`. `clock` maps the engine's time to
    /// Unix time for validity checks.
    ///
    /// # Errors
    /// [`CertConfigError`] naming the field and file that failed.
    pub fn cert_auth(
        &self,
        certificate: &str,
        clock: WallClock,
    ) -> Result<Arc<CertAuth>, CertConfigError> {
        let (Some(cert), Some(key)) = (
            &self.endpoint_certificate_file,
            &self.endpoint_private_key_file,
        ) else {
            return Err(CertConfigError::NoEndpointCertificate);
        };
        let authority = self
            .authorities
            .iter()
            .find(|a| a.certificate == certificate)
            .ok_or_else(|| CertConfigError::UnknownCertificate(certificate.to_owned()))?;
        let local = LocalCredentials::load(cert, key).map_err(|source| CertConfigError::Load {
            field: "certificates.endpoint_certificate_file / endpoint_private_key_file",
            source,
        })?;
        let trust = TrustAnchors::load(&authority.ca_chain_file).map_err(|source| {
            CertConfigError::Load {
                field: "certificates.authorities[].ca_chain_file",
                source,
            }
        })?;
        Ok(Arc::new(CertAuth {
            local,
            trust,
            clock,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::config::ConfigError;
    use crate::config::error::finish;

    fn cgw(cert: Option<&str>) -> CustomerGateway {
        CustomerGateway {
            id: "cgw-1".into(),
            ip_address: Some("198.51.100.7".parse().unwrap()),
            bgp_asn: None,
            certificate: cert.map(str::to_owned),
            device_name: None,
        }
    }

    fn check(c: &CertificatesConfig, g: &[CustomerGateway]) -> Vec<ConfigError> {
        let mut out = Vec::new();
        c.validate_into(g, &mut Errors::new("", &mut out));
        finish(out).err().unwrap_or_default()
    }

    fn fields(e: &[ConfigError]) -> Vec<String> {
        e.iter().map(|e| e.field().to_owned()).collect()
    }

    #[test]
    fn parses_and_validates() {
        let c: CertificatesConfig = toml::from_str(
            r#"
            endpoint_certificate_file = "/etc/vpn/ep.pem"
            endpoint_private_key_file = "/etc/vpn/ep.key"
            [[authorities]]
            certificate = "arn:aws:acm:eu-west-1:1:certificate/abc"
            ca_chain_file = "/etc/vpn/chain.pem"
            "#,
        )
        .unwrap();
        assert!(check(&c, &[cgw(Some("arn:aws:acm:eu-west-1:1:certificate/abc"))]).is_empty());
        assert!(check(&c, &[cgw(None)]).is_empty());
        assert!(CertificatesConfig::default().is_empty());
        assert!(!c.is_empty());
    }

    #[test]
    fn broken_references_are_named() {
        let mut c = CertificatesConfig {
            endpoint_certificate_file: Some("/x.pem".into()),
            endpoint_private_key_file: None,
            authorities: vec![
                CertificateAuthority {
                    certificate: "a".into(),
                    ca_chain_file: "/a.pem".into(),
                },
                CertificateAuthority {
                    certificate: "a".into(),
                    ca_chain_file: "/b.pem".into(),
                },
            ],
        };
        let e = check(&c, &[cgw(Some("b"))]);
        assert_eq!(
            fields(&e),
            vec![
                "certificates.endpoint_private_key_file",
                "certificates.authorities[1].certificate",
                "customer_gateways[cgw-1].certificate",
            ],
            "{e:?}"
        );
        c.endpoint_certificate_file = None;
        c.authorities.truncate(1);
        let e = check(&c, &[cgw(Some("a"))]);
        assert_eq!(
            fields(&e),
            vec!["certificates.endpoint_certificate_file"],
            "{e:?}"
        );
        assert!(
            e[0].to_string()
                .contains("customer_gateways[cgw-1].certificate")
        );
    }

    #[test]
    fn loading_names_the_file_that_failed() {
        let dir = tempfile::tempdir().unwrap();
        let c = CertificatesConfig {
            endpoint_certificate_file: Some(dir.path().join("ep.pem")),
            endpoint_private_key_file: Some(dir.path().join("ep.key")),
            authorities: vec![CertificateAuthority {
                certificate: "a".into(),
                ca_chain_file: dir.path().join("chain.pem"),
            }],
        };
        let clock = WallClock::new(Instant::now(), 1_900_000_000);
        assert_eq!(
            c.cert_auth("zzz", clock).unwrap_err(),
            CertConfigError::UnknownCertificate("zzz".into())
        );
        let e = c.cert_auth("a", clock).unwrap_err();
        assert!(
            e.to_string().contains("endpoint_certificate_file") && e.to_string().contains("ep.pem"),
            "{e}"
        );
        assert_eq!(
            CertificatesConfig::default()
                .cert_auth("a", clock)
                .unwrap_err(),
            CertConfigError::NoEndpointCertificate
        );
    }
}
