//! Golden files of the customer device configuration download: the example
//! configuration (`control/examples/appliance.toml`, a dynamic-routing
//! connection) and a static-routing variant of it are rendered for every
//! [`Device`] and compared byte for byte with
//! `control/tests/golden/download/<routing>-<device>.txt`.
//!
//! After a deliberate change of a renderer, regenerate them with
//! `UPDATE_GOLDEN=1 cargo nextest run -p control --test download_golden`
//! and review the diff.

use std::path::PathBuf;

use control::config::{ApplianceConfig, RoutingType};
use control::download::{Device, render};

fn example() -> ApplianceConfig {
    ApplianceConfig::from_toml_str(include_str!("../examples/appliance.toml")).unwrap()
}

/// The example with its connection switched to static routing: two
/// customer prefixes, no BGP section.
fn static_example() -> ApplianceConfig {
    let mut cfg = example();
    let c = &mut cfg.connections[0];
    c.routing = RoutingType::Static;
    c.bgp = None;
    c.static_routes = vec![
        "192.168.10.0/24".parse().unwrap(),
        "192.168.20.0/24".parse().unwrap(),
    ];
    cfg.validate()
        .expect("the static variant is a valid configuration");
    cfg
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/download")
}

fn check(name: &str, cfg: &ApplianceConfig) {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut mismatched = Vec::new();
    for &device in Device::ALL {
        let text = render(cfg, "vpn-branch1", device).unwrap();
        let path = golden_dir().join(format!("{name}-{device}.txt"));
        if update {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (regenerate with UPDATE_GOLDEN=1)", path.display())
        });
        if want != text {
            let first = want
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| want.lines().count().min(text.lines().count()));
            mismatched.push(format!(
                "{}: first difference at line {}:\n  golden:   {:?}\n  rendered: {:?}",
                path.display(),
                first + 1,
                want.lines().nth(first),
                text.lines().nth(first)
            ));
        }
    }
    assert!(
        mismatched.is_empty(),
        "rendered output differs from the golden files (UPDATE_GOLDEN=1 regenerates them):\n{}",
        mismatched.join("\n")
    );
}

#[test]
fn dynamic_routing_example_matches_the_golden_files() {
    check("dynamic", &example());
}

#[test]
fn static_routing_example_matches_the_golden_files() {
    check("static", &static_example());
}

/// Every device has a golden file for each routing type, and no golden
/// file is left over from a device that no longer exists.
#[test]
fn golden_files_are_exactly_one_per_device_and_routing() {
    let mut want: Vec<String> = Device::ALL
        .iter()
        .flat_map(|d| [format!("dynamic-{d}.txt"), format!("static-{d}.txt")])
        .collect();
    want.sort();
    let mut have: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    have.sort();
    assert_eq!(have, want);
}
