//! The TOML configuration from untrusted text (`vpnd.toml`, `vpnctl
//! config import`, a connection `--from-file`): parse and validate never
//! panic; a configuration that parses renders to TOML that parses to the
//! same value; no error message grows with the input (issue 17 item 7:
//! echoed values are bounded).
#![no_main]

use control::config::ApplianceConfig;
use libfuzzer_sys::fuzz_target;

/// Longest parse error or single validation error: field paths, values
/// and rules are each bounded to 256 characters, what toml quotes to 64,
/// a toml message to 1,024.
const MAX_ERROR_CHARS: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ApplianceConfig::from_toml_str(text) {
        Ok(cfg) => {
            if let Err(errs) = cfg.validate() {
                for e in errs {
                    let n = e.to_string().chars().count();
                    assert!(n <= MAX_ERROR_CHARS, "validation error of {n} characters");
                }
            }
            let again = cfg.to_toml_string().expect("a parsed configuration renders");
            let back = ApplianceConfig::from_toml_str(&again).expect("rendered TOML parses");
            assert_eq!(back, cfg);
        }
        Err(e) => {
            let n = e.to_string().chars().count();
            assert!(n <= MAX_ERROR_CHARS, "parse error of {n} characters");
        }
    }
});
