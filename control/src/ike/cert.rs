//! X.509 certificate authentication for IKEv2: CERT and CERTREQ payloads
//! ([RFC 7296 § 3.6, § 3.7]), signature AUTH ([RFC 7296 § 2.15, § 3.8]:
//! RSA PKCS#1 v1.5 (method 1), ECDSA (methods 9–11, [RFC 4754]) and the
//! RFC 7427 Digital Signature method (14) with RSA PKCS#1 v1.5, RSA-PSS
//! and ECDSA), and validation of the peer's certificate chain as the spec
//! asks (§ 5.2, § 25.2):
//!
//! 1. the end-entity certificate carries the Authority Key Identifier,
//!    Subject Key Identifier and Basic Constraints extensions; its key
//!    usage, if present, allows digital signatures;
//! 2. a path is built from it to one of the configured trust anchors
//!    through the intermediates the peer sent: an issuer is a certificate
//!    whose subject is the child's issuer name and whose SKI equals the
//!    child's AKI key identifier;
//! 3. every issuer on the path is a CA (`basicConstraints CA:true`) whose
//!    `pathLenConstraint` admits the CAs below it, with `keyCertSign` if
//!    it has a key usage extension; every certificate's signature verifies
//!    with its issuer's key; every certificate is valid at the time given;
//! 4. unknown critical extensions fail the certificate (RFC 5280 § 4.2);
//! 5. the peer's IKE identity is its certificate's subject (ID_DER_ASN1_DN)
//!    or one of its subjectAltNames (FQDN, RFC 822, IP address);
//! 6. the AUTH signature over the peer's signed octets verifies with the
//!    certificate's key.
//!
//! Any certificate issued under the configured CA chain is accepted, which
//! is what "seamless rotation" needs (spec § 5.2).
//!
//! Time is passed in: a [`WallClock`] maps the engine's `Instant` to Unix
//! time (the caller reads the system clock once, when it builds the
//! configuration). Nothing here reads a file except the `load_*` helpers
//! the configuration code calls. Private keys live in aws-lc key objects
//! (freed and cleared by aws-lc) and the DER they were read from is
//! [`Zeroizing`].
//!
//! ECDSA signing draws its per-signature nonce from aws-lc's own CSPRNG,
//! not from the engine's injected [`super::Rng`]; RSA PKCS#1 v1.5 signing
//! is deterministic. RSA signing always uses method 14 with
//! sha256WithRSAEncryption: aws-lc offers no SHA-1 PKCS#1 signing for
//! method 1 (we still verify method 1 from peers).
//!
//! [RFC 7296 § 3.6, § 3.7]: https://www.rfc-editor.org/rfc/rfc7296#section-3.6
//! [RFC 7296 § 2.15, § 3.8]: https://www.rfc-editor.org/rfc/rfc7296#section-2.15
//! [RFC 4754]: https://www.rfc-editor.org/rfc/rfc4754

use std::fmt;
use std::path::Path;
use std::time::Instant;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo, X509Name};
use zeroize::Zeroizing;

use super::crypto::Prf;
use super::wire::{AuthMethod, IdType, Identification, Notify, NotifyType, Payload, PayloadType};

/// CERT / CERTREQ encoding "X.509 Certificate - Signature" (RFC 7296 § 3.6).
pub const CERT_ENCODING_X509: u8 = 4;
/// Longest chain (end entity, intermediates, anchor) we build.
pub const MAX_CHAIN_LEN: usize = 8;
/// Most CERT payloads we look at in one message.
pub const MAX_PEER_CERTS: usize = 8;

/// RFC 7427 § 4 hash algorithm identifiers we accept and announce in
/// SIGNATURE_HASH_ALGORITHMS: SHA2-256, SHA2-384, SHA2-512.
pub const SIGNATURE_HASHES: [u16; 3] = [2, 3, 4];

/// Why a certificate, key or signature was refused. Each message names the
/// certificate (subject) and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Bytes that are not the named structure.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// What was being parsed.
        what: String,
        /// Parser's message.
        detail: String,
    },
    /// Reading a file failed.
    #[error("cannot read {path}: {detail}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        detail: String,
    },
    /// Outside the validity period.
    #[error(
        "certificate \"{subject}\" is not valid at {at} (Unix time): valid {not_before}..={not_after}"
    )]
    Validity {
        /// Subject of the certificate.
        subject: String,
        /// Time checked.
        at: i64,
        /// notBefore.
        not_before: i64,
        /// notAfter.
        not_after: i64,
    },
    /// A required extension is absent (spec § 5.2: AKI, SKI, basicConstraints).
    #[error("certificate \"{subject}\" lacks the {extension} extension")]
    MissingExtension {
        /// Subject.
        subject: String,
        /// Extension name.
        extension: &'static str,
    },
    /// No issuer with this name among the intermediates and trust anchors.
    #[error("certificate \"{subject}\" issued by \"{issuer}\": no path to a configured CA")]
    UntrustedIssuer {
        /// Subject.
        subject: String,
        /// Issuer name.
        issuer: String,
    },
    /// An issuer candidate has the right name but its SKI is not the
    /// child's AKI.
    #[error(
        "certificate \"{subject}\": authority key identifier does not match the subject key identifier of issuer \"{issuer}\""
    )]
    KeyIdMismatch {
        /// Subject of the child.
        subject: String,
        /// Issuer candidate.
        issuer: String,
    },
    /// An issuer without `basicConstraints CA:true`.
    #[error("issuer \"{issuer}\" of \"{subject}\" is not a CA (basicConstraints CA:true missing)")]
    NotCa {
        /// Subject of the child.
        subject: String,
        /// Issuer.
        issuer: String,
    },
    /// pathLenConstraint exceeded.
    #[error("CA \"{issuer}\" allows {allowed} intermediate CAs below it, the chain has {found}")]
    PathLen {
        /// The constraining CA.
        issuer: String,
        /// Its pathLenConstraint.
        allowed: u32,
        /// CAs below it.
        found: u32,
    },
    /// keyUsage forbids the use.
    #[error("certificate \"{subject}\": keyUsage lacks {need}")]
    KeyUsage {
        /// Subject.
        subject: String,
        /// The bit needed.
        need: &'static str,
    },
    /// An extension marked critical that we do not process.
    #[error("certificate \"{subject}\" has an unsupported critical extension {oid}")]
    CriticalExtension {
        /// Subject.
        subject: String,
        /// Its OID.
        oid: String,
    },
    /// The certificate's signature does not verify with the issuer's key.
    #[error("certificate \"{subject}\": signature by \"{issuer}\" does not verify")]
    BadSignature {
        /// Subject.
        subject: String,
        /// Issuer.
        issuer: String,
    },
    /// An algorithm (key type, curve, signature, hash) we do not support.
    #[error("unsupported algorithm: {0}")]
    Algorithm(String),
    /// The chain is longer than [`MAX_CHAIN_LEN`].
    #[error("certificate chain longer than {MAX_CHAIN_LEN}")]
    ChainTooLong,
    /// The peer sent no CERT payload with an X.509 certificate.
    #[error("no X.509 CERT payload from the peer")]
    NoCertificate,
    /// The peer's IKE identity is not in its certificate.
    #[error("peer identity {id} is neither the subject nor a subjectAltName of \"{subject}\"")]
    IdMismatch {
        /// The identity (printed).
        id: String,
        /// Certificate subject.
        subject: String,
    },
    /// The AUTH payload's signature does not verify.
    #[error("AUTH signature (method {method}) does not verify with the key of \"{subject}\"")]
    AuthSignature {
        /// AUTH method number.
        method: u8,
        /// Certificate subject.
        subject: String,
    },
    /// AUTH method that is not a signature method we support.
    #[error("AUTH method {0} is not supported with certificates")]
    AuthMethod(u8),
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate \"{0}\"")]
    KeyMismatch(String),
    /// Signing failed.
    #[error("signing failed")]
    Sign,
}

fn parse_err(what: impl Into<String>, e: impl fmt::Display) -> CertError {
    CertError::Parse {
        what: what.into(),
        detail: e.to_string(),
    }
}

/// Maps the engine's monotonic time to Unix time for validity checks.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    at: Instant,
    unix_secs: i64,
}

impl WallClock {
    /// `unix_secs` was the Unix time at `at`.
    #[must_use]
    pub fn new(at: Instant, unix_secs: i64) -> Self {
        Self { at, unix_secs }
    }

    /// Unix time (seconds) at `now`.
    #[must_use]
    pub fn unix_at(&self, now: Instant) -> i64 {
        let d = |x: std::time::Duration| i64::try_from(x.as_secs()).unwrap_or(i64::MAX);
        match now.checked_duration_since(self.at) {
            Some(after) => self.unix_secs.saturating_add(d(after)),
            None => self
                .unix_secs
                .saturating_sub(d(self.at.saturating_duration_since(now))),
        }
    }
}

// OID content octets (the bytes after the 06 tag and length).
mod oid {
    pub(super) const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    pub(super) const RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
    pub(super) const SHA1_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
    pub(super) const SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    pub(super) const SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    pub(super) const SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    pub(super) const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    pub(super) const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    pub(super) const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    pub(super) const P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
    pub(super) const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    pub(super) const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    pub(super) const ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    pub(super) const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    pub(super) const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
    pub(super) const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
    /// Extensions a certificate may mark critical (RFC 5280 § 4.2.1):
    /// keyUsage, subjectAltName, basicConstraints, extendedKeyUsage,
    /// certificatePolicies (processed as "any policy").
    pub(super) const KNOWN_CRITICAL: [&[u8]; 5] = [
        &[0x55, 0x1d, 0x0f],
        &[0x55, 0x1d, 0x11],
        &[0x55, 0x1d, 0x13],
        &[0x55, 0x1d, 0x25],
        &[0x55, 0x1d, 0x20],
    ];
}

/// RFC 7427 Appendix A AlgorithmIdentifier encodings we send.
mod alg_id {
    pub(super) const SHA256_RSA: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
    ];
    pub(super) const ECDSA_SHA256: &[u8] = &[
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
    ];
    pub(super) const ECDSA_SHA384: &[u8] = &[
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
    ];
    pub(super) const ECDSA_SHA512: &[u8] = &[
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
    ];
}

/// Elliptic curves we sign and verify with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (method 9, SHA-256).
    P256,
    /// NIST P-384 (method 10, SHA-384).
    P384,
    /// NIST P-521 (method 11, SHA-512).
    P521,
}

impl Curve {
    fn from_oid(o: &[u8]) -> Option<Self> {
        match o {
            oid::P256 => Some(Self::P256),
            oid::P384 => Some(Self::P384),
            oid::P521 => Some(Self::P521),
            _ => None,
        }
    }
    /// Classic IKEv2 ECDSA AUTH method (RFC 4754).
    #[must_use]
    pub fn auth_method(self) -> AuthMethod {
        match self {
            Self::P256 => AuthMethod::EcdsaSha256P256,
            Self::P384 => AuthMethod::EcdsaSha384P384,
            Self::P521 => AuthMethod::EcdsaSha512P521,
        }
    }
    fn fixed_signing(self) -> &'static sig::EcdsaSigningAlgorithm {
        match self {
            Self::P256 => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            Self::P384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            Self::P521 => &sig::ECDSA_P521_SHA512_FIXED_SIGNING,
        }
    }
    fn asn1_signing(self) -> &'static sig::EcdsaSigningAlgorithm {
        match self {
            Self::P256 => &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
            Self::P384 => &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
            Self::P521 => &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
        }
    }
    fn alg_id(self) -> &'static [u8] {
        match self {
            Self::P256 => alg_id::ECDSA_SHA256,
            Self::P384 => alg_id::ECDSA_SHA384,
            Self::P521 => alg_id::ECDSA_SHA512,
        }
    }
}

enum KeyInner {
    Rsa(RsaKeyPair),
    Ecdsa {
        curve: Curve,
        fixed: EcdsaKeyPair,
        asn1: EcdsaKeyPair,
    },
}

/// Our private key: RSA (≥ 2048 bits) or ECDSA P-256/P-384/P-521.
pub struct PrivateKey(KeyInner);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            KeyInner::Rsa(k) => write!(f, "PrivateKey(RSA-{})", k.public_modulus_len() * 8),
            KeyInner::Ecdsa { curve, .. } => write!(f, "PrivateKey(ECDSA {curve:?})"),
        }
    }
}

impl PrivateKey {
    /// Reads a DER private key: PKCS#8, PKCS#1 RSAPrivateKey or RFC 5915
    /// ECPrivateKey (what `pki --gen` and `openssl genpkey` write).
    ///
    /// # Errors
    /// [`CertError::Parse`] when no form fits.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        if let Ok(k) = RsaKeyPair::from_pkcs8(der).or_else(|_| RsaKeyPair::from_der(der)) {
            return Ok(Self(KeyInner::Rsa(k)));
        }
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            let load = |alg| {
                EcdsaKeyPair::from_pkcs8(alg, der)
                    .or_else(|_| EcdsaKeyPair::from_private_key_der(alg, der))
            };
            if let (Ok(fixed), Ok(asn1)) = (load(curve.fixed_signing()), load(curve.asn1_signing()))
            {
                return Ok(Self(KeyInner::Ecdsa { curve, fixed, asn1 }));
            }
        }
        Err(parse_err(
            "private key",
            "not an RSA (PKCS#1/PKCS#8, 2048 bits or more) or ECDSA P-256/P-384/P-521 (SEC1/PKCS#8) key",
        ))
    }

    /// Reads a PEM or DER private key.
    ///
    /// # Errors
    /// [`CertError::Parse`].
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, CertError> {
        if bytes.starts_with(b"-----") {
            let p = pem::parse(bytes).map_err(|e| parse_err("PEM private key", e))?;
            let der = Zeroizing::new(p.into_contents());
            Self::from_der(&der)
        } else {
            Self::from_der(bytes)
        }
    }

    fn public_key(&self) -> &[u8] {
        match &self.0 {
            KeyInner::Rsa(k) => k.public_key().as_ref(),
            KeyInner::Ecdsa { fixed, .. } => fixed.public_key().as_ref(),
        }
    }

    /// Signs `octets`: with RFC 7427 (method 14) when the peer announced
    /// SIGNATURE_HASH_ALGORITHMS with SHA2-256 (or always for RSA, see
    /// the module docs), else with the classic ECDSA method.
    ///
    /// # Errors
    /// [`CertError::Sign`].
    pub fn sign(&self, rfc7427: bool, octets: &[u8]) -> Result<(AuthMethod, Vec<u8>), CertError> {
        let rng = SystemRandom::new();
        let with_alg_id = |alg_id: &[u8], s: &[u8]| {
            let mut v = Vec::with_capacity(1 + alg_id.len() + s.len());
            v.push(u8::try_from(alg_id.len()).unwrap_or(0));
            v.extend_from_slice(alg_id);
            v.extend_from_slice(s);
            v
        };
        match &self.0 {
            KeyInner::Rsa(k) => {
                let mut s = vec![0u8; k.public_modulus_len()];
                k.sign(&sig::RSA_PKCS1_SHA256, &rng, octets, &mut s)
                    .map_err(|_| CertError::Sign)?;
                Ok((
                    AuthMethod::DigitalSignature,
                    with_alg_id(alg_id::SHA256_RSA, &s),
                ))
            }
            KeyInner::Ecdsa { curve, fixed, asn1 } => {
                if rfc7427 {
                    let s = asn1.sign(&rng, octets).map_err(|_| CertError::Sign)?;
                    Ok((
                        AuthMethod::DigitalSignature,
                        with_alg_id(curve.alg_id(), s.as_ref()),
                    ))
                } else {
                    let s = fixed.sign(&rng, octets).map_err(|_| CertError::Sign)?;
                    Ok((curve.auth_method(), s.as_ref().to_vec()))
                }
            }
        }
    }
}

/// Reads every certificate of a PEM bundle, or one DER certificate.
///
/// # Errors
/// [`CertError::Parse`] if the input holds no parseable certificate.
pub fn certs_from_pem_or_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, CertError> {
    let ders: Vec<Vec<u8>> = if bytes.starts_with(b"-----") {
        pem::parse_many(bytes)
            .map_err(|e| parse_err("PEM certificates", e))?
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .collect()
    } else {
        vec![bytes.to_vec()]
    };
    if ders.is_empty() {
        return Err(parse_err("PEM certificates", "no CERTIFICATE block"));
    }
    for d in &ders {
        parse_cert(d)?;
    }
    Ok(ders)
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| CertError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    match X509Certificate::from_der(der) {
        Ok(([], c)) => {
            outer_fields_match(der, c.tbs_certificate.as_ref())
                .map_err(|why| parse_err("certificate", why))?;
            Ok(c)
        }
        Ok(_) => Err(parse_err(
            "certificate",
            "trailing bytes after the certificate",
        )),
        Err(e) => Err(parse_err("certificate", e)),
    }
}

/// One DER TLV at the start of `b`: (tag octet, its content, the rest).
/// Definite lengths of up to four octets (a certificate is smaller).
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = if l0 < 0x80 {
        (usize::from(l0), rest)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (l, rest) = rest.split_at_checked(n)?;
        (
            l.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x)),
            rest,
        )
    };
    let (content, rest) = rest.split_at_checked(len)?;
    Some((tag, content, rest))
}

/// The parts of a certificate outside the signed TBSCertificate, checked
/// octet for octet (the parser is lenient about them, e.g. about the
/// class of a tag, and the signature does not cover them): the outer
/// signatureAlgorithm is the TBS one (RFC 5280 § 4.1.1.2) and the
/// signature BIT STRING has no unused bits. Without this a certificate
/// changed there still verifies.
fn outer_fields_match(der: &[u8], tbs: &[u8]) -> Result<(), &'static str> {
    const BAD: &str = "malformed signature fields outside the signed part";
    let Some((0x30, cert, [])) = der_tlv(der) else {
        return Err(BAD);
    };
    let (_, _, after_tbs) = der_tlv(cert).ok_or(BAD)?;
    if cert.get(..cert.len() - after_tbs.len()) != Some(tbs) {
        return Err(BAD);
    }
    let Some((0x30, outer_alg, after_alg)) = der_tlv(after_tbs) else {
        return Err(BAD);
    };
    let Some((0x03, [0, ..], [])) = der_tlv(after_alg) else {
        return Err(BAD);
    };
    // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber,
    // signature AlgorithmIdentifier, ... }
    let (_, tbs_content, _) = der_tlv(tbs).ok_or(BAD)?;
    let (tag, _, mut r) = der_tlv(tbs_content).ok_or(BAD)?;
    if tag == 0xa0 {
        (_, _, r) = der_tlv(r).ok_or(BAD)?;
    }
    match der_tlv(r) {
        Some((0x30, inner_alg, _)) if inner_alg == outer_alg => Ok(()),
        _ => Err("the outer signature algorithm is not the signed one (RFC 5280 4.1.1.2)"),
    }
}

fn name(n: &X509Name<'_>) -> String {
    n.to_string()
}

fn ski<'a>(c: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
            _ => None,
        })
}

fn aki<'a>(c: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
            _ => None,
        })
}

/// SHA-1 of a certificate's DER SubjectPublicKeyInfo: the CERTREQ
/// "certification authority" value (RFC 7296 § 3.7).
fn spki_sha1(c: &X509Certificate<'_>) -> [u8; 20] {
    let d = digest::digest(
        &digest::SHA1_FOR_LEGACY_USE_ONLY,
        c.tbs_certificate.subject_pki.raw,
    );
    let mut out = [0u8; 20];
    out.copy_from_slice(d.as_ref());
    out
}

/// Our credentials: the certificate chain we send (end entity first, then
/// intermediates) and the private key of the end entity.
pub struct LocalCredentials {
    chain: Vec<Vec<u8>>,
    key: PrivateKey,
    id: Identification,
}

impl fmt::Debug for LocalCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCredentials")
            .field("id", &self.id.to_string())
            .field("chain_len", &self.chain.len())
            .field("key", &self.key)
            .finish()
    }
}

impl LocalCredentials {
    /// Our chain (end entity first, DER) and key. The identity is the end
    /// entity's subject (ID_DER_ASN1_DN), as strongSwan's default.
    ///
    /// # Errors
    /// [`CertError::Parse`] for a bad certificate, [`CertError::KeyMismatch`]
    /// when the key is not the end entity's.
    pub fn new(chain: Vec<Vec<u8>>, key: PrivateKey) -> Result<Self, CertError> {
        let ee_der = chain
            .first()
            .ok_or_else(|| parse_err("local certificate chain", "empty"))?;
        let ee = parse_cert(ee_der)?;
        for c in &chain[1..] {
            parse_cert(c)?;
        }
        if ee
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data
            .as_ref()
            != key.public_key()
        {
            return Err(CertError::KeyMismatch(name(ee.subject())));
        }
        let id = Identification {
            id_type: IdType::DerAsn1Dn,
            data: ee.subject().as_raw().to_vec(),
        };
        Ok(Self { chain, key, id })
    }

    /// Loads a PEM/DER certificate file (end entity first, optional
    /// intermediates after it) and a PEM/DER key file.
    ///
    /// # Errors
    /// Any [`CertError`], naming the file for I/O errors.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, CertError> {
        let chain = certs_from_pem_or_der(&read(cert_file)?)?;
        let key_bytes = Zeroizing::new(read(key_file)?);
        Self::new(chain, PrivateKey::from_pem_or_der(&key_bytes)?)
    }

    /// Our IKE identity (the certificate subject as ID_DER_ASN1_DN).
    #[must_use]
    pub fn id(&self) -> &Identification {
        &self.id
    }

    /// The CERT payloads we send: end entity first, then intermediates.
    #[must_use]
    pub fn cert_payloads(&self) -> Vec<Payload> {
        self.chain
            .iter()
            .map(|der| {
                let mut data = Vec::with_capacity(1 + der.len());
                data.push(CERT_ENCODING_X509);
                data.extend_from_slice(der);
                Payload::Other {
                    kind: PayloadType::Cert,
                    critical: false,
                    data,
                }
            })
            .collect()
    }

    /// The private key.
    #[must_use]
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }
}

/// The CA certificates peers' chains must lead to.
#[derive(Clone)]
pub struct TrustAnchors {
    certs: Vec<Vec<u8>>,
}

impl fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .certs
            .iter()
            .filter_map(|d| parse_cert(d).ok().map(|c| name(c.subject())))
            .collect();
        f.debug_tuple("TrustAnchors").field(&names).finish()
    }
}

impl TrustAnchors {
    /// Trust anchors from DER certificates; each must be a CA.
    ///
    /// # Errors
    /// [`CertError::Parse`], or [`CertError::NotCa`] for a certificate
    /// without `basicConstraints CA:true`.
    pub fn new(certs: Vec<Vec<u8>>) -> Result<Self, CertError> {
        if certs.is_empty() {
            return Err(parse_err("CA certificates", "none given"));
        }
        for d in &certs {
            let c = parse_cert(d)?;
            if !is_ca(&c) {
                return Err(CertError::NotCa {
                    subject: "(trust anchor)".into(),
                    issuer: name(c.subject()),
                });
            }
        }
        Ok(Self { certs })
    }

    /// Loads a PEM bundle or one DER CA certificate.
    ///
    /// # Errors
    /// As [`Self::new`], or [`CertError::Io`].
    pub fn load(file: &Path) -> Result<Self, CertError> {
        Self::new(certs_from_pem_or_der(&read(file)?)?)
    }

    /// The CERTREQ payload: encoding 4 and the SHA-1 hashes of every
    /// anchor's SubjectPublicKeyInfo (RFC 7296 § 3.7).
    #[must_use]
    pub fn certreq_payload(&self) -> Payload {
        let mut data = vec![CERT_ENCODING_X509];
        for d in &self.certs {
            if let Ok(c) = parse_cert(d) {
                data.extend_from_slice(&spki_sha1(&c));
            }
        }
        Payload::Other {
            kind: PayloadType::CertReq,
            critical: false,
            data,
        }
    }

    /// Validates a peer's chain (end entity first, then whatever the peer
    /// sent) at Unix time `at` (see the module docs for the rules).
    ///
    /// # Errors
    /// The first rule the best candidate path broke.
    pub fn verify_chain(&self, chain: &[&[u8]], at: i64) -> Result<(), CertError> {
        let ee_der = chain.first().ok_or(CertError::NoCertificate)?;
        let ee = parse_cert(ee_der)?;
        check_cert(&ee, at)?;
        check_leaf(&ee)?;
        let pool: Vec<X509Certificate<'_>> = chain[1..]
            .iter()
            .filter_map(|d| parse_cert(d).ok())
            .collect();
        let anchors: Vec<X509Certificate<'_>> = self
            .certs
            .iter()
            .filter_map(|d| parse_cert(d).ok())
            .collect();
        let mut cur = ee;
        // CAs between the current certificate and the end entity.
        let mut cas_below: u32 = 0;
        for _ in 0..MAX_CHAIN_LEN {
            let mut best: Option<CertError> = None;
            let keep = |e: CertError, best: &mut Option<CertError>| {
                // A name match that failed says more than "untrusted".
                if best.is_none() {
                    *best = Some(e);
                }
            };
            for a in &anchors {
                match check_issuer(&cur, a, cas_below, at) {
                    Ok(()) => return Ok(()),
                    Err(None) => {}
                    Err(Some(e)) => keep(e, &mut best),
                }
            }
            let mut next = None;
            for p in &pool {
                // A self-issued certificate from the peer is never its own
                // issuer here: anchors come only from our configuration.
                if p.as_raw() == cur.as_raw() {
                    continue;
                }
                match check_issuer(&cur, p, cas_below, at)
                    .map_err(|e| e.or_else(|| check_cert(p, at).err()))
                {
                    Ok(()) => {
                        if let Err(e) = check_intermediate(p) {
                            keep(e, &mut best);
                            continue;
                        }
                        next = Some(p.clone());
                        break;
                    }
                    Err(None) => {}
                    Err(Some(e)) => keep(e, &mut best),
                }
            }
            match next {
                Some(n) => {
                    cur = n;
                    cas_below += 1;
                }
                None => {
                    return Err(best.unwrap_or_else(|| CertError::UntrustedIssuer {
                        subject: name(cur.subject()),
                        issuer: name(cur.issuer()),
                    }));
                }
            }
        }
        Err(CertError::ChainTooLong)
    }
}

fn is_ca(c: &X509Certificate<'_>) -> bool {
    matches!(c.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

/// Validity and critical extensions of any certificate on the path.
fn check_cert(c: &X509Certificate<'_>, at: i64) -> Result<(), CertError> {
    let v = c.validity();
    let (nb, na) = (v.not_before.timestamp(), v.not_after.timestamp());
    if at < nb || at > na {
        return Err(CertError::Validity {
            subject: name(c.subject()),
            at,
            not_before: nb,
            not_after: na,
        });
    }
    for e in c.extensions() {
        if e.critical && !oid::KNOWN_CRITICAL.contains(&e.oid.as_bytes()) {
            return Err(CertError::CriticalExtension {
                subject: name(c.subject()),
                oid: e.oid.to_id_string(),
            });
        }
    }
    Ok(())
}

fn require_ext(c: &X509Certificate<'_>) -> Result<(), CertError> {
    let missing = |extension| CertError::MissingExtension {
        subject: name(c.subject()),
        extension,
    };
    if !matches!(c.basic_constraints(), Ok(Some(_))) {
        return Err(missing("basicConstraints"));
    }
    if aki(c).is_none() {
        return Err(missing("authorityKeyIdentifier (keyIdentifier)"));
    }
    if ski(c).is_none() {
        return Err(missing("subjectKeyIdentifier"));
    }
    Ok(())
}

/// Spec § 5.2 on the peer's certificate, and a usable key usage.
fn check_leaf(c: &X509Certificate<'_>) -> Result<(), CertError> {
    require_ext(c)?;
    if let Ok(Some(ku)) = c.key_usage()
        && !(ku.value.digital_signature() || ku.value.non_repudiation())
    {
        return Err(CertError::KeyUsage {
            subject: name(c.subject()),
            need: "digitalSignature",
        });
    }
    Ok(())
}

/// An intermediate the peer sent: the same extensions as the end entity.
fn check_intermediate(c: &X509Certificate<'_>) -> Result<(), CertError> {
    require_ext(c)
}

/// Whether `issuer` issued `child`: `Err(None)` when it is not a candidate
/// at all (other name), `Err(Some(e))` when it is one but breaks a rule.
fn check_issuer(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    cas_below: u32,
    at: i64,
) -> Result<(), Option<CertError>> {
    if child.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(None);
    }
    let (subject, iname) = (name(child.subject()), name(issuer.subject()));
    if let (Some(a), Some(s)) = (aki(child), ski(issuer))
        && a != s
    {
        return Err(Some(CertError::KeyIdMismatch {
            subject,
            issuer: iname,
        }));
    }
    match issuer.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            if let Some(p) = bc.value.path_len_constraint
                && cas_below > p
            {
                return Err(Some(CertError::PathLen {
                    issuer: iname,
                    allowed: p,
                    found: cas_below,
                }));
            }
        }
        _ => {
            return Err(Some(CertError::NotCa {
                subject,
                issuer: iname,
            }));
        }
    }
    if let Ok(Some(ku)) = issuer.key_usage()
        && !ku.value.key_cert_sign()
    {
        return Err(Some(CertError::KeyUsage {
            subject: iname,
            need: "keyCertSign",
        }));
    }
    check_cert(issuer, at).map_err(Some)?;
    verify_signature(
        issuer.public_key(),
        &child.signature_algorithm,
        child.tbs_certificate.as_ref(),
        &child.signature_value.data,
    )
    .map_err(|e| {
        Some(match e {
            CertError::Algorithm(_) => e,
            _ => CertError::BadSignature {
                subject,
                issuer: iname,
            },
        })
    })
}

enum KeyType {
    Rsa,
    Ec(Curve),
}

fn key_type(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyType, CertError> {
    let alg = spki.algorithm.algorithm.as_bytes();
    if alg == oid::RSA || alg == oid::RSA_PSS {
        return Ok(KeyType::Rsa);
    }
    if alg == oid::EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .and_then(|o| Curve::from_oid(o.as_bytes()))
            .ok_or_else(|| CertError::Algorithm("EC key on an unsupported curve".into()))?;
        return Ok(KeyType::Ec(curve));
    }
    Err(CertError::Algorithm(format!(
        "public key type {}",
        spki.algorithm.algorithm.to_id_string()
    )))
}

/// Verifies `sig` over `msg` with `spki` under the X.509 / RFC 7427
/// signature algorithm `alg`.
fn verify_signature(
    spki: &SubjectPublicKeyInfo<'_>,
    alg: &AlgorithmIdentifier<'_>,
    msg: &[u8],
    signature: &[u8],
) -> Result<(), CertError> {
    let key = key_type(spki)?;
    let o = alg.algorithm.as_bytes();
    let unsupported = || {
        CertError::Algorithm(format!(
            "signature algorithm {} with this key",
            alg.algorithm.to_id_string()
        ))
    };
    let v: &'static dyn sig::VerificationAlgorithm = match key {
        KeyType::Rsa => match o {
            oid::SHA256_RSA => &sig::RSA_PKCS1_2048_8192_SHA256,
            oid::SHA384_RSA => &sig::RSA_PKCS1_2048_8192_SHA384,
            oid::SHA512_RSA => &sig::RSA_PKCS1_2048_8192_SHA512,
            oid::RSA_PSS => {
                let params = alg
                    .parameters
                    .as_ref()
                    .ok_or_else(|| CertError::Algorithm("RSASSA-PSS without parameters".into()))?;
                let p = RsaSsaPssParams::try_from(params)
                    .map_err(|e| parse_err("RSASSA-PSS parameters", e))?;
                // aws-lc checks PSS with the salt as long as the hash.
                match (p.hash_algorithm_oid().as_bytes(), p.salt_length()) {
                    (oid::SHA256, 32) => &sig::RSA_PSS_2048_8192_SHA256,
                    (oid::SHA384, 48) => &sig::RSA_PSS_2048_8192_SHA384,
                    (oid::SHA512, 64) => &sig::RSA_PSS_2048_8192_SHA512,
                    _ => {
                        return Err(CertError::Algorithm(
                            "RSASSA-PSS other than SHA-2 with a hash-length salt".into(),
                        ));
                    }
                }
            }
            oid::SHA1_RSA => {
                return Err(CertError::Algorithm(
                    "sha1WithRSAEncryption (SHA-1 signatures are refused)".into(),
                ));
            }
            _ => return Err(unsupported()),
        },
        KeyType::Ec(curve) => match (curve, o) {
            (Curve::P256, oid::ECDSA_SHA256) => &sig::ECDSA_P256_SHA256_ASN1,
            (Curve::P256, oid::ECDSA_SHA384) => &sig::ECDSA_P256_SHA384_ASN1,
            (Curve::P256, oid::ECDSA_SHA512) => &sig::ECDSA_P256_SHA512_ASN1,
            (Curve::P384, oid::ECDSA_SHA256) => &sig::ECDSA_P384_SHA256_ASN1,
            (Curve::P384, oid::ECDSA_SHA384) => &sig::ECDSA_P384_SHA384_ASN1,
            (Curve::P384, oid::ECDSA_SHA512) => &sig::ECDSA_P384_SHA512_ASN1,
            (Curve::P521, oid::ECDSA_SHA256) => &sig::ECDSA_P521_SHA256_ASN1,
            (Curve::P521, oid::ECDSA_SHA384) => &sig::ECDSA_P521_SHA384_ASN1,
            (Curve::P521, oid::ECDSA_SHA512) => &sig::ECDSA_P521_SHA512_ASN1,
            _ => return Err(unsupported()),
        },
    };
    UnparsedPublicKey::new(v, spki.subject_public_key.data.as_ref())
        .verify(msg, signature)
        .map_err(|_| CertError::BadSignature {
            subject: String::new(),
            issuer: String::new(),
        })
}

/// The octets an AUTH signature covers (RFC 7296 § 2.15):
/// `RealMessage | Nonce | prf(SK_p, RestOfIDPayload)`.
#[must_use]
pub fn signed_octets(
    prf: Prf,
    real_message: &[u8],
    nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
) -> Vec<u8> {
    let maced = prf.prf(sk_p, &[id_body]);
    let mut v = Vec::with_capacity(real_message.len() + nonce.len() + maced.len());
    v.extend_from_slice(real_message);
    v.extend_from_slice(nonce);
    v.extend_from_slice(&maced);
    v
}

/// Whether `id` names the certificate: its subject (ID_DER_ASN1_DN, byte
/// for byte or attribute by attribute) or a subjectAltName of the same
/// kind.
fn id_matches(id: &Identification, c: &X509Certificate<'_>) -> bool {
    let sans = || -> Vec<GeneralName<'_>> {
        match c.subject_alternative_name() {
            Ok(Some(s)) => s.value.general_names.clone(),
            _ => Vec::new(),
        }
    };
    match id.id_type {
        IdType::DerAsn1Dn => {
            if id.data == c.subject().as_raw() {
                return true;
            }
            let Ok((rest, n)) = X509Name::from_der(&id.data) else {
                return false;
            };
            rest.is_empty() && names_equal(&n, c.subject())
        }
        IdType::Fqdn => sans().iter().any(|g| {
            matches!(g, GeneralName::DNSName(d) if d.as_bytes().eq_ignore_ascii_case(&id.data))
        }),
        IdType::Rfc822Addr => sans().iter().any(|g| {
            matches!(g, GeneralName::RFC822Name(d) if d.as_bytes().eq_ignore_ascii_case(&id.data))
        }),
        IdType::Ipv4Addr | IdType::Ipv6Addr => sans()
            .iter()
            .any(|g| matches!(g, GeneralName::IPAddress(a) if *a == id.data.as_slice())),
        _ => false,
    }
}

/// Two names with the same attributes in the same order (string types may
/// differ: an ID typed by an operator is often UTF8String where the CA
/// wrote PrintableString).
fn names_equal(a: &X509Name<'_>, b: &X509Name<'_>) -> bool {
    let (va, vb): (Vec<_>, Vec<_>) = (a.iter_attributes().collect(), b.iter_attributes().collect());
    va.len() == vb.len()
        && va.iter().zip(&vb).all(|(x, y)| {
            x.attr_type() == y.attr_type()
                && match (x.as_str(), y.as_str()) {
                    (Ok(s), Ok(t)) => s == t,
                    _ => x.attr_value().data == y.attr_value().data,
                }
        })
}

/// Certificate authentication of one tunnel: our credentials, the CAs we
/// accept the peer's chain under, and the wall clock for validity.
pub struct CertAuth {
    /// What we present.
    pub local: LocalCredentials,
    /// What we accept.
    pub trust: TrustAnchors,
    /// Unix time for validity checks.
    pub clock: WallClock,
}

impl fmt::Debug for CertAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAuth")
            .field("local", &self.local)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

/// What a verified peer presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// Subject of the peer's certificate (for logs).
    pub subject: String,
}

/// The DER certificates of the CERT payloads (encoding 4) in a message,
/// in order.
#[must_use]
pub fn certs_of(payloads: &[Payload]) -> Vec<&[u8]> {
    payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Other {
                kind: PayloadType::Cert,
                data,
                ..
            } => match data.split_first() {
                Some((&CERT_ENCODING_X509, der)) => Some(der),
                _ => None,
            },
            _ => None,
        })
        .take(MAX_PEER_CERTS)
        .collect()
}

/// Whether a message carries a CERTREQ payload.
#[must_use]
pub fn has_certreq(payloads: &[Payload]) -> bool {
    payloads.iter().any(|p| {
        matches!(
            p,
            Payload::Other {
                kind: PayloadType::CertReq,
                ..
            }
        )
    })
}

/// The SIGNATURE_HASH_ALGORITHMS notify we send (RFC 7427 § 4).
#[must_use]
pub fn signature_hashes_notify() -> Payload {
    let data = SIGNATURE_HASHES
        .iter()
        .flat_map(|h| h.to_be_bytes())
        .collect();
    Payload::Notify(Notify::new(NotifyType::SignatureHashAlgorithms, data))
}

/// Whether the peer's SIGNATURE_HASH_ALGORITHMS notify lists SHA2-256
/// (what we sign RFC 7427 AUTH with).
#[must_use]
pub fn peer_accepts_rfc7427(payloads: &[Payload]) -> bool {
    super::wire::find_notify(payloads, NotifyType::SignatureHashAlgorithms).is_some_and(|n| {
        n.data
            .chunks_exact(2)
            .any(|c| u16::from_be_bytes([c[0], c[1]]) == 2)
    })
}

impl CertAuth {
    /// Our AUTH payload data over `octets`.
    ///
    /// # Errors
    /// [`CertError::Sign`].
    pub fn sign(&self, rfc7427: bool, octets: &[u8]) -> Result<(AuthMethod, Vec<u8>), CertError> {
        self.local.key.sign(rfc7427, octets)
    }

    /// Verifies the peer: its chain to our anchors at `now`, its identity
    /// against the certificate, and its AUTH signature over `octets`.
    ///
    /// # Errors
    /// The [`CertError`] naming the rule broken.
    pub fn verify_peer(
        &self,
        now: Instant,
        certs: &[&[u8]],
        id: &Identification,
        method: AuthMethod,
        auth: &[u8],
        octets: &[u8],
    ) -> Result<PeerCert, CertError> {
        let ee_der = certs.first().ok_or(CertError::NoCertificate)?;
        self.trust.verify_chain(certs, self.clock.unix_at(now))?;
        let ee = parse_cert(ee_der)?;
        let subject = name(ee.subject());
        if !id_matches(id, &ee) {
            return Err(CertError::IdMismatch {
                id: display_id(id),
                subject,
            });
        }
        verify_auth(&ee, method, auth, octets).map_err(|e| match e {
            CertError::BadSignature { .. } => CertError::AuthSignature {
                method: method.into(),
                subject: subject.clone(),
            },
            other => other,
        })?;
        Ok(PeerCert { subject })
    }
}

/// An identity for logs: DNs as text.
#[must_use]
pub fn display_id(id: &Identification) -> String {
    if id.id_type == IdType::DerAsn1Dn
        && let Ok((_, n)) = X509Name::from_der(&id.data)
    {
        return n.to_string();
    }
    id.to_string()
}

fn verify_auth(
    ee: &X509Certificate<'_>,
    method: AuthMethod,
    auth: &[u8],
    octets: &[u8],
) -> Result<(), CertError> {
    let spki = ee.public_key();
    let key = key_type(spki)?;
    let fixed: &'static dyn sig::VerificationAlgorithm = match (method, &key) {
        (AuthMethod::DigitalSignature, _) => {
            // RFC 7427 § 3: length of the AlgorithmIdentifier, the
            // AlgorithmIdentifier, the signature.
            let (&len, rest) = auth
                .split_first()
                .ok_or_else(|| parse_err("AUTH payload", "empty"))?;
            let (aid, signature) = (
                rest.get(..usize::from(len))
                    .ok_or_else(|| parse_err("AUTH payload", "short AlgorithmIdentifier"))?,
                &rest[usize::from(len)..],
            );
            let (tail, alg) = AlgorithmIdentifier::from_der(aid)
                .map_err(|e| parse_err("AUTH AlgorithmIdentifier", e))?;
            if !tail.is_empty() {
                return Err(parse_err("AUTH AlgorithmIdentifier", "trailing bytes"));
            }
            return verify_signature(spki, &alg, octets, signature);
        }
        // RFC 7296 § 3.8 method 1: EMSA-PKCS1-v1_5 with SHA-1.
        (AuthMethod::RsaSig, KeyType::Rsa) => &sig::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        (AuthMethod::EcdsaSha256P256, KeyType::Ec(Curve::P256)) => &sig::ECDSA_P256_SHA256_FIXED,
        (AuthMethod::EcdsaSha384P384, KeyType::Ec(Curve::P384)) => &sig::ECDSA_P384_SHA384_FIXED,
        (AuthMethod::EcdsaSha512P521, KeyType::Ec(Curve::P521)) => &sig::ECDSA_P521_SHA512_FIXED,
        (m, _) => return Err(CertError::AuthMethod(m.into())),
    };
    UnparsedPublicKey::new(fixed, spki.subject_public_key.data.as_ref())
        .verify(octets, auth)
        .map_err(|_| CertError::BadSignature {
            subject: String::new(),
            issuer: String::new(),
        })
}

#[cfg(test)]
#[path = "cert_tests.rs"]
mod tests;
