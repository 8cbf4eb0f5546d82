//! Control packets (§3.1 layout): the checked view never panics, and a parsed packet
//! emits back to the same bytes and parses to the same `ControlRepr`.
#![no_main]

use gateway_proto::packet::{ControlPacket, ControlRepr, peek_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = peek_header(data);
    let Ok(packet) = ControlPacket::new_checked(data) else {
        return;
    };
    let repr = ControlRepr::parse(&packet);
    assert_eq!(packet.acks().len(), packet.ack_count());
    let mut out = vec![0u8; repr.buffer_len()];
    let written = repr.emit(&mut out).expect("a parsed packet emits");
    assert_eq!(&out[..written], data, "emit(parse(x)) == x");
    let again = ControlPacket::new_checked(&out[..written]).expect("emitted packet parses");
    assert_eq!(ControlRepr::parse(&again), repr);
});
