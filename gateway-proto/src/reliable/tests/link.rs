use super::*;

// ---- two endpoints over a lossy link ----

/// Deterministic xorshift64* generator for the simulated link.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct Endpoint {
    reliable: Reliable,
    sid: SessionId,
    peer_sid: SessionId,
    to_send: Vec<u8>,
    sent_bytes: usize,
    received: Vec<u8>,
    transmissions: usize,
    retransmissions: usize,
}

impl Endpoint {
    fn new(reset: Opcode, sid: SessionId, peer_sid: SessionId, to_send: Vec<u8>) -> Self {
        let mut reliable = Reliable::new(config(300)).unwrap();
        reliable.queue_reset(reset, &[]).unwrap();
        Self {
            reliable,
            sid,
            peer_sid,
            to_send,
            sent_bytes: 0,
            received: Vec::new(),
            transmissions: 0,
            retransmissions: 0,
        }
    }

    /// Queues more stream bytes in uneven chunks, like TLS output arriving in pieces.
    fn feed(&mut self, rng: &mut Rng) {
        while self.sent_bytes < self.to_send.len() {
            let want = 1 + (rng.next() % 700) as usize;
            let end = (self.sent_bytes + want).min(self.to_send.len());
            let chunk = &self.to_send[self.sent_bytes..end];
            if self.reliable.queue(chunk).is_err() {
                break;
            }
            self.sent_bytes = end;
        }
    }

    fn transmit(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(t) = self.reliable.poll_transmit(now) {
            if t.kind == TransmitKind::Retransmit {
                self.retransmissions += 1;
            }
            let repr = t.to_repr(KeyId::ZERO, self.sid, self.peer_sid);
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut buf).unwrap();
            out.push(buf);
        }
        self.transmissions += out.len();
        out
    }

    fn receive(&mut self, wire: &[u8], now: Instant) {
        let packet = ControlPacket::new_checked(wire).unwrap();
        let repr = ControlRepr::parse(&packet);
        assert_eq!(repr.session_id, self.peer_sid);
        if let Some(remote) = repr.remote_session_id {
            assert_eq!(remote, self.sid);
        }
        // The peer's send window (6) lies inside our receive window (12): an honest
        // peer never triggers an error, whatever the link does.
        if let Err(e) = self.reliable.on_packet(&repr, now) {
            panic!("unexpected receive error {e:?}");
        }
        let mut buf = [0u8; 512];
        loop {
            let n = self.reliable.read(&mut buf);
            if n == 0 {
                break;
            }
            self.received.extend_from_slice(&buf[..n]);
        }
    }
}

struct InTransit {
    at: Instant,
    to_server: bool,
    bytes: Vec<u8>,
}

/// Runs client and server over a link with `loss`% loss, `dup`% duplication and a delay
/// of 50 ms plus up to `jitter_ms` (reordering); returns both endpoints once it is quiet.
fn run_lossy_link(
    seed: u64,
    loss: u64,
    dup: u64,
    jitter_ms: u64,
) -> (Endpoint, Endpoint, Duration) {
    let mut rng = Rng(seed);
    let pattern = |len: usize, mul: u32| -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(mul) >> 3) as u8)
            .collect()
    };
    let mut client = Endpoint::new(
        Opcode::ControlHardResetClientV2,
        CLIENT_SID,
        SERVER_SID,
        pattern(20_000, 2_654_435_761),
    );
    let mut server = Endpoint::new(
        Opcode::ControlHardResetServerV2,
        SERVER_SID,
        CLIENT_SID,
        pattern(9_000, 40_503),
    );
    let t0 = Instant::now();
    let mut now = t0;
    let mut link: Vec<InTransit> = Vec::new();
    for _ in 0..100_000 {
        for (endpoint, to_server) in [(&mut client, true), (&mut server, false)] {
            endpoint.feed(&mut rng);
            for bytes in endpoint.transmit(now) {
                if rng.chance(loss) {
                    continue;
                }
                let copies = if rng.chance(dup) { 2 } else { 1 };
                for _ in 0..copies {
                    let delay = Duration::from_millis(50 + rng.next() % (jitter_ms + 1));
                    link.push(InTransit {
                        at: now + delay,
                        to_server,
                        bytes: bytes.clone(),
                    });
                }
            }
        }
        let next_delivery = link.iter().map(|p| p.at).min();
        let next_timer = [
            client.reliable.poll_timeout(),
            server.reliable.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next_delivery.into_iter().chain(next_timer).min() else {
            return (client, server, now - t0);
        };
        now = now.max(next);
        let (due, later): (Vec<_>, Vec<_>) = link.into_iter().partition(|p| p.at <= now);
        link = later;
        for packet in due {
            let endpoint = if packet.to_server {
                &mut server
            } else {
                &mut client
            };
            endpoint.receive(&packet.bytes, now);
        }
    }
    panic!("link never went quiet");
}

#[test]
fn lossy_link_delivers_both_streams_intact_and_goes_quiet() {
    for (seed, loss, dup) in [
        (1, 10, 10),
        (2, 15, 10),
        (3, 20, 20),
        (0x9E37_79B9, 20, 5),
        (42, 15, 15),
    ] {
        let (client, server, elapsed) = run_lossy_link(seed, loss, dup, 400);
        assert_eq!(
            server.received, client.to_send,
            "seed {seed}: client→server"
        );
        assert_eq!(
            client.received, server.to_send,
            "seed {seed}: server→client"
        );
        for end in [&client, &server] {
            assert!(end.reliable.is_idle(), "seed {seed}: endpoint not idle");
            assert_eq!(end.reliable.poll_timeout(), None);
        }
        assert_eq!(
            server.reliable.next_rx_message_id(),
            client.reliable.next_tx_message_id()
        );
        assert_eq!(
            client.reliable.next_rx_message_id(),
            server.reliable.next_tx_message_id()
        );
        // 20 kB at 300 bytes per packet is ~67 packets; loss costs retransmissions,
        // not an unbounded stream of them.
        assert!(
            client.transmissions < 1_000,
            "seed {seed}: {}",
            client.transmissions
        );
        assert!(
            client.retransmissions > 0,
            "seed {seed}: loss must cost retransmissions"
        );
        assert!(
            elapsed < Duration::from_secs(3_600),
            "seed {seed}: {elapsed:?}"
        );
    }
}

#[test]
fn lossless_in_order_link_needs_no_retransmission() {
    let (client, server, _) = run_lossy_link(7, 0, 0, 0);
    assert_eq!(server.received, client.to_send);
    assert_eq!(client.received, server.to_send);
    assert_eq!(client.retransmissions + server.retransmissions, 0);
}
