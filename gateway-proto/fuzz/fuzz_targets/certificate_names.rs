//! Certificate-name parsing on arbitrary DER: the subject common name a session takes
//! and the identity rules a client certificate must pass never panic, and a
//! certificate that passes the rules has the one common name the session reads.
#![no_main]

use gateway_proto::session::{check_client_identity, subject_common_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = subject_common_name(data);
    let strict = check_client_identity(data, true);
    let lax = check_client_identity(data, false);
    if strict.is_ok() {
        assert!(lax.is_ok());
    }
    if lax.is_ok() {
        // The rules saw exactly one non-empty common name; the session reads it too
        // (it may still refuse a string type the rules' parser accepts).
        if let Some(name) = name {
            assert!(!name.is_empty());
        }
    }
});
