use super::*;
use crate::packet::ControlPacket;

mod link;
mod receive;
mod send;

const CLIENT_SID: SessionId = SessionId([0xC1; 8]);
const SERVER_SID: SessionId = SessionId([0x5E; 8]);
const SECOND: Duration = Duration::from_secs(1);

/// A transmit copied out of the borrow.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    kind: TransmitKind,
    opcode: Opcode,
    message_id: Option<u32>,
    acks: Vec<u32>,
    payload: Vec<u8>,
}

fn config(budget: usize) -> ReliableConfig {
    ReliableConfig {
        payload_budget: budget,
        ..ReliableConfig::default()
    }
}

/// A stream whose resets are done: msg-ids start at 1 both ways.
fn started(budget: usize) -> Reliable {
    Reliable::with_next_ids(config(budget), 1, 1).unwrap()
}

fn poll(r: &mut Reliable, now: Instant) -> Option<Sent> {
    r.poll_transmit(now).map(|t| Sent {
        kind: t.kind,
        opcode: t.opcode,
        message_id: t.message_id,
        acks: t.acks.as_slice().to_vec(),
        payload: t.payload.to_vec(),
    })
}

fn drain(r: &mut Reliable, now: Instant) -> Vec<Sent> {
    std::iter::from_fn(|| poll(r, now)).collect()
}

fn repr<'a>(
    opcode: Opcode,
    message_id: Option<u32>,
    acks: &[u32],
    payload: &'a [u8],
) -> ControlRepr<'a> {
    let acks = Acks::from_slice(acks).unwrap();
    ControlRepr {
        opcode,
        key_id: KeyId::ZERO,
        session_id: CLIENT_SID,
        acks,
        remote_session_id: (!acks.is_empty()).then_some(SERVER_SID),
        message_id,
        payload,
    }
}

fn control(id: u32, payload: &[u8]) -> ControlRepr<'_> {
    repr(Opcode::ControlV1, Some(id), &[], payload)
}

fn ack(ids: &[u32]) -> ControlRepr<'static> {
    repr(Opcode::AckV1, None, ids, &[])
}

fn read_all(r: &mut Reliable) -> Vec<u8> {
    let mut out = vec![0; r.readable_len()];
    let n = r.read(&mut out);
    out.truncate(n);
    out
}

// ---- configuration ----

#[test]
fn payload_budget_subtracts_every_header() {
    assert_eq!(payload_budget(1250, IPV4_UDP_OVERHEAD, 40), Ok(1144));
    assert_eq!(MAX_CONTROL_HEADER_LEN, 38);
    assert_eq!(DEFAULT_PAYLOAD_BUDGET, 1092);
    assert_eq!(payload_budget(67, 28, 0), Ok(1));
    assert_eq!(
        payload_budget(66, 28, 0),
        Err(ReliableConfigError::MtuTooSmall {
            tls_mtu: 66,
            overhead: 66
        })
    );
    assert!(matches!(
        payload_budget(10, usize::MAX, 1),
        Err(ReliableConfigError::MtuTooSmall { .. })
    ));
}

#[test]
fn full_packet_with_four_acks_fills_the_default_tls_mtu_exactly() {
    let mut r = Reliable::new(ReliableConfig::default()).unwrap();
    for id in 0..4 {
        let opcode = if id == 0 {
            Opcode::ControlHardResetClientV2
        } else {
            Opcode::ControlV1
        };
        r.on_packet(&repr(opcode, Some(id), &[], b"x"), Instant::now())
            .unwrap();
    }
    r.queue_reset(Opcode::ControlHardResetServerV2, &[])
        .unwrap();
    r.queue(&vec![7u8; 5000]).unwrap();
    let now = Instant::now();
    let sent = drain(&mut r, now);
    let full = sent.iter().find(|s| s.opcode == Opcode::ControlV1).unwrap();
    assert_eq!(full.payload.len(), DEFAULT_PAYLOAD_BUDGET);
    let acks = Acks::from_slice(&[0, 1, 2, 3]).unwrap();
    let wire = ControlRepr {
        acks,
        remote_session_id: Some(CLIENT_SID),
        ..control(1, &full.payload)
    };
    assert_eq!(
        wire.buffer_len() + MAX_WRAP_OVERHEAD + IPV6_UDP_OVERHEAD,
        DEFAULT_TLS_MTU
    );
}

#[test]
fn invalid_configs_are_refused() {
    let base = ReliableConfig::default();
    let cases = [
        (
            ReliableConfig {
                payload_budget: 0,
                ..base
            },
            ReliableConfigError::ZeroPayloadBudget,
        ),
        (
            ReliableConfig {
                initial_timeout: Duration::ZERO,
                ..base
            },
            ReliableConfigError::ZeroTimeout,
        ),
        (
            ReliableConfig {
                max_timeout: SECOND,
                ..base
            },
            ReliableConfigError::MaxTimeoutBelowInitial {
                initial: DEFAULT_INITIAL_TIMEOUT,
                max: SECOND,
            },
        ),
        (
            ReliableConfig {
                max_timeout: MAX_TIMEOUT_LIMIT + SECOND,
                ..base
            },
            ReliableConfigError::TimeoutTooLarge {
                found: MAX_TIMEOUT_LIMIT + SECOND,
            },
        ),
        (
            ReliableConfig {
                max_send_buffer: 10,
                ..base
            },
            ReliableConfigError::BufferTooSmall {
                which: "send",
                found: 10,
                min: DEFAULT_PAYLOAD_BUDGET,
            },
        ),
        (
            ReliableConfig {
                max_recv_buffer: 10,
                ..base
            },
            ReliableConfigError::BufferTooSmall {
                which: "receive",
                found: 10,
                min: DEFAULT_PAYLOAD_BUDGET,
            },
        ),
    ];
    for (cfg, err) in cases {
        assert_eq!(Reliable::new(cfg).unwrap_err(), err);
        assert_eq!(Reliable::with_next_ids(cfg, 1, 1).unwrap_err(), err);
    }
    assert!(Reliable::new(base).is_ok());
}
