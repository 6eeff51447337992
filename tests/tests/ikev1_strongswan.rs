//! IKEv1 interop with a real strongSwan 5.9.8 (charon-systemd with
//! kernel-libipsec, swanctl `version = 1`, `../shared/lab/recipes.md`
//! § 1 and § 5) in one network namespace and our IKEv1 engine
//! (`control::ikev1`, driven by the `ikev1_peer` binary over kernel UDP
//! sockets 500/4500) in another.
//!
//! For a matrix of proposals (phase 1 AES-128/256-CBC with SHA-1 and
//! SHA2-256/384/512, DH 14, 19, 20, 21; phase 2 ESP AES-GCM-16 and
//! AES-CBC with HMAC, with and without PFS), strongSwan initiating and us
//! initiating: both sides have the ISAKMP SA and the IPsec SA
//! (`swanctl --list-sas`), the SPIs agree, and the ESP keys we derive
//! equal the ones charon logs (`chd = 4`). kernel-libipsec forces NAT-T,
//! so every run also exercises NAT-D, the float to UDP 4500 with the
//! non-ESP marker and the UDP-Encapsulated-Tunnel mode. Each run ends
//! with a DELETE (strongSwan's, or ours) that the other side acts on.

use std::ops::Deref;
use std::process::Command;
use std::time::Duration;

use e2e::charon::{CharonConf, IkeLab, SW, US, charon_keys, field};
use e2e::{Proc, wait_until};

const PSK: &str = "vt1ikev1.PSK_0123456789";

/// One proposal: strongSwan's IKE and ESP proposal strings, and ours.
struct Case {
    ike: String,
    esp: String,
    /// Phase 1 encryption (our name).
    enc: &'static str,
    /// Phase 2 encryption when it differs (AES-GCM).
    enc_p2: Option<&'static str>,
    integ: &'static str,
    dh: u16,
    pfs: Option<u16>,
}

fn matrix() -> Vec<Case> {
    let encs = [("aes128", "AES128"), ("aes256", "AES256")];
    let integs = [
        ("sha1", "SHA1"),
        ("sha256", "SHA2-256"),
        ("sha384", "SHA2-384"),
        ("sha512", "SHA2-512"),
    ];
    let dhs = [
        (14u16, "modp2048"),
        (19, "ecp256"),
        (20, "ecp384"),
        (21, "ecp521"),
    ];
    let esps = [
        (Some(("aes128gcm16", "AES128-GCM-16")), false),
        (None, true),
        (Some(("aes256gcm16", "AES256-GCM-16")), true),
        (None, false),
    ];
    let mut out = Vec::new();
    for (i, (se, oe)) in encs.iter().enumerate() {
        for (j, (si, oi)) in integs.iter().enumerate() {
            let (dh, sdh) = dhs[(i + j) % dhs.len()];
            let (gcm, pfs) = esps[(i * 2 + j) % esps.len()];
            let mut esp = match gcm {
                Some((s, _)) => s.to_owned(),
                None => format!("{se}-{si}"),
            };
            if pfs {
                esp.push('-');
                esp.push_str(sdh);
            }
            out.push(Case {
                ike: format!("{se}-{si}-{sdh}"),
                esp,
                enc: oe,
                enc_p2: gcm.map(|(_, o)| o),
                integ: oi,
                dh,
                pfs: pfs.then_some(dh),
            });
        }
    }
    out
}

struct Lab(IkeLab);

impl Deref for Lab {
    type Target = IkeLab;
    fn deref(&self) -> &IkeLab {
        &self.0
    }
}

impl Lab {
    fn new(suffix: &str) -> Self {
        Self(IkeLab::new(
            "k",
            "vk",
            suffix,
            &CharonConf {
                log: "default = 1\n    chd = 4\n    ike = 2",
                // IKEv1 only: delete an IPsec SA once it is rekeyed
                // (default: keep it until it expires).
                options: "delete_rekeyed = yes",
                ..CharonConf::default()
            },
        ))
    }

    fn load(&self, c: &Case) {
        let conf = self.dir.path().join("swanctl.conf");
        std::fs::write(
            &conf,
            format!(
                "connections {{\n s2s {{\n  version = 1\n  local_addrs = {SW}\n  remote_addrs = {US}\n  proposals = {}\n  dpd_delay = 2s\n  local {{ auth = psk }}\n  remote {{ auth = psk }}\n  children {{ net {{\n   local_ts = 0.0.0.0/0\n   remote_ts = 0.0.0.0/0\n   esp_proposals = {}\n   mode = tunnel\n  }} }}\n }}\n}}\nsecrets {{ ike-1 {{ secret = \"{PSK}\" }} }}\n",
                c.ike, c.esp
            ),
        )
        .expect("swanctl.conf");
        let (ok, out) = self.swanctl(&format!("--load-all --file {}", conf.display()));
        assert!(ok, "swanctl --load-all: {out}");
    }

    fn peer_cmd(&self, c: &Case, psk: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.us.name()])
            .arg(env!("CARGO_BIN_EXE_ikev1_peer"))
            .args(["--local", US, "--remote", SW, "--psk", psk])
            .args(["--enc", c.enc, "--integ", c.integ, "--dh"])
            .arg(c.dh.to_string());
        if let Some(e) = c.enc_p2 {
            cmd.args(["--enc-p2", e]);
        }
        if let Some(g) = c.pfs {
            cmd.args(["--pfs", &g.to_string()]);
        }
        cmd
    }

    fn peer(&self, c: &Case, extra: &[&str], log: &str) -> Proc {
        let mut cmd = self.peer_cmd(c, PSK);
        cmd.args(["--secs", "30"]).args(extra);
        cmd.arg("--close-file")
            .arg(self.dir.path().join(format!("{log}.close")));
        let p = Proc::spawn(cmd, &self.dir.path().join(log));
        assert!(self.peer_listening(), "ikev1_peer did not bind");
        p
    }
}

/// The `n`-th (from 1) `CHILD_UP` line of our side, waiting for it.
fn child_line(lab: &Lab, peer: &Proc, n: usize, what: &str, mark: usize) -> String {
    let ok = wait_until(Duration::from_secs(20), || {
        peer.output()
            .lines()
            .filter(|l| l.starts_with("CHILD_UP"))
            .count()
            >= n
    });
    assert!(
        ok,
        "{what}: our side has no IPsec SA:\n{}\n--- charon:\n{}",
        peer.output(),
        &lab.charon.output()[mark..]
    );
    peer.output()
        .lines()
        .filter(|l| l.starts_with("CHILD_UP"))
        .nth(n - 1)
        .unwrap_or_default()
        .to_owned()
}

/// Both sides up, SPIs mirrored, keys equal. charon labels the keys by
/// direction as in IKEv2 ("initiator" keys protect the Quick Mode
/// initiator's traffic: the SA with the responder's SPI), so the mapping
/// to our inbound / outbound SA depends on who initiated.
fn check(lab: &Lab, peer: &Proc, c: &Case, mark: usize, we_initiate: bool) -> String {
    check_nth(lab, peer, c, mark, we_initiate, 1)
}

/// [`check`] for our `n`-th IPsec SA; returns its `CHILD_UP` line.
fn check_nth(lab: &Lab, peer: &Proc, c: &Case, mark: usize, we_initiate: bool, n: usize) -> String {
    let what = format!(
        "{}, {} / {}",
        if we_initiate {
            "we initiate"
        } else {
            "strongSwan initiates"
        },
        c.ike,
        c.esp
    );
    let line = child_line(lab, peer, n, &what, mark);
    let sas = lab.wait_child_sa(&line, &what);
    assert!(sas.contains("IKEv1"), "{what}: not IKEv1: {sas}");
    assert!(sas.contains("TUNNEL-in-UDP"), "{what}: no NAT-T: {sas}");
    let log = lab.charon.output();
    let keys = charon_keys(&log[mark..]);
    let get = |label: &str| {
        keys.iter()
            .rev()
            .find(|(l, _)| l == label)
            .map(|(_, h)| h.clone())
            .unwrap_or_default()
    };
    let (initiator_spi_side, responder_spi_side) = if we_initiate {
        ("out", "in")
    } else {
        ("in", "out")
    };
    let ours = |side: &str, k: &str| field(&line, &format!("{side}_{k}")).to_owned();
    assert!(
        get("encryption initiator key").len() >= 32,
        "{what}: charon logged no keys: {keys:?}"
    );
    assert_eq!(
        get("encryption initiator key"),
        ours(initiator_spi_side, "enc"),
        "{what}: {keys:?}\n{line}"
    );
    assert_eq!(
        get("encryption responder key"),
        ours(responder_spi_side, "enc"),
        "{what}"
    );
    assert_eq!(
        get("integrity initiator key"),
        ours(initiator_spi_side, "int"),
        "{what}"
    );
    assert_eq!(
        get("integrity responder key"),
        ours(responder_spi_side, "int"),
        "{what}"
    );
    if c.enc_p2.is_none() {
        assert!(!ours("in", "int").is_empty(), "{what}: no integrity key");
    }
    assert_eq!(field(&line, "nat"), "true", "{what}: NAT-T not used");
    assert!(
        peer.output().contains("IKE_UP") && peer.output().contains("nat=true"),
        "{what}: {}",
        peer.output()
    );
    eprintln!("ok: {what}: {}", field(&line, "suite"));
    line
}

/// strongSwan deletes: we report the IPsec SA and the ISAKMP SA down.
fn strongswan_deletes(lab: &Lab, peer: &mut Proc) {
    let (_, out) = lab.swanctl("--terminate --ike s2s --timeout 5");
    let ok = wait_until(Duration::from_secs(5), || {
        peer.output().contains("IKE_DOWN DeletedByPeer")
    });
    assert!(
        ok,
        "no IKE_DOWN after strongSwan's DELETE: {out}\n{}",
        peer.output()
    );
    let o = peer.output();
    assert!(o.contains("LOG AWS tunnel received DELETE for IKE_SA from CGW"));
    assert!(o.contains("LOG AWS tunnel received DELETE for phase 2 SA with SPI:"));
    assert!(o.contains("CHILD_DOWN"));
    peer.stop(Duration::from_secs(5));
}

/// We delete (`ikev1_peer` closes when its close file appears):
/// strongSwan drops both SAs.
fn we_delete(lab: &Lab, peer: &mut Proc, log: &str) {
    std::fs::write(lab.dir.path().join(format!("{log}.close")), "").expect("close file");
    assert!(
        wait_until(Duration::from_secs(5), || peer.output().contains("DONE")),
        "{}",
        peer.output()
    );
    assert!(peer.output().contains("IKE_DOWN Closed"));
    peer.stop(Duration::from_secs(5));
    let mut sas = String::new();
    let gone = wait_until(Duration::from_secs(5), || {
        sas = lab.swanctl("--list-sas").1;
        !sas.contains("ESTABLISHED")
    });
    assert!(gone, "strongSwan kept the SA after our DELETE: {sas}");
}

#[test]
fn strongswan_initiates_proposal_matrix() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("a");
    for (n, c) in matrix().iter().enumerate() {
        lab.load(c);
        let log = format!("resp{n}.log");
        let mut peer = lab.peer(c, &[], &log);
        let mark = lab.charon.output().len();
        let t0 = std::time::Instant::now();
        let (ok, out) = lab.swanctl("--initiate --child net --timeout 15");
        // Main Mode + Quick Mode, as swanctl waits for them.
        eprintln!("swanctl --initiate took {:?}", t0.elapsed());
        assert!(
            ok,
            "{} / {}: swanctl --initiate failed: {out}\n--- ours:\n{}\n--- charon:\n{}",
            c.ike,
            c.esp,
            peer.output(),
            &lab.charon.output()[mark..]
        );
        let _ = check(&lab, &peer, c, mark, false);
        if n % 2 == 0 {
            strongswan_deletes(&lab, &mut peer);
        } else {
            we_delete(&lab, &mut peer, &log);
        }
    }
}

#[test]
fn we_initiate_proposal_matrix() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("b");
    for (n, c) in matrix().iter().enumerate() {
        lab.load(c);
        let mark = lab.charon.output().len();
        let log = format!("init{n}.log");
        let mut peer = lab.peer(c, &["--initiate"], &log);
        let _ = check(&lab, &peer, c, mark, true);
        if n % 2 == 0 {
            we_delete(&lab, &mut peer, &log);
        } else {
            strongswan_deletes(&lab, &mut peer);
        }
    }
}

/// A wrong pre-shared key: Main Mode message 5 does not decrypt to a
/// verifiable HASH_I; we say so in the spec's words and nothing comes up.
#[test]
fn wrong_psk_is_refused_and_logged() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("c");
    let c = &matrix()[1];
    lab.load(c);
    let mut cmd = lab.peer_cmd(c, "wrongPSK.12345678");
    cmd.args(["--secs", "30"]);
    let mut peer = Proc::spawn(cmd, &lab.dir.path().join("wrong.log"));
    assert!(lab.peer_listening(), "ikev1_peer did not bind");
    let (ok, _) = lab.swanctl("--initiate --child net --timeout 8");
    assert!(!ok, "strongSwan must not come up with a wrong PSK");
    assert!(
        wait_until(Duration::from_secs(5), || peer
            .output()
            .contains("IKE_DOWN AuthenticationFailed")),
        "{}",
        peer.output()
    );
    let out = peer.output();
    assert!(
        out.contains("LOG AWS tunnel payload decryption failed due to invalid pre-shared key"),
        "{out}"
    );
    assert!(!out.contains("IKE_UP"));
    peer.stop(Duration::from_secs(5));
}

/// No common phase 1 proposal (strongSwan: MODP-3072 only), and
/// Aggressive Mode: both refused with a notification and a log line.
#[test]
fn no_proposal_and_aggressive_mode_are_refused() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("d");
    let mut c = matrix().swap_remove(1);
    c.ike = "aes128-sha256-modp3072".to_owned();
    lab.load(&c);
    let mut peer = lab.peer(&c, &[], "np.log");
    let (ok, _) = lab.swanctl("--initiate --child net --timeout 8");
    assert!(!ok, "no common proposal must not come up");
    assert!(
        wait_until(Duration::from_secs(5), || peer
            .output()
            .contains("LOG No proposal match found by AWS")),
        "{}",
        peer.output()
    );
    assert!(lab.charon.output().contains("NO_PROPOSAL_CHOSEN"));
    peer.stop(Duration::from_secs(5));

    let c = &matrix()[1];
    let conf = lab.dir.path().join("swanctl.conf");
    let text = std::fs::read_to_string(&conf).expect("conf");
    std::fs::write(
        &conf,
        text.replace("version = 1\n", "version = 1\n  aggressive = yes\n")
            .replace("modp3072", "ecp256"),
    )
    .expect("conf");
    let (ok, out) = lab.swanctl(&format!("--load-all --file {}", conf.display()));
    assert!(ok, "{out}");
    let mut peer = lab.peer(c, &[], "aggr.log");
    let (ok, _) = lab.swanctl("--initiate --child net --timeout 8");
    assert!(!ok, "Aggressive Mode must not come up");
    assert!(
        wait_until(Duration::from_secs(5), || peer.output().contains(
            "LOG IKEv1 Aggressive Mode from 192.0.2.1 refused: only Main Mode is supported"
        )),
        "{}",
        peer.output()
    );
    assert!(!peer.output().contains("IKE_UP"));
    peer.stop(Duration::from_secs(5));
}

/// DPD (RFC 3706) both ways: strongSwan's R-U-THEREs (dpd_delay 2 s) are
/// answered, so it keeps the SA; then strongSwan is frozen and we
/// declare it dead after our DPD timeout (3 s idle + 3 s unanswered).
#[test]
fn dpd_both_ways() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("e");
    let c = &matrix()[2];
    lab.load(c);
    let mut peer = lab.peer(c, &["--dpd-secs", "3"], "dpd.log");
    let mark = lab.charon.output().len();
    let (ok, out) = lab.swanctl("--initiate --child net --timeout 15");
    assert!(ok, "{out}\n{}", peer.output());
    let _ = check(&lab, &peer, c, mark, false);
    std::thread::sleep(Duration::from_secs(7));
    let log = lab.charon.output();
    assert!(
        log[mark..].contains("DPD"),
        "strongSwan sent no DPD: {}",
        &log[mark..]
    );
    let (_, sas) = lab.swanctl("--list-sas");
    assert!(
        sas.contains("ESTABLISHED"),
        "strongSwan dropped the SA: {sas}"
    );
    assert!(!peer.output().contains("IKE_DOWN"), "{}", peer.output());
    let pid = lab.charon.id();
    assert!(e2e::sh_ok(&format!("kill -STOP {pid}")));
    let t0 = std::time::Instant::now();
    let dead = wait_until(Duration::from_secs(15), || {
        peer.output().contains("IKE_DOWN DpdTimeout")
    });
    let took = t0.elapsed();
    let _ = e2e::sh_ok(&format!("kill -CONT {pid}"));
    assert!(dead, "no DPD timeout: {}", peer.output());
    assert!(took <= Duration::from_secs(8), "DPD took {took:?}");
    let out = peer.output();
    assert!(out.contains("LOG Peer is not responding - Declaring peer dead"));
    assert!(out.contains("CHILD_DOWN"));
    peer.stop(Duration::from_secs(5));
}

/// strongSwan rekeys the IPsec SA (a new Quick Mode on the same ISAKMP
/// SA, with PFS) and deletes the old one: we answer, the new keys match,
/// the old SA is reported down and the new one stays.
#[test]
fn strongswan_rekeys_the_ipsec_sa() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("f");
    let c = &matrix()[7]; // aes256-sha512-modp2048 / aes256-sha512-modp2048
    assert!(c.pfs.is_some());
    lab.load(c);
    let mut peer = lab.peer(c, &[], "rekey.log");
    let mark = lab.charon.output().len();
    let (ok, out) = lab.swanctl("--initiate --child net --timeout 15");
    assert!(ok, "{out}\n{}", peer.output());
    let l1 = check(&lab, &peer, c, mark, false);
    let mark = lab.charon.output().len();
    let (ok, out) = lab.swanctl("--rekey --child net");
    assert!(ok, "{out}");
    let l2 = check_nth(&lab, &peer, c, mark, false, 2);
    assert_ne!(field(&l1, "in"), field(&l2, "in"));
    assert!(
        wait_until(Duration::from_secs(10), || peer.output().contains(
            &format!(
                "CHILD_DOWN in={} out={}",
                field(&l1, "in"),
                field(&l1, "out")
            )
        )),
        "old IPsec SA not deleted: {}",
        peer.output()
    );
    assert!(
        !peer
            .output()
            .contains(&format!("CHILD_DOWN in={}", field(&l2, "in")))
    );
    strongswan_deletes(&lab, &mut peer);
}

/// strongSwan rekeys the ISAKMP SA (IKEv1: a new Main Mode; 5.9.8 keeps
/// the old one until it expires). Our old ISAKMP SA expires (8 s
/// lifetime, the smaller of strongSwan's and ours): we DELETE it, and its
/// IPsec SA moves to the new ISAKMP SA instead of going down; a later
/// DELETE through the new one removes it.
#[test]
fn strongswan_rekeys_the_isakmp_sa() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("g");
    let c = &matrix()[3];
    lab.load(c);
    let mut peer = lab.peer(c, &["--phase1-secs", "8"], "p1rekey.log");
    let mark = lab.charon.output().len();
    let (ok, out) = lab.swanctl("--initiate --child net --timeout 15");
    let t0 = std::time::Instant::now();
    assert!(ok, "{out}\n{}", peer.output());
    let l1 = check(&lab, &peer, c, mark, false);
    std::thread::sleep(Duration::from_secs(3));
    let (ok, out) = lab.swanctl("--rekey --ike s2s");
    assert!(ok, "{out}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let o = peer.output();
            o.matches("IKE_UP").count() == 2 && o.contains("IKE_DOWN Expired")
        }),
        "{}",
        peer.output()
    );
    let took = t0.elapsed();
    let o = peer.output();
    assert!(
        o.contains("LOG 1 phase 2 SA(s) kept on the newer ISAKMP SA with the peer"),
        "{o}"
    );
    assert!(!o.contains("CHILD_DOWN"), "{o}");
    assert!(took >= Duration::from_secs(7), "expired early: {took:?}");
    let sas = lab.wait_child_sa(&l1, "after the ISAKMP SA rekey");
    assert_eq!(sas.matches("ESTABLISHED").count(), 1, "{sas}");
    strongswan_deletes(&lab, &mut peer);
}

/// Phase 2 without a common proposal (strongSwan: ESP AES-192 only): the
/// ISAKMP SA comes up, the Quick Mode is refused with a protected
/// NO-PROPOSAL-CHOSEN and the spec's two log lines; and our Main Mode
/// against a strongSwan without a common phase 1 proposal ends on its
/// NO-PROPOSAL-CHOSEN.
#[test]
fn phase2_no_proposal_and_refused_initiator() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("h");
    let mut c = matrix().swap_remove(1);
    c.esp = "aes192-sha256".to_owned();
    lab.load(&c);
    let mut peer = lab.peer(&c, &[], "p2np.log");
    let (ok, _) = lab.swanctl("--initiate --child net --timeout 8");
    assert!(!ok, "phase 2 must not come up");
    assert!(
        wait_until(Duration::from_secs(5), || peer.output().contains(
            "LOG AWS tunnel phase 2 SA cannot be established while keeping phase 1"
        )),
        "{}",
        peer.output()
    );
    let o = peer.output();
    assert!(o.contains("LOG No matching proposal found. Notifying with \"No proposal chosen\""));
    assert!(o.contains("IKE_UP") && !o.contains("CHILD_UP"), "{o}");
    assert!(lab.charon.output().contains("NO_PROPOSAL_CHOSEN"));
    let _ = lab.swanctl("--terminate --ike s2s --timeout 5");
    peer.stop(Duration::from_secs(5));

    c.ike = "aes128-sha256-modp3072".to_owned();
    lab.load(&c);
    let mut peer = lab.peer(&c, &["--initiate"], "np-init.log");
    assert!(
        wait_until(Duration::from_secs(10), || peer
            .output()
            .contains("IKE_DOWN NoProposalChosen")),
        "{}",
        peer.output()
    );
    assert!(peer.output().contains("LOG No proposal match found by AWS"));
    peer.stop(Duration::from_secs(5));
}
