use super::*;
use crate::packet::ControlPacket;
use crate::reliable::{MessageOutcome, Reliable, ReliableConfig};
use crate::wrap::TlsCrypt;
use ::hmac::{Hmac, Mac};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const CS: SessionId = SessionId([1, 2, 3, 4, 5, 6, 7, 8]);
const NOW: u64 = 1_700_000_000;

fn key() -> CookieKey {
    CookieKey::new(SECRET, CookieConfig::default()).unwrap()
}

fn client() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 50_000)
}

fn reset(opcode: Opcode) -> ControlRepr<'static> {
    ControlRepr {
        opcode,
        key_id: KeyId::ZERO,
        session_id: CS,
        acks: Acks::new(),
        remote_session_id: None,
        message_id: Some(0),
        payload: &[],
    }
}

fn third(
    opcode: Opcode,
    acks: &[u32],
    echoed: SessionId,
    message_id: Option<u32>,
) -> ControlRepr<'static> {
    let acks = Acks::from_slice(acks).unwrap();
    ControlRepr {
        opcode,
        key_id: KeyId::ZERO,
        session_id: CS,
        acks,
        remote_session_id: (!acks.is_empty()).then_some(echoed),
        message_id,
        payload: if message_id.is_some() { b"hello" } else { &[] },
    }
}

fn ss_at(now: u64) -> SessionId {
    let k = key();
    k.server_session_id(k.time_slot(now), client(), CS)
}

// ---- session id ----

#[test]
fn server_session_id_is_the_truncated_hmac_of_slot_address_and_client_sid() {
    let k = key();
    let slot = k.time_slot(NOW);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(&slot.to_be_bytes());
    mac.update(&[4, 192, 0, 2, 7]);
    mac.update(&50_000u16.to_be_bytes());
    mac.update(&CS.0);
    let tag = mac.finalize().into_bytes();
    assert_eq!(k.server_session_id(slot, client(), CS).0, tag[..8]);
}

#[test]
fn same_inputs_give_the_same_sid_and_any_change_another() {
    let k = key();
    let slot = k.time_slot(NOW);
    let base = k.server_session_id(slot, client(), CS);
    assert_eq!(base, k.server_session_id(slot, client(), CS));
    assert_eq!(base, key().server_session_id(slot, client(), CS));
    let other_port = SocketAddr::new(client().ip(), 50_001);
    let other_ip = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8)), 50_000);
    let mapped = SocketAddr::new(
        IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped()),
        50_000,
    );
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 50_000);
    let mut other_cs = CS;
    other_cs.0[7] ^= 1;
    let other_secret = CookieKey::new(b"another secret, 16+ bytes", CookieConfig::default())
        .unwrap()
        .server_session_id(slot, client(), CS);
    for different in [
        k.server_session_id(slot, other_port, CS),
        k.server_session_id(slot, other_ip, CS),
        k.server_session_id(slot, mapped, CS),
        k.server_session_id(slot, v6, CS),
        k.server_session_id(slot, client(), other_cs),
        k.server_session_id(slot + 1, client(), CS),
        k.server_session_id(slot - 1, client(), CS),
        other_secret,
    ] {
        assert_ne!(different, base);
    }
}

#[test]
fn time_slot_is_half_the_hand_window_rounded_up() {
    let k = key();
    assert_eq!(k.slot_secs(), 30);
    assert_eq!(k.time_slot(29), 0);
    assert_eq!(k.time_slot(30), 1);
    assert_eq!(k.time_slot(59), 1);
    assert_eq!(k.time_slot(60), 2);
    for (window, slot) in [(61, 31), (1, 1), (2, 1), (3, 2)] {
        let cfg = CookieConfig {
            hand_window_secs: window,
            ..CookieConfig::default()
        };
        assert_eq!(CookieKey::new(SECRET, cfg).unwrap().slot_secs(), slot);
    }
}

#[test]
fn invalid_cookie_configs_are_refused() {
    assert_eq!(
        CookieKey::new(&SECRET[..15], CookieConfig::default()).unwrap_err(),
        CookieConfigError::SecretTooShort { found: 15 }
    );
    assert!(CookieKey::new(&SECRET[..16], CookieConfig::default()).is_ok());
    let zero = CookieConfig {
        hand_window_secs: 0,
        ..CookieConfig::default()
    };
    assert_eq!(
        CookieKey::new(SECRET, zero).unwrap_err(),
        CookieConfigError::ZeroHandWindow
    );
}

#[test]
fn debug_hides_the_key() {
    let text = format!("{:?}", key());
    assert!(text.contains("slot_secs: 30"), "{text}");
    assert!(!text.contains("0123456789"), "{text}");
}

// ---- rule 1: the stateless reset reply ----

#[test]
fn v2_reset_gets_an_empty_server_reset_acking_zero() {
    let reply = key()
        .reply_to_reset(
            &reset(Opcode::ControlHardResetClientV2),
            client(),
            Some(1),
            NOW,
        )
        .unwrap();
    assert_eq!(reply.session_id, ss_at(NOW));
    assert_eq!(reply.client_session_id, CS);
    assert!(!reply.early_negotiation);
    let repr = reply.repr();
    assert_eq!(repr.opcode, Opcode::ControlHardResetServerV2);
    assert_eq!(repr.key_id, KeyId::ZERO);
    assert_eq!(repr.session_id, reply.session_id);
    assert_eq!(repr.acks.as_slice(), [0]);
    assert_eq!(repr.remote_session_id, Some(CS));
    assert_eq!(repr.message_id, Some(0));
    assert!(repr.payload.is_empty());
    let mut buf = [0u8; 64];
    let len = repr.emit(&mut buf).unwrap();
    // The lab's tls-crypt server reset was 66 bytes.
    assert_eq!(len + TlsCrypt::OVERHEAD, 66);
    let back = ControlRepr::parse(&ControlPacket::new_checked(&buf[..len]).unwrap());
    assert_eq!(back, repr);
    assert_eq!(
        reply.replay_stamp(0x6500_0000),
        ReplayStamp {
            id: 1,
            time: 0x6500_0000
        }
    );
}

#[test]
fn reply_is_stateless_and_repeatable() {
    let k = key();
    let r = reset(Opcode::ControlHardResetClientV2);
    let a = k.reply_to_reset(&r, client(), None, NOW).unwrap();
    let b = k.reply_to_reset(&r, client(), None, NOW + 1).unwrap();
    assert_eq!(
        a, b,
        "a retransmitted reset in the same slot gets the same answer"
    );
}

#[test]
fn v3_reset_with_marker_gets_the_early_negotiation_tlv() {
    let reply = key()
        .reply_to_reset(
            &reset(Opcode::ControlHardResetClientV3),
            client(),
            Some(0x0F00_0001),
            NOW,
        )
        .unwrap();
    assert!(reply.early_negotiation);
    assert_eq!(reply.payload(), [0x00, 0x01, 0x00, 0x02, 0x00, 0x01]);
    let repr = reply.repr();
    assert_eq!(repr.payload, EARLY_NEG_TLV);
    let mut buf = [0u8; 64];
    let len = repr.emit(&mut buf).unwrap();
    let back = ControlPacket::new_checked(&buf[..len]).unwrap();
    assert_eq!(back.payload(), EARLY_NEG_TLV);
    assert_eq!(back.message_id(), Some(0));
}

#[test]
fn v2_reset_never_gets_tlvs_even_with_the_marker() {
    let reply = key()
        .reply_to_reset(
            &reset(Opcode::ControlHardResetClientV2),
            client(),
            Some(0x0F00_0001),
            NOW,
        )
        .unwrap();
    assert!(!reply.early_negotiation);
    assert!(reply.repr().payload.is_empty());
}

#[test]
fn v3_reset_without_marker_or_with_the_option_off_is_refused() {
    let k = key();
    let v3 = reset(Opcode::ControlHardResetClientV3);
    for replay_id in [Some(1), Some(0x0E00_0001), Some(0x1F00_0001), None] {
        assert_eq!(
            k.reply_to_reset(&v3, client(), replay_id, NOW),
            Err(CookieError::NoEarlyNegotiation { replay_id })
        );
    }
    let off = CookieKey::new(
        SECRET,
        CookieConfig {
            early_negotiation: false,
            ..CookieConfig::default()
        },
    )
    .unwrap();
    assert_eq!(
        off.reply_to_reset(&v3, client(), Some(0x0F00_0001), NOW),
        Err(CookieError::EarlyNegotiationDisabled)
    );
    assert!(
        off.reply_to_reset(
            &reset(Opcode::ControlHardResetClientV2),
            client(),
            None,
            NOW
        )
        .is_ok()
    );
}

#[test]
fn invalid_client_resets_are_refused() {
    let k = key();
    for opcode in [
        Opcode::ControlHardResetClientV1,
        Opcode::ControlSoftResetV1,
        Opcode::ControlV1,
        Opcode::ControlHardResetServerV2,
    ] {
        assert_eq!(
            k.reply_to_reset(&reset(opcode), client(), None, NOW),
            Err(CookieError::NotAClientReset { found: opcode })
        );
    }
    let kid1 = ControlRepr {
        key_id: KeyId::new(1).unwrap(),
        ..reset(Opcode::ControlHardResetClientV2)
    };
    assert_eq!(
        k.reply_to_reset(&kid1, client(), None, NOW),
        Err(CookieError::NonZeroKeyId {
            found: KeyId::new(1).unwrap()
        })
    );
    let id1 = ControlRepr {
        message_id: Some(1),
        ..reset(Opcode::ControlHardResetClientV2)
    };
    assert_eq!(
        k.reply_to_reset(&id1, client(), None, NOW),
        Err(CookieError::ResetMessageId { found: 1 })
    );
    let none = ControlRepr {
        message_id: None,
        ..reset(Opcode::ControlHardResetClientV2)
    };
    assert_eq!(
        k.reply_to_reset(&none, client(), None, NOW),
        Err(CookieError::MissingMessageId {
            opcode: Opcode::ControlHardResetClientV2
        })
    );
}

// ---- rule 2: the client's next packet ----

#[test]
fn every_continuation_opcode_with_the_current_cookie_opens_a_session() {
    let k = key();
    let ss = ss_at(NOW);
    for packet in [
        third(Opcode::ControlV1, &[0], ss, Some(1)),
        third(Opcode::ControlWkcV1, &[0], ss, Some(1)),
        third(Opcode::AckV1, &[0], ss, None),
        third(Opcode::ControlV1, &[0, 1], ss, Some(0)),
    ] {
        assert_eq!(
            k.verify(&packet, client(), NOW),
            Ok(CookieSession {
                session_id: ss,
                peer_session_id: CS,
                next_rx_message_id: 1,
                next_tx_message_id: 1,
                next_tx_replay_id: 2,
                slot_age: 0,
            })
        );
    }
}

#[test]
fn cookies_of_the_two_previous_slots_are_accepted_three_ago_refused() {
    let k = key();
    let slot = k.slot_secs();
    let issued = NOW - NOW % slot;
    let ss = ss_at(issued);
    let packet = third(Opcode::ControlV1, &[0], ss, Some(1));
    for (age, now) in [
        (0, issued + slot - 1),
        (1, issued + slot),
        (2, issued + 2 * slot),
        (2, issued + 3 * slot - 1),
    ] {
        assert_eq!(k.verify(&packet, client(), now).unwrap().slot_age, age);
    }
    assert_eq!(
        k.verify(&packet, client(), issued + 3 * slot),
        Err(CookieError::SessionIdMismatch)
    );
    assert_eq!(
        k.verify(&packet, client(), issued - 1),
        Err(CookieError::SessionIdMismatch),
        "a cookie from a future slot is refused"
    );
}

#[test]
fn early_times_check_only_existing_slots() {
    let k = key();
    let packet = third(Opcode::ControlV1, &[0], ss_at(0), Some(1));
    assert_eq!(k.verify(&packet, client(), 0).unwrap().slot_age, 0);
    assert_eq!(k.verify(&packet, client(), 45).unwrap().slot_age, 1);
}

#[test]
fn forged_or_misdirected_cookies_are_refused() {
    let k = key();
    let ss = ss_at(NOW);
    for bit in [0, 7, 31, 63] {
        let mut forged = ss;
        forged.0[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            k.verify(
                &third(Opcode::ControlV1, &[0], forged, Some(1)),
                client(),
                NOW
            ),
            Err(CookieError::SessionIdMismatch)
        );
    }
    let good = third(Opcode::ControlV1, &[0], ss, Some(1));
    let other_port = SocketAddr::new(client().ip(), 50_001);
    assert_eq!(
        k.verify(&good, other_port, NOW),
        Err(CookieError::SessionIdMismatch)
    );
    let other_cs = ControlRepr {
        session_id: SessionId([9; 8]),
        ..good
    };
    assert_eq!(
        k.verify(&other_cs, client(), NOW),
        Err(CookieError::SessionIdMismatch)
    );
    let other_key = CookieKey::new(b"a different secret!!", CookieConfig::default()).unwrap();
    assert_eq!(
        other_key.verify(&good, client(), NOW),
        Err(CookieError::SessionIdMismatch)
    );
}

#[test]
fn continuation_rule_violations_are_refused() {
    let k = key();
    let ss = ss_at(NOW);
    let cases = [
        (
            third(Opcode::ControlV1, &[2], ss, Some(1)),
            CookieError::AckTooHigh { found: 2 },
        ),
        (
            third(Opcode::AckV1, &[0, 1, u32::MAX], ss, None),
            CookieError::AckTooHigh { found: u32::MAX },
        ),
        (
            third(Opcode::ControlV1, &[0], ss, Some(2)),
            CookieError::MessageIdTooHigh { found: 2 },
        ),
        (
            third(Opcode::ControlV1, &[], ss, Some(1)),
            CookieError::MissingAck {
                opcode: Opcode::ControlV1,
            },
        ),
        (
            third(Opcode::ControlV1, &[0], ss, None),
            CookieError::MissingMessageId {
                opcode: Opcode::ControlV1,
            },
        ),
        (
            third(Opcode::ControlHardResetClientV2, &[0], ss, Some(0)),
            CookieError::NotAContinuation {
                found: Opcode::ControlHardResetClientV2,
            },
        ),
        (
            third(Opcode::ControlSoftResetV1, &[0], ss, Some(0)),
            CookieError::NotAContinuation {
                found: Opcode::ControlSoftResetV1,
            },
        ),
        (
            ControlRepr {
                key_id: KeyId::new(2).unwrap(),
                ..third(Opcode::ControlV1, &[0], ss, Some(1))
            },
            CookieError::NonZeroKeyId {
                found: KeyId::new(2).unwrap(),
            },
        ),
    ];
    for (packet, err) in cases {
        assert_eq!(k.verify(&packet, client(), NOW), Err(err), "{packet:?}");
    }
}

#[test]
fn handshake_from_wire_bytes_hands_over_to_the_reliability_layer() {
    let k = key();
    let mut buf = [0u8; 128];
    let len = reset(Opcode::ControlHardResetClientV2)
        .emit(&mut buf)
        .unwrap();
    let client_reset = ControlRepr::parse(&ControlPacket::new_checked(&buf[..len]).unwrap());
    let reply = k
        .reply_to_reset(&client_reset, client(), None, NOW)
        .unwrap();
    let len = reply.repr().emit(&mut buf).unwrap();
    // The client learns Ss from our reset and echoes it with its ClientHello.
    let seen = ControlPacket::new_checked(&buf[..len]).unwrap();
    let hello = third(Opcode::ControlV1, &[0], seen.session_id(), Some(1));
    let len = hello.emit(&mut buf).unwrap();
    let wire = ControlRepr::parse(&ControlPacket::new_checked(&buf[..len]).unwrap());
    let session = k.verify(&wire, client(), NOW + 40).unwrap();
    assert_eq!(session.session_id, reply.session_id);
    let mut reliable = Reliable::with_next_ids(
        ReliableConfig::default(),
        session.next_tx_message_id,
        session.next_rx_message_id,
    )
    .unwrap();
    let got = reliable
        .on_packet(&wire, std::time::Instant::now())
        .unwrap();
    assert_eq!(got.message, MessageOutcome::Accepted { message_id: 1 });
    assert_eq!(
        got.newly_acked, 0,
        "the ACK of our stateless reset releases nothing"
    );
    assert_eq!(reliable.readable_len(), 5);
}

// ---- reset rate limiter ----

#[test]
fn rate_limiter_allows_a_burst_then_refills_at_the_rate() {
    let t0 = Instant::now();
    let mut limiter = ResetRateLimiter::default();
    for i in 0..100 {
        assert!(limiter.allow(t0), "reset {i} of the initial burst");
    }
    assert!(!limiter.allow(t0));
    // 100 per 10 s is one token per 100 ms.
    assert!(!limiter.allow(t0 + Duration::from_millis(99)));
    assert!(limiter.allow(t0 + Duration::from_millis(100)));
    assert!(!limiter.allow(t0 + Duration::from_millis(100)));
    let t1 = t0 + Duration::from_millis(600);
    for _ in 0..5 {
        assert!(limiter.allow(t1));
    }
    assert!(!limiter.allow(t1));
}

#[test]
fn rate_limiter_burst_is_capped_after_idling() {
    let t0 = Instant::now();
    let mut limiter = ResetRateLimiter::new(3, Duration::from_secs(1)).unwrap();
    assert!(limiter.allow(t0));
    let later = t0 + Duration::from_secs(3600);
    let allowed = (0..10).filter(|_| limiter.allow(later)).count();
    assert_eq!(allowed, 3);
}

#[test]
fn rate_limiter_ignores_time_going_backwards() {
    let t0 = Instant::now() + Duration::from_secs(10);
    let mut limiter = ResetRateLimiter::new(1, Duration::from_secs(1)).unwrap();
    assert!(limiter.allow(t0));
    assert!(!limiter.allow(t0 - Duration::from_secs(5)));
    assert!(!limiter.allow(t0 + Duration::from_millis(999)));
    assert!(limiter.allow(t0 + Duration::from_secs(1)));
}

#[test]
fn rate_limiter_refuses_empty_limits() {
    for (count, period) in [(0, Duration::from_secs(10)), (100, Duration::ZERO)] {
        assert_eq!(
            ResetRateLimiter::new(count, period).unwrap_err(),
            CookieConfigError::InvalidRateLimit { count, period }
        );
    }
    assert!(ResetRateLimiter::new(u32::MAX, Duration::MAX).is_ok());
}
