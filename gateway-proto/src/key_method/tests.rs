use super::*;
use proptest::prelude::*;

fn client_source() -> ClientKeySource {
    ClientKeySource {
        pre_master: [0x11; PRE_MASTER_LEN],
        random1: [0x21; RANDOM_LEN],
        random2: [0x22; RANDOM_LEN],
    }
}

fn server_source() -> ServerKeySource {
    ServerKeySource {
        random1: [0x31; RANDOM_LEN],
        random2: [0x32; RANDOM_LEN],
    }
}

fn client_message(password: &str) -> ClientKeyMethod2 {
    KeyMethod2 {
        key_source: client_source(),
        options: "V4,dev-type tun,tls-client".to_owned(),
        username: "alice".to_owned(),
        password: password.to_owned(),
        peer_info: "IV_VER=2.6.14\nIV_PROTO=990\n".to_owned(),
    }
}

fn emitted<K: KeySource>(message: &KeyMethod2<K>, framing: Framing) -> Vec<u8> {
    let mut out = Vec::new();
    message.emit(framing, &mut out).unwrap();
    out
}

fn complete<K: KeySource>(buf: &[u8]) -> Parsed<KeyMethod2<K>> {
    KeyMethod2::<K>::parse(buf).unwrap().unwrap()
}

#[test]
fn stock_client_layout() {
    let wire = emitted(&client_message("pw"), Framing::Stock);
    assert_eq!(&wire[..5], &[0, 0, 0, 0, 2]);
    assert_eq!(&wire[5..53], &[0x11; 48]);
    assert_eq!(&wire[53..85], &[0x21; 32]);
    assert_eq!(&wire[85..117], &[0x22; 32]);
    assert_eq!(&wire[117..119], &[0, 27]);
    assert_eq!(&wire[119..146], b"V4,dev-type tun,tls-client\0");
    assert_eq!(&wire[146..154], b"\x00\x06alice\0");
    assert_eq!(&wire[154..159], b"\x00\x03pw\0");
    assert_eq!(&wire[159..161], &[0, 28]);
    assert_eq!(wire.len(), 161 + 28);
}

#[test]
fn stock_server_layout_with_empty_strings() {
    let message = ServerKeyMethod2 {
        key_source: server_source(),
        options: "V4,tls-server".to_owned(),
        username: String::new(),
        password: String::new(),
        peer_info: String::new(),
    };
    let wire = emitted(&message, Framing::Stock);
    assert_eq!(&wire[..5], &[0, 0, 0, 0, 2]);
    assert_eq!(&wire[5..37], &[0x31; 32]);
    assert_eq!(&wire[37..69], &[0x32; 32]);
    assert_eq!(&wire[69..85], b"\x00\x0eV4,tls-server\0");
    assert_eq!(&wire[85..], &[0, 0, 0, 0, 0, 0]);
    let parsed = complete::<ServerKeySource>(&wire);
    assert_eq!(parsed.message, message);
    assert_eq!(
        (parsed.framing, parsed.consumed),
        (Framing::Stock, wire.len())
    );
}

#[test]
fn aws_client_layout() {
    let wire = emitted(&client_message("pw"), Framing::Aws);
    let total = wire.len() as u32;
    assert_eq!(&wire[..4], &total.to_le_bytes());
    assert_eq!(wire[4], 2);
    assert_eq!(&wire[117..121], &[0, 0, 0, 27]);
    assert_eq!(&wire[148..158], b"\x00\x00\x00\x06alice\0");
    assert_eq!(&wire[158..165], b"\x00\x00\x00\x03pw\0");
    assert_eq!(wire.len(), 165 + 4 + 28);
    let parsed = complete::<ClientKeySource>(&wire);
    assert_eq!(parsed.message, client_message("pw"));
    assert_eq!(
        (parsed.framing, parsed.consumed),
        (Framing::Aws, wire.len())
    );
}

#[test]
fn a_length_of_one_is_an_empty_string() {
    let mut wire = emitted(&client_message(""), Framing::Stock);
    // Replace the empty password (u16 0) by u16 1 + NUL.
    let at = 117 + 2 + 27 + 2 + 6;
    assert_eq!(&wire[at..at + 2], &[0, 0]);
    wire.splice(at..at + 2, [0, 1, 0]);
    assert_eq!(
        complete::<ClientKeySource>(&wire).message,
        client_message("")
    );
}

#[test]
fn following_bytes_are_not_consumed() {
    for framing in [Framing::Stock, Framing::Aws] {
        let mut wire = emitted(&client_message("pw"), framing);
        let len = wire.len();
        wire.extend_from_slice(b"PUSH_REQUEST\0");
        let parsed = complete::<ClientKeySource>(&wire);
        assert_eq!(parsed.consumed, len);
        assert_eq!(parsed.message, client_message("pw"));
    }
}

#[test]
fn every_proper_prefix_is_incomplete() {
    for framing in [Framing::Stock, Framing::Aws] {
        let wire = emitted(&client_message("secret"), framing);
        for end in 0..wire.len() {
            assert_eq!(
                ClientKeyMethod2::parse(&wire[..end]),
                Ok(None),
                "{framing:?} prefix {end}"
            );
        }
    }
}

#[test]
fn detection() {
    assert_eq!(Framing::detect(&[]), None);
    assert_eq!(Framing::detect(&[0, 0, 0]), None);
    assert_eq!(Framing::detect(&[1, 0, 0]), None);
    assert_eq!(Framing::detect(&[0, 0, 0, 0]), Some(Framing::Stock));
    assert_eq!(Framing::detect(&[0, 0, 0, 0, 2]), Some(Framing::Stock));
    assert_eq!(Framing::detect(&[0, 0, 0, 1]), Some(Framing::Aws));
    assert_eq!(Framing::detect(&[0x85, 0, 0, 0]), Some(Framing::Aws));
}

#[test]
fn aws_total_length_bounds() {
    let min = ClientKeyMethod2::min_wire_len(Framing::Aws);
    let max = ClientKeyMethod2::max_wire_len(Framing::Aws);
    assert_eq!(min, 4 + 1 + 112 + 16);
    let out_of_range = |len: u32| KeyMethodError::AwsLengthOutOfRange { len, min, max };
    for len in [1u32, min as u32 - 1, max as u32 + 1, u32::MAX] {
        let mut buf = len.to_le_bytes().to_vec();
        buf.push(2);
        assert_eq!(
            ClientKeyMethod2::parse(&buf),
            Err(out_of_range(len)),
            "{len}"
        );
    }
    // A big-endian length of a real message reads as a huge little-endian one.
    let be = 200u32.to_be_bytes();
    assert_eq!(
        ClientKeyMethod2::parse(&be),
        Err(out_of_range(u32::from_le_bytes(be)))
    );
    // The smallest message: four empty strings.
    let empty = KeyMethod2 {
        key_source: client_source(),
        options: String::new(),
        username: String::new(),
        password: String::new(),
        peer_info: String::new(),
    };
    let wire = emitted(&empty, Framing::Aws);
    assert_eq!(wire.len(), min);
    assert_eq!(complete::<ClientKeySource>(&wire).message, empty);
    // Server messages are shorter, with their own minimum.
    assert_eq!(
        ServerKeyMethod2::min_wire_len(Framing::Aws),
        4 + 1 + 64 + 16
    );
}

#[test]
fn aws_valid_total_waits_for_the_whole_message() {
    let wire = emitted(&client_message("pw"), Framing::Aws);
    assert_eq!(ClientKeyMethod2::parse(&wire[..4]), Ok(None));
    assert_eq!(ClientKeyMethod2::parse(&wire[..wire.len() - 1]), Ok(None));
    assert!(ClientKeyMethod2::parse(&wire).unwrap().is_some());
}

#[test]
fn aws_strings_running_past_total() {
    let mut wire = emitted(&client_message("pw"), Framing::Aws);
    // Shrink the total by one: the peer-info no longer fits.
    let total = wire.len() - 1;
    wire[..4].copy_from_slice(&(total as u32).to_le_bytes());
    assert_eq!(
        ClientKeyMethod2::parse(&wire),
        Err(KeyMethodError::AwsTruncated {
            field: Field::PeerInfo,
            total
        })
    );
    // A total covering only the key material and four length fields.
    let mut short = emitted(&client_message("pw"), Framing::Aws);
    let total = ClientKeyMethod2::min_wire_len(Framing::Aws);
    short[..4].copy_from_slice(&(total as u32).to_le_bytes());
    assert_eq!(
        ClientKeyMethod2::parse(&short),
        Err(KeyMethodError::AwsTruncated {
            field: Field::Options,
            total
        })
    );
}

#[test]
fn aws_slack_inside_total() {
    let mut wire = emitted(&client_message("pw"), Framing::Aws);
    wire.extend_from_slice(&[0, 0, 0]);
    let total = wire.len() as u32;
    wire[..4].copy_from_slice(&total.to_le_bytes());
    assert_eq!(
        ClientKeyMethod2::parse(&wire),
        Err(KeyMethodError::AwsTrailingBytes { extra: 3 })
    );
}

#[test]
fn key_method_byte() {
    for framing in [Framing::Stock, Framing::Aws] {
        let mut wire = emitted(&client_message("pw"), framing);
        wire[4] = 1;
        assert_eq!(
            ClientKeyMethod2::parse(&wire),
            Err(KeyMethodError::UnsupportedKeyMethod { found: 1 })
        );
        wire[4] = 0xf3;
        assert_eq!(
            ClientKeyMethod2::parse(&wire),
            Err(KeyMethodError::UnsupportedKeyMethod { found: 3 })
        );
        // High bits are ignored, as OpenVPN masks them.
        wire[4] = 0x12;
        assert_eq!(
            complete::<ClientKeySource>(&wire).message,
            client_message("pw")
        );
    }
}

fn stock_with_options_field(field: &[u8]) -> Vec<u8> {
    let mut wire = vec![0, 0, 0, 0, 2];
    wire.extend_from_slice(&[7; 112]);
    wire.extend_from_slice(field);
    wire
}

#[test]
fn over_long_length_is_refused_before_its_bytes_arrive() {
    let len = (MAX_OPTIONS_LEN + 2) as u16;
    let wire = stock_with_options_field(&len.to_be_bytes());
    assert_eq!(
        ClientKeyMethod2::parse(&wire),
        Err(KeyMethodError::FieldTooLong {
            field: Field::Options,
            len: MAX_OPTIONS_LEN + 1,
            max: MAX_OPTIONS_LEN
        })
    );
    let at_limit = (MAX_OPTIONS_LEN + 1) as u16;
    let wire = stock_with_options_field(&at_limit.to_be_bytes());
    assert_eq!(ClientKeyMethod2::parse(&wire), Ok(None));
}

#[test]
fn string_must_end_in_nul() {
    let wire = stock_with_options_field(b"\x00\x04abcd");
    assert_eq!(
        ClientKeyMethod2::parse(&wire),
        Err(KeyMethodError::MissingNul {
            field: Field::Options
        })
    );
}

#[test]
fn string_must_not_hold_nul() {
    let wire = stock_with_options_field(b"\x00\x04a\0c\0");
    assert_eq!(
        ClientKeyMethod2::parse(&wire),
        Err(KeyMethodError::InteriorNul {
            field: Field::Options,
            offset: 1
        })
    );
}

#[test]
fn string_must_be_utf8() {
    let wire = stock_with_options_field(b"\x00\x03\xff\xfe\0");
    assert_eq!(
        ClientKeyMethod2::parse(&wire),
        Err(KeyMethodError::InvalidUtf8 {
            field: Field::Options
        })
    );
}

#[test]
fn saml_sized_password_round_trips_in_aws_framing() {
    let password = format!(
        "CRV1::instance-1::{}",
        "A".repeat(MAX_AWS_PASSWORD_LEN - 18)
    );
    assert_eq!(password.len(), MAX_AWS_PASSWORD_LEN);
    let message = client_message(&password);
    let wire = emitted(&message, Framing::Aws);
    let parsed = complete::<ClientKeySource>(&wire);
    assert_eq!(parsed.message, message);
    assert_eq!(parsed.consumed, wire.len());
    assert!(wire.len() <= ClientKeyMethod2::max_wire_len(Framing::Aws));
}

#[test]
fn over_limit_password_is_refused_both_ways() {
    let message = client_message(&"A".repeat(MAX_AWS_PASSWORD_LEN + 1));
    let mut out = b"keep".to_vec();
    assert_eq!(
        message.emit(Framing::Aws, &mut out),
        Err(KeyMethodError::FieldTooLong {
            field: Field::Password,
            len: MAX_AWS_PASSWORD_LEN + 1,
            max: MAX_AWS_PASSWORD_LEN
        })
    );
    assert_eq!(out, b"keep", "a failed emit leaves the buffer as it was");
    // Hand-build the AWS bytes the emitter refuses to produce.
    let ok = client_message(&"A".repeat(MAX_AWS_PASSWORD_LEN));
    let mut wire = emitted(&ok, Framing::Aws);
    let at = 4 + 1 + 112 + 4 + 27 + 4 + 6;
    let len = (MAX_AWS_PASSWORD_LEN + 2) as u32;
    wire[at..at + 4].copy_from_slice(&len.to_be_bytes());
    wire.insert(at + 4, b'A');
    let total = wire.len() as u32;
    wire[..4].copy_from_slice(&total.to_le_bytes());
    assert_eq!(
        ClientKeyMethod2::parse(&wire),
        Err(KeyMethodError::FieldTooLong {
            field: Field::Password,
            len: MAX_AWS_PASSWORD_LEN + 1,
            max: MAX_AWS_PASSWORD_LEN
        })
    );
}

#[test]
fn stock_framing_keeps_the_stock_password_limit() {
    let ok = client_message(&"p".repeat(MAX_STOCK_PASSWORD_LEN));
    assert_eq!(
        complete::<ClientKeySource>(&emitted(&ok, Framing::Stock)).message,
        ok
    );
    let too_long = client_message(&"p".repeat(MAX_STOCK_PASSWORD_LEN + 1));
    assert_eq!(
        too_long.emit(Framing::Stock, &mut Vec::new()),
        Err(KeyMethodError::FieldTooLong {
            field: Field::Password,
            len: MAX_STOCK_PASSWORD_LEN + 1,
            max: MAX_STOCK_PASSWORD_LEN
        })
    );
}

#[test]
fn emit_refuses_nul_inside_a_string() {
    let mut message = client_message("pw");
    message.username = "a\0b".to_owned();
    assert_eq!(
        message.emit(Framing::Stock, &mut Vec::new()),
        Err(KeyMethodError::InteriorNul {
            field: Field::Username,
            offset: 1
        })
    );
}

#[test]
fn generate_fills_every_random() {
    let mut next = 0u8;
    let mut fill = |buf: &mut [u8]| {
        next += 1;
        buf.fill(next);
    };
    let client = ClientKeySource::generate(&mut fill);
    assert_eq!(
        (client.pre_master[47], client.random1[0], client.random2[31]),
        (1, 2, 3)
    );
    let server = ServerKeySource::generate(&mut fill);
    assert_eq!((server.random1[0], server.random2[31]), (4, 5));
}

#[test]
fn debug_hides_secrets() {
    let shown = format!("{:?}", client_message("hunter2"));
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("17") && shown.contains("alice"), "{shown}");
}

#[test]
fn error_messages_name_field_and_limit() {
    let e = KeyMethodError::FieldTooLong {
        field: Field::Password,
        len: 5,
        max: 4,
    };
    assert_eq!(
        e.to_string(),
        "key-method 2 password: 5 bytes, at most 4 allowed"
    );
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..max)
        .prop_map(|chars| chars.into_iter().collect())
}

prop_compose! {
    fn client_source_strategy()(pre in any::<[u8; 32]>(), more in any::<[u8; 16]>(), r1 in any::<[u8; 32]>(), r2 in any::<[u8; 32]>()) -> ClientKeySource {
        let mut pre_master = [0u8; PRE_MASTER_LEN];
        pre_master[..32].copy_from_slice(&pre);
        pre_master[32..].copy_from_slice(&more);
        ClientKeySource { pre_master, random1: r1, random2: r2 }
    }
}

prop_compose! {
    fn client_strategy()(key_source in client_source_strategy(), options in text(60), username in text(30), password in text(300), peer_info in text(80)) -> ClientKeyMethod2 {
        KeyMethod2 { key_source, options, username, password, peer_info }
    }
}

prop_compose! {
    fn server_strategy()(r1 in any::<[u8; 32]>(), r2 in any::<[u8; 32]>(), options in text(60), username in text(5), password in text(5), peer_info in text(5)) -> ServerKeyMethod2 {
        KeyMethod2 { key_source: ServerKeySource { random1: r1, random2: r2 }, options, username, password, peer_info }
    }
}

fn framing_strategy() -> impl Strategy<Value = Framing> {
    prop_oneof![Just(Framing::Stock), Just(Framing::Aws)]
}

proptest! {
    #[test]
    fn client_round_trip(message in client_strategy(), framing in framing_strategy()) {
        let wire = emitted(&message, framing);
        let parsed = KeyMethod2::<ClientKeySource>::parse(&wire);
        prop_assert_eq!(parsed, Ok(Some(Parsed { message, framing, consumed: wire.len() })));
    }

    #[test]
    fn server_round_trip(message in server_strategy(), framing in framing_strategy()) {
        let wire = emitted(&message, framing);
        let parsed = KeyMethod2::<ServerKeySource>::parse(&wire);
        prop_assert_eq!(parsed, Ok(Some(Parsed { message, framing, consumed: wire.len() })));
    }

    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400), stock in any::<bool>()) {
        let mut buf = bytes;
        if stock && buf.len() >= 5 {
            buf[..5].copy_from_slice(&[0, 0, 0, 0, 2]);
        }
        let _ = ClientKeyMethod2::parse(&buf);
        let _ = ServerKeyMethod2::parse(&buf);
    }
}
