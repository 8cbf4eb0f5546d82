//! Opening received data packets with a fixed key (every cipher), then reading the
//! plaintext framing: no input panics, and what the matching key seals opens unchanged.
#![no_main]

use std::time::Instant;

use gateway_proto::data::{
    Cipher, CompressionFraming, DATA_V2_OVERHEAD, OpeningKey, Plaintext, SealingKey,
};
use gateway_proto::packet::{DataHeader, KeyId, PeerId};
use gateway_proto::replay::{ReplayConfig, ReplayWindow};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x42; 32];
const IMPLICIT_IV: [u8; 8] = [0x17; 8];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let cipher = Cipher::ALL[usize::from(selector) % Cipher::ALL.len()];
    let key = &KEY[..cipher.key_len()];
    let opening = OpeningKey::new(cipher, key, &IMPLICIT_IV).expect("fixed key fits");
    let now = Instant::now();
    let mut window = ReplayWindow::new(ReplayConfig::default());
    let mut buf = rest.to_vec();
    if let Ok(opened) = opening.open_in_place(&mut buf, &mut window, now) {
        assert!(opened.plaintext.start <= opened.plaintext.end);
        assert!(opened.plaintext.end <= buf.len());
    }

    // Round trip: the input as plaintext, sealed with the matching key, opens to itself.
    let sealing = SealingKey::new(cipher, key, &IMPLICIT_IV).expect("fixed key fits");
    let header = DataHeader::V2 {
        key_id: KeyId::new(selector & 7).expect("key_id below 8"),
        peer_id: PeerId::new(u32::from(selector) << 8).expect("peer-id below 2^24"),
    };
    let mut packet = vec![0u8; DATA_V2_OVERHEAD + rest.len()];
    packet[DATA_V2_OVERHEAD..].copy_from_slice(rest);
    let len = sealing
        .seal_in_place(header, &mut packet, rest.len())
        .expect("buffer sized for the overhead");
    let mut window = ReplayWindow::new(ReplayConfig::default());
    let opened = opening
        .open_in_place(&mut packet[..len], &mut window, now)
        .expect("sealed packet opens");
    assert_eq!(opened.header, header);
    assert_eq!(&packet[opened.plaintext], rest);

    // The plaintext readers see decrypted bytes the peer chose: feed them the input.
    let _ = Plaintext::classify(rest);
    for framing in [
        CompressionFraming::None,
        CompressionFraming::CompLzo,
        CompressionFraming::Compress,
        CompressionFraming::CompressStubV2,
    ] {
        let mut buf = rest.to_vec();
        let len = buf.len();
        if let Ok(bare) = framing.decode(&mut buf, 0..len) {
            assert!(bare.start <= bare.end && bare.end <= len);
        }
    }
});
