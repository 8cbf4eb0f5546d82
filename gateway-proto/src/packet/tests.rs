use super::*;
use proptest::prelude::*;

const CLIENT_SID: SessionId = SessionId([0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8]);
const SERVER_SID: SessionId = SessionId([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);

#[test]
fn first_byte_matches_the_opcode_table() {
    let table = [
        (Opcode::ControlHardResetClientV1, 0x08),
        (Opcode::ControlHardResetServerV1, 0x10),
        (Opcode::ControlSoftResetV1, 0x18),
        (Opcode::ControlV1, 0x20),
        (Opcode::AckV1, 0x28),
        (Opcode::DataV1, 0x30),
        (Opcode::ControlHardResetClientV2, 0x38),
        (Opcode::ControlHardResetServerV2, 0x40),
        (Opcode::DataV2, 0x48),
        (Opcode::ControlHardResetClientV3, 0x50),
        (Opcode::ControlWkcV1, 0x58),
    ];
    for (opcode, byte) in table {
        assert_eq!(first_byte(opcode, KeyId::ZERO), byte, "{opcode}");
        assert_eq!(parse_first_byte(byte), Ok((opcode, KeyId::ZERO)));
        let kid7 = KeyId::new(7).unwrap();
        assert_eq!(parse_first_byte(byte | 7), Ok((opcode, kid7)));
    }
}

#[test]
fn unknown_opcodes_are_rejected() {
    for value in [0u8, 12, 13, 31] {
        assert_eq!(
            parse_first_byte(value << 3 | 2),
            Err(PacketError::UnknownOpcode { found: value })
        );
    }
    assert_eq!(
        peek_header(&[]),
        Err(PacketError::Truncated {
            field: "opcode",
            needed: 1,
            found: 0
        })
    );
}

#[test]
fn opcode_names_are_openvpn_spelling() {
    assert_eq!(Opcode::ControlWkcV1.to_string(), "P_CONTROL_WKC_V1");
    assert_eq!(Opcode::DataV2.name(), "P_DATA_V2");
    assert!(Opcode::DataV1.is_data() && !Opcode::DataV1.is_control());
    assert!(!Opcode::ControlHardResetClientV1.is_control());
}

#[test]
fn key_id_range_and_rollover() {
    assert_eq!(KeyId::new(8), Err(PacketError::InvalidKeyId { found: 8 }));
    assert_eq!(KeyId::ZERO.next().get(), 1);
    assert_eq!(KeyId::new(6).unwrap().next().get(), 7);
    assert_eq!(KeyId::new(7).unwrap().next().get(), 1);
}

#[test]
fn peer_id_range() {
    assert_eq!(
        PeerId::new(0x0100_0000),
        Err(PacketError::InvalidPeerId { found: 0x0100_0000 })
    );
    let p = PeerId::new(0x0012_3456).unwrap();
    assert_eq!(p.to_bytes(), [0x12, 0x34, 0x56]);
    assert_eq!(PeerId::from_bytes([0x12, 0x34, 0x56]), p);
    assert!(p.is_defined());
    assert!(!PeerId::UNDEFINED.is_defined());
    assert_eq!(PeerId::new(0xFF_FFFF), Ok(PeerId::UNDEFINED));
}

#[test]
fn acks_capacity() {
    let mut acks = Acks::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    assert_eq!(acks.len(), 8);
    assert_eq!(
        acks.push(9),
        Err(PacketError::TooManyAcks { max: 8, found: 9 })
    );
    assert_eq!(acks.as_slice(), &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(Acks::from_slice(&[0; 9]).is_err());
}

#[test]
fn parses_the_handshake_packets() {
    // C→S HARD_RESET_CLIENT_V2, no ACKs, msg-id 0, empty payload.
    let client_reset = hex("38 a1a2a3a4a5a6a7a8 00 00000000");
    let p = ControlPacket::new_checked(&client_reset).unwrap();
    assert_eq!(p.opcode(), Opcode::ControlHardResetClientV2);
    assert_eq!(p.key_id(), KeyId::ZERO);
    assert_eq!(p.session_id(), CLIENT_SID);
    assert_eq!(p.ack_count(), 0);
    assert_eq!(p.remote_session_id(), None);
    assert_eq!(p.message_id(), Some(0));
    assert!(p.payload().is_empty());

    // S→C HARD_RESET_SERVER_V2, ACK [0] for Cs, msg-id 0.
    let server_reset = hex("40 1122334455667788 01 00000000 a1a2a3a4a5a6a7a8 00000000");
    let p = ControlPacket::new_checked(&server_reset).unwrap();
    assert_eq!(p.opcode(), Opcode::ControlHardResetServerV2);
    assert_eq!(p.session_id(), SERVER_SID);
    assert_eq!(p.acks().collect::<Vec<_>>(), vec![0]);
    assert_eq!(p.remote_session_id(), Some(CLIENT_SID));
    assert_eq!(p.message_id(), Some(0));

    // C→S P_CONTROL_V1 kid 1 with ACK [0, 7], msg-id 1, payload "TLS".
    let control = hex("21 a1a2a3a4a5a6a7a8 02 00000000 00000007 1122334455667788 00000001 544c53");
    let p = ControlPacket::new_checked(&control).unwrap();
    assert_eq!(p.key_id().get(), 1);
    assert_eq!(p.acks().collect::<Vec<_>>(), vec![0, 7]);
    assert_eq!(p.remote_session_id(), Some(SERVER_SID));
    assert_eq!(p.message_id(), Some(1));
    assert_eq!(p.payload(), b"TLS");
    assert_eq!(p.as_bytes(), &control[..]);

    // P_ACK_V1 with one ACK: no msg-id, no payload.
    let ack = hex("28 a1a2a3a4a5a6a7a8 01 00000003 1122334455667788");
    let p = ControlPacket::new_checked(&ack).unwrap();
    assert_eq!(p.opcode(), Opcode::AckV1);
    assert_eq!(p.message_id(), None);
    assert!(p.payload().is_empty());
    assert_eq!(p.acks().collect::<Vec<_>>(), vec![3]);
}

#[test]
fn emit_reproduces_the_server_reset() {
    let repr = ControlRepr {
        opcode: Opcode::ControlHardResetServerV2,
        key_id: KeyId::ZERO,
        session_id: SERVER_SID,
        acks: Acks::from_slice(&[0]).unwrap(),
        remote_session_id: Some(CLIENT_SID),
        message_id: Some(0),
        payload: &[],
    };
    let mut buf = [0u8; 64];
    let n = repr.emit(&mut buf).unwrap();
    assert_eq!(n, repr.buffer_len());
    assert_eq!(
        &buf[..n],
        &hex("40 1122334455667788 01 00000000 a1a2a3a4a5a6a7a8 00000000")[..]
    );
}

#[test]
fn control_rejects_truncation_at_every_field() {
    let control = hex("21 a1a2a3a4a5a6a7a8 02 00000000 00000007 1122334455667788 00000001");
    let fields = [
        (0, "opcode", 1),
        (1, "session id and ACK count", 10),
        (9, "session id and ACK count", 10),
        (10, "ACK block", 26),
        (25, "ACK block", 26),
        (26, "message id", 30),
        (29, "message id", 30),
    ];
    for (len, field, needed) in fields {
        assert_eq!(
            ControlPacket::new_checked(&control[..len]),
            Err(PacketError::Truncated {
                field,
                needed,
                found: len
            }),
            "length {len}"
        );
    }
    assert!(ControlPacket::new_checked(&control).is_ok());
}

#[test]
fn control_rejects_data_and_v1_opcodes() {
    for opcode in [
        Opcode::DataV1,
        Opcode::DataV2,
        Opcode::ControlHardResetClientV1,
        Opcode::ControlHardResetServerV1,
    ] {
        let mut pkt = hex("00 a1a2a3a4a5a6a7a8 00 00000000");
        pkt[0] = first_byte(opcode, KeyId::ZERO);
        assert!(matches!(
            ControlPacket::new_checked(&pkt),
            Err(PacketError::UnexpectedOpcode { found, .. }) if found == opcode
        ));
    }
    let pkt = hex("f8 a1a2a3a4a5a6a7a8 00 00000000");
    assert_eq!(
        ControlPacket::new_checked(&pkt),
        Err(PacketError::UnknownOpcode { found: 31 })
    );
}

#[test]
fn control_rejects_more_than_eight_acks() {
    let mut pkt = hex("20 a1a2a3a4a5a6a7a8 09");
    pkt.extend_from_slice(&[0; 4 * 9 + 8 + 4]);
    assert_eq!(
        ControlPacket::new_checked(&pkt),
        Err(PacketError::TooManyAcks { max: 8, found: 9 })
    );
    let mut eight = hex("20 a1a2a3a4a5a6a7a8 08");
    eight.extend_from_slice(&[0; 4 * 8 + 8 + 4]);
    assert_eq!(ControlPacket::new_checked(&eight).unwrap().ack_count(), 8);
}

#[test]
fn ack_v1_needs_an_ack_and_nothing_after_it() {
    assert_eq!(
        ControlPacket::new_checked(&hex("28 a1a2a3a4a5a6a7a8 00")),
        Err(PacketError::EmptyAck)
    );
    assert_eq!(
        ControlPacket::new_checked(&hex("28 a1a2a3a4a5a6a7a8 01 00000003 1122334455667788 00")),
        Err(PacketError::TrailingBytes {
            what: "P_ACK_V1",
            found: 1
        })
    );
}

fn base_repr() -> ControlRepr<'static> {
    ControlRepr {
        opcode: Opcode::ControlV1,
        key_id: KeyId::ZERO,
        session_id: SERVER_SID,
        acks: Acks::new(),
        remote_session_id: None,
        message_id: Some(1),
        payload: b"x",
    }
}

#[test]
fn emit_rejects_inconsistent_reprs() {
    let mut buf = [0u8; 64];
    let missing_remote = ControlRepr {
        acks: Acks::from_slice(&[1]).unwrap(),
        ..base_repr()
    };
    assert!(matches!(
        missing_remote.emit(&mut buf),
        Err(PacketError::InvalidRepr { .. })
    ));
    let stray_remote = ControlRepr {
        remote_session_id: Some(CLIENT_SID),
        ..base_repr()
    };
    assert!(matches!(
        stray_remote.emit(&mut buf),
        Err(PacketError::InvalidRepr { .. })
    ));
    let no_message_id = ControlRepr {
        message_id: None,
        ..base_repr()
    };
    assert!(matches!(
        no_message_id.emit(&mut buf),
        Err(PacketError::InvalidRepr { .. })
    ));
    let empty_ack = ControlRepr {
        opcode: Opcode::AckV1,
        message_id: None,
        payload: &[],
        ..base_repr()
    };
    assert_eq!(empty_ack.emit(&mut buf), Err(PacketError::EmptyAck));
    let ack_with_payload = ControlRepr {
        opcode: Opcode::AckV1,
        acks: Acks::from_slice(&[1]).unwrap(),
        remote_session_id: Some(CLIENT_SID),
        message_id: None,
        ..base_repr()
    };
    assert!(matches!(
        ack_with_payload.emit(&mut buf),
        Err(PacketError::InvalidRepr { .. })
    ));
    let data = ControlRepr {
        opcode: Opcode::DataV2,
        ..base_repr()
    };
    assert!(matches!(
        data.emit(&mut buf),
        Err(PacketError::UnexpectedOpcode { .. })
    ));
}

#[test]
fn emit_rejects_a_short_buffer() {
    let repr = base_repr();
    let needed = repr.buffer_len();
    let mut buf = vec![0u8; needed - 1];
    assert_eq!(
        repr.emit(&mut buf),
        Err(PacketError::BufferTooSmall {
            needed,
            found: needed - 1
        })
    );
}

#[test]
fn data_headers() {
    let v2 = hex("4a 000005 00000001");
    let p = DataPacket::new_checked(&v2).unwrap();
    let kid2 = KeyId::new(2).unwrap();
    let header = DataHeader::V2 {
        key_id: kid2,
        peer_id: PeerId::new(5).unwrap(),
    };
    assert_eq!(p.header(), header);
    assert_eq!(p.header().opcode(), Opcode::DataV2);
    assert_eq!(p.header().peer_id(), Some(PeerId::new(5).unwrap()));
    assert_eq!(p.header_bytes(), &v2[..4]);
    assert_eq!(p.payload(), &v2[4..]);
    let mut buf = [0u8; 4];
    assert_eq!(header.emit(&mut buf), Ok(4));
    assert_eq!(buf, [0x4a, 0, 0, 5]);

    let v1 = hex("31 00000001");
    let p = DataPacket::new_checked(&v1).unwrap();
    assert_eq!(
        p.header(),
        DataHeader::V1 {
            key_id: KeyId::new(1).unwrap()
        }
    );
    assert_eq!(p.header().peer_id(), None);
    assert_eq!(p.payload(), &v1[1..]);
}

#[test]
fn peek_peer_id_reads_only_defined_v2_peer_ids() {
    assert_eq!(peek_peer_id(&hex("4a 000005 00000001")), Some(5));
    assert_eq!(peek_peer_id(&hex("48 123456")), Some(0x12_3456));
    assert_eq!(peek_peer_id(&hex("48 ffffff 00000001")), None, "undefined");
    assert_eq!(peek_peer_id(&hex("31 00000001")), None, "P_DATA_V1");
    assert_eq!(peek_peer_id(&hex("48 0000")), None, "truncated");
    assert_eq!(peek_peer_id(&hex("38 0000000000000000")), None, "control");
    assert_eq!(peek_peer_id(&[]), None);
}

#[test]
fn data_header_errors() {
    assert_eq!(
        DataHeader::parse(&hex("48 0000")),
        Err(PacketError::Truncated {
            field: "peer-id",
            needed: 4,
            found: 3
        })
    );
    assert!(matches!(
        DataHeader::parse(&hex("20 0000")),
        Err(PacketError::UnexpectedOpcode {
            found: Opcode::ControlV1,
            ..
        })
    ));
    assert!(matches!(
        DataHeader::parse(&[]),
        Err(PacketError::Truncated { .. })
    ));
    let header = DataHeader::V2 {
        key_id: KeyId::ZERO,
        peer_id: PeerId::UNDEFINED,
    };
    assert_eq!(
        header.emit(&mut [0u8; 3]),
        Err(PacketError::BufferTooSmall {
            needed: 4,
            found: 3
        })
    );
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn control_opcode() -> impl Strategy<Value = Opcode> {
    prop::sample::select(vec![
        Opcode::ControlSoftResetV1,
        Opcode::ControlV1,
        Opcode::AckV1,
        Opcode::ControlHardResetClientV2,
        Opcode::ControlHardResetServerV2,
        Opcode::ControlHardResetClientV3,
        Opcode::ControlWkcV1,
    ])
}

proptest! {
    #[test]
    fn control_emit_then_parse_is_identity(
        opcode in control_opcode(),
        key_id in 0u8..8,
        sid in any::<[u8; 8]>(),
        remote in any::<[u8; 8]>(),
        ack_ids in prop::collection::vec(any::<u32>(), 0..=MAX_ACKS),
        message_id in any::<u32>(),
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let is_ack = opcode == Opcode::AckV1;
        let ack_ids = if is_ack && ack_ids.is_empty() { vec![message_id] } else { ack_ids };
        let acks = Acks::from_slice(&ack_ids).unwrap();
        let repr = ControlRepr {
            opcode,
            key_id: KeyId::new(key_id).unwrap(),
            session_id: SessionId(sid),
            acks,
            remote_session_id: (!acks.is_empty()).then_some(SessionId(remote)),
            message_id: (!is_ack).then_some(message_id),
            payload: if is_ack { &[] } else { &payload },
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        let n = repr.emit(&mut buf).unwrap();
        prop_assert_eq!(n, buf.len());
        let packet = ControlPacket::new_checked(&buf).unwrap();
        prop_assert_eq!(ControlRepr::parse(&packet), repr);
    }

    #[test]
    fn control_parse_then_emit_is_identity(
        opcode in control_opcode(),
        key_id in 0u8..8,
        sid in any::<[u8; 8]>(),
        ack_count in 0u8..=9,
        tail in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let mut bytes = vec![first_byte(opcode, KeyId::new(key_id).unwrap())];
        bytes.extend_from_slice(&sid);
        bytes.push(ack_count);
        bytes.extend_from_slice(&tail);
        if let Ok(packet) = ControlPacket::new_checked(&bytes) {
            let repr = ControlRepr::parse(&packet);
            let mut out = vec![0u8; repr.buffer_len()];
            prop_assert_eq!(repr.emit(&mut out), Ok(bytes.len()));
            prop_assert_eq!(out, bytes);
        }
    }

    #[test]
    fn data_header_round_trip(v2 in any::<bool>(), key_id in 0u8..8, peer_id in 0u32..=PeerId::MAX) {
        let key_id = KeyId::new(key_id).unwrap();
        let header = if v2 {
            DataHeader::V2 { key_id, peer_id: PeerId::new(peer_id).unwrap() }
        } else {
            DataHeader::V1 { key_id }
        };
        let mut buf = [0u8; 8];
        let n = header.emit(&mut buf).unwrap();
        prop_assert_eq!(n, header.buffer_len());
        prop_assert_eq!(DataHeader::parse(&buf[..n]), Ok(header));
    }

    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = ControlPacket::new_checked(&bytes).map(|p| ControlRepr::parse(&p));
        let _ = DataPacket::new_checked(&bytes).map(|p| p.payload().len());
    }
}
