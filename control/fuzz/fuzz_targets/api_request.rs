//! The management API's request decoding from untrusted bytes (one line
//! of the control socket, `control::api::codec`): it never panics, and a
//! request that decodes re-encodes to a line that decodes to the same
//! envelope. Errors bound what they echo (issue 17 item 7): no error
//! message is longer than `MAX_ERROR_CHARS`.
#![no_main]

use control::api::{MAX_ERROR_CHARS, decode_request, encode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_request(data) {
        Ok(env) => {
            let line = encode_request(&env).expect("a decoded request encodes");
            let body = line.strip_suffix(b"\n").expect("one line");
            let again = decode_request(body).expect("an encoded request decodes");
            assert_eq!(again, env);
        }
        Err(e) => {
            let n = e.error.message.chars().count();
            assert!(
                n <= MAX_ERROR_CHARS,
                "error of {n} characters for a {}-byte request",
                data.len()
            );
        }
    }
});
