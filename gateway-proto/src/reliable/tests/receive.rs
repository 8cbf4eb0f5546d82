use super::*;
use proptest::prelude::*;

// ---- receive side ----

#[test]
fn peer_reset_is_acked_and_kept_out_of_the_stream() {
    let now = Instant::now();
    let mut r = Reliable::new(config(100)).unwrap();
    let got = r
        .on_packet(
            &repr(Opcode::ControlHardResetClientV2, Some(0), &[], b"tlv"),
            now,
        )
        .unwrap();
    assert_eq!(got.message, MessageOutcome::Accepted { message_id: 0 });
    assert_eq!(r.readable_len(), 0);
    assert_eq!(r.next_rx_message_id(), 1);
    let sent = drain(&mut r, now);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, TransmitKind::Ack);
    assert_eq!(sent[0].opcode, Opcode::AckV1);
    assert_eq!(sent[0].message_id, None);
    assert_eq!(sent[0].acks, [0]);
    // A retransmitted reset is ACKed again.
    let dup = r
        .on_packet(
            &repr(Opcode::ControlHardResetClientV2, Some(0), &[], &[]),
            now,
        )
        .unwrap();
    assert_eq!(dup.message, MessageOutcome::Duplicate { message_id: 0 });
    assert_eq!(drain(&mut r, now)[0].acks, [0]);
}

#[test]
fn malformed_packets_are_refused_before_their_acks_apply() {
    let now = Instant::now();
    let mut r = started(100);
    r.queue(b"x").unwrap();
    drain(&mut r, now);
    let cases = [
        (
            repr(Opcode::ControlHardResetClientV1, Some(0), &[1], &[]),
            ReceiveError::UnexpectedOpcode {
                found: Opcode::ControlHardResetClientV1,
            },
        ),
        (
            repr(Opcode::DataV2, Some(3), &[1], &[]),
            ReceiveError::UnexpectedOpcode {
                found: Opcode::DataV2,
            },
        ),
        (
            repr(Opcode::ControlV1, None, &[1], &[]),
            ReceiveError::MissingMessageId {
                opcode: Opcode::ControlV1,
            },
        ),
        (
            repr(Opcode::ControlSoftResetV1, None, &[1], &[]),
            ReceiveError::MissingMessageId {
                opcode: Opcode::ControlSoftResetV1,
            },
        ),
        (
            repr(Opcode::ControlHardResetClientV2, Some(1), &[1], &[]),
            ReceiveError::ResetWithNonZeroId {
                opcode: Opcode::ControlHardResetClientV2,
                message_id: 1,
            },
        ),
        (
            repr(Opcode::ControlWkcV1, Some(0), &[1], b"x"),
            ReceiveError::ExpectedReset {
                opcode: Opcode::ControlWkcV1,
            },
        ),
    ];
    for (packet, err) in cases {
        assert_eq!(r.on_packet(&packet, now), Err(err));
    }
    assert!(r.is_in_flight(1), "refused packets must not release id 1");
    assert_eq!(r.pending_acks(), 0);
}

#[test]
fn receive_window_edges() {
    let now = Instant::now();
    let mut r = started(100);
    r.queue(b"x").unwrap();
    drain(&mut r, now);
    // next expected is 1: the window is [1, 13).
    let last = r.on_packet(&control(12, b"L"), now).unwrap();
    assert_eq!(last.message, MessageOutcome::Accepted { message_id: 12 });
    let beyond = repr(Opcode::ControlV1, Some(13), &[1], b"B");
    assert_eq!(
        r.on_packet(&beyond, now),
        Err(ReceiveError::BeyondWindow {
            message_id: 13,
            next_expected: 1
        })
    );
    assert!(
        !r.is_in_flight(1),
        "ACKs of a beyond-window packet still apply"
    );
    assert_eq!(
        r.on_packet(&control(u32::MAX, b"B"), now),
        Err(ReceiveError::BeyondWindow {
            message_id: u32::MAX,
            next_expected: 1
        })
    );
    let acks = drain(&mut r, now);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].acks, [12], "beyond-window ids are not ACKed");
    assert_eq!(r.readable_len(), 0);
    // Filling 1..=11 delivers 1..=12; the window then is [13, 25).
    for id in 1..=11 {
        r.on_packet(&control(id, &[id as u8]), now).unwrap();
    }
    let mut expected: Vec<u8> = (1..=11).collect();
    expected.push(b'L');
    assert_eq!(read_all(&mut r), expected);
    assert_eq!(r.next_rx_message_id(), 13);
    assert!(r.on_packet(&control(24, b""), now).is_ok());
    assert!(matches!(
        r.on_packet(&control(25, b""), now),
        Err(ReceiveError::BeyondWindow { .. })
    ));
}

#[test]
fn duplicates_are_reacked_and_not_redelivered() {
    let now = Instant::now();
    let mut r = started(100);
    r.on_packet(&control(1, b"one"), now).unwrap();
    r.on_packet(&control(3, b"three"), now).unwrap();
    drain(&mut r, now);
    let old = r.on_packet(&control(1, b"one"), now).unwrap();
    assert_eq!(old.message, MessageOutcome::Duplicate { message_id: 1 });
    let held = r.on_packet(&control(3, b"XXXXX"), now).unwrap();
    assert_eq!(held.message, MessageOutcome::Duplicate { message_id: 3 });
    let sent = drain(&mut r, now);
    assert_eq!(sent.len(), 1);
    assert_eq!(&sent[0].acks[..2], [1, 3]);
    r.on_packet(&control(2, b"two"), now).unwrap();
    assert_eq!(read_all(&mut r), b"onetwothree");
    assert_eq!(r.next_rx_message_id(), 4);
}

#[test]
fn read_hands_out_bytes_in_pieces() {
    let mut r = started(100);
    r.on_packet(&control(1, b"abcdef"), Instant::now()).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(r.read(&mut buf), 4);
    assert_eq!(&buf, b"abcd");
    assert_eq!(r.readable_len(), 2);
    assert_eq!(r.read(&mut buf), 2);
    assert_eq!(&buf[..2], b"ef");
    assert_eq!(r.read(&mut buf), 0);
}

#[test]
fn receive_buffer_cap_drops_without_ack() {
    let now = Instant::now();
    let mut r = Reliable::with_next_ids(
        ReliableConfig {
            payload_budget: 10,
            max_recv_buffer: 10,
            ..ReliableConfig::default()
        },
        1,
        1,
    )
    .unwrap();
    r.on_packet(&control(2, &[0; 6]), now).unwrap();
    r.on_packet(&control(1, &[0; 3]), now).unwrap();
    drain(&mut r, now);
    assert_eq!(
        r.on_packet(&control(3, &[0; 2]), now),
        Err(ReceiveError::ReceiveBufferFull {
            needed: 2,
            available: 1
        })
    );
    assert_eq!(r.pending_acks(), 0);
    assert_eq!(r.next_rx_message_id(), 3);
    let mut buf = [0u8; 9];
    r.read(&mut buf);
    assert!(r.on_packet(&control(3, &[0; 2]), now).is_ok());
}

#[test]
fn ack_queue_cap_drops_new_packets() {
    let now = Instant::now();
    let mut r = started(100);
    for id in 1..=MAX_PENDING_ACKS as u32 {
        r.on_packet(&control(id, b"a"), now).unwrap();
    }
    let next = MAX_PENDING_ACKS as u32 + 1;
    assert_eq!(
        r.on_packet(&control(next, b"a"), now),
        Err(ReceiveError::AckQueueFull)
    );
    // A duplicate is still answered with Ok, its ACK already pending.
    assert_eq!(
        r.on_packet(&control(1, b"a"), now).unwrap().message,
        MessageOutcome::Duplicate { message_id: 1 }
    );
    assert_eq!(r.pending_acks(), MAX_PENDING_ACKS);
    assert_eq!(r.next_rx_message_id(), u64::from(next));
    let sent = drain(&mut r, now);
    assert_eq!(sent.len(), MAX_PENDING_ACKS / MAX_ACKS);
    assert!(sent.iter().all(|s| s.acks.len() == MAX_ACKS));
    assert!(r.on_packet(&control(next, b"a"), now).is_ok());
}

#[test]
fn acks_piggyback_then_fill_from_recent_ids() {
    let now = Instant::now();
    let mut r = started(100);
    for id in 1..=6 {
        r.on_packet(&control(id, b"."), now).unwrap();
    }
    r.queue(b"reply").unwrap();
    let sent = drain(&mut r, now);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].opcode, Opcode::ControlV1);
    assert_eq!(sent[0].acks, [1, 2, 3, 4], "at most 4 piggy-backed");
    assert_eq!(sent[1].opcode, Opcode::AckV1);
    assert_eq!(sent[1].acks, [5, 6, 1, 2, 3, 4], "fresh first, then recent");
    // No fresh ACK left: no standalone P_ACK_V1, but the next packet re-sends recent ids.
    assert_eq!(drain(&mut r, now), []);
    r.queue(b"more").unwrap();
    let sent = drain(&mut r, now);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].acks, [5, 6, 1, 2]);
    // The list keeps the 8 most recent ids.
    for id in 7..=11 {
        r.on_packet(&control(id, b"."), now).unwrap();
    }
    let sent = drain(&mut r, now);
    assert_eq!(sent[0].acks, [7, 8, 9, 10, 11, 5, 6, 1]);
    r.queue(b"x").unwrap();
    let sent = drain(&mut r, now);
    assert_eq!(sent[0].acks, [7, 8, 9, 10]);
    r.on_packet(&control(12, b"."), now).unwrap();
    r.on_packet(&control(7, b"."), now).unwrap();
    let sent = drain(&mut r, now);
    assert_eq!(sent[0].acks, [12, 7, 8, 9, 10, 11, 5, 6]);
}

#[test]
fn retransmissions_carry_pending_acks() {
    let t0 = Instant::now();
    let mut r = started(100);
    r.queue(b"x").unwrap();
    drain(&mut r, t0);
    r.on_packet(&control(1, b"y"), t0).unwrap();
    let t1 = t0 + Duration::from_secs(2);
    let sent = drain(&mut r, t1);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, TransmitKind::Retransmit);
    assert_eq!(sent[0].acks, [1]);
}

// ---- reassembly property ----

fn chunk_stream(chunks: &[Vec<u8>]) -> Vec<u8> {
    chunks.concat()
}

proptest! {
    #[test]
    fn reassembly_delivers_a_prefix_then_the_whole_stream(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..40),
        arrivals in prop::collection::vec(any::<prop::sample::Index>(), 0..200),
    ) {
        let now = Instant::now();
        let expected = chunk_stream(&chunks);
        let mut r = started(100);
        let mut got = Vec::new();
        for index in &arrivals {
            let id = index.index(chunks.len()) as u32 + 1;
            let result = r.on_packet(&control(id, &chunks[id as usize - 1]), now);
            let in_window = u64::from(id) < r.next_rx_message_id() + u64::from(RECV_WINDOW);
            match result {
                Ok(_) => prop_assert!(in_window),
                Err(ReceiveError::BeyondWindow { .. }) => prop_assert!(!in_window),
                Err(e) => prop_assert!(false, "unexpected error {e:?}"),
            }
            got.extend(read_all(&mut r));
            prop_assert!(expected.starts_with(&got));
            drain(&mut r, now);
        }
        for (i, chunk) in chunks.iter().enumerate() {
            r.on_packet(&control(i as u32 + 1, chunk), now).unwrap();
            drain(&mut r, now);
        }
        got.extend(read_all(&mut r));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn shuffled_rounds_with_duplicates_reassemble(
        (chunks, order) in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..30), 1..30)
            .prop_flat_map(|chunks| {
                let n = chunks.len();
                let ids: Vec<usize> = (0..n).chain(0..n / 2).collect();
                (Just(chunks), Just(ids).prop_shuffle())
            }),
    ) {
        let now = Instant::now();
        let expected = chunk_stream(&chunks);
        let mut r = started(100);
        let mut got = Vec::new();
        let mut rounds = 0;
        while got.len() < expected.len() || r.next_rx_message_id() <= chunks.len() as u64 {
            rounds += 1;
            prop_assert!(rounds <= chunks.len(), "no progress");
            for &i in &order {
                let _ = r.on_packet(&control(i as u32 + 1, &chunks[i]), now);
                got.extend(read_all(&mut r));
                drain(&mut r, now);
            }
        }
        prop_assert_eq!(got, expected);
    }
}
