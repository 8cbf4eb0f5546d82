//! Data packet headers (P_DATA_V1/V2): the checked view never panics, and a parsed header
//! emits back to the bytes it was read from.
#![no_main]

use gateway_proto::packet::{DataHeader, DataPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = DataPacket::new_checked(data) else {
        assert!(DataHeader::parse(data).is_err());
        return;
    };
    let header = packet.header();
    assert_eq!(DataHeader::parse(data), Ok(header));
    assert_eq!(
        packet.header_bytes().len() + packet.payload().len(),
        data.len()
    );
    let mut out = vec![0u8; header.buffer_len()];
    assert_eq!(header.emit(&mut out), Ok(out.len()));
    assert_eq!(
        &out[..],
        packet.header_bytes(),
        "emit(parse(x)) == header of x"
    );
});
