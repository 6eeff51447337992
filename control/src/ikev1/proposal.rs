//! IKEv1 proposals: the phase 1 and phase 2 SA attributes ([RFC 2409
//! Appendix A], [RFC 2407 § 4.5]) of the tunnel's algorithm lists
//! ([`AlgorithmSet`], shared with IKEv2), our offers, and the selection
//! of a peer's transform.
//!
//! The selection rule is the IKEv2 one ([`crate::ike::proposal`]): every
//! acceptable transform is ranked by the position of its encryption,
//! hash / integrity and DH group in our configured lists, and the best
//! wins (ties to the peer's order). ISAKMP has no AEAD for phase 1, so
//! configured AES-GCM entries are skipped there; in phase 2 they map to
//! ESP_AES_GCM_16 ([RFC 4106 § 8.4]).
//!
//! A responder returns the chosen transform unchanged (RFC 2409 § 5:
//! "the responder MUST NOT … modify the attributes"); the lifetime it
//! keeps is the smaller of the peer's and ours.
//!
//! [RFC 2409 Appendix A]: https://www.rfc-editor.org/rfc/rfc2409#appendix-A
//! [RFC 2407 § 4.5]: https://www.rfc-editor.org/rfc/rfc2407#section-4.5
//! [RFC 4106 § 8.4]: https://www.rfc-editor.org/rfc/rfc4106#section-8.4

use std::time::Duration;

use crate::ike::crypto::{Encr, Integ, Prf};
use crate::ike::proposal::{AlgorithmSet, EspSuite, prf_of};

use super::wire::{Attribute, DOI_IPSEC, Proposal, ProtocolId, SIT_IDENTITY_ONLY, Sa, Transform};

/// Phase 1 attribute types (RFC 2409 Appendix A).
pub mod p1 {
    /// Encryption Algorithm.
    pub const ENCRYPTION: u16 = 1;
    /// Hash Algorithm.
    pub const HASH: u16 = 2;
    /// Authentication Method.
    pub const AUTH_METHOD: u16 = 3;
    /// Group Description.
    pub const GROUP: u16 = 4;
    /// Life Type.
    pub const LIFE_TYPE: u16 = 11;
    /// Life Duration.
    pub const LIFE_DURATION: u16 = 12;
    /// Key Length (bits).
    pub const KEY_LENGTH: u16 = 14;
    /// `AES-CBC` (RFC 3602 § 5.1... value 7 of Appendix A's registry).
    pub const ENCR_AES_CBC: u64 = 7;
    /// Authentication Method: pre-shared key.
    pub const AUTH_PSK: u64 = 1;
    /// `KEY_IKE`, the only phase 1 transform ID (RFC 2407 § 4.4.2).
    pub const KEY_IKE: u8 = 1;
}

/// IPsec DOI attribute types and values (RFC 2407 § 4.5, RFC 3947 § 5.2).
pub mod p2 {
    /// SA Life Type.
    pub const LIFE_TYPE: u16 = 1;
    /// SA Life Duration.
    pub const LIFE_DURATION: u16 = 2;
    /// Group Description (PFS).
    pub const GROUP: u16 = 3;
    /// Encapsulation Mode.
    pub const ENCAPSULATION: u16 = 4;
    /// Authentication Algorithm.
    pub const AUTH_ALG: u16 = 5;
    /// Key Length (bits).
    pub const KEY_LENGTH: u16 = 6;
    /// Extended (64-bit) Sequence Number (RFC 4304).
    pub const ESN: u16 = 11;
    /// Encapsulation Mode: Tunnel.
    pub const MODE_TUNNEL: u64 = 1;
    /// Encapsulation Mode: UDP-Encapsulated-Tunnel (RFC 3947 § 5.2).
    pub const MODE_UDP_TUNNEL: u64 = 3;
    /// The same in the NAT-T drafts.
    pub const MODE_UDP_TUNNEL_DRAFT: u64 = 61443;
    /// `ESP_AES` (CBC) transform ID (RFC 3602).
    pub const ESP_AES_CBC: u8 = 12;
    /// `ESP_AES-GCM` with a 16-octet ICV (RFC 4106 § 8.4).
    pub const ESP_AES_GCM_16: u8 = 20;
}

/// Life Type: seconds (both registries).
const LIFE_SECONDS: u64 = 1;

/// The phase 1 hash value (RFC 2409 Appendix A, RFC 4868 for SHA-2) of
/// a PRF.
#[must_use]
pub fn hash_id(p: Prf) -> u64 {
    match p {
        Prf::HmacSha1 => 2,
        Prf::HmacSha256 => 4,
        Prf::HmacSha384 => 5,
        Prf::HmacSha512 => 6,
    }
}

fn prf_of_hash(id: u64) -> Option<Prf> {
    Prf::ALL.into_iter().find(|p| hash_id(*p) == id)
}

/// The IPsec DOI Authentication Algorithm value (RFC 2407 § 4.5, RFC
/// 4868 § 2.4) of an integrity algorithm.
#[must_use]
pub fn auth_alg_id(i: Integ) -> u64 {
    match i {
        Integ::HmacSha1_96 => 2,
        Integ::HmacSha256_128 => 5,
        Integ::HmacSha384_192 => 6,
        Integ::HmacSha512_256 => 7,
    }
}

fn integ_of_auth_alg(id: u64) -> Option<Integ> {
    Integ::ALL.into_iter().find(|i| auth_alg_id(*i) == id)
}

fn key_len_of(bits: Option<u64>) -> Option<usize> {
    match bits? {
        128 => Some(16),
        256 => Some(32),
        _ => None,
    }
}

/// A candidate transform: its rank in our lists, where it is, its suite.
type Ranked<'a, K, S> = (K, &'a Proposal, &'a Transform, S);

fn rank<T: PartialEq>(list: &[T], v: &T) -> usize {
    list.iter().position(|x| x == v).unwrap_or(usize::MAX)
}

fn life_secs(t: &Transform, type_attr: u16, dur_attr: u16) -> Option<u64> {
    // RFC 2407 § 4.5: a Life Duration follows its Life Type; only the
    // seconds limit matters to us (kilobyte limits are not enforced).
    let mut secs = None;
    let mut ty = None;
    for a in &t.attributes {
        if a.kind() == type_attr {
            ty = a.value();
        } else if a.kind() == dur_attr && ty == Some(LIFE_SECONDS) {
            secs = a.value();
        }
    }
    secs
}

/// A negotiated phase 1 suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase1Suite {
    /// Encryption (AES-CBC).
    pub encr: Encr,
    /// PRF (HMAC of the negotiated hash).
    pub prf: Prf,
    /// DH group.
    pub dh: u16,
    /// Lifetime (the smaller of the peer's and ours).
    pub lifetime: Duration,
}

impl Phase1Suite {
    /// The key length of the phase 1 cipher.
    #[must_use]
    pub fn key_len(&self) -> usize {
        match self.encr {
            Encr::AesCbc { key_len } | Encr::AesGcm16 { key_len } => key_len,
        }
    }
    /// As the IKEv2 suite type the rest of the appliance reports (the
    /// hash's HMAC shown as the integrity algorithm).
    #[must_use]
    pub fn as_ike_suite(&self) -> crate::ike::crypto::IkeSuite {
        crate::ike::crypto::IkeSuite {
            encr: self.encr,
            prf: self.prf,
            integ: Integ::ALL.into_iter().find(|i| prf_of(*i) == self.prf),
            dh: self.dh,
        }
    }
}

/// Why no phase 1 transform was chosen.
fn phase1_of(t: &Transform, ours: &AlgorithmSet) -> Option<(Encr, Prf, u16)> {
    if t.id != p1::KEY_IKE || t.attr(p1::AUTH_METHOD)? != p1::AUTH_PSK {
        return None;
    }
    if t.attr(p1::ENCRYPTION)? != p1::ENCR_AES_CBC {
        return None;
    }
    let encr = Encr::AesCbc {
        key_len: key_len_of(t.attr(p1::KEY_LENGTH))?,
    };
    let prf = prf_of_hash(t.attr(p1::HASH)?)?;
    let dh = u16::try_from(t.attr(p1::GROUP)?).ok()?;
    let ok = ours.encr.contains(&encr)
        && ours.integ.iter().any(|i| prf_of(*i) == prf)
        && ours.dh.contains(&dh);
    ok.then_some((encr, prf, dh))
}

/// Selects a phase 1 transform from the initiator's SA (Main Mode
/// message 1, pre-shared key authentication). Returns the SA to answer
/// with (the chosen transform, unchanged) and the suite.
#[must_use]
pub fn select_phase1(
    ours: &AlgorithmSet,
    lifetime: Duration,
    sa: &Sa,
) -> Option<(Sa, Phase1Suite)> {
    if sa.doi != DOI_IPSEC || sa.situation != SIT_IDENTITY_ONLY {
        return None;
    }
    let our_prfs: Vec<Prf> = ours.integ.iter().map(|i| prf_of(*i)).collect();
    let mut best: Option<Ranked<'_, (usize, usize, usize), Phase1Suite>> = None;
    for p in sa
        .proposals
        .iter()
        .filter(|p| p.protocol == ProtocolId::Isakmp)
    {
        for t in &p.transforms {
            let Some((encr, prf, dh)) = phase1_of(t, ours) else {
                continue;
            };
            let theirs = life_secs(t, p1::LIFE_TYPE, p1::LIFE_DURATION)
                .map_or(lifetime, Duration::from_secs);
            let key = (
                rank(&ours.encr, &encr),
                rank(&our_prfs, &prf),
                rank(&ours.dh, &dh),
            );
            let suite = Phase1Suite {
                encr,
                prf,
                dh,
                lifetime: theirs.min(lifetime),
            };
            if best.as_ref().is_none_or(|(k, ..)| key < *k) {
                best = Some((key, p, t, suite));
            }
        }
    }
    let (_, p, t, suite) = best?;
    Some((
        Sa {
            doi: DOI_IPSEC,
            situation: SIT_IDENTITY_ONLY,
            proposals: vec![Proposal {
                number: p.number,
                protocol: ProtocolId::Isakmp,
                spi: p.spi.clone(),
                transforms: vec![t.clone()],
            }],
        },
        suite,
    ))
}

/// Our Main Mode offer: one transform per (encryption, hash, group) of
/// the phase 1 lists, PSK authentication, our lifetime.
#[must_use]
pub fn phase1_offer(ours: &AlgorithmSet, lifetime: Duration) -> Sa {
    let mut transforms = Vec::new();
    for e in ours.encr.iter().filter(|e| !e.is_aead()) {
        for i in &ours.integ {
            for g in &ours.dh {
                let n = u8::try_from(transforms.len() + 1).unwrap_or(u8::MAX);
                transforms.push(Transform {
                    number: n,
                    id: p1::KEY_IKE,
                    attributes: vec![
                        Attribute::Basic(p1::ENCRYPTION, 7),
                        Attribute::Basic(p1::KEY_LENGTH, e.key_bits()),
                        Attribute::number(p1::HASH, hash_id(prf_of(*i))),
                        Attribute::number(p1::AUTH_METHOD, p1::AUTH_PSK),
                        Attribute::Basic(p1::GROUP, *g),
                        Attribute::number(p1::LIFE_TYPE, LIFE_SECONDS),
                        Attribute::number(p1::LIFE_DURATION, lifetime.as_secs()),
                    ],
                });
            }
        }
    }
    transforms.truncate(usize::from(u8::MAX));
    Sa {
        doi: DOI_IPSEC,
        situation: SIT_IDENTITY_ONLY,
        proposals: vec![Proposal {
            number: 1,
            protocol: ProtocolId::Isakmp,
            spi: Vec::new(),
            transforms,
        }],
    }
}

/// Reads the responder's phase 1 answer: exactly one transform, one we
/// offered.
#[must_use]
pub fn accept_phase1(ours: &AlgorithmSet, lifetime: Duration, sa: &Sa) -> Option<Phase1Suite> {
    let [p] = sa.proposals.as_slice() else {
        return None;
    };
    let [t] = p.transforms.as_slice() else {
        return None;
    };
    let (_, s) = select_phase1(
        ours,
        lifetime,
        &Sa {
            doi: sa.doi,
            situation: sa.situation,
            proposals: vec![Proposal {
                transforms: vec![t.clone()],
                ..p.clone()
            }],
        },
    )?;
    Some(s)
}

/// A negotiated phase 2 (ESP) suite with its Quick Mode details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase2Suite {
    /// The ESP suite (shared with IKEv2's Child SAs).
    pub esp: EspSuite,
    /// UDP-encapsulated tunnel mode.
    pub udp_encap: bool,
    /// Lifetime (the smaller of the peer's and ours).
    pub lifetime: Duration,
}

fn phase2_of(
    t: &Transform,
    ours: &AlgorithmSet,
    pfs: Option<u16>,
    nat: bool,
) -> Option<(Encr, Option<Integ>, bool)> {
    let key_len = key_len_of(t.attr(p2::KEY_LENGTH))?;
    let encr = match t.id {
        p2::ESP_AES_CBC => Encr::AesCbc { key_len },
        p2::ESP_AES_GCM_16 => Encr::AesGcm16 { key_len },
        _ => return None,
    };
    let integ = match t.attr(p2::AUTH_ALG) {
        None if encr.is_aead() => None,
        Some(id) if !encr.is_aead() => Some(integ_of_auth_alg(id)?),
        _ => return None,
    };
    let group = t.attr(p2::GROUP).and_then(|g| u16::try_from(g).ok());
    if group != pfs {
        return None;
    }
    if let Some(g) = group
        && !ours.dh.contains(&g)
    {
        return None;
    }
    let udp = match t.attr(p2::ENCAPSULATION)? {
        p2::MODE_TUNNEL => false,
        p2::MODE_UDP_TUNNEL | p2::MODE_UDP_TUNNEL_DRAFT => true,
        _ => return None,
    };
    if udp != nat || t.attr(p2::ESN).is_some_and(|v| v != 0) {
        return None;
    }
    let ok = ours.encr.contains(&encr) && integ.is_none_or(|i| ours.integ.contains(&i));
    ok.then_some((encr, integ, udp))
}

/// Selects an ESP transform from a Quick Mode SA. `pfs` is the group of
/// the peer's KE payload (None without PFS); `nat` whether phase 1
/// detected a NAT (UDP-encapsulated modes are required then, and only
/// then). Returns the response SA (our SPI, the chosen transform
/// unchanged), the peer's SPI and the suite.
#[must_use]
pub fn select_phase2(
    ours: &AlgorithmSet,
    lifetime: Duration,
    sa: &Sa,
    pfs: Option<u16>,
    nat: bool,
    our_spi: u32,
) -> Option<(Sa, u32, Phase2Suite)> {
    if sa.doi != DOI_IPSEC || sa.situation != SIT_IDENTITY_ONLY {
        return None;
    }
    let mut best: Option<Ranked<'_, (usize, usize), Phase2Suite>> = None;
    for p in sa
        .proposals
        .iter()
        .filter(|p| p.protocol == ProtocolId::Esp)
    {
        // A proposal number shared with other protocols (AH, IPComp) is
        // an AND we do not do.
        if sa
            .proposals
            .iter()
            .any(|q| q.number == p.number && q.protocol != ProtocolId::Esp)
            || p.spi.len() != 4
        {
            continue;
        }
        for t in &p.transforms {
            let Some((encr, integ, udp)) = phase2_of(t, ours, pfs, nat) else {
                continue;
            };
            let theirs = life_secs(t, p2::LIFE_TYPE, p2::LIFE_DURATION)
                .map_or(lifetime, Duration::from_secs);
            let key = (
                rank(&ours.encr, &encr),
                integ.map_or(0, |i| rank(&ours.integ, &i)),
            );
            let suite = Phase2Suite {
                esp: EspSuite {
                    encr,
                    integ,
                    dh: pfs,
                    esn: false,
                },
                udp_encap: udp,
                lifetime: theirs.min(lifetime),
            };
            if best.as_ref().is_none_or(|(k, ..)| key < *k) {
                best = Some((key, p, t, suite));
            }
        }
    }
    let (_, p, t, suite) = best?;
    let peer_spi = u32::from_be_bytes([p.spi[0], p.spi[1], p.spi[2], p.spi[3]]);
    Some((
        Sa {
            doi: DOI_IPSEC,
            situation: SIT_IDENTITY_ONLY,
            proposals: vec![Proposal {
                number: p.number,
                protocol: ProtocolId::Esp,
                spi: our_spi.to_be_bytes().to_vec(),
                transforms: vec![t.clone()],
            }],
        },
        peer_spi,
        suite,
    ))
}

/// Our Quick Mode offer with SPI `spi`: one transform per (encryption,
/// integrity) of the phase 2 lists, PFS group `pfs`, UDP encapsulation
/// when `nat`.
#[must_use]
pub fn phase2_offer(
    ours: &AlgorithmSet,
    lifetime: Duration,
    spi: u32,
    pfs: Option<u16>,
    nat: bool,
) -> Sa {
    let mut transforms = Vec::new();
    for e in &ours.encr {
        let integs: Vec<Option<Integ>> = if e.is_aead() {
            vec![None]
        } else {
            ours.integ.iter().copied().map(Some).collect()
        };
        for i in integs {
            let n = u8::try_from(transforms.len() + 1).unwrap_or(u8::MAX);
            let mut attributes = vec![
                Attribute::number(p2::LIFE_TYPE, LIFE_SECONDS),
                Attribute::number(p2::LIFE_DURATION, lifetime.as_secs()),
                Attribute::number(
                    p2::ENCAPSULATION,
                    if nat {
                        p2::MODE_UDP_TUNNEL
                    } else {
                        p2::MODE_TUNNEL
                    },
                ),
                Attribute::Basic(p2::KEY_LENGTH, e.key_bits()),
            ];
            if let Some(i) = i {
                attributes.push(Attribute::number(p2::AUTH_ALG, auth_alg_id(i)));
            }
            if let Some(g) = pfs {
                attributes.push(Attribute::Basic(p2::GROUP, g));
            }
            transforms.push(Transform {
                number: n,
                id: if e.is_aead() {
                    p2::ESP_AES_GCM_16
                } else {
                    p2::ESP_AES_CBC
                },
                attributes,
            });
        }
    }
    transforms.truncate(usize::from(u8::MAX));
    Sa {
        doi: DOI_IPSEC,
        situation: SIT_IDENTITY_ONLY,
        proposals: vec![Proposal {
            number: 1,
            protocol: ProtocolId::Esp,
            spi: spi.to_be_bytes().to_vec(),
            transforms,
        }],
    }
}
