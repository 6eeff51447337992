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
//! marker. ESP traffic itself is out of scope here.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::{Netns, require_root, sh_ok, tag, veth, wait_until};

const SW: &str = "192.0.2.1";
const US: &str = "192.0.2.2";
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

/// A child process with its output in a file, killed on drop.
struct Proc {
    child: Child,
    out: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, out: &Path) -> Self {
        let f = File::create(out).expect("output file");
        let child = cmd
            .stdout(Stdio::from(f.try_clone().expect("dup")))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("spawn");
        Self {
            child,
            out: out.to_owned(),
        }
    }
    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
    fn stop(&mut self) {
        let _ = sh_ok(&format!("kill -TERM {}", self.child.id()));
        let ok = wait_until(Duration::from_secs(5), || {
            self.child.try_wait().is_ok_and(|s| s.is_some())
        });
        if !ok {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().is_ok_and(|s| s.is_none()) {
            self.stop();
        }
    }
}

struct Lab {
    // Field order = drop order: processes before the namespaces.
    charon: Proc,
    dir: tempfile::TempDir,
    sw: Netns,
    us: Netns,
}

impl Lab {
    fn new(suffix: &str) -> Self {
        require_root();
        let t = tag();
        let sw = Netns::new(&format!("vt-i-{t}{suffix}s"));
        let us = Netns::new(&format!("vt-i-{t}{suffix}u"));
        veth(
            &sw,
            &format!("vi{t}{suffix}s"),
            &us,
            &format!("vi{t}{suffix}u"),
        );
        sw.sh(&format!("ip addr add {SW}/24 dev vi{t}{suffix}s"));
        us.sh(&format!("ip addr add {US}/24 dev vi{t}{suffix}u"));
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("strongswan.conf"),
            format!(
                "charon {{\n  load = random nonce openssl aes sha1 sha2 hmac gcm pem pkcs1 x509 pubkey kdf curve25519 kernel-libipsec kernel-netlink socket-default vici updown\n  plugins {{ vici {{ socket = unix://{d}/charon.vici }} }}\n  filelog {{ stderr {{\n    default = 1\n    chd = 4\n  }} }}\n}}\ncharon-systemd {{ journal {{ default = -1 }} }}\n"
            ),
        )
        .expect("strongswan.conf");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", sw.name(), "/usr/sbin/charon-systemd"])
            .env("STRONGSWAN_CONF", dir.path().join("strongswan.conf"));
        let charon = Proc::spawn(cmd, &dir.path().join("charon.log"));
        let vici = dir.path().join("charon.vici");
        assert!(
            wait_until(Duration::from_secs(10), || vici.exists()),
            "charon did not start: {}",
            charon.output()
        );
        Self {
            charon,
            dir,
            sw,
            us,
        }
    }

    fn swanctl(&self, args: &str) -> (bool, String) {
        let out = Command::new("timeout")
            .args(["20", "ip", "netns", "exec", self.sw.name(), "swanctl"])
            .args(args.split_whitespace())
            .arg("--uri")
            .arg(format!("unix://{}/charon.vici", self.dir.path().display()))
            .output()
            .expect("swanctl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn load(&self, c: &Case) {
        let conf = self.dir.path().join("swanctl.conf");
        std::fs::write(
            &conf,
            format!(
                "connections {{\n s2s {{\n  version = 2\n  local_addrs = {SW}\n  remote_addrs = {US}\n  proposals = {}\n  local {{ auth = psk }}\n  remote {{ auth = psk }}\n  children {{ net {{\n   local_ts = 0.0.0.0/0\n   remote_ts = 0.0.0.0/0\n   esp_proposals = {}\n   mode = tunnel\n  }} }}\n }}\n}}\nsecrets {{ ike-1 {{ secret = \"{PSK}\" }} }}\n",
                c.ike, c.esp
            ),
        )
        .expect("swanctl.conf");
        let (ok, out) = self.swanctl(&format!("--load-all --file {}", conf.display()));
        assert!(ok, "swanctl --load-all: {out}");
    }

    fn peer(&self, c: &Case, initiate: bool, n: usize) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.us.name()])
            .arg(env!("CARGO_BIN_EXE_ike_peer"))
            .args(["--local", US, "--remote", SW, "--psk", PSK])
            .args(["--enc", c.enc, "--integ", c.integ, "--dh"])
            .arg(c.dh.to_string())
            .args(["--secs", "30"]);
        if initiate {
            cmd.arg("--initiate");
        }
        let p = Proc::spawn(cmd, &self.dir.path().join(format!("peer{n}.log")));
        let ns = self.us.name().to_owned();
        assert!(
            wait_until(Duration::from_secs(5), || {
                sh_ok(&format!("ip netns exec {ns} ss -uln | grep -q ':4500'"))
            }),
            "ike_peer did not bind"
        );
        p
    }
}

/// Hex dumps charon logs with `chd = 4` after `mark` bytes of its log:
/// `(label, bytes)`, e.g. `("encryption initiator key", …)`.
fn charon_keys(log: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(pos) = l.find("[CHD] ") else {
            continue;
        };
        let rest = &l[pos + 6..];
        let Some((label, tail)) = rest.split_once(" => ") else {
            continue;
        };
        if !label.ends_with(" key") {
            continue;
        }
        let count: usize = tail
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let thread = &l[..pos];
        let mut hex = String::new();
        for d in &lines[i + 1..] {
            if hex.len() >= 2 * count || !d.starts_with(thread) {
                break;
            }
            let Some((_, dump)) = d.split_once(": ") else {
                break;
            };
            let region: String = dump.chars().take(48).collect();
            for b in region.split_whitespace() {
                if hex.len() < 2 * count {
                    hex.push_str(&b.to_ascii_lowercase());
                }
            }
        }
        out.push((label.trim().to_owned(), hex));
    }
    out
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
}

/// Checks one run: both sides up, SPIs and keys equal.
fn check(lab: &Lab, peer: &Proc, c: &Case, log_mark: usize, who: &str) {
    let what = format!("{who}, {} / {}", c.ike, c.esp);
    assert!(
        wait_until(Duration::from_secs(15), || peer
            .output()
            .contains("CHILD_UP")),
        "{what}: our side has no Child SA:\n{}\n--- charon:\n{}",
        peer.output(),
        &lab.charon.output()[log_mark..]
    );
    let mut sas = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            sas = lab.swanctl("--list-sas").1;
            sas.contains("ESTABLISHED") && sas.contains("INSTALLED")
        }),
        "{what}: strongSwan not established:\n{sas}"
    );
    assert!(sas.contains("TUNNEL-in-UDP"), "{what}: no NAT-T: {sas}");
    let ours = peer.output();
    let line = ours
        .lines()
        .find(|l| l.starts_with("CHILD_UP"))
        .expect("CHILD_UP");
    // strongSwan's inbound SPI is our outbound one and vice versa.
    let sw_in = sas
        .lines()
        .find_map(|l| l.trim().strip_prefix("in  "))
        .and_then(|l| l.split(',').next())
        .unwrap_or("")
        .trim()
        .to_owned();
    let sw_out = sas
        .lines()
        .find_map(|l| l.trim().strip_prefix("out "))
        .and_then(|l| l.split(',').next())
        .unwrap_or("")
        .trim()
        .to_owned();
    assert_eq!(sw_in, field(line, "out"), "{what}: SPIs\n{sas}\n{line}");
    assert_eq!(sw_out, field(line, "in"), "{what}: SPIs\n{sas}\n{line}");
    let log = lab.charon.output();
    let keys = charon_keys(&log[log_mark..]);
    let get = |label: &str| {
        keys.iter()
            .rev()
            .find(|(l, _)| l == label)
            .map(|(_, h)| h.clone())
            .unwrap_or_default()
    };
    assert!(!keys.is_empty(), "{what}: charon logged no keys");
    assert!(
        get("encryption initiator key").len() >= 32,
        "{what}: {keys:?}"
    );
    if !c.esp.contains("gcm") {
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
    peer.stop();
}

#[test]
fn strongswan_initiates_proposal_matrix() {
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
    let lab = Lab::new("c");
    let c = &matrix()[0];
    lab.load(c);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", lab.us.name()])
        .arg(env!("CARGO_BIN_EXE_ike_peer"))
        .args(["--local", US, "--remote", SW, "--psk", "wrongPSK.12345678"])
        .args(["--enc", c.enc, "--integ", c.integ, "--dh"])
        .arg(c.dh.to_string())
        .args(["--secs", "30"]);
    let peer = Proc::spawn(cmd, &lab.dir.path().join("wrong.log"));
    let ns = lab.us.name().to_owned();
    assert!(wait_until(Duration::from_secs(5), || sh_ok(&format!(
        "ip netns exec {ns} ss -uln | grep -q ':4500'"
    ))));
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
