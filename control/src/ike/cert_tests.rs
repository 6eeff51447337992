//! Certificate validation and signature AUTH: unit tests on chains built
//! with rcgen, and the two-peer harness with certificate authentication
//! (and IKE fragmentation) in both roles.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    PKCS_ECDSA_P521_SHA512, PKCS_RSA_SHA256, SanType, SignatureAlgorithm,
};

use super::super::endpoint::Endpoint;
use super::super::sa::{Datagram, DownReason, Event, IkeConfig, Transmit};
use super::super::tests::TestRng;
use super::super::wire::{AuthMethod, IdType, Identification, Message, Payload, PayloadType};
use super::*;
use crate::config::{PreSharedKey, TunnelOptions};

/// 2030-03-17: inside every test certificate's validity (2025..2035).
const NOW_UNIX: i64 = 1_900_000_000;

/// A certificate with its parameters and key, to issue others from.
struct Node {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

fn params(cn: &str, is_ca: IsCa) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::OrganizationName, "vt lab");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = is_ca;
    p.key_usages = if matches!(p.is_ca, IsCa::Ca(_)) {
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign]
    } else {
        vec![KeyUsagePurpose::DigitalSignature]
    };
    p.use_authority_key_identifier_extension = true;
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    p
}

fn ca_params(cn: &str) -> CertificateParams {
    params(cn, IsCa::Ca(BasicConstraints::Unconstrained))
}

fn leaf_params(cn: &str) -> CertificateParams {
    let mut p = params(cn, IsCa::ExplicitNoCa);
    p.subject_alt_names = vec![SanType::DnsName(
        format!("{cn}.example").try_into().unwrap(),
    )];
    p
}

fn root(p: CertificateParams, alg: &'static SignatureAlgorithm) -> Node {
    let key = KeyPair::generate_for(alg).unwrap();
    let der = p.self_signed(&key).unwrap().der().to_vec();
    Node {
        params: p,
        key,
        der,
    }
}

fn issue(p: CertificateParams, alg: &'static SignatureAlgorithm, by: &Node) -> Node {
    let key = KeyPair::generate_for(alg).unwrap();
    let issuer = Issuer::from_params(&by.params, &by.key);
    let der = p.signed_by(&key, &issuer).unwrap().der().to_vec();
    Node {
        params: p,
        key,
        der,
    }
}

/// Root → intermediate → leaf, all with `alg`.
struct Pki {
    root: Node,
    inter: Node,
    leaf: Node,
}

fn pki(alg: &'static SignatureAlgorithm, name: &str) -> Pki {
    let root = root(ca_params(&format!("{name} root")), alg);
    let inter = issue(ca_params(&format!("{name} sub")), alg, &root);
    let leaf = issue(leaf_params(name), alg, &inter);
    Pki { root, inter, leaf }
}

fn anchors(n: &Node) -> TrustAnchors {
    TrustAnchors::new(vec![n.der.clone()]).unwrap()
}

fn chain<'a>(certs: &[&'a Node]) -> Vec<&'a [u8]> {
    certs.iter().map(|n| n.der.as_slice()).collect()
}

// ---------------------------------------------------------------- chains

#[test]
fn valid_chains_rsa_and_ecdsa() {
    for alg in [
        &PKCS_RSA_SHA256,
        &PKCS_ECDSA_P256_SHA256,
        &PKCS_ECDSA_P384_SHA384,
    ] {
        let p = pki(alg, "cgw");
        anchors(&p.root)
            .verify_chain(&chain(&[&p.leaf, &p.inter]), NOW_UNIX)
            .unwrap();
        // The intermediate as the configured anchor: a shorter path.
        anchors(&p.inter)
            .verify_chain(&chain(&[&p.leaf]), NOW_UNIX)
            .unwrap();
        // Extra, unrelated certificates from the peer are skipped.
        let other = pki(alg, "other");
        anchors(&p.root)
            .verify_chain(&chain(&[&p.leaf, &other.inter, &p.inter]), NOW_UNIX)
            .unwrap();
    }
}

#[test]
fn mixed_algorithms_chain() {
    let root = root(ca_params("rsa root"), &PKCS_RSA_SHA256);
    let inter = issue(ca_params("ec sub"), &PKCS_ECDSA_P384_SHA384, &root);
    let leaf = issue(leaf_params("ec leaf"), &PKCS_ECDSA_P256_SHA256, &inter);
    anchors(&root)
        .verify_chain(&chain(&[&leaf, &inter]), NOW_UNIX)
        .unwrap();
}

#[test]
fn expired_and_not_yet_valid_are_refused() {
    let p = pki(&PKCS_ECDSA_P256_SHA256, "cgw");
    let a = anchors(&p.root);
    let c = chain(&[&p.leaf, &p.inter]);
    let after = 2_100_000_000; // 2036
    let e = a.verify_chain(&c, after).unwrap_err();
    assert!(
        matches!(&e, CertError::Validity { subject, at, .. } if subject.contains("CN=cgw") && *at == after),
        "{e}"
    );
    let e = a.verify_chain(&c, 1_700_000_000).unwrap_err(); // 2023
    assert!(matches!(e, CertError::Validity { .. }), "{e}");
    // An expired intermediate under a valid leaf.
    let mut ip = ca_params("short sub");
    ip.not_after = rcgen::date_time_ymd(2026, 1, 1);
    let inter = issue(ip, &PKCS_ECDSA_P256_SHA256, &p.root);
    let leaf = issue(leaf_params("cgw2"), &PKCS_ECDSA_P256_SHA256, &inter);
    let e = a
        .verify_chain(&chain(&[&leaf, &inter]), NOW_UNIX)
        .unwrap_err();
    assert!(
        matches!(&e, CertError::Validity { subject, .. } if subject.contains("short sub")),
        "{e}"
    );
}

#[test]
fn wrong_ca_is_untrusted() {
    let p = pki(&PKCS_ECDSA_P256_SHA256, "cgw");
    let other = pki(&PKCS_ECDSA_P256_SHA256, "other");
    let e = anchors(&other.root)
        .verify_chain(&chain(&[&p.leaf, &p.inter]), NOW_UNIX)
        .unwrap_err();
    assert!(
        matches!(&e, CertError::UntrustedIssuer { issuer, .. } if issuer.contains("cgw root")),
        "{e}"
    );
    assert!(e.to_string().contains("no path to a configured CA"));
    // Without the intermediate there is no path either.
    let e = anchors(&p.root)
        .verify_chain(&chain(&[&p.leaf]), NOW_UNIX)
        .unwrap_err();
    assert!(matches!(e, CertError::UntrustedIssuer { .. }), "{e}");
}

#[test]
fn issuer_without_ca_true_is_refused() {
    let root = root(ca_params("root"), &PKCS_ECDSA_P256_SHA256);
    // An "intermediate" with basicConstraints CA:false that signs a leaf.
    let mut ip = params("fake sub", IsCa::ExplicitNoCa);
    ip.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let fake = issue(ip, &PKCS_ECDSA_P256_SHA256, &root);
    let leaf = issue(leaf_params("cgw"), &PKCS_ECDSA_P256_SHA256, &fake);
    let e = anchors(&root)
        .verify_chain(&chain(&[&leaf, &fake]), NOW_UNIX)
        .unwrap_err();
    assert!(
        matches!(&e, CertError::NotCa { issuer, .. } if issuer.contains("fake sub")),
        "{e}"
    );
    assert!(e.to_string().contains("CA:true"));
    // A trust anchor must be a CA too.
    let e = TrustAnchors::new(vec![leaf.der.clone()]).unwrap_err();
    assert!(matches!(e, CertError::NotCa { .. }), "{e}");
}

#[test]
fn aki_ski_mismatch_is_refused() {
    let root = root(ca_params("root"), &PKCS_ECDSA_P256_SHA256);
    let inter_a = issue(ca_params("sub"), &PKCS_ECDSA_P256_SHA256, &root);
    // Same name, another key (say, the CA's previous key): the leaf's AKI
    // names inter_a's SKI, not this one's.
    let inter_b = issue(ca_params("sub"), &PKCS_ECDSA_P256_SHA256, &root);
    let leaf = issue(leaf_params("cgw"), &PKCS_ECDSA_P256_SHA256, &inter_a);
    let e = anchors(&root)
        .verify_chain(&chain(&[&leaf, &inter_b]), NOW_UNIX)
        .unwrap_err();
    assert!(matches!(e, CertError::KeyIdMismatch { .. }), "{e}");
    // Both present: the right one is found.
    anchors(&root)
        .verify_chain(&chain(&[&leaf, &inter_b, &inter_a]), NOW_UNIX)
        .unwrap();
}

#[test]
fn bad_signature_is_refused() {
    let p = pki(&PKCS_ECDSA_P256_SHA256, "cgw");
    let mut leaf = p.leaf.der.clone();
    // The last bytes are the signature's s value.
    let n = leaf.len();
    leaf[n - 2] ^= 0x55;
    let e = anchors(&p.root)
        .verify_chain(&[&leaf, &p.inter.der], NOW_UNIX)
        .unwrap_err();
    assert!(
        matches!(&e, CertError::BadSignature { subject, issuer } if subject.contains("CN=cgw") && issuer.contains("cgw sub")),
        "{e}"
    );
    // RSA too.
    let p = pki(&PKCS_RSA_SHA256, "cgw");
    let mut inter = p.inter.der.clone();
    let n = inter.len();
    inter[n - 1] ^= 1;
    let e = anchors(&p.root)
        .verify_chain(&[&p.leaf.der, &inter], NOW_UNIX)
        .unwrap_err();
    assert!(matches!(e, CertError::BadSignature { .. }), "{e}");
}

#[test]
fn spec_extensions_are_required() {
    let root = root(ca_params("root"), &PKCS_ECDSA_P256_SHA256);
    let a = anchors(&root);
    let check = |p: CertificateParams, want: &str| {
        let leaf = issue(p, &PKCS_ECDSA_P256_SHA256, &root);
        let e = a.verify_chain(&[&leaf.der], NOW_UNIX).unwrap_err();
        assert!(
            matches!(&e, CertError::MissingExtension { extension, .. } if extension.contains(want)),
            "{want}: {e}"
        );
    };
    let mut p = leaf_params("no aki");
    p.use_authority_key_identifier_extension = false;
    check(p, "authorityKeyIdentifier");
    let mut p = leaf_params("no bc");
    p.is_ca = IsCa::NoCa;
    check(p, "basicConstraints");
    let mut p = leaf_params("no ski");
    p.key_identifier_method = KeyIdMethod::PreSpecified(Vec::new());
    let leaf = issue(p, &PKCS_ECDSA_P256_SHA256, &root);
    if ski(&parse_cert(&leaf.der).unwrap()).is_none() {
        let e = a.verify_chain(&[&leaf.der], NOW_UNIX).unwrap_err();
        assert!(matches!(e, CertError::MissingExtension { .. }), "{e}");
    }
}

#[test]
fn path_len_constraint_is_enforced() {
    let root = root(
        params("root", IsCa::Ca(BasicConstraints::Constrained(0))),
        &PKCS_ECDSA_P256_SHA256,
    );
    let inter = issue(ca_params("sub"), &PKCS_ECDSA_P256_SHA256, &root);
    let leaf = issue(leaf_params("cgw"), &PKCS_ECDSA_P256_SHA256, &inter);
    let e = anchors(&root)
        .verify_chain(&chain(&[&leaf, &inter]), NOW_UNIX)
        .unwrap_err();
    assert!(
        matches!(
            e,
            CertError::PathLen {
                allowed: 0,
                found: 1,
                ..
            }
        ),
        "{e}"
    );
    // pathLen 0 still allows issuing end entities directly.
    let direct = issue(leaf_params("cgw"), &PKCS_ECDSA_P256_SHA256, &root);
    anchors(&root)
        .verify_chain(&[&direct.der], NOW_UNIX)
        .unwrap();
}

#[test]
fn key_usage_is_enforced() {
    let root = root(ca_params("root"), &PKCS_ECDSA_P256_SHA256);
    let mut p = leaf_params("enc only");
    p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let leaf = issue(p, &PKCS_ECDSA_P256_SHA256, &root);
    let e = anchors(&root)
        .verify_chain(&[&leaf.der], NOW_UNIX)
        .unwrap_err();
    assert!(
        matches!(
            e,
            CertError::KeyUsage {
                need: "digitalSignature",
                ..
            }
        ),
        "{e}"
    );
    // A CA whose key usage lacks keyCertSign.
    let mut ip = ca_params("crl only");
    ip.key_usages = vec![KeyUsagePurpose::CrlSign];
    let inter = issue(ip, &PKCS_ECDSA_P256_SHA256, &root);
    let leaf = issue(leaf_params("cgw"), &PKCS_ECDSA_P256_SHA256, &inter);
    let e = anchors(&root)
        .verify_chain(&chain(&[&leaf, &inter]), NOW_UNIX)
        .unwrap_err();
    assert!(
        matches!(
            e,
            CertError::KeyUsage {
                need: "keyCertSign",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn unknown_critical_extension_is_refused() {
    let root = root(ca_params("root"), &PKCS_ECDSA_P256_SHA256);
    let mut p = leaf_params("cgw");
    let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![5, 0]);
    ext.set_criticality(true);
    p.custom_extensions = vec![ext];
    let leaf = issue(p, &PKCS_ECDSA_P256_SHA256, &root);
    let e = anchors(&root)
        .verify_chain(&[&leaf.der], NOW_UNIX)
        .unwrap_err();
    assert!(
        matches!(&e, CertError::CriticalExtension { oid, .. } if oid == "1.3.6.1.4.1.99999.1"),
        "{e}"
    );
}

#[test]
fn garbage_never_panics() {
    let p = pki(&PKCS_ECDSA_P256_SHA256, "cgw");
    let a = anchors(&p.root);
    for cut in [0, 1, 10, 100, p.leaf.der.len() - 1] {
        assert!(a.verify_chain(&[&p.leaf.der[..cut]], NOW_UNIX).is_err());
    }
    assert!(matches!(
        a.verify_chain(&[], NOW_UNIX),
        Err(CertError::NoCertificate)
    ));
}

// ---------------------------------------------------------------- AUTH

fn creds(n: &Node, extra: &[&Node]) -> LocalCredentials {
    let mut chain = vec![n.der.clone()];
    chain.extend(extra.iter().map(|x| x.der.clone()));
    LocalCredentials::new(chain, PrivateKey::from_der(&n.key.serialize_der()).unwrap()).unwrap()
}

fn cert_auth(p: &Pki, trust: &Node, clock: WallClock) -> CertAuth {
    CertAuth {
        local: creds(&p.leaf, &[&p.inter]),
        trust: anchors(trust),
        clock,
    }
}

#[test]
fn auth_signatures_every_method() {
    let cases: [(&'static SignatureAlgorithm, AuthMethod); 4] = [
        (&PKCS_RSA_SHA256, AuthMethod::DigitalSignature),
        (&PKCS_ECDSA_P256_SHA256, AuthMethod::EcdsaSha256P256),
        (&PKCS_ECDSA_P384_SHA384, AuthMethod::EcdsaSha384P384),
        (&PKCS_ECDSA_P521_SHA512, AuthMethod::EcdsaSha512P521),
    ];
    let now = Instant::now();
    let clock = WallClock::new(now, NOW_UNIX);
    for (alg, classic) in cases {
        let p = pki(alg, "peer");
        let ours = cert_auth(&p, &p.root, clock);
        let octets = b"real message | nonce | maced id";
        for rfc7427 in [true, false] {
            let (method, data) = ours.sign(rfc7427, octets).unwrap();
            let want = if rfc7427 {
                AuthMethod::DigitalSignature
            } else {
                classic
            };
            assert_eq!(method, want, "{alg:?} rfc7427={rfc7427}");
            let certs = chain(&[&p.leaf, &p.inter]);
            let id = ours.local.id().clone();
            let peer = ours
                .verify_peer(now, &certs, &id, method, &data, octets)
                .unwrap();
            assert!(peer.subject.contains("CN=peer"), "{}", peer.subject);
            // Other octets (another nonce, another ID): refused.
            let e = ours
                .verify_peer(now, &certs, &id, method, &data, b"other octets")
                .unwrap_err();
            assert!(matches!(e, CertError::AuthSignature { .. }), "{e}");
        }
    }
}

/// RSA method 1 (PKCS#1 v1.5 over SHA-1, what peers without RFC 7427
/// send) goes to signature verification: a bad one is a signature
/// failure, not an unsupported method. (aws-lc cannot make SHA-1 PKCS#1
/// signatures, so a good one comes from strongSwan in the interop test.)
#[test]
fn rsa_method_1_is_verified() {
    let now = Instant::now();
    let p = pki(&PKCS_RSA_SHA256, "peer");
    let ours = cert_auth(&p, &p.root, WallClock::new(now, NOW_UNIX));
    let id = ours.local.id().clone();
    let e = ours
        .verify_peer(
            now,
            &chain(&[&p.leaf, &p.inter]),
            &id,
            AuthMethod::RsaSig,
            &[0u8; 256],
            b"x",
        )
        .unwrap_err();
    assert!(
        matches!(e, CertError::AuthSignature { method: 1, .. }),
        "{e}"
    );
    // An ECDSA method against an RSA key is a method error.
    let e = ours
        .verify_peer(
            now,
            &chain(&[&p.leaf, &p.inter]),
            &id,
            AuthMethod::EcdsaSha256P256,
            &[0u8; 64],
            b"x",
        )
        .unwrap_err();
    assert!(matches!(e, CertError::AuthMethod(9)), "{e}");
}

#[test]
fn identity_must_be_in_the_certificate() {
    let now = Instant::now();
    let p = pki(&PKCS_ECDSA_P256_SHA256, "peer");
    let ours = cert_auth(&p, &p.root, WallClock::new(now, NOW_UNIX));
    let certs = chain(&[&p.leaf, &p.inter]);
    let octets = b"octets";
    let (m, d) = ours.sign(true, octets).unwrap();
    let fqdn = |s: &str| Identification {
        id_type: IdType::Fqdn,
        data: s.as_bytes().to_vec(),
    };
    // subjectAltName dNSName, case-insensitively.
    ours.verify_peer(now, &certs, &fqdn("PEER.example"), m, &d, octets)
        .unwrap();
    let e = ours
        .verify_peer(now, &certs, &fqdn("other.example"), m, &d, octets)
        .unwrap_err();
    assert!(
        matches!(&e, CertError::IdMismatch { id, .. } if id == "other.example"),
        "{e}"
    );
    // Another certificate's DN.
    let other = pki(&PKCS_ECDSA_P256_SHA256, "other");
    let other_id = creds(&other.leaf, &[]).id().clone();
    let e = ours
        .verify_peer(now, &certs, &other_id, m, &d, octets)
        .unwrap_err();
    assert!(matches!(e, CertError::IdMismatch { .. }), "{e}");
    assert!(e.to_string().contains("CN=other"), "{e}");
    // An IP identity the certificate does not name.
    let e = ours
        .verify_peer(
            now,
            &certs,
            &Identification::from_ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))),
            m,
            &d,
            octets,
        )
        .unwrap_err();
    assert!(matches!(e, CertError::IdMismatch { .. }), "{e}");
}

#[test]
fn validity_uses_the_time_passed_in() {
    let start = Instant::now();
    let p = pki(&PKCS_ECDSA_P256_SHA256, "peer");
    // 2034-12-31 at `start`; two days later the leaf has expired.
    let ours = cert_auth(&p, &p.root, WallClock::new(start, 2_051_136_000));
    let certs = chain(&[&p.leaf, &p.inter]);
    let (m, d) = ours.sign(true, b"o").unwrap();
    let id = ours.local.id().clone();
    ours.verify_peer(start, &certs, &id, m, &d, b"o").unwrap();
    let later = start + Duration::from_secs(2 * 86_400);
    let e = ours
        .verify_peer(later, &certs, &id, m, &d, b"o")
        .unwrap_err();
    assert!(matches!(e, CertError::Validity { .. }), "{e}");
}

#[test]
fn local_key_must_match_certificate() {
    let p = pki(&PKCS_ECDSA_P256_SHA256, "peer");
    let e = LocalCredentials::new(
        vec![p.leaf.der.clone()],
        PrivateKey::from_der(&p.inter.key.serialize_der()).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(e, CertError::KeyMismatch(_)), "{e}");
    assert!(PrivateKey::from_der(b"not a key").is_err());
}

#[test]
fn certreq_and_cert_payloads() {
    let p = pki(&PKCS_ECDSA_P256_SHA256, "peer");
    let a = anchors(&p.root);
    let Payload::Other {
        kind: PayloadType::CertReq,
        data,
        ..
    } = a.certreq_payload()
    else {
        panic!("not a CERTREQ")
    };
    let root = parse_cert(&p.root.der).unwrap();
    let want = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, root.public_key().raw);
    assert_eq!(data[0], CERT_ENCODING_X509);
    assert_eq!(&data[1..], want.as_ref());
    let c = creds(&p.leaf, &[&p.inter]);
    let payloads = c.cert_payloads();
    assert_eq!(
        certs_of(&payloads),
        vec![p.leaf.der.as_slice(), p.inter.der.as_slice()]
    );
    // They survive the codec.
    let m = Message {
        header: super::super::wire::Header {
            spi_i: 1,
            spi_r: 2,
            exchange: super::super::wire::ExchangeType::IkeAuth,
            flags: 0,
            message_id: 1,
        },
        payloads: payloads.clone(),
    };
    assert_eq!(Message::parse(&m.emit()).unwrap().payloads, payloads);
}

#[test]
fn pem_files_load_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(&PKCS_RSA_SHA256, "peer");
    let pem = |der: &[u8], tag: &str| pem::encode(&pem::Pem::new(tag, der.to_vec()));
    let cert = dir.path().join("cert.pem");
    std::fs::write(
        &cert,
        pem(&p.leaf.der, "CERTIFICATE") + &pem(&p.inter.der, "CERTIFICATE"),
    )
    .unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, p.leaf.key.serialize_pem()).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem(&p.root.der, "CERTIFICATE")).unwrap();
    let local = LocalCredentials::load(&cert, &key).unwrap();
    assert_eq!(local.cert_payloads().len(), 2);
    assert_eq!(local.id().id_type, IdType::DerAsn1Dn);
    TrustAnchors::load(&ca).unwrap();
    let missing = dir.path().join("nope.pem");
    let e = TrustAnchors::load(&missing).unwrap_err();
    assert!(
        matches!(&e, CertError::Io { path, .. } if path.ends_with("nope.pem")),
        "{e}"
    );
    // The wrong key for the certificate.
    std::fs::write(&key, p.inter.key.serialize_pem()).unwrap();
    assert!(matches!(
        LocalCredentials::load(&cert, &key),
        Err(CertError::KeyMismatch(_))
    ));
}

// ---------------------------------------------------------------- harness

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

type DropFn = Box<dyn FnMut(bool, &Transmit) -> bool>;

/// Two endpoints on a virtual wire with virtual time (the certificate
/// cousin of `tests::Harness`). Records every datagram.
struct Wire {
    a: Endpoint,
    b: Endpoint,
    rng: TestRng,
    now: Instant,
    drop: DropFn,
    a_events: Vec<Event>,
    b_events: Vec<Event>,
    /// (from A?, datagram).
    seen: Vec<(bool, Vec<u8>)>,
}

impl Wire {
    fn new(ca: IkeConfig, cb: IkeConfig, now: Instant) -> Self {
        let mut rng = TestRng::new(7);
        let mut a = Endpoint::new(&mut rng, 32);
        let mut b = Endpoint::new(&mut rng, 32);
        a.add_tunnel(ca);
        b.add_tunnel(cb);
        Self {
            a,
            b,
            rng,
            now,
            drop: Box::new(|_, _| false),
            a_events: Vec::new(),
            b_events: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                self.seen.push((true, t.payload.clone()));
                if !(self.drop)(true, &t) {
                    let d = Datagram {
                        local: t.remote,
                        remote: t.local,
                        payload: &t.payload,
                    };
                    self.b.handle_datagram(self.now, &mut self.rng, d);
                }
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                self.seen.push((false, t.payload.clone()));
                if !(self.drop)(false, &t) {
                    let d = Datagram {
                        local: t.remote,
                        remote: t.local,
                        payload: &t.payload,
                    };
                    self.a.handle_datagram(self.now, &mut self.rng, d);
                }
            }
            while let Some((_, e)) = self.a.poll_event() {
                self.a_events.push(e);
            }
            while let Some((_, e)) = self.b.poll_event() {
                self.b_events.push(e);
            }
            if moved {
                continue;
            }
            match [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
            {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now, &mut self.rng);
                    self.b.handle_timeout(self.now, &mut self.rng);
                }
                _ => return,
            }
        }
        panic!("harness did not settle");
    }
}

fn children(ev: &[Event]) -> usize {
    ev.iter()
        .filter(|e| matches!(e, Event::ChildSaUp(_)))
        .count()
}

fn down(ev: &[Event]) -> Option<DownReason> {
    ev.iter().find_map(|e| match e {
        Event::IkeSaDown { reason } => Some(*reason),
        _ => None,
    })
}

fn logs(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Log(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

fn tunnel(local: IpAddr, remote: IpAddr, auth: CertAuth) -> IkeConfig {
    // The PSK is there but unused: certificate authentication wins.
    let o = TunnelOptions {
        pre_shared_key: Some(PreSharedKey::new("unused.PSK_1234").unwrap()),
        ..TunnelOptions::default()
    };
    let any = vec!["0.0.0.0/0".parse().unwrap()];
    let mut c = IkeConfig::from_tunnel(&o, local, remote, any.clone(), any);
    c.cert = Some(Arc::new(auth));
    c
}

/// Two sides with their own PKIs (each trusts the other's root).
fn two_sides(
    alg_a: &'static SignatureAlgorithm,
    alg_b: &'static SignatureAlgorithm,
    now: Instant,
) -> (IkeConfig, IkeConfig) {
    let pa = pki(alg_a, "aws");
    let pb = pki(alg_b, "cgw");
    let clock = WallClock::new(now, NOW_UNIX);
    (
        tunnel(A, B, cert_auth(&pa, &pb.root, clock)),
        tunnel(B, A, cert_auth(&pb, &pa.root, clock)),
    )
}

fn sk_kinds(seen: &[(bool, Vec<u8>)]) -> Vec<PayloadType> {
    seen.iter()
        .filter_map(|(_, d)| Message::parse(d).ok())
        .filter_map(|m| {
            m.payloads.last().map(|p| match p {
                Payload::Skf { .. } => PayloadType::Skf,
                Payload::Sk { .. } => PayloadType::Sk,
                _ => PayloadType::None,
            })
        })
        .collect()
}

#[test]
fn cert_auth_handshake_both_roles_rsa_and_ecdsa() {
    for (alg_a, alg_b) in [
        (&PKCS_RSA_SHA256, &PKCS_RSA_SHA256),
        (&PKCS_ECDSA_P256_SHA256, &PKCS_ECDSA_P256_SHA256),
        (&PKCS_ECDSA_P384_SHA384, &PKCS_RSA_SHA256),
    ] {
        // Each side initiates once.
        for a_initiates in [true, false] {
            let now = Instant::now();
            let (ca, cb) = two_sides(alg_a, alg_b, now);
            let mut w = Wire::new(ca, cb, now);
            if a_initiates {
                assert!(w.a.initiate(w.now, &mut w.rng, B));
            } else {
                assert!(w.b.initiate(w.now, &mut w.rng, A));
            }
            w.run(Duration::from_secs(5));
            let what = format!("{alg_a:?}/{alg_b:?} a_initiates={a_initiates}");
            assert_eq!(children(&w.a_events), 1, "{what}: {:?}", logs(&w.a_events));
            assert_eq!(children(&w.b_events), 1, "{what}: {:?}", logs(&w.b_events));
            assert!(
                logs(&w.a_events)
                    .iter()
                    .any(|l| l.contains("by certificate \"CN=cgw, O=vt lab\"")),
                "{what}: {:?}",
                logs(&w.a_events)
            );
            assert!(
                logs(&w.b_events)
                    .iter()
                    .any(|l| l.contains("by certificate \"CN=aws, O=vt lab\"")),
                "{what}"
            );
        }
    }
}

#[test]
fn cert_auth_wrong_ca_fails_with_authentication_failed() {
    let now = Instant::now();
    let pa = pki(&PKCS_ECDSA_P256_SHA256, "aws");
    let pb = pki(&PKCS_ECDSA_P256_SHA256, "cgw");
    let stranger = pki(&PKCS_ECDSA_P256_SHA256, "stranger");
    let clock = WallClock::new(now, NOW_UNIX);
    // B (responder) trusts a CA that did not issue A's certificate.
    let ca = tunnel(A, B, cert_auth(&pa, &pb.root, clock));
    let cb = tunnel(B, A, cert_auth(&pb, &stranger.root, clock));
    let mut w = Wire::new(ca, cb, now);
    assert!(w.a.initiate(w.now, &mut w.rng, B));
    w.run(Duration::from_secs(5));
    assert_eq!(children(&w.a_events) + children(&w.b_events), 0);
    assert_eq!(down(&w.b_events), Some(DownReason::AuthenticationFailed));
    assert_eq!(down(&w.a_events), Some(DownReason::AuthenticationFailed));
    let bl = logs(&w.b_events);
    assert!(
        bl.iter().any(|l| l
            .starts_with("AWS tunnel certificate authentication failed with cgw: 192.0.2.1:")
            && l.contains("no path to a configured CA")),
        "{bl:?}"
    );
    assert!(
        bl.iter()
            .any(|l| l.contains("sending AUTHENTICATION_FAILED"))
    );
    assert!(
        logs(&w.a_events)
            .iter()
            .any(|l| l.contains("certificate authentication refused by cgw"))
    );
}

#[test]
fn cert_auth_initiator_refuses_responder_with_expired_certificate() {
    let now = Instant::now();
    let pa = pki(&PKCS_ECDSA_P256_SHA256, "aws");
    let pb = pki(&PKCS_ECDSA_P256_SHA256, "cgw");
    // A's clock says 2036: B's certificate has expired. B's says 2030.
    let ca = tunnel(
        A,
        B,
        cert_auth(&pa, &pb.root, WallClock::new(now, NOW_UNIX)),
    );
    let mut ca = ca;
    if let Some(c) = ca.cert.take() {
        let c = Arc::into_inner(c).unwrap();
        ca.cert = Some(Arc::new(CertAuth {
            clock: WallClock::new(now, 2_100_000_000),
            ..c
        }));
    }
    let cb = tunnel(
        B,
        A,
        cert_auth(&pb, &pa.root, WallClock::new(now, 1_800_000_000)),
    );
    let mut w = Wire::new(ca, cb, now);
    assert!(w.a.initiate(w.now, &mut w.rng, B));
    w.run(Duration::from_secs(5));
    assert_eq!(down(&w.a_events), Some(DownReason::AuthenticationFailed));
    assert!(
        logs(&w.a_events)
            .iter()
            .any(|l| l.contains("certificate authentication failed") && l.contains("not valid at")),
        "{:?}",
        logs(&w.a_events)
    );
}

/// A long chain over a small fragment size: IKE_AUTH goes out as SKF
/// fragments no larger than the limit, both ways, one fragment is lost
/// once and the retransmission recovers.
#[test]
fn large_chain_is_fragmented_and_reassembled() {
    let now = Instant::now();
    // Root → 4 RSA intermediates → leaf: about 5 KB of certificates.
    let mut nodes = vec![root(ca_params("big root"), &PKCS_RSA_SHA256)];
    for i in 0..4 {
        let n = issue(
            ca_params(&format!("big sub {i}")),
            &PKCS_RSA_SHA256,
            nodes.last().unwrap(),
        );
        nodes.push(n);
    }
    let leaf = issue(leaf_params("big"), &PKCS_RSA_SHA256, nodes.last().unwrap());
    let mut big = vec![leaf.der.clone()];
    big.extend(nodes[1..].iter().rev().map(|n| n.der.clone()));
    let big_creds = LocalCredentials::new(
        big,
        PrivateKey::from_der(&leaf.key.serialize_der()).unwrap(),
    )
    .unwrap();
    let pb = pki(&PKCS_ECDSA_P256_SHA256, "cgw");
    let clock = WallClock::new(now, NOW_UNIX);
    let mut ca = tunnel(
        A,
        B,
        CertAuth {
            local: big_creds,
            trust: anchors(&pb.root),
            clock,
        },
    );
    let mut cb = tunnel(B, A, cert_auth(&pb, &nodes[0], clock));
    for c in [&mut ca, &mut cb] {
        c.fragmentation.max_datagram = 576;
    }
    let mut w = Wire::new(ca, cb, now);
    // Lose the second fragment A sends, once.
    let mut skf_from_a = 0;
    w.drop = Box::new(move |from_a, t| {
        let is_skf = Message::parse(&t.payload)
            .is_ok_and(|m| matches!(m.payloads.last(), Some(Payload::Skf { .. })));
        if from_a && is_skf {
            skf_from_a += 1;
            return skf_from_a == 2;
        }
        false
    });
    assert!(w.a.initiate(w.now, &mut w.rng, B));
    w.run(Duration::from_secs(10));
    assert_eq!(children(&w.a_events), 1, "{:?}", logs(&w.a_events));
    assert_eq!(children(&w.b_events), 1, "{:?}", logs(&w.b_events));
    let kinds = sk_kinds(&w.seen);
    let skf = kinds.iter().filter(|k| **k == PayloadType::Skf).count();
    assert!(skf >= 10, "{kinds:?}");
    // 576 − 20 (IPv4) − 8 (UDP) for everything after IKE_SA_INIT (which
    // RFC 7383 never fragments).
    for (_, d) in &w.seen {
        let m = Message::parse(d).unwrap();
        if m.header.exchange != super::super::wire::ExchangeType::IkeSaInit {
            assert!(d.len() <= 548, "datagram of {} bytes", d.len());
        }
    }
    // No fragment was answered twice: one retransmission of the request,
    // one response.
    assert!(
        logs(&w.b_events).iter().all(|l| !l.contains("dropped")),
        "{:?}",
        logs(&w.b_events)
    );
}

#[test]
fn fragmentation_off_on_one_side_sends_whole_messages() {
    let now = Instant::now();
    let (mut ca, mut cb) = two_sides(&PKCS_RSA_SHA256, &PKCS_RSA_SHA256, now);
    ca.fragmentation.max_datagram = 576;
    cb.fragmentation.enabled = false;
    let mut w = Wire::new(ca, cb, now);
    assert!(w.a.initiate(w.now, &mut w.rng, B));
    w.run(Duration::from_secs(5));
    assert_eq!(children(&w.a_events), 1);
    assert!(!sk_kinds(&w.seen).contains(&PayloadType::Skf));
    assert!(w.seen.iter().any(|(_, d)| d.len() > 576));
    // Socket addresses were the configured ones.
    let _ = SocketAddr::new(A, 500);
}

// ---------------------------------------------------------------- properties

mod props {
    use proptest::prelude::*;

    use super::*;

    fn fixture() -> &'static (Vec<u8>, Vec<u8>, Vec<u8>) {
        static F: std::sync::OnceLock<(Vec<u8>, Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
        F.get_or_init(|| {
            let p = pki(&PKCS_ECDSA_P256_SHA256, "prop");
            (p.root.der, p.inter.der, p.leaf.der)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes as a peer's chain: an error, never a panic.
        #[test]
        fn arbitrary_chains_never_panic(
            a in proptest::collection::vec(any::<u8>(), 0..600),
            b in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let (root, _, _) = fixture();
            let t = TrustAnchors::new(vec![root.clone()]).unwrap();
            prop_assert!(t.verify_chain(&[&a, &b], NOW_UNIX).is_err());
        }

        /// Any one-byte change of a valid leaf or intermediate is refused
        /// (everything that matters is signed), and never panics.
        #[test]
        fn mutated_certificates_are_refused(which in 0..2usize, pos in any::<usize>(), x in 1..=255u8) {
            let (root, inter, leaf) = fixture();
            let t = TrustAnchors::new(vec![root.clone()]).unwrap();
            let (mut l, mut i) = (leaf.clone(), inter.clone());
            let m = if which == 0 { &mut l } else { &mut i };
            let at = pos % m.len();
            m[at] ^= x;
            prop_assert!(t.verify_chain(&[&l, &i], NOW_UNIX).is_err(), "byte {at} of cert {which}");
        }

        /// AUTH data of any shape for every method: an error, never a panic.
        #[test]
        fn arbitrary_auth_data_never_panics(m in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (root, inter, leaf) = fixture();
            let now = Instant::now();
            let t = TrustAnchors::new(vec![root.clone()]).unwrap();
            let p = pki(&PKCS_ECDSA_P256_SHA256, "unused");
            let auth = CertAuth {
                local: creds(&p.leaf, &[]),
                trust: t,
                clock: WallClock::new(now, NOW_UNIX),
            };
            let id = Identification {
                id_type: IdType::DerAsn1Dn,
                data: parse_cert(leaf).unwrap().subject().as_raw().to_vec(),
            };
            let r = auth.verify_peer(now, &[leaf, inter], &id, AuthMethod::from(m), &data, b"octets");
            prop_assert!(r.is_err());
        }
    }
}

/// The octets after the signed TBSCertificate are checked as they are:
/// the outer algorithm's OID under an application-class tag (0x46, which
/// the parser takes for 0x06) used to verify (found by
/// `mutated_certificates_are_refused`); a signature with unused bits is
/// refused too.
#[test]
fn fields_outside_the_signed_part_are_checked_octet_for_octet() {
    let p = pki(&PKCS_ECDSA_P256_SHA256, "outer");
    let t = TrustAnchors::new(vec![p.root.der.clone()]).unwrap();
    assert!(
        t.verify_chain(&[&p.leaf.der, &p.inter.der], NOW_UNIX)
            .is_ok()
    );
    let der = &p.leaf.der;
    let (_, cert, _) = der_tlv(der).unwrap();
    let (_, _, after_tbs) = der_tlv(cert).unwrap();
    let alg_at = der.len() - after_tbs.len();
    let (_, alg, _) = der_tlv(after_tbs).unwrap();
    assert_eq!(der[alg_at + 2], 0x06, "the OID tag");
    let sig_at = alg_at + 2 + alg.len();
    assert_eq!(der[sig_at], 0x03, "the BIT STRING tag");
    let with = |at: usize, x: u8| {
        let mut bad = der.clone();
        bad[at] = x;
        t.verify_chain(&[&bad, &p.inter.der], NOW_UNIX)
    };
    let e = with(alg_at + 2, 0x46).unwrap_err();
    assert!(e.to_string().contains("not the signed one"), "{e}");
    assert!(with(sig_at + 2, 0x40).is_err(), "64 unused bits");
}

/// Each way a peer's chain can be wrong ends the same on the wire —
/// AUTHENTICATION_FAILED to the initiator, both sides down — and the
/// responder's log line says which rule failed.
#[test]
fn every_chain_failure_sends_authentication_failed_and_logs_why() {
    let alg = &PKCS_ECDSA_P256_SHA256;
    let root_a = root(ca_params("a root"), alg);
    let sub_a = issue(ca_params("a sub"), alg, &root_a);
    let pb = pki(alg, "cgw");
    // (what, A's chain and key, the root B trusts, expected log text)
    type Case<'a> = (&'static str, Vec<Vec<u8>>, Vec<u8>, &'a Node, &'static str);
    let mut cases: Vec<Case<'_>> = Vec::new();
    let mut short = leaf_params("short");
    short.not_after = rcgen::date_time_ymd(2026, 1, 1);
    let expired = issue(short, alg, &sub_a);
    cases.push((
        "expired",
        vec![expired.der.clone(), sub_a.der.clone()],
        expired.key.serialize_der(),
        &root_a,
        "is not valid at",
    ));
    let good = issue(leaf_params("good"), alg, &sub_a);
    let stranger = root(ca_params("stranger"), alg);
    cases.push((
        "wrong CA",
        vec![good.der.clone(), sub_a.der.clone()],
        good.key.serialize_der(),
        &stranger,
        "no path to a configured CA",
    ));
    let mut fp = params("fake sub", IsCa::ExplicitNoCa);
    fp.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let fake = issue(fp, alg, &root_a);
    let under_fake = issue(leaf_params("under fake"), alg, &fake);
    cases.push((
        "no CA:true",
        vec![under_fake.der.clone(), fake.der.clone()],
        under_fake.key.serialize_der(),
        &root_a,
        "is not a CA (basicConstraints CA:true missing)",
    ));
    let other_sub = issue(ca_params("a sub"), alg, &root_a);
    cases.push((
        "AKI/SKI mismatch",
        vec![good.der.clone(), other_sub.der.clone()],
        good.key.serialize_der(),
        &root_a,
        "authority key identifier does not match",
    ));
    let mut tampered = good.der.clone();
    let n = tampered.len();
    tampered[n - 2] ^= 0x55;
    cases.push((
        "bad signature",
        vec![tampered, sub_a.der.clone()],
        good.key.serialize_der(),
        &root_a,
        "does not verify",
    ));
    for (what, chain, key, trust, why) in cases {
        let now = Instant::now();
        let clock = WallClock::new(now, NOW_UNIX);
        let local = LocalCredentials::new(chain, PrivateKey::from_der(&key).unwrap()).unwrap();
        let ca = tunnel(
            A,
            B,
            CertAuth {
                local,
                trust: anchors(&pb.root),
                clock,
            },
        );
        let cb = tunnel(B, A, cert_auth(&pb, trust, clock));
        let mut w = Wire::new(ca, cb, now);
        assert!(w.a.initiate(w.now, &mut w.rng, B));
        w.run(Duration::from_secs(5));
        assert_eq!(children(&w.a_events) + children(&w.b_events), 0, "{what}");
        assert_eq!(
            down(&w.a_events),
            Some(DownReason::AuthenticationFailed),
            "{what}"
        );
        assert_eq!(
            down(&w.b_events),
            Some(DownReason::AuthenticationFailed),
            "{what}"
        );
        let bl = logs(&w.b_events);
        assert!(
            bl.iter().any(|l| l
                .starts_with("AWS tunnel certificate authentication failed with cgw: 192.0.2.1:")
                && l.contains(why)),
            "{what}: {bl:?}"
        );
        assert!(
            bl.iter()
                .any(|l| l == "AWS tunnel is sending AUTHENTICATION_FAILED as response"),
            "{what}"
        );
        assert!(
            logs(&w.a_events)
                .iter()
                .any(|l| l.contains("refused by cgw: 192.0.2.2 (AUTHENTICATION_FAILED)")),
            "{what}: {:?}",
            logs(&w.a_events)
        );
    }
}
