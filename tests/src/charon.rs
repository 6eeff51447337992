//! strongSwan 5.9.8 as the peer of a test: charon (`charon-systemd` with
//! kernel-libipsec, `../shared/lab/recipes.md` § 1) in a namespace with
//! its `strongswan.conf`, `swanctl` against its vici socket, a PKI made by
//! strongSwan's `pki` tool, and [`IkeLab`], the two-namespace fixture of
//! the IKE interop tests (charon ⇄ our `ike_peer`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Netns, Proc, bounded, require_root, sh, sh_ok, tag, text, veth, wait_until};

/// The plugins charon loads by default.
pub const PLUGINS: &str = "random nonce openssl aes sha1 sha2 hmac gcm pem pkcs1 x509 pubkey kdf curve25519 kernel-libipsec kernel-netlink socket-default vici updown";

/// What differs in `strongswan.conf` from one lab to another.
#[derive(Debug, Clone, Copy)]
pub struct CharonConf<'a> {
    /// charon's `load` list.
    pub plugins: &'a str,
    /// More `key = value` lines for the `charon` section.
    pub options: &'a str,
    /// The log levels on stderr (`filelog { stderr { … } }`), one
    /// `subsystem = level` a line.
    pub log: &'a str,
}

impl Default for CharonConf<'_> {
    fn default() -> Self {
        Self {
            plugins: PLUGINS,
            options: "",
            log: "default = 1",
        }
    }
}

/// charon-systemd running in a namespace, with `strongswan.conf`, the vici
/// socket `charon.vici` and its output `charon.log` in a directory the
/// caller owns; stopped on drop.
#[derive(Debug)]
pub struct Charon {
    proc: Proc,
    ns: String,
    vici: PathBuf,
}

impl Charon {
    /// Writes `dir/strongswan.conf` from `conf`, starts charon in `ns`
    /// and waits (10 s) for its vici socket.
    ///
    /// # Panics
    /// When the file cannot be written or charon does not start.
    #[must_use]
    pub fn start(ns: &Netns, dir: &Path, conf: &CharonConf<'_>) -> Self {
        let vici = dir.join("charon.vici");
        let path = dir.join("strongswan.conf");
        std::fs::write(
            &path,
            format!(
                "charon {{\n  load = {plugins}\n  {options}\n  plugins {{ vici {{ socket = unix://{vici} }} }}\n  filelog {{ stderr {{\n    {log}\n  }} }}\n}}\ncharon-systemd {{ journal {{ default = -1 }} }}\n",
                plugins = conf.plugins,
                options = conf.options,
                vici = vici.display(),
                log = conf.log,
            ),
        )
        .expect("strongswan.conf");
        let mut cmd = ns.command(Path::new("/usr/sbin/charon-systemd"));
        cmd.env("STRONGSWAN_CONF", &path);
        let proc = Proc::spawn(cmd, &dir.join("charon.log"));
        assert!(
            wait_until(Duration::from_secs(10), || vici.exists()),
            "charon did not start: {}",
            proc.output()
        );
        Self {
            proc,
            ns: ns.name().to_owned(),
            vici,
        }
    }

    /// Everything charon logged so far.
    #[must_use]
    pub fn output(&self) -> String {
        self.proc.output()
    }

    /// charon's process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.proc.id()
    }

    /// Runs `swanctl args` (split at white space) against this charon,
    /// killed after 30 s; returns success and its output.
    #[must_use]
    pub fn swanctl(&self, args: &str) -> (bool, String) {
        self.swanctl_within(args, Duration::from_secs(30))
    }

    /// [`swanctl`](Self::swanctl), killed after `limit`.
    #[must_use]
    pub fn swanctl_within(&self, args: &str, limit: Duration) -> (bool, String) {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "swanctl"])
            .args(args.split_whitespace())
            .arg("--uri")
            .arg(format!("unix://{}", self.vici.display()));
        let out = bounded(c, limit);
        (out.status.success(), text(&out))
    }
}

/// strongSwan's address in an [`IkeLab`].
pub const SW: &str = "192.0.2.1";
/// Our address in an [`IkeLab`].
pub const US: &str = "192.0.2.2";

/// The IKE interop fixture: charon at [`SW`] in namespace
/// `vt-{ns}-{tag}{suffix}s`, a veth `{dev}{tag}{suffix}s` ⇄
/// `{dev}{tag}{suffix}u` to namespace `vt-{ns}-{tag}{suffix}u`, where
/// the test runs our side at [`US`]. Removed on drop.
#[derive(Debug)]
pub struct IkeLab {
    // Field order = drop order: processes before the namespaces.
    /// strongSwan.
    pub charon: Charon,
    /// Files: charon's, the test's.
    pub dir: tempfile::TempDir,
    /// strongSwan's namespace.
    pub sw: Netns,
    /// Our namespace.
    pub us: Netns,
}

impl IkeLab {
    /// Makes the namespaces and starts charon with `conf`.
    ///
    /// # Panics
    /// When not root, or when a namespace, the veth or charon fails.
    #[must_use]
    pub fn new(ns: &str, dev: &str, suffix: &str, conf: &CharonConf<'_>) -> Self {
        require_root();
        let t = tag();
        let sw = Netns::new(&format!("vt-{ns}-{t}{suffix}s"));
        let us = Netns::new(&format!("vt-{ns}-{t}{suffix}u"));
        veth(
            &sw,
            &format!("{dev}{t}{suffix}s"),
            &us,
            &format!("{dev}{t}{suffix}u"),
        );
        sw.sh(&format!("ip addr add {SW}/24 dev {dev}{t}{suffix}s"));
        us.sh(&format!("ip addr add {US}/24 dev {dev}{t}{suffix}u"));
        let dir = tempfile::tempdir().expect("tempdir");
        let charon = Charon::start(&sw, dir.path(), conf);
        Self {
            charon,
            dir,
            sw,
            us,
        }
    }

    /// Whether something (our side) listens on UDP 4500 in our
    /// namespace within 5 s.
    #[must_use]
    pub fn peer_listening(&self) -> bool {
        let ns = self.us.name();
        wait_until(Duration::from_secs(5), || {
            sh_ok(&format!("ip netns exec {ns} ss -uln | grep -q ':4500'"))
        })
    }

    /// Waits (10 s) until strongSwan lists the Child SA of our side's
    /// `CHILD_UP` `line` with the SPIs mirrored (its inbound SPI is our
    /// outbound one and vice versa); returns `swanctl --list-sas`.
    ///
    /// # Panics
    /// When it does not.
    pub fn wait_child_sa(&self, line: &str, what: &str) -> String {
        let mut sas = String::new();
        let (ours_in, ours_out) = (field(line, "in"), field(line, "out"));
        assert!(
            wait_until(Duration::from_secs(10), || {
                sas = self.swanctl("--list-sas").1;
                sas.contains("ESTABLISHED")
                    && sas.contains("INSTALLED")
                    && sas.contains(&format!("in  {ours_out},"))
                    && sas.contains(&format!("out {ours_in},"))
            }),
            "{what}: strongSwan does not show the Child SA {ours_in}/{ours_out}:\n{sas}"
        );
        sas
    }

    /// `swanctl args` against the lab's charon, killed after 20 s.
    #[must_use]
    pub fn swanctl(&self, args: &str) -> (bool, String) {
        self.charon.swanctl_within(args, Duration::from_secs(20))
    }
}

/// The value of `key=` in one of `ike_peer`'s status lines (`CHILD_UP
/// in=… out=…`); empty when it has none.
#[must_use]
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
}

/// The key hex dumps in a charon log with `chd = 4` (IKEv2 and IKEv1):
/// `(label, bytes)`, e.g. `("encryption initiator key", …)`.
#[must_use]
pub fn charon_keys(log: &str) -> Vec<(String, String)> {
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

/// Key algorithm for a PKI.
#[derive(Clone, Copy, Debug)]
pub enum Alg {
    /// RSA 4096 (large enough that IKE_AUTH gets fragmented).
    Rsa,
    /// ECDSA P-256.
    Ecdsa,
}

impl Alg {
    fn pki_gen(self) -> &'static str {
        match self {
            Self::Rsa => "--type rsa --size 4096",
            Self::Ecdsa => "--type ecdsa --size 256",
        }
    }
}

/// Runs `pki` in `dir` (quiet about its optional TPM plugin).
fn pki(dir: &Path, args: &str) {
    sh(&format!("cd {} && pki {args} 2>/dev/null", dir.display()));
}

/// Makes a PKI in `dir` with strongSwan's `pki`: a root and a subordinate
/// CA (`root.pem`, `sub.pem`), our certificate from the subordinate CA
/// (`us.pem`, `us-chain.pem` with the subordinate CA, `us.key`,
/// CN/SAN aws.vt.example), and strongSwan's (`sw.pem`, `sw.key`,
/// CN/SAN cgw.vt.example). With `spec_extensions` strongSwan's
/// certificate carries the Authority and Subject Key Identifiers and
/// Basic Constraints (spec § 5.2; `pki --issue` writes neither SKI nor
/// Basic Constraints into end-entity certificates, so it is signed
/// through `openssl x509 -req`); without, it is a plain `pki --issue` one.
///
/// # Panics
/// When `pki` or `openssl` fails.
pub fn make_pki(dir: &Path, alg: Alg, spec_extensions: bool) {
    let g = alg.pki_gen();
    pki(dir, &format!("--gen {g} --outform pem > root.key"));
    pki(
        dir,
        "--self --ca --lifetime 3650 --in root.key --type priv --dn \"C=CH, O=vt lab, CN=vt Root CA\" --outform pem > root.pem",
    );
    pki(dir, &format!("--gen {g} --outform pem > sub.key"));
    pki(
        dir,
        "--issue --cacert root.pem --cakey root.key --type priv --in sub.key --ca --lifetime 1825 --dn \"C=CH, O=vt lab, CN=vt Sub CA\" --outform pem > sub.pem",
    );
    pki(dir, &format!("--gen {g} --outform pem > us.key"));
    pki(
        dir,
        "--issue --cacert sub.pem --cakey sub.key --type priv --in us.key --lifetime 365 --dn \"C=CH, O=vt lab, CN=aws.vt.example\" --san aws.vt.example --outform pem > us.pem",
    );
    sh(&format!(
        "cd {} && cat us.pem sub.pem > us-chain.pem",
        dir.display()
    ));
    pki(dir, &format!("--gen {g} --outform pem > sw.key"));
    if spec_extensions {
        std::fs::write(
            dir.join("sw.ext"),
            "basicConstraints = critical, CA:FALSE\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\nkeyUsage = digitalSignature\nsubjectAltName = DNS:cgw.vt.example\n",
        )
        .expect("ext file");
        pki(
            dir,
            "--req --in sw.key --type priv --dn \"C=CH, O=vt lab, CN=cgw.vt.example\" --outform pem > sw.csr",
        );
        sh(&format!(
            "cd {} && openssl x509 -req -in sw.csr -CA sub.pem -CAkey sub.key -CAcreateserial -days 365 -sha256 -extfile sw.ext -out sw.pem 2>/dev/null",
            dir.display()
        ));
    } else {
        pki(
            dir,
            "--issue --cacert sub.pem --cakey sub.key --type priv --in sw.key --lifetime 365 --dn \"C=CH, O=vt lab, CN=cgw.vt.example\" --san cgw.vt.example --outform pem > sw.pem",
        );
    }
}
