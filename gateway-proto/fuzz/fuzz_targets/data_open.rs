//! Opening received data packets with a fixed key (every cipher), then reading the
//! plaintext framing: no input panics, and what the matching key seals opens unchanged.
#![no_main]

use std::time::Instant;

use gateway_proto::data::{
    Cipher, CompressionFraming, DATA_V2_OVERHEAD, DataKey, Plaintext, UsageLimits,
};
use gateway_proto::keys::DataChannelKeys;
use gateway_proto::packet::{DataHeader, KeyId, PeerId};
use gateway_proto::replay::ReplayConfig;
use libfuzzer_sys::fuzz_target;

/// The same fixed key and implicit IV both ways, so what a key seals it also opens.
const KEYS: DataChannelKeys = DataChannelKeys {
    encrypt_cipher_key: [0x42; 64],
    encrypt_hmac_key: [0x17; 64],
    decrypt_cipher_key: [0x42; 64],
    decrypt_hmac_key: [0x17; 64],
};

fn key(key_id: KeyId, cipher: Cipher) -> DataKey {
    let limits = UsageLimits {
        bytes: 1,
        packets: 1,
    };
    DataKey::new(key_id, cipher, &KEYS, ReplayConfig::default(), limits).expect("fixed key fits")
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let cipher = Cipher::ALL[usize::from(selector) % Cipher::ALL.len()];
    let key_id = KeyId::new(selector & 7).expect("key_id below 8");
    let now = Instant::now();
    let opening = key(key_id, cipher);
    let mut buf = rest.to_vec();
    if let Ok(opened) = opening.open(&mut buf, now) {
        assert!(opened.plaintext.start <= opened.plaintext.end);
        assert!(opened.plaintext.end <= buf.len());
        assert!(opened.renegotiate, "the first packet reaches the limit of 1");
    }

    // Round trip: the input as plaintext, sealed with a fresh key, opens to itself.
    let fresh = key(key_id, cipher);
    let header = DataHeader::V2 {
        key_id,
        peer_id: PeerId::new(u32::from(selector) << 8).expect("peer-id below 2^24"),
    };
    let mut packet = vec![0u8; DATA_V2_OVERHEAD + rest.len()];
    packet[DATA_V2_OVERHEAD..].copy_from_slice(rest);
    let sealed = fresh
        .seal(header, &mut packet, rest.len())
        .expect("buffer sized for the overhead");
    let opened = fresh
        .open(&mut packet[..sealed.len], now)
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
