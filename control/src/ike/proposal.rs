//! Proposals from a tunnel's configured algorithm lists, and selection of
//! a peer's proposal (spec § 3.6).
//!
//! Selection rule (the spec's "evaluate starting from the lowest
//! configured value", which it marks \[AMBIGUOUS\]): for every peer
//! proposal, each transform type is resolved to the first value *in our
//! configured list order* that the proposal offers; among the proposals
//! that resolve completely, the one whose choices come earliest in our
//! lists wins (compared encryption, then integrity/PRF, then DH), ties to
//! the peer's order. The DH group of IKE_SA_INIT is an exception: if the
//! peer's KE payload already uses a group the chosen proposal offers and
//! we allow, that group is taken (no INVALID_KE_PAYLOAD round trip).

use dataplane::crypto::EspAlgorithm;

use super::crypto::{Encr, IkeSuite, Integ, Prf};
use super::wire::{Proposal, ProtocolId, Transform, TransformType};
use crate::config::{DhGroup, EncryptionAlgorithm, IntegrityAlgorithm, TunnelOptions};

/// One phase's configured algorithm lists, in preference order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlgorithmSet {
    /// Encryption.
    pub encr: Vec<Encr>,
    /// Integrity (and, for phase 1, PRF).
    pub integ: Vec<Integ>,
    /// DH groups (phase 2: PFS groups).
    pub dh: Vec<u16>,
}

fn encr_of(e: EncryptionAlgorithm) -> Encr {
    match e {
        EncryptionAlgorithm::Aes128 => Encr::AesCbc { key_len: 16 },
        EncryptionAlgorithm::Aes256 => Encr::AesCbc { key_len: 32 },
        EncryptionAlgorithm::Aes128Gcm16 => Encr::AesGcm16 { key_len: 16 },
        EncryptionAlgorithm::Aes256Gcm16 => Encr::AesGcm16 { key_len: 32 },
    }
}

fn integ_of(i: IntegrityAlgorithm) -> Integ {
    match i {
        IntegrityAlgorithm::Sha1 => Integ::HmacSha1_96,
        IntegrityAlgorithm::Sha2_256 => Integ::HmacSha256_128,
        IntegrityAlgorithm::Sha2_384 => Integ::HmacSha384_192,
        IntegrityAlgorithm::Sha2_512 => Integ::HmacSha512_256,
    }
}

/// The configuration's name of a negotiated cipher (`None`: a key length
/// the appliance never offers).
#[must_use]
pub fn encryption_name(e: Encr) -> Option<EncryptionAlgorithm> {
    EncryptionAlgorithm::ALL
        .iter()
        .copied()
        .find(|a| encr_of(*a) == e)
}

/// The configuration's name of a negotiated integrity algorithm.
#[must_use]
pub fn integrity_name(i: Integ) -> IntegrityAlgorithm {
    match i {
        Integ::HmacSha1_96 => IntegrityAlgorithm::Sha1,
        Integ::HmacSha256_128 => IntegrityAlgorithm::Sha2_256,
        Integ::HmacSha384_192 => IntegrityAlgorithm::Sha2_384,
        Integ::HmacSha512_256 => IntegrityAlgorithm::Sha2_512,
    }
}

/// A PRF by the hash of its HMAC, named as the integrity algorithms are.
#[must_use]
pub fn prf_name(p: Prf) -> IntegrityAlgorithm {
    match p {
        Prf::HmacSha1 => IntegrityAlgorithm::Sha1,
        Prf::HmacSha256 => IntegrityAlgorithm::Sha2_256,
        Prf::HmacSha384 => IntegrityAlgorithm::Sha2_384,
        Prf::HmacSha512 => IntegrityAlgorithm::Sha2_512,
    }
}

/// The PRF paired with an integrity algorithm of the same hash.
#[must_use]
pub fn prf_of(i: Integ) -> Prf {
    match i {
        Integ::HmacSha1_96 => Prf::HmacSha1,
        Integ::HmacSha256_128 => Prf::HmacSha256,
        Integ::HmacSha384_192 => Prf::HmacSha384,
        Integ::HmacSha512_256 => Prf::HmacSha512,
    }
}

fn groups(v: &[DhGroup]) -> Vec<u16> {
    v.iter().map(|g| g.number()).collect()
}

impl AlgorithmSet {
    /// Phase 1 lists of a tunnel.
    #[must_use]
    pub fn phase1(o: &TunnelOptions) -> Self {
        Self {
            encr: o
                .phase1_encryption_algorithms
                .iter()
                .map(|e| encr_of(*e))
                .collect(),
            integ: o
                .phase1_integrity_algorithms
                .iter()
                .map(|i| integ_of(*i))
                .collect(),
            dh: groups(&o.phase1_dh_groups),
        }
    }
    /// Phase 2 lists of a tunnel.
    #[must_use]
    pub fn phase2(o: &TunnelOptions) -> Self {
        Self {
            encr: o
                .phase2_encryption_algorithms
                .iter()
                .map(|e| encr_of(*e))
                .collect(),
            integ: o
                .phase2_integrity_algorithms
                .iter()
                .map(|i| integ_of(*i))
                .collect(),
            dh: groups(&o.phase2_dh_groups),
        }
    }

    fn encr_transforms(&self, aead: bool) -> Vec<Transform> {
        self.encr
            .iter()
            .filter(|e| e.is_aead() == aead)
            .map(|e| Transform::with_key_len(TransformType::Encr, e.id(), e.key_bits()))
            .collect()
    }

    /// Our IKE_SA_INIT offer: a CBC proposal and an AEAD proposal (RFC
    /// 5282 § 8: AEAD and non-AEAD ciphers never share a proposal), each
    /// with every configured PRF and DH group, `first_dh` first.
    #[must_use]
    pub fn ike_proposals(&self, first_dh: u16) -> Vec<Proposal> {
        let mut dh: Vec<u16> = vec![first_dh];
        dh.extend(self.dh.iter().copied().filter(|g| *g != first_dh));
        let prfs: Vec<Transform> = self
            .integ
            .iter()
            .map(|i| Transform::new(TransformType::Prf, prf_of(*i).id()))
            .collect();
        let dhs: Vec<Transform> = dh
            .iter()
            .map(|g| Transform::new(TransformType::Dh, *g))
            .collect();
        let mut out = Vec::new();
        for aead in [false, true] {
            let encr = self.encr_transforms(aead);
            if encr.is_empty() {
                continue;
            }
            let mut t = encr;
            t.extend(prfs.iter().cloned());
            if !aead {
                t.extend(
                    self.integ
                        .iter()
                        .map(|i| Transform::new(TransformType::Integ, i.id())),
                );
            }
            t.extend(dhs.iter().cloned());
            out.push(Proposal {
                number: u8::try_from(out.len() + 1).unwrap_or(1),
                protocol: ProtocolId::Ike,
                spi: Vec::new(),
                transforms: t,
            });
        }
        out
    }

    /// Our ESP offer with SPI `spi`; `pfs` adds the DH groups (CREATE_CHILD_SA).
    #[must_use]
    pub fn esp_proposals(&self, spi: u32, pfs: Option<u16>) -> Vec<Proposal> {
        let mut out = Vec::new();
        for aead in [false, true] {
            let mut t = self.encr_transforms(aead);
            if t.is_empty() {
                continue;
            }
            if !aead {
                t.extend(
                    self.integ
                        .iter()
                        .map(|i| Transform::new(TransformType::Integ, i.id())),
                );
            }
            if let Some(first) = pfs {
                t.push(Transform::new(TransformType::Dh, first));
                t.extend(
                    self.dh
                        .iter()
                        .filter(|g| **g != first)
                        .map(|g| Transform::new(TransformType::Dh, *g)),
                );
            }
            t.push(Transform::new(TransformType::Esn, 0));
            out.push(Proposal {
                number: u8::try_from(out.len() + 1).unwrap_or(1),
                protocol: ProtocolId::Esp,
                spi: spi.to_be_bytes().to_vec(),
                transforms: t,
            });
        }
        out
    }
}

/// A negotiated Child SA (ESP) suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspSuite {
    /// Encryption.
    pub encr: Encr,
    /// Integrity (None with GCM).
    pub integ: Option<Integ>,
    /// PFS group, if any.
    pub dh: Option<u16>,
    /// Extended sequence numbers.
    pub esn: bool,
}

impl EspSuite {
    /// The dataplane's algorithm value.
    #[must_use]
    pub fn to_dataplane(&self) -> Option<EspAlgorithm> {
        Some(match (self.encr, self.integ) {
            (Encr::AesGcm16 { key_len: 16 }, None) => EspAlgorithm::Aes128Gcm16,
            (Encr::AesGcm16 { key_len: 32 }, None) => EspAlgorithm::Aes256Gcm16,
            (Encr::AesCbc { key_len: 16 }, Some(i)) => EspAlgorithm::Aes128Cbc(i.to_dataplane()),
            (Encr::AesCbc { key_len: 32 }, Some(i)) => EspAlgorithm::Aes256Cbc(i.to_dataplane()),
            _ => return None,
        })
    }
    /// KEYMAT bytes per direction.
    #[must_use]
    pub fn keymat_len(&self) -> usize {
        self.encr.keymat_len() + self.integ.map_or(0, Integ::key_len)
    }
}

fn rank<T: PartialEq>(list: &[T], v: &T) -> usize {
    list.iter().position(|x| x == v).unwrap_or(usize::MAX)
}

fn pick<T: Copy + PartialEq>(ours: &[T], offered: &[T]) -> Option<T> {
    ours.iter().copied().find(|o| offered.contains(o))
}

fn offered_encr(p: &Proposal) -> Vec<Encr> {
    p.transforms
        .iter()
        .filter(|t| t.kind == TransformType::Encr)
        .filter_map(|t| Encr::from_transform(t.id, t.key_len()))
        .collect()
}

fn offered_ids(p: &Proposal, kind: TransformType) -> Vec<u16> {
    p.transforms
        .iter()
        .filter(|t| t.kind == kind)
        .map(|t| t.id)
        .collect()
}

/// Selects an IKE proposal. `ke_group` is the peer's KE payload group.
/// Returns the proposal number and suite.
#[must_use]
pub fn select_ike(ours: &AlgorithmSet, peer: &[Proposal], ke_group: u16) -> Option<(u8, IkeSuite)> {
    let mut best: Option<((usize, usize, usize), u8, IkeSuite)> = None;
    for p in peer.iter().filter(|p| p.protocol == ProtocolId::Ike) {
        let encrs = offered_encr(p);
        let Some(encr) = pick(&ours.encr, &encrs) else {
            continue;
        };
        let prfs: Vec<Prf> = offered_ids(p, TransformType::Prf)
            .into_iter()
            .filter_map(Prf::from_id)
            .collect();
        let our_prfs: Vec<Prf> = ours.integ.iter().map(|i| prf_of(*i)).collect();
        let Some(prf) = pick(&our_prfs, &prfs) else {
            continue;
        };
        let integ = if encr.is_aead() {
            None
        } else {
            let integs: Vec<Integ> = offered_ids(p, TransformType::Integ)
                .into_iter()
                .filter_map(Integ::from_id)
                .collect();
            match pick(&ours.integ, &integs) {
                Some(i) => Some(i),
                None => continue,
            }
        };
        let dhs = offered_ids(p, TransformType::Dh);
        let dh = if dhs.contains(&ke_group) && ours.dh.contains(&ke_group) {
            ke_group
        } else {
            match pick(&ours.dh, &dhs) {
                Some(g) => g,
                None => continue,
            }
        };
        let key = (
            rank(&ours.encr, &encr),
            rank(&our_prfs, &prf),
            rank(&ours.dh, &dh),
        );
        let suite = IkeSuite {
            encr,
            prf,
            integ,
            dh,
        };
        if best.as_ref().is_none_or(|(k, _, _)| key < *k) {
            best = Some((key, p.number, suite));
        }
    }
    best.map(|(_, n, s)| (n, s))
}

/// Selects an ESP proposal; `pfs_group` is the KE group of a
/// CREATE_CHILD_SA request (None in IKE_AUTH, where DH transforms are
/// ignored, RFC 7296 § 1.2). Returns the proposal (for its number and the
/// peer's SPI) and the suite.
#[must_use]
pub fn select_esp<'a>(
    ours: &AlgorithmSet,
    peer: &'a [Proposal],
    pfs_group: Option<u16>,
) -> Option<(&'a Proposal, EspSuite)> {
    let mut best: Option<((usize, usize), &'a Proposal, EspSuite)> = None;
    for p in peer
        .iter()
        .filter(|p| p.protocol == ProtocolId::Esp && p.spi.len() == 4)
    {
        let Some(encr) = pick(&ours.encr, &offered_encr(p)) else {
            continue;
        };
        let integs: Vec<Integ> = offered_ids(p, TransformType::Integ)
            .into_iter()
            .filter_map(Integ::from_id)
            .collect();
        let integ = if encr.is_aead() {
            None
        } else {
            match pick(&ours.integ, &integs) {
                Some(i) => Some(i),
                None => continue,
            }
        };
        let dhs = offered_ids(p, TransformType::Dh);
        let dh = match pfs_group {
            None => None,
            Some(g) if dhs.contains(&g) && ours.dh.contains(&g) => Some(g),
            Some(_) => continue,
        };
        let esns = offered_ids(p, TransformType::Esn);
        let esn = if esns.is_empty() || esns.contains(&0) {
            false
        } else if esns.contains(&1) {
            true
        } else {
            continue;
        };
        let key = (
            rank(&ours.encr, &encr),
            integ.map_or(0, |i| rank(&ours.integ, &i)),
        );
        let suite = EspSuite {
            encr,
            integ,
            dh,
            esn,
        };
        if best.as_ref().is_none_or(|(k, _, _)| key < *k) {
            best = Some((key, p, suite));
        }
    }
    best.map(|(_, p, s)| (p, s))
}

/// The single-transform-per-type proposal echoed in a response.
#[must_use]
pub fn ike_response(number: u8, s: &IkeSuite) -> Proposal {
    let mut t = vec![Transform::with_key_len(
        TransformType::Encr,
        s.encr.id(),
        s.encr.key_bits(),
    )];
    t.push(Transform::new(TransformType::Prf, s.prf.id()));
    if let Some(i) = s.integ {
        t.push(Transform::new(TransformType::Integ, i.id()));
    }
    t.push(Transform::new(TransformType::Dh, s.dh));
    Proposal {
        number,
        protocol: ProtocolId::Ike,
        spi: Vec::new(),
        transforms: t,
    }
}

/// The ESP proposal echoed in a response, with our SPI.
#[must_use]
pub fn esp_response(number: u8, spi: u32, s: &EspSuite) -> Proposal {
    let mut t = vec![Transform::with_key_len(
        TransformType::Encr,
        s.encr.id(),
        s.encr.key_bits(),
    )];
    if let Some(i) = s.integ {
        t.push(Transform::new(TransformType::Integ, i.id()));
    }
    if let Some(g) = s.dh {
        t.push(Transform::new(TransformType::Dh, g));
    }
    t.push(Transform::new(TransformType::Esn, u16::from(s.esn)));
    Proposal {
        number,
        protocol: ProtocolId::Esp,
        spi: spi.to_be_bytes().to_vec(),
        transforms: t,
    }
}

/// Reads the suite of a one-transform-per-type response proposal and
/// checks it against what we offered.
#[must_use]
pub fn accept_ike_response(ours: &AlgorithmSet, p: &Proposal) -> Option<IkeSuite> {
    let (_, s) = select_ike(ours, std::slice::from_ref(p), 0)?;
    // A response carries exactly one transform of each type.
    let n = p.transforms.len();
    (n == 3 + usize::from(s.integ.is_some())).then_some(s)
}

/// Same for ESP.
#[must_use]
pub fn accept_esp_response(
    ours: &AlgorithmSet,
    p: &Proposal,
    pfs: Option<u16>,
) -> Option<EspSuite> {
    select_esp(ours, std::slice::from_ref(p), pfs).map(|(_, s)| s)
}
