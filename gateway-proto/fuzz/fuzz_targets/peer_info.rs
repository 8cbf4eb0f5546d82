//! Peer-info blocks (§7.3): parsing never panics, and a parsed block written out as text
//! parses back to the same value.
#![no_main]

use gateway_proto::key_method::PeerInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(info) = PeerInfo::parse(text) else {
        return;
    };
    assert_eq!(
        PeerInfo::parse(&info.to_text()),
        Ok(info),
        "parse(to_text(p)) == p"
    );
});
