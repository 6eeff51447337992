//! Generates bindings to the system DPDK and compiles the C shim.
//!
//! DPDK is found with `pkg-config libdpdk` (22.11 from Debian's
//! `libdpdk-dev`). Its raw `--cflags` go to both bindgen and the C compiler,
//! so both see exactly the configuration DPDK was built with (`-include
//! rte_config.h`, `-march=…`); the link flags come from the `pkg-config`
//! crate. No library list or CPU flag is hard-coded here.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const MIN_DPDK: &str = "22.11";
const INSTALL_HINT: &str = "install DPDK's development files and libclang: \
     `apt-get install -y libdpdk-dev dpdk pkg-config clang libclang-dev` (Debian 12)";

fn main() {
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = match pkg_config::Config::new()
        .atleast_version(MIN_DPDK)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!("error: DPDK >= {MIN_DPDK} not found through pkg-config: {e}");
            eprintln!("error: {INSTALL_HINT}");
            std::process::exit(1);
        }
    };
    println!("cargo:version={}", lib.version);
    // `rte_eth_from_rings` (ring-backed port pairs for tests and benches)
    // is the public API of the net_ring driver, which pkg-config's shared
    // link line leaves to the EAL's plugin loader.
    println!("cargo:rustc-link-lib=dylib=rte_net_ring");

    let cflags = raw_cflags();
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    let bindings = bindgen::Builder::default()
        .header("src/shim.h")
        .clang_args(&cflags)
        .rust_edition(bindgen::RustEdition::Edition2024)
        .allowlist_function(
            "rte_(eal|eth|lcore|mempool|ring|pktmbuf_pool|socket|get|strerror|version|dev|vdev)_.*",
        )
        .allowlist_function("rte_pktmbuf_free_bulk|rte_socket_id|rte_strerror|rte_exit|rte_delay_us_block")
        .allowlist_function(".*_w")
        .allowlist_function("rte_flow_(create|destroy|flush|validate)")
        .allowlist_type("rte_flow_(attr|item|action|error|item_eth|item_ipv4|item_ipv6|item_udp|item_esp|action_queue)")
        .allowlist_type("rte_eth_(conf|dev_info|stats|link|xstat|xstat_name|rxconf|txconf)")
        .allowlist_var("RTE_(MAX_ETHPORTS|MAX_LCORE|ETHER_ADDR_LEN|PKTMBUF_HEADROOM|MBUF_DEFAULT_BUF_SIZE|ETH_XSTATS_NAME_SIZE|ETH_LINK_.*|ETH_MQ_.*|RING_F_.*|MEMPOOL_.*|ETH_NAME_MAX_LEN)")
        .allowlist_var("SOCKET_ID_ANY|LCORE_ID_ANY|RING_F_.*")
        // We never touch these structs' fields from Rust: every access goes
        // through a shim helper, so their unions and bitfields stay out.
        .opaque_type("rte_mbuf|rte_mempool|rte_ring")
        // Packed wire headers inside rte_flow items: opaque blobs of their
        // exact size, filled with wire-format (network order) bytes.
        .opaque_type("rte_(ether|ipv4|ipv6|udp|esp)_hdr")
        .use_core()
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(true)
        .wrap_unsafe_ops(true)
        .generate_comments(true)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::ModuleConsts)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| {
            eprintln!("error: bindgen failed on the DPDK headers: {e}");
            eprintln!("error: {INSTALL_HINT}");
            std::process::exit(1);
        });
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs to OUT_DIR");

    let mut cc = cc::Build::new();
    for flag in &cflags {
        cc.flag(flag);
    }
    cc.file("src/shim.c")
        .include("src")
        .opt_level(3)
        .warnings(true)
        .compile("vpn_dpdk_shim");
}

/// `pkg-config --cflags libdpdk`, split on whitespace.
fn raw_cflags() -> Vec<String> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let output = Command::new(&pkg_config)
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|e| {
            eprintln!("error: cannot run {pkg_config}: {e}; {INSTALL_HINT}");
            std::process::exit(1);
        });
    if !output.status.success() {
        eprintln!(
            "error: `{pkg_config} --cflags libdpdk` failed: {}; {INSTALL_HINT}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        std::process::exit(1);
    }
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
