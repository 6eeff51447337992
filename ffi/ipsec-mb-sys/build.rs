//! Generates bindings to the system intel-ipsec-mb (1.3 from Debian's
//! `libipsec-mb-dev`) and links `libIPSec_MB`.
//!
//! The library ships no pkg-config file: its one header is
//! `intel-ipsec-mb.h` on the default include path and its library
//! `libIPSec_MB.so` on the default library path. The version is checked
//! from the header's `IMB_VERSION_STR` at build time (>= 1.3) and again at
//! run time by the safe layer (`imb_get_version`). No CPU flag is set here:
//! the library picks its SSE/AVX/AVX2/AVX-512 code at run time
//! (`init_mb_mgr_auto`).

use std::env;
use std::path::PathBuf;

const INSTALL_HINT: &str = "install intel-ipsec-mb's development files and libclang: \
     `apt-get install -y libipsec-mb-dev clang libclang-dev` (Debian 12)";

fn main() {
    println!("cargo:rerun-if-changed=src/wrapper.h");
    println!("cargo:rustc-link-lib=dylib=IPSec_MB");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bindings = bindgen::Builder::default()
        .header("src/wrapper.h")
        .rust_edition(bindgen::RustEdition::Edition2024)
        // The manager, its job and burst API, and the key/context structs
        // of the GCM direct API.
        .allowlist_function("alloc_mb_mgr|free_mb_mgr|init_mb_mgr_auto|imb_get_.*")
        .allowlist_type("IMB_MGR|IMB_JOB|IMB_ARCH|IMB_STATUS|IMB_ERR|IMB_CIPHER_MODE|IMB_CIPHER_DIRECTION|IMB_HASH_ALG|IMB_CHAIN_ORDER|IMB_KEY_SIZE_BYTES")
        .allowlist_type("gcm_key_data|gcm_context_data")
        .allowlist_var("IMB_VERSION_STR|IMB_FEATURE_.*|IMB_MAX_BURST_SIZE|IMB_MAX_JOBS|IMB_SHA.*_SIZE.*|IMB_AES_BLOCK_SIZE|IMB_GCM_IV_DATA_LEN|IMB_MAX_TAG_LEN")
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
            eprintln!("error: bindgen failed on intel-ipsec-mb.h: {e}");
            eprintln!("error: {INSTALL_HINT}");
            std::process::exit(1);
        });
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs to OUT_DIR");
}
