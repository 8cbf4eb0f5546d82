//! The session scenarios, each on the simulated link of the parent module.

use super::*;

fn handshake(setup: Setup) -> Pair {
    let mut pair = Pair::new(setup);
    pair.run_until(Duration::from_secs(30), Pair::both_established);
    pair
}

#[test]
fn tls_crypt_handshake_push_and_data() {
    let mut pair = handshake(Setup::default());
    let server_est = Pair::established(&pair.server_events).unwrap().clone();
    let client_est = Pair::established(&pair.client_events).unwrap().clone();
    assert_eq!(server_est.identity.common_name.as_deref(), Some("alice"));
    assert_eq!(server_est.identity.username, "alice-user");
    assert_eq!(server_est.peer_id, PeerId::new(PEER_ID).unwrap());
    assert_eq!(client_est.identity.common_name.as_deref(), Some("server"));
    // Server preference wins among the client's offer.
    assert_eq!(server_est.keys.cipher, Cipher::Aes256Gcm);
    assert_eq!(client_est.keys.cipher, Cipher::Aes256Gcm);
    assert_eq!(
        server_est.keys.keys.encrypt_cipher_key,
        client_est.keys.keys.decrypt_cipher_key
    );
    let push = client_est.push.unwrap();
    assert_eq!(push.peer_id, Some(PEER_ID));
    assert_eq!(push.ping, Some(10));
    assert!(push.protocol_flags.unwrap().tls_ekm);
    let auth = pair.server_events.iter().find_map(|e| match e {
        Event::AuthRequest(a) => Some((**a).clone()),
        _ => None,
    });
    let auth = auth.unwrap();
    assert_eq!(auth.password, "secret");
    assert!(
        auth.identity
            .peer_info
            .proto
            .unwrap()
            .contains(ProtoFlags::TLS_KEY_EXPORT)
    );
    pair.exchange_data(1);
    pair.exchange_data(2);
    assert_eq!(pair.client_drops + pair.server_drops, 0);
}

#[test]
fn every_wrap_and_tls_version_establishes() {
    for wrap in [WrapMode::None, WrapMode::TlsAuth, WrapMode::TlsCrypt] {
        for tls in [TlsVersions::Tls12Only, TlsVersions::Tls13Only] {
            let mut pair = handshake(Setup {
                wrap,
                tls,
                ..Setup::default()
            });
            let expected = match tls {
                TlsVersions::Tls12Only => rustls::ProtocolVersion::TLSv1_2,
                _ => rustls::ProtocolVersion::TLSv1_3,
            };
            assert_eq!(pair.client.keys[0].tls.protocol_version(), Some(expected));
            pair.exchange_data(3);
        }
    }
}

#[test]
fn stateful_start_and_legacy_prf_client() {
    // No cookie (TCP-style start), a 2.4-like client: no EKM, no DATA_V2, no cc-exit.
    let mut pair = handshake(Setup {
        cookie: false,
        wrap: WrapMode::None,
        client_flags: ProtoFlags::REQUEST_PUSH,
        ..Setup::default()
    });
    let est = Pair::established(&pair.client_events).unwrap().clone();
    assert_eq!(est.peer_id, PeerId::UNDEFINED);
    let push = est.push.unwrap();
    assert_eq!(push.protocol_flags, None);
    assert!(!push.key_derivation_tls_ekm);
    pair.exchange_data(4);
    // Without cc-exit the client leaves with OCC_EXIT data packets.
    let now = pair.now;
    pair.client.close(now);
    pair.run_until(Duration::from_secs(5), |p| {
        Pair::closed(&p.server_events).is_some()
    });
    assert_eq!(
        Pair::closed(&pair.server_events),
        Some(&CloseReason::ClientExit)
    );
}

#[test]
fn client_exit_on_control_channel_closes_server() {
    let mut pair = handshake(Setup::default());
    let now = pair.now;
    pair.client.close(now);
    pair.run_until(Duration::from_secs(5), |p| {
        Pair::closed(&p.server_events).is_some() && Pair::closed(&p.client_events).is_some()
    });
    assert_eq!(
        Pair::closed(&pair.server_events),
        Some(&CloseReason::ClientExit)
    );
    assert_eq!(
        Pair::closed(&pair.client_events),
        Some(&CloseReason::LocalExit)
    );
}

#[test]
fn keepalive_pings_keep_an_idle_session_up_and_silence_times_out() {
    let mut pair = handshake(Setup::default());
    pair.run_for(Duration::from_secs(300));
    assert!(!pair.client.is_closed() && !pair.server().is_closed());
    assert!(pair.client_packets.is_empty() && pair.server_packets.is_empty());
    // Cut the link: the client restarts after ping-restart (60 s), the server after 120 s.
    pair.impairment.loss = 100;
    pair.run_until(Duration::from_secs(200), |p| {
        Pair::closed(&p.client_events).is_some() && Pair::closed(&p.server_events).is_some()
    });
    assert_eq!(
        Pair::closed(&pair.client_events),
        Some(&CloseReason::Timeout)
    );
    assert_eq!(
        Pair::closed(&pair.server_events),
        Some(&CloseReason::Timeout)
    );
}

#[test]
fn rejected_client_gets_auth_failed() {
    let mut pair = Pair::new(Setup::default());
    pair.decision = Decision::Reject;
    pair.run_until(Duration::from_secs(30), |p| {
        Pair::closed(&p.client_events).is_some() && Pair::closed(&p.server_events).is_some()
    });
    assert!(matches!(
        Pair::closed(&pair.client_events),
        Some(CloseReason::AuthFailed(text)) if text.contains("denied")
    ));
    assert_eq!(
        Pair::closed(&pair.server_events),
        Some(&CloseReason::AuthFailed("denied".into()))
    );
}

fn rekey_under_traffic(setup: Setup, initiator_is_client: bool) -> (Pair, Vec<u8>) {
    let mut pair = handshake(setup);
    pair.exchange_data(10);
    // A packet sealed with key 0 before the rekey, delivered after it.
    let now = pair.now;
    pair.client.send_data(now, &[0x45, 0xAA]).unwrap();
    let old = pair.client.poll_transmit(now).unwrap().contents;
    pair.client.send_data(now, &[0x45, 0xBB]).unwrap();
    let too_late = pair.client.poll_transmit(now).unwrap().contents;
    if initiator_is_client {
        pair.client.renegotiate(now);
    } else {
        pair.server().renegotiate(now);
    }
    pair.run_until(Duration::from_secs(30), |p| {
        let rekeyed = |events: &[Event]| events.iter().any(|e| matches!(e, Event::Rekeyed(_)));
        rekeyed(&p.client_events) && rekeyed(&p.server_events)
    });
    assert_eq!(pair.client.send_key_id(), Some(KeyId::new(1).unwrap()));
    assert_eq!(pair.server().send_key_id(), Some(KeyId::new(1).unwrap()));
    // The lame duck still opens.
    let now = pair.now;
    pair.server().handle_datagram(now, &old).unwrap();
    pair.flush();
    assert_eq!(pair.server_packets.pop_front().unwrap(), vec![0x45, 0xAA]);
    pair.exchange_data(11);
    (pair, too_late)
}

#[test]
fn client_initiated_rekey_keeps_data_flowing() {
    let (mut pair, too_late) = rekey_under_traffic(Setup::default(), true);
    // After the transition window the old key is gone, data still flows on key 1.
    pair.run_for(DEFAULT_TRANSITION_WINDOW + Duration::from_secs(5));
    let now = pair.now;
    assert_eq!(
        pair.server().handle_datagram(now, &too_late),
        Err(DropReason::KeyId(KeyId::ZERO))
    );
    pair.exchange_data(12);
}

#[test]
fn server_initiated_rekey_with_prf_and_tls12() {
    rekey_under_traffic(
        Setup {
            tls: TlsVersions::Tls12Only,
            client_flags: ProtoFlags::DATA_V2 | ProtoFlags::CC_EXIT_NOTIFY,
            ..Setup::default()
        },
        false,
    );
}

#[test]
fn reneg_seconds_cycles_key_ids() {
    let mut pair = handshake(Setup {
        renegotiation: Renegotiation {
            seconds: 20,
            ..Renegotiation::default()
        },
        ..Setup::default()
    });
    let mut seen = Vec::new();
    for round in 0..9u8 {
        pair.run_for(Duration::from_secs(21));
        pair.exchange_data(round);
        seen.push(pair.server().send_key_id().unwrap().get());
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5, 6, 7, 1, 2]);
    assert!(!pair.client.is_closed());
}

#[test]
fn revoked_client_certificate_is_refused() {
    let mut pair = Pair::new(Setup {
        client_cert: MALLORY_CERT,
        client_key: MALLORY_KEY,
        ..Setup::default()
    });
    pair.run_until(Duration::from_secs(30), |p| {
        Pair::closed(&p.server_events).is_some() && Pair::closed(&p.client_events).is_some()
    });
    let server = Pair::closed(&pair.server_events).unwrap();
    assert!(
        matches!(server, CloseReason::Tls(text) if text.to_lowercase().contains("revoked")),
        "{server:?}"
    );
    let client = Pair::closed(&pair.client_events).unwrap();
    assert!(matches!(client, CloseReason::Tls(_)), "{client:?}");
    assert!(
        !pair
            .server_events
            .iter()
            .any(|e| matches!(e, Event::AuthRequest(_)))
    );
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let mut pair = Pair::new(Setup {
        client_cert: EVE_CERT,
        client_key: EVE_KEY,
        ..Setup::default()
    });
    pair.run_until(Duration::from_secs(30), |p| {
        Pair::closed(&p.server_events).is_some()
    });
    assert!(matches!(
        Pair::closed(&pair.server_events),
        Some(CloseReason::Tls(_))
    ));
}

#[test]
fn server_certificate_from_an_unknown_ca_is_refused_by_the_client() {
    let mut pair = Pair::new(Setup {
        client_ca: EVE_CERT,
        ..Setup::default()
    });
    pair.run_until(Duration::from_secs(30), |p| {
        Pair::closed(&p.client_events).is_some()
    });
    assert!(matches!(
        Pair::closed(&pair.client_events),
        Some(CloseReason::Tls(_))
    ));
}

#[test]
fn lossy_reordering_duplicating_link_converges() {
    for seed in 1..=4u64 {
        for wrap in [WrapMode::TlsCrypt, WrapMode::None] {
            let mut pair = Pair::new(Setup {
                wrap,
                ..Setup::default()
            });
            pair.rng = Rng(seed.wrapping_mul(0x1234_5678_9ABC_DEF1));
            pair.impairment = Impairment {
                loss: 10,
                duplicate: 10,
                reorder: 10,
            };
            pair.run_until(Duration::from_secs(120), Pair::both_established);
            let now = pair.now;
            pair.server().renegotiate(now);
            pair.run_until(Duration::from_secs(120), |p| {
                p.server.as_ref().and_then(Session::send_key_id) == KeyId::new(1).ok()
                    && p.client.send_key_id() == KeyId::new(1).ok()
            });
            // Data under loss: resend until one copy arrives each way.
            pair.impairment.loss = 10;
            for _ in 0..20 {
                let now = pair.now;
                pair.client.send_data(now, &[0x45, 1]).unwrap();
                pair.server().send_data(now, &[0x45, 2]).unwrap();
                pair.run_for(Duration::from_millis(100));
            }
            assert!(pair.server_packets.contains(&vec![0x45, 1]));
            assert!(pair.client_packets.contains(&vec![0x45, 2]));
        }
    }
}

#[test]
fn handshake_timeout_closes_an_unanswered_client() {
    let mut pair = Pair::new(Setup::default());
    pair.impairment.loss = 100;
    pair.run_until(Duration::from_secs(120), |p| {
        Pair::closed(&p.client_events).is_some()
    });
    assert_eq!(
        Pair::closed(&pair.client_events),
        Some(&CloseReason::HandshakeTimeout)
    );
}

#[test]
fn forged_and_foreign_packets_are_dropped() {
    let mut pair = handshake(Setup::default());
    let now = pair.now;
    let server = pair.server();
    assert!(matches!(
        server.handle_datagram(now, &[]),
        Err(DropReason::Packet(_))
    ));
    assert!(matches!(
        server.handle_datagram(now, &[0x20; 80]),
        Err(DropReason::Wrap(_))
    ));
    // Data for another peer-id.
    let mut data = vec![0x48, 0, 0, 9];
    data.extend_from_slice(&[0u8; 40]);
    assert!(matches!(
        server.handle_datagram(now, &data),
        Err(DropReason::PeerId { .. })
    ));
    // Data with a key_id we do not have.
    let mut data = vec![0x48 | 5, 0, 0, PEER_ID as u8];
    data.extend_from_slice(&[0u8; 40]);
    assert!(matches!(
        server.handle_datagram(now, &data),
        Err(DropReason::KeyId(_))
    ));
    pair.exchange_data(5);
}

#[test]
fn undecided_authentication_runs_into_hand_window() {
    let mut pair = Pair::new(Setup::default());
    pair.decision = Decision::Ignore;
    pair.run_until(Duration::from_secs(120), |p| {
        Pair::closed(&p.server_events).is_some() && Pair::closed(&p.client_events).is_some()
    });
    assert_eq!(
        Pair::closed(&pair.server_events),
        Some(&CloseReason::HandshakeTimeout)
    );
    assert_eq!(
        Pair::closed(&pair.client_events),
        Some(&CloseReason::HandshakeTimeout)
    );
    let now = pair.now;
    assert!(pair.server().accept(now, policy(None)).is_err());
}

#[test]
fn reneg_packets_and_bytes_trigger_rekeys() {
    for limits in [
        Renegotiation {
            packets: 6,
            ..Renegotiation::default()
        },
        Renegotiation {
            bytes: 30,
            ..Renegotiation::default()
        },
    ] {
        let mut pair = handshake(Setup {
            renegotiation: limits,
            keepalive: None,
            ..Setup::default()
        });
        for round in 0..4 {
            pair.exchange_data(round);
        }
        pair.run_for(Duration::from_secs(5));
        assert_eq!(
            pair.server().send_key_id(),
            KeyId::new(1).ok(),
            "{limits:?}"
        );
        assert_eq!(pair.client.send_key_id(), KeyId::new(1).ok(), "{limits:?}");
        pair.exchange_data(9);
    }
}

/// A TCP link: each side's transmits are framed into a byte stream, delivered in 7-byte
/// chunks and deframed; the server starts from the first reset (no cookie on TCP).
#[test]
fn tcp_framing_end_to_end() {
    use crate::framing::{FRAME_HEADER_LEN, MAX_FRAME_LEN, StreamDecoder, encode_frame};

    fn frame(out: &mut Vec<u8>, packet: &[u8]) {
        let mut buf = vec![0u8; packet.len() + FRAME_HEADER_LEN];
        let len = encode_frame(packet, &mut buf).unwrap();
        out.extend_from_slice(&buf[..len]);
    }

    let setup = Setup::default();
    let server_config = server_config(&setup);
    let start = Instant::now();
    let mut now = start;
    let mut client = Session::client(client_config(&setup), now, UNIX_START).unwrap();
    let mut server: Option<Session> = None;
    let (mut to_server, mut to_client) = (Vec::<u8>::new(), Vec::<u8>::new());
    let mut server_decoder = StreamDecoder::new(MAX_FRAME_LEN).unwrap();
    let mut client_decoder = StreamDecoder::new(MAX_FRAME_LEN).unwrap();
    let mut received = Vec::new();
    for _ in 0..2000 {
        while let Some(t) = client.poll_transmit(now) {
            frame(&mut to_server, &t.contents);
        }
        if let Some(server) = &mut server {
            while let Some(event) = server.poll_event() {
                match event {
                    Event::AuthRequest(_) => server.accept(now, policy(None)).unwrap(),
                    Event::Packet(p) => received.push(p),
                    _ => {}
                }
            }
            while let Some(t) = server.poll_transmit(now) {
                frame(&mut to_client, &t.contents);
            }
        }
        let chunk: Vec<u8> = to_server.drain(..to_server.len().min(7)).collect();
        let mut input = &chunk[..];
        while let Some(packet) = server_decoder.decode(&mut input).unwrap() {
            match &mut server {
                Some(server) => {
                    server.handle_datagram(now, packet).unwrap();
                }
                None => {
                    server = Some(
                        Session::server_from_reset(
                            server_config.clone(),
                            now,
                            UNIX_START,
                            PeerId::new(PEER_ID).unwrap(),
                            packet,
                        )
                        .unwrap(),
                    );
                }
            }
        }
        let chunk: Vec<u8> = to_client.drain(..to_client.len().min(7)).collect();
        let mut input = &chunk[..];
        while let Some(packet) = client_decoder.decode(&mut input).unwrap() {
            client.handle_datagram(now, packet).unwrap();
        }
        while client.poll_event().is_some() {}
        if client.is_established() && received.is_empty() {
            client.send_data(now, &[0x45, 0x77]).unwrap();
        }
        if !received.is_empty() {
            break;
        }
        now += Duration::from_millis(5);
        client.handle_timeout(now);
        if let Some(server) = &mut server {
            server.handle_timeout(now);
        }
    }
    assert_eq!(received.first(), Some(&vec![0x45, 0x77]));
    assert!(server.unwrap().is_established());
}
