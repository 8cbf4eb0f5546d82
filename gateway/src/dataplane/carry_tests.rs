//! The worker's packet core with plain buffers: no sockets, no TAP, no root.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use gateway_proto::{
    data::{
        DATA_V2_OVERHEAD, DataChannel, DataKey, OCC_EXIT, OCC_MAGIC, PING_PAYLOAD, UsageLimits,
    },
    keys::{KEY_BLOCK_LEN, KeyBlock, Role},
    packet::{KeyId, PeerId},
    replay::ReplayConfig,
};

use super::*;
use crate::dataplane::{activity::Activity, counters::Counter};

const LEASE: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const SEAM_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn from() -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 2], 40002))
}

fn key(key_id: u8, role: Role, limits: UsageLimits) -> Arc<DataKey> {
    let block = KeyBlock::from_exporter([key_id; KEY_BLOCK_LEN]);
    let key = DataKey::new(
        KeyId::new(key_id).unwrap(),
        gateway_proto::data::Cipher::Aes256Gcm,
        &block.data_channel_keys(role),
        ReplayConfig::default(),
        limits,
    );
    Arc::new(key.unwrap())
}

/// The client's end of a session the carrier carries as peer-id 5.
struct Client {
    data: DataChannel,
}

impl Client {
    fn send(&self, plaintext: &[u8]) -> Vec<u8> {
        let overhead = self.data.overhead();
        let mut buf = vec![0u8; overhead + plaintext.len()];
        buf[overhead..].copy_from_slice(plaintext);
        let sealed = self.data.seal(&mut buf, plaintext.len()).unwrap();
        buf.truncate(sealed.len);
        buf
    }

    fn receive(&self, datagram: &[u8]) -> Vec<u8> {
        let mut buf = datagram.to_vec();
        let opened = self.data.open(&mut buf, Instant::now()).unwrap();
        buf[opened.plaintext].to_vec()
    }
}

fn channel(key: Arc<DataKey>) -> DataChannel {
    DataChannel {
        peer_id: Some(PeerId::new(5).unwrap()),
        send_key: key.key_id(),
        keys: vec![key],
    }
}

fn carried(keys: Vec<Arc<DataKey>>, peer: Peer) -> Arc<Carried> {
    Arc::new(Carried {
        peer_id: 5,
        lease: LEASE,
        peer,
        data: DataChannel {
            keys,
            ..channel(key(0, Role::Server, UsageLimits::default()))
        },
        activity: Arc::new(Activity::new(Instant::now())),
    })
}

/// A carrier with one session on key 0 and its client.
fn pair(limits: UsageLimits) -> (Carrier, Client, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let mut carrier = Carrier::new(SEAM_MAC, PEER_MAC, counters.clone());
    let server_key = key(0, Role::Server, limits);
    assert!(carrier.apply(Command::Carry(carried(vec![server_key], Peer::Udp(from())))));
    let client = Client {
        data: channel(key(0, Role::Client, UsageLimits::default())),
    };
    (carrier, client, counters)
}

fn ip(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    crate::serve::testing::ip_udp(src, dst, payload)
}

/// `datagram` from `from()` to the gateway as an Ethernet frame, as `edge` steers it.
fn eth_udp(datagram: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(client) = from() else {
        unreachable!()
    };
    let mut packet = ip(*client.ip(), Ipv4Addr::new(10, 1, 0, 1), datagram);
    packet[20..22].copy_from_slice(&client.port().to_be_bytes());
    let mut frame = vec![0u8; ETH_LEN];
    frame::write_eth_header(&mut frame, SEAM_MAC, PEER_MAC);
    frame.extend_from_slice(&packet);
    frame
}

/// `packet` as a frame at [`SEAL_AT`] of a send slot, as the TAP read puts it.
fn slot_with(packet: &[u8]) -> (Vec<u8>, usize) {
    let mut slot = vec![0u8; 4096];
    frame::write_eth_header(&mut slot[SEAL_AT..], PEER_MAC, SEAM_MAC);
    slot[DATA_V2_OVERHEAD..DATA_V2_OVERHEAD + packet.len()].copy_from_slice(packet);
    (slot, ETH_LEN + packet.len())
}

#[test]
fn an_opened_packet_from_the_lease_is_framed_for_the_seam_in_place() {
    let (mut carrier, client, counters) = pair(UsageLimits::default());
    let packet = ip(LEASE, Ipv4Addr::new(10, 10, 0, 10), b"hello");
    let mut wire = client.send(&packet);
    let Inbound::ToSeam(range) = carrier.datagram(&mut wire, from(), Instant::now()) else {
        panic!("not for the seam");
    };
    let frame = &wire[range];
    assert_eq!(&frame[..6], &SEAM_MAC);
    assert_eq!(&frame[6..12], &PEER_MAC);
    assert_eq!(&frame[12..14], &[0x08, 0x00]);
    assert_eq!(&frame[ETH_LEN..], &packet[..]);
    assert_eq!(counters.get(Counter::RxPackets), 1);
    assert_eq!(counters.get(Counter::RxBytes), packet.len() as u64);
    let session = carrier.session(5).unwrap();
    assert_eq!(session.activity.traffic().rx_packets, 1);
    assert!(session.activity.last_received().is_some());
    assert_eq!(carrier.drain_reports().count(), 0);
}

#[test]
fn spoofed_forged_and_replayed_packets_are_discarded_and_counted() {
    let (mut carrier, client, counters) = pair(UsageLimits::default());
    let now = Instant::now();
    let mut spoofed = client.send(&ip(Ipv4Addr::new(10, 200, 0, 3), LEASE, b"x"));
    assert_eq!(
        carrier.datagram(&mut spoofed, from(), now),
        Inbound::Discarded(Discard::Spoofed)
    );
    let honest = client.send(&ip(LEASE, Ipv4Addr::new(10, 10, 0, 10), b"y"));
    let mut forged = honest.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(
        carrier.datagram(&mut forged, from(), now),
        Inbound::Discarded(Discard::Unopened)
    );
    assert!(matches!(
        carrier.datagram(&mut honest.clone(), from(), now),
        Inbound::ToSeam(_)
    ));
    assert_eq!(
        carrier.datagram(&mut honest.clone(), from(), now),
        Inbound::Discarded(Discard::Unopened),
        "a replay"
    );
    assert_eq!(counters.get(Counter::Spoofed), 1);
    assert_eq!(counters.get(Counter::RxDropped), 2);
    assert_eq!(counters.get(Counter::RxPackets), 1);
}

#[test]
fn what_the_carrier_cannot_open_goes_to_the_control_plane() {
    let (mut carrier, client, _) = pair(UsageLimits::default());
    let now = Instant::now();
    // A control packet (P_CONTROL_V1, key 0), an unknown peer-id, an unknown key_id.
    let mut control = vec![0x20, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0];
    let mut stranger = client.send(b"x");
    stranger[3] = 9;
    let other = Client {
        data: channel(key(1, Role::Client, UsageLimits::default())),
    };
    let mut new_key = other.send(b"x");
    for packet in [&mut control, &mut stranger, &mut new_key] {
        let copy = packet.clone();
        assert_eq!(carrier.datagram(packet, from(), now), Inbound::ToControl);
        assert_eq!(
            carrier.drain_reports().collect::<Vec<_>>(),
            [Report::Datagram {
                from: from(),
                bytes: copy
            }]
        );
    }
}

#[test]
fn pings_exits_floats_and_new_keys_are_handled_or_reported() {
    let (mut carrier, client, counters) = pair(UsageLimits::default());
    let now = Instant::now();
    let mut ping = client.send(&PING_PAYLOAD);
    assert_eq!(carrier.datagram(&mut ping, from(), now), Inbound::Consumed);
    assert_eq!(carrier.drain_reports().count(), 0);

    // From a new address: followed at once, and reported.
    let moved = SocketAddr::from(([203, 0, 113, 9], 5000));
    let mut ping = client.send(&PING_PAYLOAD);
    assert_eq!(carrier.datagram(&mut ping, moved, now), Inbound::Consumed);
    assert_eq!(
        carrier.drain_reports().collect::<Vec<_>>(),
        [Report::Floated {
            peer_id: 5,
            to: moved
        }]
    );
    let (mut slot, len) = slot_with(&ip(Ipv4Addr::new(10, 10, 0, 10), LEASE, b"back"));
    assert!(matches!(
        carrier.seal(&mut slot, len, None, now),
        Outbound::Udp { to, .. } if to == moved
    ));

    // A rekey's new key (held, not yet sending) is reported once.
    let session = carrier.session(5).unwrap();
    let keys = vec![
        session.data.keys[0].clone(),
        key(1, Role::Server, UsageLimits::default()),
    ];
    carrier.apply(Command::Carry(carried(keys, Peer::Udp(moved))));
    let rekeyed = Client {
        data: channel(key(1, Role::Client, UsageLimits::default())),
    };
    for _ in 0..2 {
        let mut ping = rekeyed.send(&PING_PAYLOAD);
        assert_eq!(carrier.datagram(&mut ping, moved, now), Inbound::Consumed);
    }
    assert_eq!(
        carrier.drain_reports().collect::<Vec<_>>(),
        [Report::KeyUsed {
            peer_id: 5,
            key_id: KeyId::new(1).unwrap()
        }]
    );

    let mut exit = OCC_MAGIC.to_vec();
    exit.push(OCC_EXIT);
    let mut exit = client.send(&exit);
    assert_eq!(carrier.datagram(&mut exit, moved, now), Inbound::Consumed);
    assert_eq!(
        carrier.drain_reports().collect::<Vec<_>>(),
        [Report::Exited { peer_id: 5 }]
    );
    assert_eq!(counters.get(Counter::RxPackets), 0, "nothing for the seam");
}

#[test]
fn replies_are_sealed_for_the_lease_they_are_addressed_to() {
    let (mut carrier, client, counters) = pair(UsageLimits::default());
    let now = Instant::now();
    let reply = ip(Ipv4Addr::new(10, 10, 0, 10), LEASE, b"world");
    let (mut slot, len) = slot_with(&reply);
    // Ethernet padding after the packet is not sealed.
    let padded = len + 6;
    let Outbound::Udp { to, len } = carrier.seal(&mut slot, padded, None, now) else {
        panic!("not sealed");
    };
    assert_eq!(to, from());
    assert_eq!(client.receive(&slot[..len]), reply);
    assert_eq!(counters.get(Counter::TxPackets), 1);
    assert_eq!(counters.get(Counter::TxBytes), reply.len() as u64);
    assert!(carrier.session(5).unwrap().activity.last_sent().is_some());

    // A peer-id hint that does not hold the destination lease is not trusted.
    let (mut slot, len) = slot_with(&reply);
    assert!(matches!(
        carrier.seal(&mut slot, len, Some(77), now),
        Outbound::Udp { .. }
    ));
    let nobody = ip(
        Ipv4Addr::new(10, 10, 0, 10),
        Ipv4Addr::new(10, 200, 0, 77),
        b"x",
    );
    let (mut slot, len) = slot_with(&nobody);
    assert!(matches!(
        carrier.seal(&mut slot, len, Some(5), now),
        Outbound::Discarded(Discard::NoSession)
    ));
    assert_eq!(counters.get(Counter::NoSession), 1);
    // The kernel's own chatter (here ARP) is nobody's and not counted.
    let (mut slot, len) = slot_with(&reply);
    slot[SEAL_AT + 12] = 0x08;
    slot[SEAL_AT + 13] = 0x06;
    assert!(matches!(
        carrier.seal(&mut slot, len, None, now),
        Outbound::Discarded(Discard::NotIpv4)
    ));
    // Forgotten: nothing is sealed for it any longer.
    carrier.apply(Command::Forget(5));
    let (mut slot, len) = slot_with(&reply);
    assert!(matches!(
        carrier.seal(&mut slot, len, None, now),
        Outbound::Discarded(Discard::NoSession)
    ));
    assert!(!carrier.apply(Command::Stop));
}

#[test]
fn a_reply_whose_sender_left_its_checksum_partial_reaches_the_client_complete() {
    use gateway_tests::xdp::{checksum::l4_ok, frame as build};
    let (mut carrier, client, counters) = pair(UsageLimits::default());
    let now = Instant::now();
    let complete = build::tcp(
        [10, 10, 0, 10],
        LEASE.octets(),
        8080,
        40000,
        b"SYN-ACK data",
    );
    let mut partial = complete.clone();
    frame::make_partial(&mut partial[ETH_LEN..]);
    assert!(!l4_ok(&partial));
    // From the TAP, and steered by `target` to an AF_XDP socket.
    let (mut slot, len) = slot_with(&partial[ETH_LEN..]);
    let Outbound::Udp { len, .. } = carrier.seal(&mut slot, len, None, now) else {
        panic!("not sealed");
    };
    assert_eq!(client.receive(&slot[..len]), &complete[ETH_LEN..]);
    let mut slot = vec![0u8; 4096];
    let Outbound::Udp { len, .. } = carrier.steered_frame(&mut slot, &partial, Some(5), now) else {
        panic!("not sealed");
    };
    assert_eq!(client.receive(&slot[..len]), &complete[ETH_LEN..]);
    assert_eq!(counters.get(Counter::ChecksumsFinished), 2);
    // A complete checksum is sealed as it is, and not counted.
    let (mut slot, len) = slot_with(&complete[ETH_LEN..]);
    let Outbound::Udp { len, .. } = carrier.seal(&mut slot, len, None, now) else {
        panic!("not sealed");
    };
    assert_eq!(client.receive(&slot[..len]), &complete[ETH_LEN..]);
    assert_eq!(counters.get(Counter::ChecksumsFinished), 2);
}

#[test]
fn a_tcp_session_gets_its_packets_through_its_writer() {
    let counters = Arc::new(Counters::default());
    let mut carrier = Carrier::new(SEAM_MAC, PEER_MAC, counters);
    let (writer, _rx) = tokio::sync::mpsc::channel(4);
    let server_key = key(0, Role::Server, UsageLimits::default());
    carrier.apply(Command::Carry(carried(
        vec![server_key],
        Peer::Stream(writer),
    )));
    let (mut slot, len) = slot_with(&ip(Ipv4Addr::new(10, 10, 0, 10), LEASE, b"tcp"));
    assert!(matches!(
        carrier.seal(&mut slot, len, None, Instant::now()),
        Outbound::Stream { len, .. } if len > 0
    ));
}

#[test]
fn af_xdp_frames_are_parsed_or_counted_malformed() {
    let (mut carrier, client, counters) = pair(UsageLimits::default());
    let now = Instant::now();
    let packet = ip(LEASE, Ipv4Addr::new(10, 10, 0, 10), b"steered");
    let wire = client.send(&packet);
    let mut frame = eth_udp(&wire);
    let Inbound::ToSeam(range) = carrier.edge_frame(&mut frame, now) else {
        panic!("not for the seam");
    };
    assert_eq!(&frame[range][ETH_LEN..], &packet[..]);
    let mut short = vec![0u8; 20];
    assert_eq!(
        carrier.edge_frame(&mut short, now),
        Inbound::Discarded(Discard::Malformed)
    );

    let reply = ip(Ipv4Addr::new(10, 10, 0, 10), LEASE, b"from target");
    let mut steered = vec![0u8; ETH_LEN];
    frame::write_eth_header(&mut steered, PEER_MAC, SEAM_MAC);
    steered.extend_from_slice(&reply);
    let mut slot = vec![0u8; 4096];
    let Outbound::Udp { len, .. } = carrier.steered_frame(&mut slot, &steered, Some(5), now) else {
        panic!("not sealed");
    };
    assert_eq!(client.receive(&slot[..len]), reply);
    steered[12] = 0x86;
    assert!(matches!(
        carrier.steered_frame(&mut slot, &steered, Some(5), now),
        Outbound::Discarded(Discard::Malformed)
    ));
    let mut tiny = vec![0u8; 64];
    let long = [&steered[..12], &[0x08, 0x00], &[0u8; 100][..]].concat();
    assert!(matches!(
        carrier.steered_frame(&mut tiny, &long, Some(5), now),
        Outbound::Discarded(Discard::Truncated)
    ));
    assert_eq!(counters.get(Counter::Malformed), 2);
    assert_eq!(counters.get(Counter::Truncated), 1);
}

#[test]
fn traffic_only_the_carrier_sees_reaches_the_renegotiation_limit() {
    let limits = UsageLimits {
        bytes: 2_000,
        packets: 0,
    };
    let (mut carrier, client, _) = pair(limits);
    let now = Instant::now();
    let mut due = 0;
    for _ in 0..3 {
        let mut wire = client.send(&ip(LEASE, Ipv4Addr::new(10, 10, 0, 10), &[0; 472]));
        assert!(matches!(
            carrier.datagram(&mut wire, from(), now),
            Inbound::ToSeam(_)
        ));
        let (mut slot, len) = slot_with(&ip(Ipv4Addr::new(10, 10, 0, 10), LEASE, &[0; 472]));
        assert!(matches!(
            carrier.seal(&mut slot, len, None, now),
            Outbound::Udp { .. }
        ));
        due += carrier
            .drain_reports()
            .filter(|r| *r == Report::RenegotiationDue { peer_id: 5 })
            .count();
    }
    // Six packets of 500 bytes: the fourth crosses 2,000.
    assert_eq!(due, 1);
    assert!(carrier.session(5).unwrap().data.keys[0].renegotiation_due());
}
