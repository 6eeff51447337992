//! Certificate authentication and IKE fragmentation (RFC 7383) against a
//! real strongSwan 5.9.8 (charon with kernel-libipsec, as in
//! `ike_strongswan.rs`), with every key and CA certificate made by
//! strongSwan's own `pki` tool in the test.
//!
//! The PKI: a root CA and a subordinate CA (`pki --self --ca`,
//! `pki --issue --ca`); our certificate is a plain `pki --issue` from the
//! subordinate CA. The customer gateway's certificate must carry the
//! Authority Key Identifier, Subject Key Identifier and Basic Constraints
//! extensions (spec § 5.2, what AWS Private CA certificates have); `pki
//! --issue` writes neither SKI nor Basic Constraints into end-entity
//! certificates, so strongSwan's certificate is signed by the
//! `pki`-made subordinate CA through `openssl x509 -req` with those
//! extensions, from a `pki`-made key. A plain `pki --issue` certificate
//! for strongSwan is the refusal case.
//!
//! For RSA (4096-bit keys, so that IKE_AUTH is several KB and both sides
//! fragment it) and ECDSA (P-256), with strongSwan initiating and with us
//! initiating: both sides establish the IKE SA and the Child SA, the SPIs
//! agree, and the logs show certificate authentication and fragments
//! both ways. The fixture is [`e2e::charon::IkeLab`], the PKI
//! [`e2e::charon::make_pki`]'s.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::charon::{Alg, CharonConf, IkeLab, SW, US, make_pki};
use e2e::{Proc, wait_until};

const PSK: &str = "vtikc.unused_PSK_123";

struct Lab {
    fixture: IkeLab,
    /// strongSwan's `local.id` (default: its certificate's subject DN).
    sw_id: Option<&'static str>,
}

impl Deref for Lab {
    type Target = IkeLab;
    fn deref(&self) -> &IkeLab {
        &self.fixture
    }
}

impl Lab {
    fn new(suffix: &str) -> Self {
        Self::with_charon_options(suffix, "")
    }

    /// A lab whose charon section also has `extra` (`key = value` lines).
    fn with_charon_options(suffix: &str, extra: &str) -> Self {
        let conf = CharonConf {
            plugins: "random nonce openssl aes sha1 sha2 hmac gcm pem pkcs1 pkcs8 x509 pubkey constraints kdf curve25519 kernel-libipsec kernel-netlink socket-default vici updown",
            options: extra,
            log: "default = 1\n    enc = 1\n    cfg = 2\n    ike = 2",
        };
        Self {
            fixture: IkeLab::new("ikc", "vk", suffix, &conf),
            sw_id: None,
        }
    }

    /// A fresh PKI in `run/` and a strongSwan connection using it.
    fn load(&self, run: &str, alg: Alg, spec_extensions: bool, fragmentation: &str) -> PathBuf {
        let pki_dir = self.dir.path().join(run);
        std::fs::create_dir_all(&pki_dir).expect("pki dir");
        make_pki(&pki_dir, alg, spec_extensions);
        let p = pki_dir.display();
        // swanctl reads private keys from `private/` beside the file.
        let sdir = pki_dir.join("swanctl");
        std::fs::create_dir_all(sdir.join("private")).expect("swanctl dir");
        std::fs::copy(pki_dir.join("sw.key"), sdir.join("private/sw.key")).expect("key");
        let conf = sdir.join("swanctl.conf");
        let id = self
            .sw_id
            .map(|i| format!("\n   id = {i}"))
            .unwrap_or_default();
        std::fs::write(
            &conf,
            format!(
                "connections {{\n s2s {{\n  version = 2\n  local_addrs = {SW}\n  remote_addrs = {US}\n  fragmentation = {fragmentation}\n  proposals = aes256gcm16-prfsha256-ecp256\n  local {{\n   auth = pubkey\n   certs = {p}/sw.pem{id}\n  }}\n  remote {{\n   auth = pubkey\n   cacerts = {p}/root.pem\n  }}\n  children {{ net {{\n   local_ts = 0.0.0.0/0\n   remote_ts = 0.0.0.0/0\n   esp_proposals = aes256gcm16\n   mode = tunnel\n  }} }}\n }}\n}}\nauthorities {{\n root {{ cacert = {p}/root.pem }}\n sub {{ cacert = {p}/sub.pem }}\n}}\n"
            ),
        )
        .expect("swanctl.conf");
        let (ok, out) = self.swanctl(&format!("--load-all --file {}", conf.display()));
        assert!(
            ok && out.contains("loaded") && out.contains("key from"),
            "swanctl --load-all did not load strongSwan's key: {out}"
        );
        pki_dir
    }

    fn peer(&self, pki_dir: &Path, initiate: bool, name: &str) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.us.name()])
            .arg(env!("CARGO_BIN_EXE_ike_peer"))
            .args(["--local", US, "--remote", SW, "--psk", PSK])
            .args([
                "--enc",
                "AES256-GCM-16",
                "--integ",
                "SHA2-256",
                "--dh",
                "19",
            ])
            .arg("--cert")
            .arg(pki_dir.join("us-chain.pem"))
            .arg("--key")
            .arg(pki_dir.join("us.key"))
            // We trust the root CA only; strongSwan sends its subordinate.
            .arg("--ca")
            .arg(pki_dir.join("root.pem"))
            .args(["--secs", "30"]);
        if initiate {
            cmd.arg("--initiate");
        }
        let p = Proc::spawn(cmd, &self.dir.path().join(format!("{name}.log")));
        assert!(
            self.peer_listening(),
            "ike_peer did not bind: {}",
            p.output()
        );
        p
    }
}

/// Both sides up with mirrored SPIs, authenticated by certificates.
fn check_up(lab: &Lab, peer: &Proc, what: &str, mark: usize) {
    let ok = wait_until(Duration::from_secs(20), || {
        peer.output().lines().any(|l| l.starts_with("CHILD_UP"))
    });
    assert!(
        ok,
        "{what}: our side has no Child SA:\n{}\n--- charon:\n{}",
        peer.output(),
        &lab.charon.output()[mark..]
    );
    let out = peer.output();
    let line = out
        .lines()
        .find(|l| l.starts_with("CHILD_UP"))
        .unwrap_or_default();
    let _ = lab.wait_child_sa(line, what);
    assert!(
        out.contains(
            "LOG AWS tunnel authenticated cgw: 192.0.2.1 by certificate \"C=CH, O=vt lab, CN=cgw.vt.example\""
        ),
        "{what}: {out}"
    );
    let log = &lab.charon.output()[mark..];
    assert!(
        log.contains("authentication of 'C=CH, O=vt lab, CN=aws.vt.example' with")
            && log.contains("successful"),
        "{what}: strongSwan did not authenticate our certificate:\n{log}"
    );
}

fn teardown(lab: &Lab, peer: &mut Proc) {
    let _ = lab.swanctl("--terminate --ike s2s --timeout 5");
    let _ = wait_until(Duration::from_secs(5), || {
        peer.output().contains("IKE_DOWN")
    });
    peer.stop(Duration::from_secs(5));
}

/// strongSwan's log shows IKE fragments in both directions.
fn check_fragments(lab: &Lab, what: &str, mark: usize) {
    let log = &lab.charon.output()[mark..];
    assert!(
        log.contains("received fragment #"),
        "{what}: strongSwan received no fragment from us:\n{log}"
    );
    assert!(
        log.contains("splitting IKE message (") && log.contains("fragments"),
        "{what}: strongSwan did not fragment its message:\n{log}"
    );
    assert!(
        log.contains("reassembled fragmented IKE message"),
        "{what}: strongSwan did not reassemble ours:\n{log}"
    );
}

#[test]
fn strongswan_initiates_with_certificates() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("a");
    for (n, alg) in [Alg::Rsa, Alg::Ecdsa].into_iter().enumerate() {
        let what = format!("strongSwan initiates, {alg:?}");
        let dir = lab.load(&format!("run{n}"), alg, true, "yes");
        let mut peer = lab.peer(&dir, false, &format!("peer{n}"));
        let mark = lab.charon.output().len();
        let (ok, out) = lab.swanctl("--initiate --child net --timeout 15");
        assert!(
            ok,
            "{what}: swanctl --initiate failed: {out}\n--- ours:\n{}\n--- charon:\n{}",
            peer.output(),
            &lab.charon.output()[mark..]
        );
        check_up(&lab, &peer, &what, mark);
        // RFC 7427 both ways (we announce SIGNATURE_HASH_ALGORITHMS).
        assert!(
            peer.output().contains("(AUTH method 14)"),
            "{what}: {}",
            peer.output()
        );
        if matches!(alg, Alg::Rsa) {
            check_fragments(&lab, &what, mark);
        }
        teardown(&lab, &mut peer);
    }
}

#[test]
fn we_initiate_with_certificates() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("b");
    for (n, alg) in [Alg::Rsa, Alg::Ecdsa].into_iter().enumerate() {
        let what = format!("we initiate, {alg:?}");
        // `force`: strongSwan fragments even before it knows we support it.
        let dir = lab.load(&format!("run{n}"), alg, true, "force");
        let mark = lab.charon.output().len();
        let mut peer = lab.peer(&dir, true, &format!("peer{n}"));
        check_up(&lab, &peer, &what, mark);
        // RFC 7427 both ways (we announce SIGNATURE_HASH_ALGORITHMS).
        assert!(
            peer.output().contains("(AUTH method 14)"),
            "{what}: {}",
            peer.output()
        );
        if matches!(alg, Alg::Rsa) {
            check_fragments(&lab, &what, mark);
        }
        teardown(&lab, &mut peer);
    }
}

/// A customer gateway certificate as `pki --issue` makes it (no SKI, no
/// Basic Constraints) is refused as the spec asks, with the reason in our
/// log and AUTHENTICATION_FAILED to strongSwan.
#[test]
fn cgw_certificate_without_spec_extensions_is_refused() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new("c");
    let dir = lab.load("run0", Alg::Ecdsa, false, "yes");
    let peer = lab.peer(&dir, false, "peer0");
    let (ok, _) = lab.swanctl("--initiate --child net --timeout 10");
    assert!(!ok, "strongSwan must not come up");
    assert!(
        wait_until(Duration::from_secs(5), || peer
            .output()
            .contains("IKE_DOWN AuthenticationFailed")),
        "{}",
        peer.output()
    );
    let out = peer.output();
    assert!(
        out.contains("LOG AWS tunnel certificate authentication failed with cgw: 192.0.2.1:")
            && out.contains("lacks the basicConstraints extension"),
        "{out}"
    );
    assert!(out.contains("LOG AWS tunnel is sending AUTHENTICATION_FAILED as response"));
    assert!(lab.charon.output().contains("AUTHENTICATION_FAILED"));
}

/// strongSwan without RFC 7427 (`signature_authentication = no`) signs
/// with the classic methods: RSA PKCS#1 v1.5 over SHA-1 (method 1) and
/// ECDSA with SHA-256 on P-256 (method 9). We verify both; we sign ECDSA
/// with method 9 too (strongSwan sent no SIGNATURE_HASH_ALGORITHMS).
#[test]
fn classic_signature_methods_interoperate() {
    if !testkit::own_process() {
        return;
    }
    let mut lab = Lab::with_charon_options("d", "signature_authentication = no");
    // An FQDN identity, matched against the certificate's subjectAltName.
    lab.sw_id = Some("cgw.vt.example");
    for (n, alg) in [Alg::Rsa, Alg::Ecdsa].into_iter().enumerate() {
        let what = format!("classic methods, {alg:?}");
        let dir = lab.load(&format!("run{n}"), alg, true, "yes");
        let mut peer = lab.peer(&dir, false, &format!("peer{n}"));
        let mark = lab.charon.output().len();
        let (ok, out) = lab.swanctl("--initiate --child net --timeout 15");
        assert!(
            ok,
            "{what}: {out}\n--- ours:\n{}\n--- charon:\n{}",
            peer.output(),
            &lab.charon.output()[mark..]
        );
        check_up(&lab, &peer, &what, mark);
        // What strongSwan sent: RFC 7296 method 1 / RFC 4754 method 9.
        let want = match alg {
            Alg::Rsa => "(AUTH method 1)",
            Alg::Ecdsa => "(AUTH method 9)",
        };
        assert!(peer.output().contains(want), "{what}: {}", peer.output());
        let log = &lab.charon.output()[mark..];
        assert!(
            log.contains("authentication of 'cgw.vt.example' (myself)"),
            "{what}: strongSwan did not use its FQDN identity:\n{log}"
        );
        teardown(&lab, &mut peer);
    }
}
