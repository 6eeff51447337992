//! The appliance as an operator installs it: the Debian package
//! (`tools/build-deb.sh`) installed, upgraded, removed and purged on a
//! stock Debian 12 root (`tools/test-deb.sh`, a throw-away mmdebstrap root:
//! this machine's own system is never touched); the configuration the
//! package ships accepted by the configuration's validation; and the disk
//! image (`tools/build-image.sh`) booted under QEMU with its PCI NICs driven
//! by DPDK, carrying a dynamic connection to strongSwan + BIRD across a
//! reboot (`tools/boot-test.sh`, ~10-15 minutes under TCG).
//!
//! They need root, network access to Debian's mirror and the tools
//! `bash tools/setup.sh` installs (mmdebstrap, dpkg-dev, QEMU, OVMF,
//! mtools); they build the release binaries when they are not built
//! (`tools/test.sh` builds them first).

use std::path::PathBuf;
use std::process::Command;

use control::config::ApplianceConfig;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned()
}

#[test]
fn the_shipped_configuration_is_valid() {
    let path = workspace().join("packaging/vpnd.toml");
    let text = std::fs::read_to_string(&path).expect("packaging/vpnd.toml");
    let config =
        ApplianceConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if let Err(errors) = config.validate() {
        panic!("{}: {errors:?}", path.display());
    }
    // Its ports are PCI devices: the package is for a box with NICs.
    assert!(
        config
            .dataplane
            .ports
            .iter()
            .all(|p| is_pci_address(&p.device)),
        "the shipped ports must be PCI addresses"
    );
    assert!(
        !config.dataplane.allow_no_iommu,
        "no-IOMMU mode is the operator's choice"
    );
}

fn is_pci_address(device: &str) -> bool {
    let addr = device.split(',').next().unwrap_or("");
    addr.len() == 12 && addr.as_bytes()[4] == b':' && addr.as_bytes()[7] == b':'
}

#[test]
fn the_debian_package_installs_upgrades_and_purges() {
    e2e::require_root();
    for tool in ["mmdebstrap", "dpkg-deb", "dpkg-shlibdeps"] {
        if !e2e::sh_ok(&format!("command -v {tool}")) {
            testkit::tool_missing(tool);
            return;
        }
    }
    let out = Command::new("bash")
        .arg(workspace().join("tools/test-deb.sh"))
        .output()
        .expect("run tools/test-deb.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "tools/test-deb.sh failed: {stderr}");
    assert!(
        stdout.contains("install, upgrade, remove and purge passed"),
        "{stdout}"
    );
}

#[test]
fn the_image_boots_and_carries_tunnels_across_a_reboot() {
    e2e::require_root();
    for tool in [
        "qemu-system-x86_64",
        "mmdebstrap",
        "mkfs.vfat",
        "mcopy",
        "sfdisk",
        "qemu-img",
        "ssh",
    ] {
        if !e2e::sh_ok(&format!("command -v {tool}")) {
            testkit::tool_missing(tool);
            return;
        }
    }
    if !std::path::Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists() {
        testkit::tool_missing("ovmf");
        return;
    }
    let out = Command::new("bash")
        .arg(workspace().join("tools/boot-test.sh"))
        .env("BOOT_DEBUG", "1")
        .output()
        .expect("run tools/boot-test.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "tools/boot-test.sh failed: {stderr}");
    assert!(
        stdout.contains("boot-test") && stdout.contains(": passed"),
        "{stdout}"
    );
}
