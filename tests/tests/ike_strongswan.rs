//! IKEv2 interop with a real strongSwan 5.9.8 (charon-systemd with
//! kernel-libipsec, `../shared/lab/recipes.md` § 1) in one network
//! namespace and our IKE engine (`control::ike`, driven by the `ike_peer`
//! binary over kernel UDP sockets 500/4500) in another.
//!
//! For a matrix of proposals (AES-128/256-GCM-16 and AES-128/256-CBC with
//! SHA1/SHA2-256/384/512, DH 14, 19, 20, 21), in both directions:
//! both sides reach ESTABLISHED with the Child SA installed
//! (`swanctl --list-sas`), the SPIs agree, and the ESP keys we derive
//! equal the ones charon logs (`chd = 4`). kernel-libipsec forces NAT-T,
//! so every run also exercises the float to UDP 4500 with the non-ESP
//! marker. ESP traffic itself is out of scope here. The fixture is
//! [`e2e::charon::IkeLab`].

use std::ops::Deref;
use std::process::Command;
use std::time::Duration;

use e2e::charon::{CharonConf, IkeLab, SW, US, charon_keys, field};
use e2e::{Proc, sh_ok, wait_until};

const PSK: &str = "vt1ike.PSK_0123456789";

/// One proposal: strongSwan's IKE and ESP proposal strings, and ours.
struct Case {
    ike: String,
    esp: String,
    enc: &'static str,
    integ: &'static str,
    dh: u16,
}

fn matrix() -> Vec<Case> {
    let encs = [
        ("aes128gcm16", "AES128-GCM-16", true),
        ("aes256gcm16", "AES256-GCM-16", true),
        ("aes128", "AES128", false),
        ("aes256", "AES256", false),
    ];
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
    let mut out = Vec::new();
    for (i, (se, oe, aead)) in encs.iter().enumerate() {
        for (j, (si, oi)) in integs.iter().enumerate() {
            // Every encryption meets every DH group, every integrity too.
            let (dh, sdh) = dhs[(i + j) % dhs.len()];
            let (ike, esp) = if *aead {
                (format!("{se}-prf{si}-{sdh}"), (*se).to_owned())
            } else {
                (format!("{se}-{si}-{sdh}"), format!("{se}-{si}"))
            };
            out.push(Case {
                ike,
                esp,
                enc: oe,
                integ: oi,
                dh,
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
            "i",
            "vi",
            suffix,
            &CharonConf {
                log: "default = 1\n    chd = 4",
                ..CharonConf::default()
            },
        ))
    }

    fn load(&self, c: &Case) {
        self.load_ts(c, "0.0.0.0/0", "0.0.0.0/0");
    }

    fn load_ts(&self, c: &Case, local_ts: &str, remote_ts: &str) {
        let conf = self.dir.path().join("swanctl.conf");
        std::fs::write(
            &conf,
            format!(
                "connections {{\n s2s {{\n  version = 2\n  local_addrs = {SW}\n  remote_addrs = {US}\n  proposals = {}\n  local {{ auth = psk }}\n  remote {{ auth = psk }}\n  children {{ net {{\n   local_ts = {local_ts}\n   remote_ts = {remote_ts}\n   esp_proposals = {}\n   mode = tunnel\n  }} }}\n }}\n}}\nsecrets {{ ike-1 {{ secret = \"{PSK}\" }} }}\n",
                c.ike, c.esp
            ),
        )
        .expect("swanctl.conf");
        let (ok, out) = self.swanctl(&format!("--load-all --file {}", conf.display()));
        assert!(ok, "swanctl --load-all: {out}");
    }

    /// Our side (`ike_peer`) with `c` and `psk`, to be given its role.
    fn peer_cmd(&self, c: &Case, psk: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.us.name()])
            .arg(env!("CARGO_BIN_EXE_ike_peer"))
            .args(["--local", US, "--remote", SW, "--psk", psk])
            .args(["--enc", c.enc, "--integ", c.integ, "--dh"])
            .arg(c.dh.to_string());
        cmd
    }

    fn peer(&self, c: &Case, initiate: bool, n: usize) -> Proc {
        let extra: &[&str] = if initiate { &["--initiate"] } else { &[] };
        peer_with(self, c, extra, &format!("peer{n}.log"))
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
        "{what}: our side has no Child SA #{n}:\n{}\n--- charon:\n{}",
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

/// Checks a Child SA of ours against strongSwan: installed there with
/// the mirrored SPIs, and the keys charon logged after `mark` equal ours.
fn check_child(lab: &Lab, line: &str, mark: usize, what: &str, aead: bool) {
    let sas = lab.wait_child_sa(line, what);
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
    assert!(
        get("encryption initiator key").len() >= 32,
        "{what}: {keys:?}"
    );
    if !aead {
        assert!(
            get("integrity responder key").len() >= 40,
            "{what}: {keys:?}"
        );
    }
    assert_eq!(
        get("encryption initiator key"),
        field(line, "i_enc"),
        "{what}"
    );
    assert_eq!(
        get("encryption responder key"),
        field(line, "r_enc"),
        "{what}"
    );
    assert_eq!(
        get("integrity initiator key"),
        field(line, "i_int"),
        "{what}"
    );
    assert_eq!(
        get("integrity responder key"),
        field(line, "r_int"),
        "{what}"
    );
    assert!(field(line, "nat") == "true", "{what}: NAT-T not used");
}

/// Checks one run: both sides up, SPIs and keys equal.
fn check(lab: &Lab, peer: &Proc, c: &Case, log_mark: usize, who: &str) {
    let what = format!("{who}, {} / {}", c.ike, c.esp);
    let line = child_line(lab, peer, 1, &what, log_mark);
    check_child(lab, &line, log_mark, &what, c.esp.contains("gcm"));
}

fn teardown(lab: &Lab, peer: &mut Proc) {
    let (_, out) = lab.swanctl("--terminate --ike s2s --timeout 5");
    // Our side answers the DELETE and reports the IKE SA down.
    let ok = wait_until(Duration::from_secs(5), || {
        peer.output().contains("IKE_DOWN")
    });
    assert!(
        ok,
        "no IKE_DOWN after strongSwan's DELETE: {out}\n{}",
        peer.output()
    );
    assert!(
        peer.output()
            .contains("LOG AWS tunnel received DELETE for IKE_SA from CGW")
    );
    peer.stop(Duration::from_secs(5));
}

#[test]
fn strongswan_initiates_proposal_matrix() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("a");
    for (n, c) in matrix().iter().enumerate() {
        lab.load(c);
        let mut peer = lab.peer(c, false, n);
        let mark = lab.charon.output().len();
        let (ok, out) = lab.swanctl("--initiate --child net --timeout 15");
        assert!(
            ok,
            "{}: swanctl --initiate failed: {out}\n--- ours:\n{}",
            c.ike,
            peer.output()
        );
        check(&lab, &peer, c, mark, "strongSwan initiates");
        teardown(&lab, &mut peer);
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
        let mut peer = lab.peer(c, true, n);
        check(&lab, &peer, c, mark, "we initiate");
        teardown(&lab, &mut peer);
    }
}

#[test]
fn wrong_psk_is_refused_and_logged() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("c");
    let c = &matrix()[0];
    lab.load(c);
    let mut cmd = lab.peer_cmd(c, "wrongPSK.12345678");
    cmd.args(["--secs", "30"]);
    let peer = Proc::spawn(cmd, &lab.dir.path().join("wrong.log"));
    assert!(lab.peer_listening(), "ike_peer did not bind");
    let (ok, _) = lab.swanctl("--initiate --child net --timeout 10");
    assert!(!ok, "strongSwan must not come up with a wrong PSK");
    assert!(
        wait_until(Duration::from_secs(5), || peer
            .output()
            .contains("IKE_DOWN AuthenticationFailed")),
        "{}",
        peer.output()
    );
    let out = peer.output();
    assert!(out.contains("LOG AWS tunnel is sending AUTHENTICATION_FAILED as response"));
    assert!(out.contains("LOG AWS tunnel detected pre-shared key mismatch with cgw: 192.0.2.1"));
    assert!(lab.charon.output().contains("AUTHENTICATION_FAILED"));
}

fn ike_spis(sas: &str) -> String {
    // "s2s: #2, ESTABLISHED, IKEv2, 3c2d40eee3905205_i 1a2b…_r*"
    sas.lines()
        .find(|l| l.contains("ESTABLISHED"))
        .map(|l| {
            l.split_whitespace()
                .filter(|w| w.contains("_i") || w.contains("_r"))
                .map(|w| w.trim_end_matches('*'))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// strongSwan's IKE SA is the one our side's `IKE_REKEYED` line names
/// (within 10 s), with its Child SA installed.
fn check_ike_rekeyed(lab: &Lab, peer: &Proc) {
    let ours = peer.output();
    let rk = ours
        .lines()
        .find(|l| l.starts_with("IKE_REKEYED"))
        .unwrap_or_default();
    let want = format!("{}_i {}_r", field(rk, "spi_i"), field(rk, "spi_r"));
    let mut sas = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            sas = lab.swanctl("--list-sas").1;
            ike_spis(&sas) == want && sas.contains("INSTALLED")
        }),
        "strongSwan's IKE SA is not {want}:\n{sas}"
    );
}

/// strongSwan rekeys the Child SA, then the IKE SA, then the Child SA
/// again (over the new IKE SA): we answer each, and the keys still match.
#[test]
fn strongswan_rekeys_child_and_ike_sa() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("d");
    // aes256gcm16-prfsha384-ecp521, with PFS (ecp521) on Child SA rekeys.
    let mut c = matrix().swap_remove(6);
    c.esp.push_str("-ecp521");
    let c = &c;
    lab.load(c);
    let mut peer = lab.peer(c, false, 0);
    let mark = lab.charon.output().len();
    let (ok, out) = lab.swanctl("--initiate --child net --timeout 15");
    assert!(ok, "{out}\n{}", peer.output());
    let aead = c.esp.contains("gcm");
    let l1 = child_line(&lab, &peer, 1, "initial", mark);
    check_child(&lab, &l1, mark, "initial", aead);

    let mark = lab.charon.output().len();
    let (ok, out) = lab.swanctl("--rekey --child net");
    assert!(ok, "{out}");
    let l2 = child_line(&lab, &peer, 2, "child rekey", mark);
    check_child(&lab, &l2, mark, "child rekey", aead);
    assert!(
        wait_until(Duration::from_secs(10), || peer.output().contains(
            &format!(
                "CHILD_DOWN in={} out={}",
                field(&l1, "in"),
                field(&l1, "out")
            )
        )),
        "old Child SA not deleted: {}",
        peer.output()
    );

    let (ok, out) = lab.swanctl("--rekey --ike s2s");
    assert!(ok, "{out}");
    assert!(
        wait_until(Duration::from_secs(10), || peer
            .output()
            .contains("IKE_REKEYED")),
        "{}",
        peer.output()
    );
    check_ike_rekeyed(&lab, &peer);
    assert!(
        wait_until(Duration::from_secs(10), || peer
            .output()
            .contains("IKE_DOWN Rekeyed")),
        "the old IKE SA must be deleted: {}",
        peer.output()
    );
    assert!(
        !peer
            .output()
            .contains(&format!("CHILD_DOWN in={}", field(&l2, "in"))),
        "the Child SA must survive the IKE SA rekey: {}",
        peer.output()
    );

    let mark = lab.charon.output().len();
    let (ok, out) = lab.swanctl("--rekey --child net");
    assert!(ok, "{out}");
    let l3 = child_line(&lab, &peer, 3, "child rekey after IKE rekey", mark);
    check_child(&lab, &l3, mark, "child rekey after IKE rekey", aead);
    teardown(&lab, &mut peer);
}

/// We rekey on our own timers (short lifetimes): the Child SA at
/// `phase2 − margin`, the IKE SA at `phase1 − margin` (fuzz 0).
#[test]
fn we_rekey_child_and_ike_sa_on_our_timers() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("e");
    // aes128-sha256-ecp521, with PFS (ecp521) on Child SA rekeys: the
    // spec's phase 2 DH groups are always offered when we rekey.
    let mut c = matrix().swap_remove(9);
    c.esp.push_str("-ecp521");
    let c = &c;
    lab.load(c);
    let mark = lab.charon.output().len();
    let mut cmd = lab.peer_cmd(c, PSK);
    cmd.args(["--secs", "30", "--initiate"]).args([
        "--phase2-secs",
        "6",
        "--phase1-secs",
        "10",
        "--margin-secs",
        "2",
        "--fuzz",
        "0",
    ]);
    let mut peer = Proc::spawn(cmd, &lab.dir.path().join("timers.log"));
    let aead = c.esp.contains("gcm");
    let l1 = child_line(&lab, &peer, 1, "initial", mark);
    check_child(&lab, &l1, mark, "initial", aead);
    let mark = lab.charon.output().len();
    let l2 = child_line(&lab, &peer, 2, "our child rekey", mark);
    check_child(&lab, &l2, mark, "our child rekey", aead);
    assert!(
        peer.output()
            .contains("LOG AWS tunnel is sending request for CREATE_CHILD_SA")
    );
    assert!(
        peer.output()
            .contains("LOG AWS tunnel processing response for CREATE_CHILD_SA")
    );
    assert!(
        wait_until(Duration::from_secs(15), || peer
            .output()
            .contains("IKE_DOWN Rekeyed")),
        "our IKE SA rekey: {}",
        peer.output()
    );
    check_ike_rekeyed(&lab, &peer);
    teardown(&lab, &mut peer);
}

/// DPD (spec § 3.1): strongSwan is frozen (SIGSTOP); we declare it dead
/// within the DPD timeout and, with action restart, bring the tunnel back
/// by ourselves once it runs again (SIGCONT).
#[test]
fn dpd_timeout_with_restart_against_a_frozen_strongswan() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("f");
    let c = &matrix()[1]; // aes128gcm16-prfsha256-ecp256
    lab.load(c);
    let mark = lab.charon.output().len();
    let mut cmd = lab.peer_cmd(c, PSK);
    cmd.args(["--secs", "60", "--start"])
        .args(["--dpd-secs", "8", "--dpd-action", "restart"]);
    let mut peer = Proc::spawn(cmd, &lab.dir.path().join("dpd.log"));
    let l1 = child_line(&lab, &peer, 1, "initial", mark);
    check_child(&lab, &l1, mark, "initial", true);
    let pid = lab.charon.id();
    assert!(sh_ok(&format!("kill -STOP {pid}")));
    let t0 = std::time::Instant::now();
    let dead = wait_until(Duration::from_secs(30), || {
        peer.output().contains("IKE_DOWN DpdTimeout")
    });
    let took = t0.elapsed();
    let _ = sh_ok(&format!("kill -CONT {pid}"));
    assert!(dead, "no DPD timeout: {}", peer.output());
    // 8 s of DPD timeout after the first probe, which follows 2 s of silence.
    assert!(took <= Duration::from_secs(12), "DPD took {took:?}");
    assert!(took >= Duration::from_secs(8), "DPD too early: {took:?}");
    let out = peer.output();
    assert!(out.contains("LOG AWS tunnel DPD timed out after"), "{out}");
    assert!(out.contains(&format!("CHILD_DOWN in={}", field(&l1, "in"))));
    let mark = lab.charon.output().len();
    let l2 = child_line(&lab, &peer, 2, "after restart", mark);
    assert!(peer.output().contains("LOG re-initiating IKE_SA"));
    check_child(&lab, &l2, 0, "after restart", true);
    peer.stop(Duration::from_secs(5));
}

/// Our side with `c`, our PSK and `extra` arguments, listening.
fn peer_with(lab: &Lab, c: &Case, extra: &[&str], log: &str) -> Proc {
    let mut cmd = lab.peer_cmd(c, PSK);
    cmd.args(["--secs", "30"]).args(extra);
    let p = Proc::spawn(cmd, &lab.dir.path().join(log));
    assert!(lab.peer_listening(), "ike_peer did not bind");
    p
}

/// No common proposal, both directions: nothing comes up, and both the
/// log and strongSwan say why.
#[test]
fn no_common_proposal_is_refused_and_logged() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("g");
    // strongSwan: AES-128-CBC/SHA-256/MODP-3072; we: AES-256-GCM/SHA-512/ECP-256.
    let theirs = Case {
        ike: "aes128-sha256-modp3072".to_owned(),
        esp: "aes128-sha256".to_owned(),
        enc: "AES128",
        integ: "SHA2-256",
        dh: 15,
    };
    let ours = Case {
        ike: String::new(),
        esp: String::new(),
        enc: "AES256-GCM-16",
        integ: "SHA2-512",
        dh: 19,
    };
    lab.load(&theirs);
    let mut peer = peer_with(&lab, &ours, &[], "np-resp.log");
    let (ok, _) = lab.swanctl("--initiate --child net --timeout 10");
    assert!(!ok, "no common proposal must not come up");
    assert!(
        wait_until(Duration::from_secs(5), || peer.output().contains(
            "LOG No matching proposal found. Notifying with \"No proposal chosen\""
        )),
        "{}",
        peer.output()
    );
    assert!(lab.charon.output().contains("NO_PROPOSAL_CHOSEN"));
    assert!(!peer.output().contains("IKE_UP"));
    peer.stop(Duration::from_secs(5));

    let mut peer = peer_with(&lab, &ours, &["--initiate"], "np-init.log");
    assert!(
        wait_until(Duration::from_secs(10), || peer
            .output()
            .contains("IKE_DOWN NoProposalChosen")),
        "{}",
        peer.output()
    );
    assert!(peer.output().contains("LOG No matching proposal found"));
    peer.stop(Duration::from_secs(5));
}

/// Traffic selectors that do not overlap the configured CIDRs: the IKE
/// SA comes up, the Child SA does not, and the log says TS_UNACCEPTABLE.
#[test]
fn bad_traffic_selectors_are_refused_and_logged() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("h");
    let c = &matrix()[1];
    lab.load_ts(c, "192.168.0.0/16", "172.16.0.0/12");
    let ts = ["--local-ts", "10.2.0.0/16", "--remote-ts", "10.1.0.0/16"];
    let mut peer = peer_with(&lab, c, &ts, "ts-resp.log");
    let (ok, out) = lab.swanctl("--initiate --child net --timeout 10");
    assert!(!ok, "the Child SA must not come up: {out}");
    assert!(
        wait_until(Duration::from_secs(5), || peer.output().contains(
            "LOG AWS: Traffic Selector: TS_UNACCEPTABLE: sent to initiator"
        )),
        "{}",
        peer.output()
    );
    assert!(peer.output().contains("IKE_UP"));
    assert!(!peer.output().contains("CHILD_UP"));
    assert!(lab.charon.output().contains("TS_UNACCEPTABLE"));
    let _ = lab.swanctl("--terminate --ike s2s --timeout 5");
    peer.stop(Duration::from_secs(5));

    let mut args = ts.to_vec();
    args.push("--initiate");
    let mut peer = peer_with(&lab, c, &args, "ts-init.log");
    assert!(
        wait_until(Duration::from_secs(10), || peer.output().contains(
            "LOG AWS: Traffic Selector: TS_UNACCEPTABLE: received from responder"
        )),
        "{}",
        peer.output()
    );
    assert!(!peer.output().contains("CHILD_UP"));
    peer.stop(Duration::from_secs(5));
}
