use super::*;

// ---- send side ----

#[test]
fn reset_takes_message_id_zero_and_stream_waits_for_it() {
    let now = Instant::now();
    let mut r = Reliable::new(config(100)).unwrap();
    r.queue(b"hello").unwrap();
    assert_eq!(poll(&mut r, now), None, "stream must not take msg-id 0");
    r.queue_reset(Opcode::ControlSoftResetV1, &[1, 2]).unwrap();
    let sent = drain(&mut r, now);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].opcode, Opcode::ControlSoftResetV1);
    assert_eq!(sent[0].message_id, Some(0));
    assert_eq!(sent[0].payload, [1, 2]);
    assert_eq!(sent[0].kind, TransmitKind::New);
    assert_eq!(sent[1].opcode, Opcode::ControlV1);
    assert_eq!(sent[1].message_id, Some(1));
    assert_eq!(sent[1].payload, b"hello");
    assert_eq!(r.next_tx_message_id(), 2);
}

#[test]
fn queue_reset_errors() {
    let mut r = Reliable::new(config(100)).unwrap();
    assert_eq!(
        r.queue_reset(Opcode::ControlV1, &[]),
        Err(SendError::NotAReset {
            found: Opcode::ControlV1
        })
    );
    assert_eq!(
        r.queue_reset(Opcode::ControlHardResetClientV1, &[]),
        Err(SendError::NotAReset {
            found: Opcode::ControlHardResetClientV1
        })
    );
    assert_eq!(
        r.queue_reset(Opcode::ControlHardResetServerV2, &[0; 101]),
        Err(SendError::ResetPayloadTooLarge { len: 101, max: 100 })
    );
    let mut big = Reliable::new(ReliableConfig::default()).unwrap();
    assert_eq!(
        big.queue_reset(Opcode::ControlHardResetServerV2, &[0; 257]),
        Err(SendError::ResetPayloadTooLarge { len: 257, max: 256 })
    );
    r.queue_reset(Opcode::ControlHardResetServerV2, &[])
        .unwrap();
    assert_eq!(
        r.queue_reset(Opcode::ControlHardResetServerV2, &[]),
        Err(SendError::ResetNotFirst)
    );
    drain(&mut r, Instant::now());
    assert_eq!(
        r.queue_reset(Opcode::ControlHardResetServerV2, &[]),
        Err(SendError::ResetNotFirst)
    );
    let mut resumed = started(100);
    assert_eq!(
        resumed.queue_reset(Opcode::ControlHardResetServerV2, &[]),
        Err(SendError::ResetNotFirst)
    );
}

#[test]
fn stream_is_cut_at_the_payload_budget() {
    let now = Instant::now();
    let mut r = started(1000);
    let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
    r.queue(&data).unwrap();
    let sent = drain(&mut r, now);
    let lens: Vec<usize> = sent.iter().map(|s| s.payload.len()).collect();
    assert_eq!(lens, [1000, 1000, 500]);
    let ids: Vec<_> = sent.iter().map(|s| s.message_id).collect();
    assert_eq!(ids, [Some(1), Some(2), Some(3)]);
    assert!(sent.iter().all(|s| s.opcode == Opcode::ControlV1));
    assert_eq!(sent.concat_payloads(), data);
}

trait Concat {
    fn concat_payloads(&self) -> Vec<u8>;
}

impl Concat for Vec<Sent> {
    fn concat_payloads(&self) -> Vec<u8> {
        self.iter().flat_map(|s| s.payload.clone()).collect()
    }
}

#[test]
fn send_buffer_cap_is_all_or_nothing() {
    let mut r = Reliable::with_next_ids(
        ReliableConfig {
            payload_budget: 10,
            max_send_buffer: 25,
            ..ReliableConfig::default()
        },
        1,
        1,
    )
    .unwrap();
    r.queue(&[1; 20]).unwrap();
    assert_eq!(r.send_capacity(), 5);
    assert_eq!(
        r.queue(&[2; 6]),
        Err(SendError::SendBufferFull {
            len: 6,
            available: 5
        })
    );
    assert_eq!(r.send_capacity(), 5, "a refused write queues nothing");
    r.queue(&[3; 5]).unwrap();
    drain(&mut r, Instant::now());
    assert_eq!(r.send_capacity(), 25, "packetised bytes leave the buffer");
}

#[test]
fn all_acked_waits_for_the_reset_the_bytes_and_the_acks() {
    let now = Instant::now();
    let mut r = Reliable::new(ReliableConfig::default()).unwrap();
    assert!(r.all_acked());
    r.queue_reset(Opcode::ControlHardResetServerV2, &[])
        .unwrap();
    assert!(!r.all_acked(), "reset queued");
    r.queue(&[7; 30]).unwrap();
    drain(&mut r, now);
    assert!(r.in_flight() > 0);
    assert!(!r.all_acked(), "sent, not ACKed");
    let ids: Vec<u32> = (0..8).filter(|&id| r.is_in_flight(id)).collect();
    r.on_packet(&ack(&ids), now).unwrap();
    assert_eq!(r.in_flight(), 0);
    assert!(r.all_acked());
    r.queue(&[8; 3]).unwrap();
    assert!(!r.all_acked(), "bytes queued");
}

#[test]
fn send_window_holds_six_ids_above_the_lowest_unacked() {
    let now = Instant::now();
    let mut r = started(10);
    r.queue(&[0; 200]).unwrap();
    let first = drain(&mut r, now);
    let ids: Vec<_> = first.iter().filter_map(|s| s.message_id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
    assert_eq!(r.in_flight(), 6);
    // ACKing a later id does not move the window: 1 is still the lowest.
    let got = r.on_packet(&ack(&[2]), now).unwrap();
    assert_eq!(got.newly_acked, 1);
    assert_eq!(drain(&mut r, now), []);
    // ACKing 1 makes 3 the lowest: ids up to 8 may go.
    r.on_packet(&ack(&[1]), now).unwrap();
    let ids: Vec<_> = drain(&mut r, now)
        .iter()
        .filter_map(|s| s.message_id)
        .collect();
    assert_eq!(ids, [7, 8]);
    assert!(r.is_in_flight(3) && !r.is_in_flight(2) && r.is_in_flight(8));
}

#[test]
fn acks_for_ids_we_do_not_hold_are_ignored() {
    let now = Instant::now();
    let mut r = started(10);
    r.queue(&[0; 20]).unwrap();
    drain(&mut r, now);
    let got = r.on_packet(&ack(&[1, 1, 0, 9, u32::MAX]), now).unwrap();
    assert_eq!(got.newly_acked, 1);
    assert_eq!(got.message, MessageOutcome::AckOnly);
    let again = r.on_packet(&ack(&[1]), now).unwrap();
    assert_eq!(again.newly_acked, 0);
    assert!(r.is_in_flight(2));
    assert_eq!(r.in_flight(), 1);
}

#[test]
fn retransmit_timeout_doubles_up_to_the_cap() {
    let t0 = Instant::now();
    let mut r = Reliable::with_next_ids(
        ReliableConfig {
            max_timeout: Duration::from_secs(16),
            ..config(100)
        },
        1,
        1,
    )
    .unwrap();
    r.queue(b"abc").unwrap();
    let first = poll(&mut r, t0).unwrap();
    assert_eq!(first.kind, TransmitKind::New);
    let mut due = t0;
    for gap in [2u64, 4, 8, 16, 16, 16] {
        due += Duration::from_secs(gap);
        assert_eq!(r.poll_timeout(), Some(due));
        assert_eq!(poll(&mut r, due - Duration::from_millis(1)), None);
        let again = poll(&mut r, due).unwrap();
        assert_eq!(again.kind, TransmitKind::Retransmit);
        assert_eq!(again.message_id, Some(1));
        assert_eq!(again.payload, b"abc");
        assert_eq!(poll(&mut r, due), None, "one retransmission per timeout");
    }
    r.on_packet(&ack(&[1]), due).unwrap();
    assert_eq!(r.poll_timeout(), None);
    assert!(r.is_idle());
}

#[test]
fn late_poll_schedules_from_the_actual_send_time() {
    let t0 = Instant::now();
    let mut r = started(100);
    r.queue(b"x").unwrap();
    poll(&mut r, t0).unwrap();
    let late = t0 + Duration::from_secs(5);
    poll(&mut r, late).unwrap();
    assert_eq!(r.poll_timeout(), Some(late + Duration::from_secs(4)));
}

#[test]
fn retransmissions_go_lowest_id_first() {
    let t0 = Instant::now();
    let mut r = started(1);
    r.queue(b"ab").unwrap();
    poll(&mut r, t0).unwrap();
    let t1 = t0 + SECOND;
    poll(&mut r, t1).unwrap();
    let sent = drain(&mut r, t0 + Duration::from_secs(10));
    let ids: Vec<_> = sent.iter().filter_map(|s| s.message_id).collect();
    assert_eq!(ids, [1, 2]);
}

#[test]
fn three_later_acks_trigger_an_early_retransmit() {
    let t0 = Instant::now();
    let mut r = started(1);
    r.queue(b"abcde").unwrap();
    assert_eq!(drain(&mut r, t0).len(), 5);
    let t1 = t0 + Duration::from_millis(100);
    r.on_packet(&ack(&[2, 3]), t1).unwrap();
    // A repeated ACK releases nothing and must not count.
    r.on_packet(&ack(&[3]), t1).unwrap();
    assert_eq!(poll(&mut r, t1), None);
    r.on_packet(&ack(&[4]), t1).unwrap();
    let early = poll(&mut r, t1).unwrap();
    assert_eq!(early.kind, TransmitKind::Retransmit);
    assert_eq!(early.message_id, Some(1));
    assert_eq!(early.payload, b"a");
    assert_eq!(poll(&mut r, t1), None, "only id 1 had three later ACKs");
    // The counter restarts: one more later ACK is not enough.
    r.on_packet(&ack(&[5]), t1).unwrap();
    assert_eq!(poll(&mut r, t1), None);
    assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_secs(4)));
}

#[test]
fn transmit_repr_carries_the_peer_sid_only_with_acks() {
    let now = Instant::now();
    let mut r = Reliable::new(config(100)).unwrap();
    r.queue_reset(Opcode::ControlHardResetClientV2, &[])
        .unwrap();
    let t = r.poll_transmit(now).unwrap();
    let repr = t.to_repr(KeyId::ZERO, CLIENT_SID, SERVER_SID);
    assert_eq!(repr.remote_session_id, None);
    let mut buf = [0u8; 64];
    let len = repr.emit(&mut buf).unwrap();
    assert_eq!(len, 14);

    let mut s = Reliable::new(config(100)).unwrap();
    let parsed = ControlRepr::parse(&ControlPacket::new_checked(&buf[..len]).unwrap());
    s.on_packet(&parsed, now).unwrap();
    s.queue_reset(Opcode::ControlHardResetServerV2, &[])
        .unwrap();
    let t = s.poll_transmit(now).unwrap();
    let repr = t.to_repr(KeyId::ZERO, SERVER_SID, CLIENT_SID);
    assert_eq!(repr.remote_session_id, Some(CLIENT_SID));
    assert_eq!(repr.acks.as_slice(), [0]);
    assert_eq!(repr.message_id, Some(0));
    let len = repr.emit(&mut buf).unwrap();
    let back = ControlRepr::parse(&ControlPacket::new_checked(&buf[..len]).unwrap());
    assert_eq!(back, repr);
}

#[test]
fn message_ids_stop_at_exhaustion() {
    let now = Instant::now();
    let mut r = Reliable::with_next_ids(config(1), u32::MAX, 1).unwrap();
    r.queue(b"ab").unwrap();
    let sent = drain(&mut r, now);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message_id, Some(u32::MAX));
    r.on_packet(&ack(&[u32::MAX]), now).unwrap();
    assert_eq!(drain(&mut r, now), [], "no id after u32::MAX");
}
