use super::*;
use crate::static_key::{
    METADATA_TYPE_TIMESTAMP, STATIC_KEY_LEN, TLS_CRYPT_V2_SERVER_KEY_LEN, TlsCryptV2ServerKey,
};
use ::hmac::{Hmac, Mac};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn counting_key() -> StaticKey {
    StaticKey::from_bytes(std::array::from_fn(|i| i as u8))
}

fn other_key() -> StaticKey {
    StaticKey::from_bytes(std::array::from_fn(|i| (i as u8).wrapping_mul(31) ^ 0x5c))
}

const STAMP: ReplayStamp = ReplayStamp {
    id: 1,
    time: 0x6500_0000,
};

/// §3.3 test vector: server reset, sid 1122334455667788, ACK [0] for peer a1..a8, msg-id 0.
fn doc_reset() -> Vec<u8> {
    hex("40112233445566778801000000 00a1a2a3a4a5a6a7a800000000"
        .replace(' ', "")
        .as_str())
}

fn wrap_vec(wrap: &Wrap, packet: &[u8], stamp: ReplayStamp) -> Vec<u8> {
    let mut out = vec![0u8; packet.len() + wrap.overhead()];
    let n = wrap.wrap(packet, stamp, &mut out).unwrap();
    assert_eq!(n, out.len());
    out
}

fn unwrap_vec(wrap: &Wrap, wire: &[u8]) -> Result<(Vec<u8>, Option<ReplayStamp>), WrapError> {
    let mut out = vec![0u8; wire.len()];
    let u = wrap.unwrap(wire, &mut out)?;
    out.truncate(u.len);
    Ok((out, u.replay))
}

/// (server side, client side) pairs for every mode.
fn pairs() -> Vec<(Wrap, Wrap)> {
    let key = counting_key();
    let mut pairs = vec![(Wrap::None, Wrap::None)];
    for digest in [AuthDigest::Sha1, AuthDigest::Sha256, AuthDigest::Sha512] {
        pairs.push((
            Wrap::TlsAuth(TlsAuth::new(&key, KeyDirection::Normal, digest)),
            Wrap::TlsAuth(TlsAuth::new(&key, KeyDirection::Inverse, digest)),
        ));
        pairs.push((
            Wrap::TlsAuth(TlsAuth::new(&key, KeyDirection::Bidirectional, digest)),
            Wrap::TlsAuth(TlsAuth::new(&key, KeyDirection::Bidirectional, digest)),
        ));
    }
    pairs.push((
        Wrap::TlsCrypt(TlsCrypt::new(&key, Role::Server)),
        Wrap::TlsCrypt(TlsCrypt::new(&key, Role::Client)),
    ));
    pairs
}

#[test]
fn tls_crypt_doc_vector() {
    let server = Wrap::TlsCrypt(TlsCrypt::new(&counting_key(), Role::Server));
    let wire = wrap_vec(&server, &doc_reset(), STAMP);
    assert_eq!(wire.len(), 66);
    assert_eq!(
        wire[..17].to_vec(),
        hex("40112233445566778800000001650000 00"
            .replace(' ', "")
            .as_str())
    );
    assert_eq!(
        wire[17..49].to_vec(),
        hex("1d40d074c6f7bee9d26ba62550e8558032f9000aa1e6dd156752e8737581de04")
    );
    assert_eq!(
        wire[49..].to_vec(),
        hex("6d7708bcf7475110b91ecb01980d3f322f")
    );
    let client = Wrap::TlsCrypt(TlsCrypt::new(&counting_key(), Role::Client));
    assert_eq!(unwrap_vec(&client, &wire), Ok((doc_reset(), Some(STAMP))));
}

#[test]
fn tls_crypt_client_sends_with_set_one() {
    // Recompute the client's tag with the hmac crate over Ka = bytes 192..224.
    let client = Wrap::TlsCrypt(TlsCrypt::new(&counting_key(), Role::Client));
    let wire = wrap_vec(&client, &doc_reset(), STAMP);
    let key = counting_key();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key.as_bytes()[192..224]).unwrap();
    mac.update(&wire[..17]);
    mac.update(&doc_reset()[9..]);
    assert_eq!(&wire[17..49], &mac.finalize().into_bytes()[..]);
}

#[test]
fn tls_crypt_own_packets_do_not_verify() {
    let server = Wrap::TlsCrypt(TlsCrypt::new(&counting_key(), Role::Server));
    let wire = wrap_vec(&server, &doc_reset(), STAMP);
    assert_eq!(unwrap_vec(&server, &wire), Err(WrapError::BadTag));
}

#[test]
fn tls_crypt_bad_tag_zeroes_output() {
    let server = Wrap::TlsCrypt(TlsCrypt::new(&counting_key(), Role::Server));
    let client = Wrap::TlsCrypt(TlsCrypt::new(&counting_key(), Role::Client));
    let mut wire = wrap_vec(&server, &doc_reset(), STAMP);
    wire[30] ^= 0x80;
    let mut out = vec![0xffu8; wire.len()];
    assert_eq!(client.unwrap(&wire, &mut out), Err(WrapError::BadTag));
    assert!(
        out[HEADER_LEN..wire.len() - TlsCrypt::OVERHEAD]
            .iter()
            .all(|b| *b == 0)
    );
}

fn reference_tls_auth_hmac(digest: AuthDigest, key: &[u8], input: &[u8]) -> Vec<u8> {
    match digest {
        AuthDigest::Sha1 => {
            let mut m = Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
            m.update(input);
            m.finalize().into_bytes().to_vec()
        }
        AuthDigest::Sha256 => {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
            m.update(input);
            m.finalize().into_bytes().to_vec()
        }
        AuthDigest::Sha512 => {
            let mut m = Hmac::<sha2::Sha512>::new_from_slice(key).unwrap();
            m.update(input);
            m.finalize().into_bytes().to_vec()
        }
    }
}

#[test]
fn tls_auth_layout_and_hmac_order() {
    let key = counting_key();
    let packet = doc_reset();
    for digest in [AuthDigest::Sha1, AuthDigest::Sha256, AuthDigest::Sha512] {
        for (direction, send_offset) in [
            (KeyDirection::Normal, 64),
            (KeyDirection::Inverse, 192),
            (KeyDirection::Bidirectional, 64),
        ] {
            let wrap = Wrap::TlsAuth(TlsAuth::new(&key, direction, digest));
            let wire = wrap_vec(&wrap, &packet, STAMP);
            let h = digest.tag_len();
            assert_eq!(wire.len(), packet.len() + h + 8);
            assert_eq!(&wire[..9], &packet[..9]);
            assert_eq!(&wire[9 + h..17 + h], &hex("0000000165000000")[..]);
            assert_eq!(&wire[17 + h..], &packet[9..]);
            let input = [&hex("0000000165000000")[..], &packet[..]].concat();
            let hmac_key = &key.as_bytes()[send_offset..send_offset + h];
            assert_eq!(
                wire[9..9 + h].to_vec(),
                reference_tls_auth_hmac(digest, hmac_key, &input),
                "{digest:?} {direction:?}"
            );
        }
    }
}

#[test]
fn tls_auth_directions_must_mirror() {
    let key = counting_key();
    let a = Wrap::TlsAuth(TlsAuth::new(&key, KeyDirection::Normal, AuthDigest::Sha256));
    let wire = wrap_vec(&a, &doc_reset(), STAMP);
    assert_eq!(unwrap_vec(&a, &wire), Err(WrapError::BadTag));
    // Without a direction the receiver verifies with set 0: direction 0's packets pass,
    // direction 1's do not.
    let b = Wrap::TlsAuth(TlsAuth::new(
        &key,
        KeyDirection::Bidirectional,
        AuthDigest::Sha256,
    ));
    assert!(unwrap_vec(&b, &wire).is_ok());
    let inverse = Wrap::TlsAuth(TlsAuth::new(
        &key,
        KeyDirection::Inverse,
        AuthDigest::Sha256,
    ));
    let wire = wrap_vec(&inverse, &doc_reset(), STAMP);
    assert_eq!(unwrap_vec(&b, &wire), Err(WrapError::BadTag));
}

#[test]
fn tls_auth_wrong_digest_or_key_fails() {
    let key = counting_key();
    let sender = Wrap::TlsAuth(TlsAuth::new(&key, KeyDirection::Normal, AuthDigest::Sha256));
    let wire = wrap_vec(&sender, &doc_reset(), STAMP);
    let wrong_key = Wrap::TlsAuth(TlsAuth::new(
        &other_key(),
        KeyDirection::Inverse,
        AuthDigest::Sha256,
    ));
    assert_eq!(unwrap_vec(&wrong_key, &wire), Err(WrapError::BadTag));
    let wrong_digest = Wrap::TlsAuth(TlsAuth::new(&key, KeyDirection::Inverse, AuthDigest::Sha1));
    assert_eq!(unwrap_vec(&wrong_digest, &wire), Err(WrapError::BadTag));
}

#[test]
fn overheads() {
    let key = counting_key();
    assert_eq!(Wrap::None.overhead(), 0);
    for (digest, expected) in [
        (AuthDigest::Sha1, 28),
        (AuthDigest::Sha256, 40),
        (AuthDigest::Sha512, 72),
    ] {
        let w = Wrap::TlsAuth(TlsAuth::new(&key, KeyDirection::Normal, digest));
        assert_eq!(w.overhead(), expected);
    }
    assert_eq!(
        Wrap::TlsCrypt(TlsCrypt::new(&key, Role::Server)).overhead(),
        40
    );
}

#[test]
fn none_passes_bytes_through_without_stamp() {
    let wire = wrap_vec(&Wrap::None, &doc_reset(), STAMP);
    assert_eq!(wire, doc_reset());
    assert_eq!(unwrap_vec(&Wrap::None, &wire), Ok((doc_reset(), None)));
}

#[test]
fn too_short_received_packets() {
    for (server, client) in pairs() {
        let min = HEADER_LEN + client.overhead();
        let mut out = [0u8; 200];
        assert_eq!(
            client.unwrap(&vec![0u8; min - 1], &mut out),
            Err(WrapError::TooShort { len: min - 1, min }),
            "{server:?}"
        );
        assert_eq!(
            client.unwrap(&[], &mut out),
            Err(WrapError::TooShort { len: 0, min })
        );
        // A header-only packet is the smallest that can verify.
        let wire = wrap_vec(&server, &doc_reset()[..HEADER_LEN], STAMP);
        assert_eq!(wire.len(), min);
        assert_eq!(
            unwrap_vec(&client, &wire).unwrap().0,
            doc_reset()[..HEADER_LEN].to_vec()
        );
    }
}

#[test]
fn packet_to_wrap_without_header() {
    for (server, _) in pairs() {
        let mut out = [0u8; 200];
        assert_eq!(
            server.wrap(&[0x40; 8], STAMP, &mut out),
            Err(WrapError::PacketTooShort { len: 8 })
        );
    }
}

#[test]
fn output_buffers_too_small() {
    for (server, client) in pairs() {
        let packet = doc_reset();
        let needed = packet.len() + server.overhead();
        let mut small = vec![0u8; needed - 1];
        assert_eq!(
            server.wrap(&packet, STAMP, &mut small),
            Err(WrapError::BufferTooSmall {
                needed,
                available: needed - 1
            })
        );
        let wire = wrap_vec(&server, &packet, STAMP);
        let mut small = vec![0u8; packet.len() - 1];
        assert_eq!(
            client.unwrap(&wire, &mut small),
            Err(WrapError::BufferTooSmall {
                needed: packet.len(),
                available: packet.len() - 1
            })
        );
    }
}

#[test]
fn errors_say_what_and_how_much() {
    assert_eq!(
        WrapError::TooShort { len: 3, min: 49 }.to_string(),
        "wrapped control packet: 3 bytes, expected at least 49"
    );
    assert_eq!(
        WrapError::BufferTooSmall {
            needed: 10,
            available: 4
        }
        .to_string(),
        "output buffer: 4 bytes, need 10"
    );
}

#[test]
fn debug_hides_keys() {
    let key = StaticKey::from_bytes([0x77; STATIC_KEY_LEN]);
    let shown = format!(
        "{:?} {:?}",
        Wrap::TlsAuth(TlsAuth::new(&key, KeyDirection::Normal, AuthDigest::Sha1)),
        Wrap::TlsCrypt(TlsCrypt::new(&key, Role::Server))
    );
    assert!(!shown.contains("77") && !shown.contains("119"), "{shown}");
}

fn v2_server_key() -> TlsCryptV2ServerKey {
    TlsCryptV2ServerKey::from_bytes(&std::array::from_fn::<u8, TLS_CRYPT_V2_SERVER_KEY_LEN, _>(
        |i| !(i as u8),
    ))
}

#[test]
fn tls_crypt_v2_reset_end_to_end() {
    let client_key = other_key();
    let wkc = v2_server_key()
        .wrap_client_key(&client_key, &[0, 42])
        .unwrap();
    let client = Wrap::TlsCrypt(TlsCrypt::new(&client_key, Role::Client));
    let reset = hex("50a1a2a3a4a5a6a7a80000000000");
    let mut wire = wrap_vec(
        &client,
        &reset,
        ReplayStamp {
            id: 0x0f00_0001,
            time: 7,
        },
    );
    wire.extend_from_slice(&wkc);

    let (packet, cut) = split_client_key(&wire).unwrap();
    assert_eq!(cut, &wkc[..]);
    let recovered = v2_server_key().unwrap_client_key(cut).unwrap();
    assert_eq!(recovered.metadata, vec![0, 42]);
    let server = Wrap::TlsCrypt(TlsCrypt::new(&recovered.key, Role::Server));
    assert_eq!(
        unwrap_vec(&server, packet),
        Ok((
            reset,
            Some(ReplayStamp {
                id: 0x0f00_0001,
                time: 7
            })
        ))
    );
}

#[test]
fn split_client_key_rejects_impossible_lengths() {
    let min = HEADER_LEN + TlsCrypt::OVERHEAD + MIN_WRAPPED_CLIENT_KEY_LEN;
    assert_eq!(
        split_client_key(&vec![0u8; min - 1]),
        Err(WrapError::TooShort { len: min - 1, min })
    );
    assert_eq!(
        split_client_key(&[]),
        Err(WrapError::TooShort { len: 0, min })
    );
    let with_len = |total: usize, len: u16| {
        let mut w = vec![0u8; total];
        w[total - 2..].copy_from_slice(&len.to_be_bytes());
        w
    };
    // Length below the minimum WKc, above the maximum, and longer than the packet allows.
    for (total, len) in [(min, 289u16), (2000, 1025), (min, 291), (min + 10, 0)] {
        assert_eq!(
            split_client_key(&with_len(total, len)),
            Err(WrapError::BadClientKeyLength {
                len: len.into(),
                packet_len: total
            })
        );
    }
    let smallest = with_len(min, 290);
    let (packet, wkc) = split_client_key(&smallest).unwrap();
    assert_eq!((packet.len(), wkc.len()), (49, 290));
    let largest = with_len(2000, 1024);
    let (packet, wkc) = split_client_key(&largest).unwrap();
    assert_eq!((packet.len(), wkc.len()), (976, 1024));
}

fn packet_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), HEADER_LEN..300)
}

fn stamp_strategy() -> impl Strategy<Value = ReplayStamp> {
    (any::<u32>(), any::<u32>()).prop_map(|(id, time)| ReplayStamp { id, time })
}

/// Captured from a real OpenVPN 2.6.14 client (`openvpn --genkey` keys made for this
/// test only): the first datagram of each wrap mode, checked with the server's keys.
mod openvpn_2_6_14 {
    use super::*;

    const TA_KEY: &str = "#\n# 2048 bit OpenVPN static key\n#\n-----BEGIN OpenVPN Static key V1-----\n54c5e6f111067d8ba4c0e7d1a19d6898\n05aba125ccfd732d027ea20b08f11b37\ndf19127e17a79ff9cfaf459addcb5828\n1ce74bb1eda778774ca857b8abb13a4e\nc48592eed712fb6544a2ab2d4cef0ee7\n8db8b031526680ae2a642534390a5028\n9423eec4970b332274afabef37d16ec7\n94f82877f04b6150f29208c3e8f609a2\ne450552585ed7b524f940fdef247c422\ne7b1be5e6a64c46ecb62a87806defc43\ncdab9b29f6ed0ec32f199a03855123be\n981eb1884fb572946a28bae36f40f82c\nc75c1eb4c434cbed2d2c596eb0b90d9d\n9a97bc16a3458b3fec92182c785a9cf8\n8a215740f12981920654e39de2a5ed45\n419d3f7d07ae1e2f03ff46abe00baa91\n-----END OpenVPN Static key V1-----\n";
    /// `--tls-auth ta.key 1 --auth SHA256`.
    const TLS_AUTH_SHA256_DIR1: &str = "381fb10d3be166410cc3315cf9535dbc94d3a93510216fdcb350363dbbc9220827eef59ee86089ebba000000016b05dc340000000000";
    /// `--tls-auth ta.key 1` (SHA1 default).
    const TLS_AUTH_SHA1_DIR1: &str =
        "38f6a6b571c0901487ecd8b920ce5481feb9cba5a3ac05f2f61100a20a000000016b05dc340000000000";
    /// `--tls-auth ta.key --auth SHA512` (no direction).
    const TLS_AUTH_SHA512_BIDIR: &str = "3876d158da779c97368c5994fd1a5ce4d45e69d4a4462d82f9729fb3a160b507e63e2a046dc79a5c25e4da54e1ab471dd514fa5592163cda1302b24633a61cd57735c99f63f9c4f967000000016b05dc340000000000";
    /// `--tls-crypt ta.key`.
    const TLS_CRYPT: &str = "38c53d7e9b81d5f50b000000016b05dc34dd0b7f4588185249c7db52843f35712ce0cbbc3da267f039227cfc8f8287bba910ec7c58f1";
    /// `--tls-crypt-v2` client key: HARD_RESET_CLIENT_V3 with the WKc appended.
    const TLS_CRYPT_V2_RESET: &str = "\
     50fbd03f1630b018ef0f0000016b05dc34b8346828b0f60386d7ddf40aa8bf52bcafeb034a66a9d0fd4642a0\
     12e651018e3596cd093f135ad4f95fb2a9cbac4c815b2c173d271205313a4bc8d27748494e8709af93c5a401\
     08121fa6f7ae093cf2b30e77264ee1a637d6b9eb75e216fffb3c8fdb08c4408c8638880c100a4e355ed922c9\
     89455bbcb00914fa383f599eb52c9ca6f3d868689911cf803168b1cdfd3dc911afd591d52fcb56ca3b3f239c\
     955c7c5ad0b825bfa203bdd8d90ff8d36a8be29cc6b6d1dfa02d2ee8511e39d50bc86d2fd499e0f7b2ae2932\
     4cb4206144f1078fc1fb5d1d86f0694107473ee0827b11c926c1016574753a8c46f723dd1eacc299eb0f9652\
     d76a1d29e99b3639e5b0cfa184693124932952d49c7e357a94355291c7f33df303465dd913cad968cb215599\
     1431200258c2ecaff2ef61e47bdd3400fab2a545ba553b127f3f7bd31c1266a1c441b3d9dcdef5aa95429401\
     2b";
    /// The base64 payload of the tls-crypt-v2 server key, as hex.
    const V2_SERVER_KEY: &str = "\
     5cd0688bdfd0291440feb6379294fa75fef7e8c7aa59ee08e619dd67aa7da548628ece67f500e91bbaca1030\
     90e6ab9b46dd3b087e8168882fd51a36a93b01606ea3d538b24012656e9d8a76ec7cf72a0d71730f8e7dee28\
     5ac91d0c2b18391f36f428701a54352f74e0cb51942879c11a39771b1e8f821088a86cb601087aad";
    /// The first 256 bytes of the client key file's payload (Kc).
    const V2_CLIENT_KC: &str = "\
     e176329d71c7f2d537714ecf62830b339e835f80178022c528b2b194602ae4fc614d7a955b4e8749c8f3f936\
     164c0ac23936fca2b4fb9cdc9b7668cad90be4b6916f29501a99f02ae28baa32e6b9cb524e2860d5827e6bae\
     82393fb1bea1a7585cd5d4fac6017b716e9385014707146b62f34773db791d4f87a1104a50dd0bb8c2764e3f\
     f92bb8200f4a89304c6a48a41c0eddc1b53ae04fe99091b8fd9d80941770a545f717e5ff6414b20d56a0c50f\
     1b43ee63a2f880ea75021d4d2f28cf2b118ce895677b94d740422a22918d813251d382fbc8edcd5930af185d\
     73aa658c2d665420659009a11d5e5fa076df10fa126f632f91ce60501af34db31bb37fb3";

    fn ta_key() -> StaticKey {
        StaticKey::parse(TA_KEY).unwrap()
    }

    /// A client reset with no ACKs: op 7 kid 0, its sid, n = 0, msg-id 0.
    fn expect_client_reset(unwrapped: &[u8], wire: &[u8]) {
        assert_eq!(unwrapped[0], 0x38);
        assert_eq!(&unwrapped[1..9], &wire[1..9]);
        assert_eq!(&unwrapped[9..], &[0, 0, 0, 0, 0]);
    }

    #[test]
    fn tls_auth_from_a_direction_1_client() {
        for (wire, digest) in [
            (TLS_AUTH_SHA256_DIR1, AuthDigest::Sha256),
            (TLS_AUTH_SHA1_DIR1, AuthDigest::Sha1),
        ] {
            let wire = hex(wire);
            let server = Wrap::TlsAuth(TlsAuth::new(&ta_key(), KeyDirection::Normal, digest));
            let (packet, stamp) = unwrap_vec(&server, &wire).unwrap();
            expect_client_reset(&packet, &wire);
            assert_eq!(stamp.map(|s| s.id), Some(1));
            // The wrong direction or digest does not verify.
            let inverse = Wrap::TlsAuth(TlsAuth::new(&ta_key(), KeyDirection::Inverse, digest));
            assert_eq!(unwrap_vec(&inverse, &wire), Err(WrapError::BadTag));
        }
    }

    #[test]
    fn tls_auth_without_direction() {
        let wire = hex(TLS_AUTH_SHA512_BIDIR);
        let server = Wrap::TlsAuth(TlsAuth::new(
            &ta_key(),
            KeyDirection::Bidirectional,
            AuthDigest::Sha512,
        ));
        let (packet, _) = unwrap_vec(&server, &wire).unwrap();
        expect_client_reset(&packet, &wire);
    }

    #[test]
    fn tls_crypt_client_reset() {
        let wire = hex(TLS_CRYPT);
        let server = Wrap::TlsCrypt(TlsCrypt::new(&ta_key(), Role::Server));
        let (packet, stamp) = unwrap_vec(&server, &wire).unwrap();
        expect_client_reset(&packet, &wire);
        assert_eq!(stamp.map(|s| s.id), Some(1));
    }

    #[test]
    fn tls_crypt_v2_client_reset() {
        let wire = hex(TLS_CRYPT_V2_RESET);
        let server_key: [u8; TLS_CRYPT_V2_SERVER_KEY_LEN] = hex(V2_SERVER_KEY).try_into().unwrap();
        let (packet, wkc) = split_client_key(&wire).unwrap();
        let client_key = TlsCryptV2ServerKey::from_bytes(&server_key)
            .unwrap_client_key(wkc)
            .unwrap();
        assert_eq!(client_key.key.as_bytes().to_vec(), hex(V2_CLIENT_KC));
        // `--genkey tls-crypt-v2-client` without metadata stores its creation time.
        assert_eq!(client_key.metadata[0], METADATA_TYPE_TIMESTAMP);
        assert_eq!(client_key.timestamp(), Some(0x6b05_dc22));
        let server = Wrap::TlsCrypt(TlsCrypt::new(&client_key.key, Role::Server));
        let (packet, stamp) = unwrap_vec(&server, packet).unwrap();
        assert_eq!(packet[0], 0x50);
        assert_eq!(&packet[9..], &[0, 0, 0, 0, 0]);
        // A 2.6 client marks early-negotiation support in the replay-id (§4.5).
        assert_eq!(stamp.map(|s| s.id), Some(0x0f00_0001));
    }
}

proptest! {
    #[test]
    fn round_trip_every_mode(packet in packet_strategy(), stamp in stamp_strategy()) {
        for (server, client) in pairs() {
            let expected_stamp = match server { Wrap::None => None, _ => Some(stamp) };
            let wire = wrap_vec(&server, &packet, stamp);
            prop_assert_eq!(unwrap_vec(&client, &wire), Ok((packet.clone(), expected_stamp)));
            let wire = wrap_vec(&client, &packet, stamp);
            prop_assert_eq!(unwrap_vec(&server, &wire), Ok((packet.clone(), expected_stamp)));
        }
    }

    #[test]
    fn any_flipped_bit_is_rejected(packet in packet_strategy(), stamp in stamp_strategy(), bit in any::<usize>()) {
        for (server, client) in pairs().into_iter().skip(1) {
            let mut wire = wrap_vec(&server, &packet, stamp);
            let bit = bit % (wire.len() * 8);
            wire[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(unwrap_vec(&client, &wire), Err(WrapError::BadTag));
        }
    }

    #[test]
    fn truncated_or_extended_is_rejected(packet in packet_strategy(), cut in 1usize..20, extra in 1usize..4) {
        for (server, client) in pairs().into_iter().skip(1) {
            let wire = wrap_vec(&server, &packet, STAMP);
            let short = &wire[..wire.len().saturating_sub(cut)];
            prop_assert!(unwrap_vec(&client, short).is_err());
            let mut long = wire.clone();
            long.extend(std::iter::repeat_n(0u8, extra));
            prop_assert_eq!(unwrap_vec(&client, &long), Err(WrapError::BadTag));
        }
    }

    #[test]
    fn unwrap_never_panics(wire in prop::collection::vec(any::<u8>(), 0..200), out_len in 0usize..200) {
        for (_, client) in pairs() {
            let mut out = vec![0u8; out_len];
            let _ = client.unwrap(&wire, &mut out);
        }
        let _ = split_client_key(&wire);
    }
}
